//! Recovery tokens: one per user, only its hash stored.

use sqlx::Row;

use super::*;

impl Store {
    /// The project of a recovery token's user.
    pub async fn recovery_token_project(&self, token_hash: &[u8]) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT u.project_id FROM recovery_tokens r JOIN users u ON u.id = r.user_id
             WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("project_id")).transpose()?)
    }
}

impl Tx {
    /// Stores the user's recovery token, replacing any earlier one.
    pub async fn replace_recovery_token(
        &mut self,
        user_id: i64,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO recovery_tokens (user_id, token_hash, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash,
               created_at = excluded.created_at",
        )
        .bind(user_id)
        .bind(token_hash)
        .bind(now)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// Swaps a presented recovery token for a new one in one statement, so a token works
    /// once even under concurrent use; returns the user it belonged to.
    pub async fn rotate_recovery_token(
        &mut self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let row = sqlx::query(
            "UPDATE recovery_tokens SET token_hash = $2, created_at = $3 WHERE token_hash = $1
             RETURNING user_id",
        )
        .bind(old_hash)
        .bind(new_hash)
        .bind(now)
        .fetch_optional(&mut self.tx)
        .await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }
}
