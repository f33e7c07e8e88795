//! Signing keys and server secrets.

use sqlx::Row;

use super::*;

impl Store {
    /// Returns the named server secret, creating it from `generate` on first use. Several
    /// replicas racing here all end up with the one value that was stored first.
    pub async fn server_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<Vec<u8>> {
        let place = sealing::server_secret_place(name);
        let master = self.master()?;
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(master.seal(&place, &generate()))
            .execute(&self.writer)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        let sealed: Vec<u8> = row.try_get("value")?;
        Ok(master.open(&place, &sealed)?)
    }

    pub async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let keys: Vec<SigningKeyRecord> = sqlx::query_as(&format!(
            "SELECT {} FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid",
            SigningKeyRecord::column_list()
        ))
        .fetch_all(&self.pool)
        .await?;
        let master = self.master()?;
        keys.into_iter()
            .map(|mut key| {
                key.private_key =
                    master.open(&sealing::signing_key_place(&key.kid), &key.private_key)?;
                Ok(key)
            })
            .collect()
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(
            self.master()?
                .seal(&sealing::signing_key_place(&key.kid), &key.private_key),
        )
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Stops a key from verifying anything; false when no live key has this kid.
    pub async fn retire_signing_key(&self, kid: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL",
        )
        .bind(now)
        .bind(kid)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Empties the hot-path session cache, e.g. when a signing key was retired.
    pub fn forget_cached_sessions(&self) {
        self.sessions.clear();
    }
}
