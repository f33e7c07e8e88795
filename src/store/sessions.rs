//! Sessions: the rows behind USER_TOKENs and JWT `sid`s.

use super::*;

/// A session's columns and its user's, as `SessionUser` reads them.
fn session_user_columns() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let user: Vec<String> = UserRecord::column_names()
            .iter()
            .map(|column| format!("u.{column}"))
            .collect();
        format!(
            "s.id AS session_id, s.expires_at AS session_expires_at, \
             s.created_at AS session_created_at, {}",
            user.join(", ")
        )
    })
}

impl Store {
    /// The hot-path lookup behind Authorize: a live session by its token hash, with its
    /// user. Read-only.
    pub async fn session_by_token_hash(
        &self,
        hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<SessionUser>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
            session_user_columns()
        ))
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A live session by its id (the `sid` of a JWT), with its user.
    pub async fn session_by_id(&self, id: &str, now: i64) -> StoreResult<Option<SessionUser>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.expires_at > $2",
            session_user_columns()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A live session from the hot-path cache, by the hash of the token (opaque or JWT)
    /// that was presented for it.
    pub fn cached_session(&self, token_hash: &[u8; 32], now: i64) -> Option<SessionUser> {
        let cached = self.sessions.get(token_hash, now);
        crate::metrics::count(if cached.is_some() {
            "portcullis_session_cache_hits_total"
        } else {
            "portcullis_session_cache_misses_total"
        });
        cached
    }

    /// Whether this opaque token was recently found to have no live session.
    pub fn known_refused(&self, token_hash: &[u8; 32]) -> bool {
        self.sessions.is_refused(token_hash)
    }

    /// Remembers that this opaque token has no live session: it never will again.
    pub fn cache_refused(&self, token_hash: [u8; 32]) {
        self.sessions.put_refused(token_hash);
    }

    /// Remembers what a token resolved to. For a JWT, `session.expires_at` must already be
    /// cut to the JWT's own expiry.
    pub fn cache_session(&self, token_hash: [u8; 32], session: SessionUser) {
        self.sessions.put(token_hash, session);
    }

    pub async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let deleted = tx.delete_session(id).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

impl Tx {
    pub async fn delete_session(&mut self, id: &str) -> StoreResult<bool> {
        let user: Option<i64> =
            sqlx::query_scalar("DELETE FROM sessions WHERE id = $1 RETURNING user_id")
                .bind(id)
                .fetch_optional(&mut self.tx)
                .await?;
        if let Some(user) = user {
            self.revoke_user(user);
        }
        Ok(user.is_some())
    }

    pub async fn insert_session(&mut self, session: &NewSession) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&session.id)
            .bind(session.token_hash.as_slice())
            .bind(session.user_id)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }
}
