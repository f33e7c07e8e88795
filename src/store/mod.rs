//! Storage: the only module that speaks SQL. One code path serves SQLite and PostgreSQL
//! through sqlx's `Any` driver; the backend is chosen once, from the URL scheme, in
//! [`Store::connect`]. Queries use `$n` placeholders, which both backends accept, and
//! portable column types (integers for times and flags, text, bytes).

mod migrations;
mod records;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::time::Duration;

pub use records::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timed out, ...).
    #[error("the database is unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the write.
    #[error("a record with the same key already exists")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            // PostgreSQL says so when the database was dropped or is shutting down.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c == "3D000") =>
            {
                StoreError::Unavailable(error)
            }
            _ => StoreError::Database(error),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects lazily (so the service starts, and reports NOT_SERVING, while the database
    /// is down). A SQLite file is created if missing and put in WAL mode.
    pub fn connect(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("unsupported database URL {url:?}: use sqlite://FILE or postgres://...")
                    .into(),
            ))
        })?;
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(300));
        let url = match backend {
            Backend::Sqlite => {
                options = options.max_connections(8).after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside the one writer; NORMAL sync is
                        // durable across application crashes, which is what WAL needs.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                });
                if url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Backend::Postgres => {
                options = options.max_connections(16);
                url.to_owned()
            }
        };
        let pool = options.connect_lazy(&url)?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> StoreResult<()> {
        migrations::migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so
    /// read-then-write transactions queue instead of failing with "database is locked".
    pub async fn begin(&self) -> StoreResult<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx { tx })
    }

    /// Returns the named server secret, creating it from `generate` on first use. Several
    /// replicas racing here all end up with the one value that was stored first.
    pub async fn server_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(generate())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    pub async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_key, created_at FROM signing_keys
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(SigningKeyRecord::from_row).collect()
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn project_count(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn project_by_app_token(
        &self,
        app_token: &str,
    ) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE app_token = $1"
        ))
        .bind(app_token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ProjectRecord::from_row).transpose()
    }

    pub async fn project_by_id(&self, id: &str) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ProjectRecord::from_row).transpose()
    }

    /// The hot-path lookup behind Authorize: a live session by its token hash, with its
    /// user. Read-only.
    pub async fn session_by_token_hash(
        &self,
        hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<SessionUser>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2"
        ))
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(SessionUser::from_row).transpose()
    }

    /// A live session by its id (the `sid` of a JWT), with its user.
    pub async fn session_by_id(&self, id: &str, now: i64) -> StoreResult<Option<SessionUser>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_USER_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.expires_at > $2"
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(SessionUser::from_row).transpose()
    }

    pub async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Messages due for delivery, leased to this caller for `lease_seconds` so another
    /// replica does not send them at the same time.
    pub async fn lease_due_messages(
        &self,
        now: i64,
        lease_seconds: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMessage>> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx.tx)
        .await?;
        let messages: Vec<OutboxMessage> = rows
            .iter()
            .map(OutboxMessage::from_row)
            .collect::<StoreResult<_>>()?;
        let mut leased = Vec::with_capacity(messages.len());
        for message in messages {
            // Only the replica whose update matches the row it read wins the lease.
            let done = sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3 AND sent_at IS NULL",
            )
            .bind(now + lease_seconds)
            .bind(message.id)
            .bind(message.next_attempt_at)
            .execute(&mut *tx.tx)
            .await?;
            if done.rows_affected() == 1 {
                leased.push(message);
            }
        }
        tx.commit().await?;
        Ok(leased)
    }

    pub async fn mark_message_sent(&self, id: i64, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn mark_message_failed(
        &self,
        id: i64,
        retry_at: i64,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3")
            .bind(retry_at)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A transaction: every write of one operation goes through one of these so nothing is
/// half-written when a step fails (dropping it rolls back).
pub struct Tx {
    tx: Transaction<'static, Any>,
}

impl Tx {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub async fn insert_project(&mut self, project: &NewProject) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO projects (id, name, app_token, admin_token_hash, anonymous_login, recovery, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(&project.app_token)
        .bind(project.admin_token_hash.as_slice())
        .bind(project.anonymous_login as i64)
        .bind(project.recovery as i64)
        .bind(project.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn user_by_name(
        &mut self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE project_id = $1 AND name = $2"
        ))
        .bind(project_id)
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(UserRecord::from_row).transpose()
    }

    /// Inserts a user; `None` when the name is already taken in the project (also when a
    /// concurrent registration won the race, without aborting this transaction).
    pub async fn insert_user(&mut self, user: &NewUser) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!(
            "INSERT INTO users (uid, project_id, name, root, created_at, verified_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id, name) DO NOTHING
             RETURNING {USER_COLUMNS}"
        ))
        .bind(&user.uid)
        .bind(&user.project_id)
        .bind(user.name.as_deref())
        .bind(user.root as i64)
        .bind(user.created_at)
        .bind(user.verified_at)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(UserRecord::from_row).transpose()
    }

    pub async fn mark_user_verified(&mut self, user_id: i64, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE users SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn user_by_id(&mut self, user_id: i64) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(user_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(UserRecord::from_row).transpose()
    }

    /// How many messages were queued for this recipient since `since`.
    pub async fn count_messages_since(&mut self, recipient: &str, since: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE recipient = $1 AND created_at >= $2",
        )
        .bind(recipient)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn insert_login_request(&mut self, request: &NewLoginRequest) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO login_requests
               (token_hash, project_id, user_id, name, code_hmac, attempts_left, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(request.token_hash.as_slice())
        .bind(&request.project_id)
        .bind(request.user_id)
        .bind(&request.name)
        .bind(request.code_hmac.as_slice())
        .bind(request.attempts_left)
        .bind(request.expires_at)
        .bind(request.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn login_request(
        &mut self,
        token_hash: &[u8],
    ) -> StoreResult<Option<LoginRequestRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {LOGIN_REQUEST_COLUMNS} FROM login_requests WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(LoginRequestRecord::from_row).transpose()
    }

    /// Spends one attempt of a live login request, atomically, before the code is judged:
    /// concurrent guesses (even on other replicas) can never exceed the budget. `None`
    /// when the request is unknown, used, expired or out of attempts.
    pub async fn spend_login_attempt(
        &mut self,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<LoginRequestRecord>> {
        let row = sqlx::query(&format!(
            "UPDATE login_requests SET attempts_left = attempts_left - 1, attempted = 1
             WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2 AND attempts_left > 0
             RETURNING {LOGIN_REQUEST_COLUMNS}"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(LoginRequestRecord::from_row).transpose()
    }

    /// Marks a login request used; false if something else used it first.
    pub async fn consume_login_request(&mut self, id: i64, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_requests SET consumed_at = $1 WHERE id = $2 AND consumed_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the code of a never-attempted, live request; false when that no longer holds.
    pub async fn replace_login_code(
        &mut self,
        id: i64,
        code_hmac: &[u8],
        expires_at: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE login_requests SET code_hmac = $1, expires_at = $2
             WHERE id = $3 AND attempted = 0 AND consumed_at IS NULL AND expires_at > $4",
        )
        .bind(code_hmac)
        .bind(expires_at)
        .bind(id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn insert_session(&mut self, session: &NewSession) -> StoreResult<()> {
        sqlx::query("INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&session.id)
            .bind(session.token_hash.as_slice())
            .bind(session.user_id)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub async fn enqueue_message(&mut self, message: &NewMessage) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO outbox (channel, recipient, subject, body, sender, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(message.channel.as_str())
        .bind(&message.recipient)
        .bind(&message.subject)
        .bind(&message.body)
        .bind(message.sender.as_deref())
        .bind(message.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

fn flag(row: &AnyRow, column: &str) -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}
