//! Login requests: the rows behind CODE_TOKENs.

use sqlx::Row;

use super::*;

impl Store {
    /// The project of a login request, by its CODE_TOKEN hash.
    pub async fn login_request_project(&self, token_hash: &[u8]) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT project_id FROM login_requests WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("project_id")).transpose()?)
    }
}

impl Tx {
    pub async fn insert_login_request(&mut self, request: &NewLoginRequest) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO login_requests
               (token_hash, project_id, user_id, name, code_hmac, link_token_hash, attempts_left,
                expires_at, created_at, client_block)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(request.token_hash.as_slice())
        .bind(request.project_id.as_str())
        .bind(request.user_id)
        .bind(request.name.as_str())
        .bind(request.code_hmac.as_slice())
        .bind(request.link_token_hash.as_slice())
        .bind(request.attempts_left)
        .bind(request.expires_at)
        .bind(request.created_at)
        .bind(request.client_block.as_deref())
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    pub async fn login_request(
        &mut self,
        token_hash: &[u8],
    ) -> StoreResult<Option<LoginRequestRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM login_requests WHERE token_hash = $1",
            LoginRequestRecord::column_list()
        ))
        .bind(token_hash)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Spends one attempt of a live login request, atomically, before the code is judged:
    /// concurrent guesses (even on other replicas) can never exceed the budget. `None`
    /// when the request is unknown, used, expired or out of attempts.
    pub async fn spend_login_attempt(
        &mut self,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<LoginRequestRecord>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE login_requests SET attempts_left = attempts_left - 1, attempted = 1
             WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2 AND attempts_left > 0
             RETURNING {}",
            LoginRequestRecord::column_list()
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Marks a login request used; false if something else used it first.
    pub async fn consume_login_request(&mut self, id: i64, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_requests SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the code of a never-attempted, live request; false when that no longer holds.
    pub async fn replace_login_code(
        &mut self,
        id: i64,
        code_hmac: &[u8],
        link_token_hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_requests SET code_hmac = $1, expires_at = $2, link_token_hash = $5
             WHERE id = $3 AND attempted = 0 AND consumed_at IS NULL AND confirmed_at IS NULL
               AND expires_at > $4",
        )
        .bind(code_hmac)
        .bind(expires_at)
        .bind(id)
        .bind(now)
        .bind(link_token_hash)
        .execute(&mut self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn login_request_by_link(
        &mut self,
        link_token_hash: &[u8],
    ) -> StoreResult<Option<LoginRequestRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM login_requests WHERE link_token_hash = $1",
            LoginRequestRecord::column_list()
        ))
        .bind(link_token_hash)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Marks a live login request confirmed through its magic link; `None` when the link
    /// is unknown, used, already followed or expired.
    pub async fn confirm_login_link(
        &mut self,
        link_token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<LoginRequestRecord>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE login_requests SET confirmed_at = $2
             WHERE link_token_hash = $1 AND consumed_at IS NULL AND confirmed_at IS NULL
               AND expires_at > $2
             RETURNING {}",
            LoginRequestRecord::column_list()
        ))
        .bind(link_token_hash)
        .bind(now)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Takes a link-confirmed login request for its session, once; `None` when it is not
    /// confirmed, already collected, or was confirmed before `confirmed_since`.
    pub async fn collect_confirmed_login(
        &mut self,
        token_hash: &[u8],
        now: i64,
        confirmed_since: i64,
    ) -> StoreResult<Option<LoginRequestRecord>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE login_requests SET consumed_at = $2
             WHERE token_hash = $1 AND consumed_at IS NULL AND confirmed_at IS NOT NULL
               AND confirmed_at >= $3
             RETURNING {}",
            LoginRequestRecord::column_list()
        ))
        .bind(token_hash)
        .bind(now)
        .bind(confirmed_since)
        .fetch_optional(&mut self.tx)
        .await?)
    }
}
