//! Password accounts: password hashes on users, failed-check counters and reset tokens.
//! (The projects' password settings are columns of `projects`, in `ProjectRecord`.)

use sqlx::Row;

use super::rows::record;
use super::*;

record! {
    /// A user with its password hash (PHC form; `None` for users who log in by code only).
    #[derive(Clone, Debug)]
    pub struct PasswordUserRecord {
        pub user: UserRecord,
        pub password_hash: Option<String>,
    }
}

/// A user with its password hash by name, through the pool or inside a transaction.
async fn password_user_by_name<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    name: &str,
) -> StoreResult<Option<PasswordUserRecord>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {} FROM users WHERE project_id = $1 AND name = $2",
        PasswordUserRecord::column_list()
    ))
    .bind(project_id)
    .bind(name)
    .fetch_optional(db)
    .await?)
}

record! {
    /// The password checks counted against one key in its current window.
    #[derive(Clone, Copy, Debug)]
    pub struct AttemptCount {
        /// Checks judged wrong.
        pub failures: i64,
        /// Checks registered but not judged yet (this one included).
        pub pending: i64,
        pub window_started_at: i64,
    }
}

record! {
    /// A reset token's row, with what the reset page shows.
    #[derive(Clone, Debug)]
    pub struct PasswordResetRecord {
        pub user_id: i64,
        pub project_id: String,
        pub email: Option<String>,
        pub expires_at: i64,
        pub used_at: Option<i64>,
    }
}

impl Store {
    pub async fn password_user_by_name(
        &self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<PasswordUserRecord>> {
        password_user_by_name(&self.pool, project_id, name).await
    }

    pub async fn password_hash_of(&self, user_id: i64) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("password_hash")?,
            None => None,
        })
    }

    pub async fn password_reset(
        &self,
        token_hash: &[u8],
    ) -> StoreResult<Option<PasswordResetRecord>> {
        Ok(sqlx::query_as(
            "SELECT r.user_id, u.project_id, u.name AS email, r.expires_at, r.used_at
             FROM password_resets r JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }
}

impl Tx {
    pub async fn password_user_by_name(
        &mut self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<PasswordUserRecord>> {
        password_user_by_name(&mut self.tx, project_id, name).await
    }

    /// Sets the password of a user that has none yet and never proved its mailbox; false
    /// when it has one, or was verified, meanwhile.
    pub async fn set_first_password(
        &mut self,
        user_id: i64,
        password_hash: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1
             WHERE id = $2 AND password_hash IS NULL AND verified_at IS NULL",
        )
        .bind(password_hash)
        .bind(user_id)
        .execute(&mut self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a password hash only if it is still `current`, so a change racing a reset
    /// (or a rehash racing a change) cannot silently undo the other.
    pub async fn replace_password(
        &mut self,
        user_id: i64,
        current: &str,
        password_hash: &str,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                .bind(password_hash)
                .bind(user_id)
                .bind(current)
                .execute(&mut self.tx)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the password whatever it was (a reset through the mailed link).
    pub async fn set_password(&mut self, user_id: i64, password_hash: &str) -> StoreResult<()> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Revokes every session of a user but `keep`; returns how many were revoked.
    pub async fn delete_sessions_of_user(
        &mut self,
        user_id: i64,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        self.revoke_user(user_id);
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(keep.unwrap_or(""))
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    /// Registers one password check against `key` before the password is judged (as
    /// pending), and returns the key's counts. A window older than `window_seconds` starts
    /// over. Atomic, so concurrent guesses on any number of replicas all count. Pending
    /// checks are a lease until `pending_until`: checks that never reported back (their
    /// process died) stop counting then.
    pub async fn spend_password_attempt(
        &mut self,
        key: &str,
        now: i64,
        window_seconds: i64,
        pending_until: i64,
    ) -> StoreResult<AttemptCount> {
        Ok(sqlx::query_as(
            "INSERT INTO password_failures (key, failures, pending, window_started_at, pending_until)
             VALUES ($1, 0, 1, $2, $4)
             ON CONFLICT (key) DO UPDATE SET
               failures = CASE WHEN password_failures.window_started_at <= $3 THEN 0
                               ELSE password_failures.failures END,
               pending = CASE WHEN password_failures.window_started_at <= $3
                                OR password_failures.pending_until <= $2 THEN 1
                              ELSE password_failures.pending + 1 END,
               window_started_at = CASE WHEN password_failures.window_started_at <= $3 THEN $2
                                        ELSE password_failures.window_started_at END,
               pending_until = $4
             RETURNING failures, pending, window_started_at",
        )
        .bind(key)
        .bind(now)
        .bind(now - window_seconds)
        .bind(pending_until)
        .fetch_one(&mut self.tx)
        .await?)
    }

    /// A pending check was judged wrong: it becomes a failure.
    pub async fn record_password_failure(&mut self, key: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE password_failures SET failures = failures + 1,
               pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END
             WHERE key = $1",
        )
        .bind(key)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// A pending check was right (or never judged): it no longer counts.
    pub async fn refund_password_attempt(&mut self, key: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE password_failures SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END
             WHERE key = $1",
        )
        .bind(key)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// Forgets the failures counted against `key` (a right password, or a reset).
    pub async fn clear_password_failures(&mut self, key: &str) -> StoreResult<()> {
        sqlx::query("UPDATE password_failures SET failures = 0 WHERE key = $1")
            .bind(key)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// The statements of [`Tx::put_password_reset`] and [`Tx::enqueue_message`], matching
    /// no row: ForgotPassword for an unknown email costs what it costs for a known one.
    pub async fn shadow_password_reset(
        &mut self,
        token_hash: &[u8],
        message: &NewMessage,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE password_resets SET created_at = created_at WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut self.tx)
            .await?;
        sqlx::query("UPDATE outbox SET attempts = attempts WHERE id = -1 AND recipient = $1")
            .bind(&message.recipient)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Stores the verification link of a user's email, replacing an older one.
    pub async fn put_email_verification(
        &mut self,
        user_id: i64,
        token_hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.put_user_link("email_verifications", user_id, token_hash, expires_at, now)
            .await
    }

    /// One live link per user in `table` (reset or email verification): a new one
    /// replaces the previous, which stops working.
    async fn put_user_link(
        &mut self,
        table: &str,
        user_id: i64,
        token_hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {table} (user_id, token_hash, expires_at, used_at, created_at)
             VALUES ($1, $2, $3, NULL, $4)
             ON CONFLICT (user_id) DO UPDATE SET token_hash = $2, expires_at = $3, used_at = NULL,
               created_at = $4"
        ))
        .bind(user_id)
        .bind(token_hash)
        .bind(expires_at)
        .bind(now)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// Spends a live verification link of `project_id` and marks its user's email
    /// verified; the user's id, or `None` when the link is unknown, used, expired or of
    /// another project.
    pub async fn use_email_verification(
        &mut self,
        project_id: &str,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let row = sqlx::query(
            "UPDATE email_verifications SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
               AND user_id IN (SELECT id FROM users WHERE project_id = $3)
             RETURNING user_id",
        )
        .bind(now)
        .bind(token_hash)
        .bind(project_id)
        .fetch_optional(&mut self.tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user_id: i64 = row.try_get("user_id")?;
        self.mark_user_verified(user_id, now).await?;
        Ok(Some(user_id))
    }

    /// Stores a user's reset token, replacing any earlier one (which stops working).
    pub async fn put_password_reset(
        &mut self,
        user_id: i64,
        token_hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.put_user_link("password_resets", user_id, token_hash, expires_at, now)
            .await
    }

    /// Marks a live reset token used and returns its user; `None` when it is unknown,
    /// used or expired (also when a concurrent reset used it first).
    pub async fn use_password_reset(
        &mut self,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let row = sqlx::query(
            "UPDATE password_resets SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
             RETURNING user_id",
        )
        .bind(now)
        .bind(token_hash)
        .fetch_optional(&mut self.tx)
        .await?;
        row.map(|row| row.try_get("user_id"))
            .transpose()
            .map_err(Into::into)
    }
}
