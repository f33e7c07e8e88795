//! What limits count, and the per-key serialization that makes a count-then-write exact
//! under concurrency.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::*;

impl Tx {
    /// Serializes, until this transaction ends, every transaction that locks the same key,
    /// so a limit counted and then written admits exactly its number. On PostgreSQL a
    /// transaction-scoped advisory lock on the key's hash (READ COMMITTED would otherwise
    /// let concurrent counts all see the same number); on SQLite, BEGIN IMMEDIATE already
    /// holds the one write lock. Callers taking several keys take them in one fixed order:
    /// recipient, then address, then name.
    pub async fn lock_key(&mut self, key: &str) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key_hash(key))
                .execute(&mut self.tx)
                .await?;
        }
        Ok(())
    }

    /// Wrong codes entered for `name` (over all its code tokens) since `since`.
    pub async fn count_code_failures_since(&mut self, name: &str, since: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM code_failures WHERE name = $1 AND failed_at >= $2",
        )
        .bind(name)
        .bind(since)
        .fetch_one(&mut self.tx)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Counts one wrong code against `name`; failures older than `forget_before` go.
    pub async fn record_code_failure(
        &mut self,
        name: &str,
        now: i64,
        forget_before: i64,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM code_failures WHERE name = $1 AND failed_at < $2")
            .bind(name)
            .bind(forget_before)
            .execute(&mut self.tx)
            .await?;
        sqlx::query("INSERT INTO code_failures (name, failed_at) VALUES ($1, $2)")
            .bind(name)
            .bind(now)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }
}

/// A 64-bit key for PostgreSQL's advisory locks, from a key of any length. A second key
/// space ("portcullis limit") keeps it apart from other users of advisory locks.
fn key_hash(key: &str) -> i64 {
    let digest = Sha256::digest(format!("portcullis limit\0{key}").as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}
