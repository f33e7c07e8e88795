//! Storage: the only module that speaks SQL. One code path serves SQLite and PostgreSQL
//! through sqlx's `Any` driver; the backend is chosen once, from the URL scheme, in
//! [`Store::connect`]. Queries use `$n` placeholders, which both backends accept, and
//! portable column types (integers for times and flags, text, bytes).

mod events;
mod executor;
mod keys;
mod limits;
mod logins;
mod migrations;
mod outbox;
mod passwords;
mod project_cache;
mod projects;
mod records;
mod recovery;
mod revocations;
mod rows;
mod sealing;
mod session_cache;
mod sessions;
mod sqlite_log;
mod sqlite_memory;
mod sqlite_writer;
mod users;

use secrecy::SecretString;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Connection, Executor, Row};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use executor::{TxConnection, Writer};
use project_cache::ProjectCache;
use session_cache::SessionCache;

use crate::domain::{MasterKey, SealError};

pub use outbox::{LocalOutbox, SealedMessage};
pub use passwords::{AttemptCount, PasswordResetRecord, PasswordUserRecord};
pub use records::*;
pub use sealing::KeyAdoption;

use rows::Record;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connection refused, pool timed out, ...).
    #[error("the database is unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The disk (or the database's quota) is full: nothing can be written until space is
    /// freed.
    #[error("the database's storage is full: {0}")]
    StorageFull(#[source] sqlx::Error),
    /// A unique constraint refused the write.
    #[error("a record with the same key already exists")]
    Conflict,
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A sealed value does not open: the wrong master key, or the value was altered.
    #[error("{0}")]
    Sealed(#[from] SealError),
    #[error("no master key was given to the store")]
    NoMasterKey,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        if is_storage_full(&error) {
            return StoreError::StorageFull(error);
        }
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

/// SQLite's SQLITE_FULL (any extended code whose primary code is 13), PostgreSQL's
/// disk_full (53100), or ENOSPC from the operating system.
fn is_storage_full(error: &sqlx::Error) -> bool {
    const ENOSPC: i32 = 28;
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "53100" || (code.len() < 5 && code.parse::<i32>().is_ok_and(|c| c & 0xff == 13))
        }),
        sqlx::Error::Io(io) => io.raw_os_error() == Some(ENOSPC),
        _ => false,
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

/// How long the database may take, so a silent network partition ends in errors the
/// service recovers from instead of calls that hang and hold locks forever; and how many
/// connections to keep.
#[derive(Clone, Debug)]
pub struct DatabaseOptions {
    /// Connections in the pool; `None`: 8 on SQLite (for reads, beside the one writer
    /// connection), 16 on PostgreSQL.
    pub pool_size: Option<u32>,
    /// PostgreSQL cancels a statement running longer (`statement_timeout`).
    pub statement: Duration,
    /// PostgreSQL ends a transaction whose client went quiet, freeing its locks
    /// (`idle_in_transaction_session_timeout`).
    pub idle_in_transaction: Duration,
    /// Waiting for a pooled connection, connecting included.
    pub acquire: Duration,
}

impl Default for DatabaseOptions {
    fn default() -> DatabaseOptions {
        DatabaseOptions {
            pool_size: None,
            statement: Duration::from_secs(10),
            idle_in_transaction: Duration::from_secs(15),
            acquire: Duration::from_secs(3),
        }
    }
}

/// How long returning a connection to the pool may take: a connection that does not
/// answer a ping by then is on a dead link, and is dropped instead of pooled.
const RELEASE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads outside transactions.
    pool: AnyPool,
    /// Transactions and other writes: on SQLite one native connection, so writers queue
    /// in the process; on PostgreSQL the same pool as reads.
    writer: Writer,
    backend: Backend,
    sessions: Arc<SessionCache>,
    projects: Arc<ProjectCache>,
    /// Seals secrets at rest; set once the key is checked against the database.
    master: Option<Arc<MasterKey>>,
    /// Messages handed to this process's delivery worker in memory.
    local_outbox: Arc<LocalOutbox>,
    /// For the revocation listener's own connection.
    url: Arc<SecretString>,
}

impl Store {
    /// Connects lazily (so the service starts, and reports NOT_SERVING, while the database
    /// is down). A SQLite file is created if missing and put in WAL mode.
    pub fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, &DatabaseOptions::default())
    }

    /// [`Store::connect`] with the given timeouts.
    pub fn connect_with(url: &str, timeouts: &DatabaseOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("unsupported database URL {url:?}: use sqlite://FILE or postgres://...")
                    .into(),
            ))
        })?;
        let url = match backend {
            Backend::Sqlite if url.contains("mode=") => url.to_owned(),
            Backend::Sqlite if url.contains('?') => format!("{url}&mode=rwc"),
            Backend::Sqlite => format!("{url}?mode=rwc"),
            Backend::Postgres => url.to_owned(),
        };
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                // Here as well as in the writer's `open`: sqlx opens the readers lazily, and
                // a read may come before the first write.
                sqlite_memory::use_mimalloc();
                // SQLite has one writer. Writers queue here, in FIFO order and woken at
                // once, rather than in SQLite's busy handler, which sleeps (1, 2, 5 ...
                // 100 ms) between tries: under load most of a write's time went there.
                let readers = pool_options(backend, timeouts.pool_size.unwrap_or(8), timeouts);
                let file = sqlite_file(&url)?;
                let writer = sqlite_writer::Writer::new(&file, timeouts.acquire)?;
                (
                    readers.connect_lazy(&url)?,
                    Writer::Sqlite(Arc::new(writer)),
                )
            }
            Backend::Postgres => {
                let pool = pool_options(backend, timeouts.pool_size.unwrap_or(16), timeouts)
                    .connect_lazy(&url)?;
                (pool.clone(), Writer::Pool(pool))
            }
        };
        Ok(Store {
            pool,
            writer,
            backend,
            sessions: Arc::new(SessionCache::new(Duration::ZERO, 0)),
            projects: Arc::default(),
            local_outbox: Arc::default(),
            master: None,
            url: Arc::new(SecretString::from(url)),
        })
    }

    /// Turns on the hot-path session cache: entries live at most `ttl`.
    pub fn with_session_cache(mut self, ttl: Duration) -> Store {
        self.sessions = Arc::new(SessionCache::new(ttl, 100_000));
        self
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> StoreResult<()> {
        // On PostgreSQL the pool is the writer's; on SQLite the migrations run before
        // anything else writes.
        migrations::migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// The migrations applied to this database, oldest first: (version, description).
    pub async fn applied_migrations(&self) -> StoreResult<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("version")?, row.try_get("description")?)))
            .collect()
    }

    /// (connections open, connections idle) in the pool.
    pub fn pool_load(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// A consistent copy of a SQLite database in a new file, taken while serving
    /// (`VACUUM INTO`). PostgreSQL has its own tools (`pg_dump`).
    pub async fn backup_to(&self, path: &std::path::Path) -> StoreResult<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "backup copies SQLite databases; for PostgreSQL use pg_dump".into(),
            )));
        }
        sqlx::query("VACUUM INTO $1")
            .bind(path.display().to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A small write, for health checks: a database that answers reads but cannot write
    /// (full disk, read-only) cannot serve logins either.
    pub async fn probe_write(&self, now: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE health_checks SET checked_at = $1 WHERE id = 1")
            .bind(now)
            .execute(&mut tx.tx)
            .await?;
        tx.commit().await
    }

    pub async fn close(&self) {
        self.pool.close().await;
        match &self.writer {
            Writer::Pool(pool) => pool.close().await,
            Writer::Sqlite(writer) => writer.close(),
        }
    }

    /// Starts a transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`) so
    /// read-then-write transactions queue instead of failing with "database is locked".
    ///
    /// Through sqlx, BEGIN runs in a task of its own: a caller dropped while it is in
    /// flight (a client that gave up) would otherwise leave the connection inside a
    /// transaction no one can end (sqlx #3932, #4385). The task always finishes, and a
    /// transaction it hands to no one is dropped, which rolls it back.
    pub async fn begin(&self) -> StoreResult<Tx> {
        // One span per transaction, child of the request's, for as long as it lives.
        let span = tracing::info_span!(
            "db.transaction",
            db.system = match self.backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgresql",
            }
        );
        let started = std::time::Instant::now();
        let tx = match &self.writer {
            Writer::Pool(pool) => {
                let pool = pool.clone();
                TxConnection::Sqlx(run_to_completion(async move { pool.begin().await }).await??)
            }
            // Cancellable as it is: nothing of it is in flight between polls.
            Writer::Sqlite(writer) => TxConnection::Sqlite(writer.begin().await?),
        };
        crate::metrics::transaction_began(started.elapsed());
        Ok(Tx {
            tx,
            _span: span,
            sessions: self.sessions.clone(),
            revoked: Revoked::Nobody,
            projects: self.projects.clone(),
            projects_changed: false,
            local_outbox: self.local_outbox.clone(),
            on_commit: Vec::new(),
            backend: self.backend,
            master: self.master.clone(),
        })
    }
}

/// The file of a SQLite URL. An in-memory (or unnamed) database is refused: each
/// connection would have a database of its own.
pub fn sqlite_file(url: &str) -> StoreResult<std::path::PathBuf> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let file = options.get_filename();
    let name = file.as_os_str().to_string_lossy();
    if url.contains("mode=memory") || name.contains(":memory:") || name.is_empty() {
        return Err(StoreError::Database(sqlx::Error::Configuration(
            "an in-memory or unnamed SQLite database cannot be shared by the service's \
             connections: use a file"
                .into(),
        )));
    }
    Ok(file.to_owned())
}

/// The pool settings of one backend: timeouts, renewal, the session settings each new
/// connection gets, and the check each returned connection passes.
fn pool_options(backend: Backend, size: u32, timeouts: &DatabaseOptions) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(timeouts.acquire)
        .idle_timeout(Duration::from_secs(300))
        // Connections are renewed now and then, so none outlives a changed route.
        .max_lifetime(Duration::from_secs(1800));
    match backend {
        // A local file has no link to go dead: no ping (a round trip to the connection's
        // worker thread) before each use.
        Backend::Sqlite => options
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; NORMAL sync is durable
                    // across application crashes, which is what WAL needs.
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 5000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            // A connection that comes back still inside a transaction was abandoned
            // mid-way (a failed ROLLBACK, or a cancelled BEGIN): closing it is the one sure
            // way to end that transaction and free the write lock. SQLite's worker runs
            // commands in order, so a rollback it has queued runs before the next user's.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) })),
        Backend::Postgres => {
            let statement = timeouts.statement.as_millis() as i64;
            let idle = timeouts.idle_in_transaction.as_millis() as i64;
            options
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        // The server's side of a partition: it cancels what runs too long,
                        // ends transactions whose client went quiet (freeing their locks)
                        // and probes idle clients, dropping the dead ones.
                        for setting in [
                            format!("SET statement_timeout = {statement}"),
                            format!("SET idle_in_transaction_session_timeout = {idle}"),
                            "SET tcp_keepalives_idle = 10".to_owned(),
                            "SET tcp_keepalives_interval = 5".to_owned(),
                            "SET tcp_keepalives_count = 3".to_owned(),
                        ] {
                            sqlx::query(&setting).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                })
                .after_release(|conn, _| {
                    Box::pin(async move {
                        // Also finds a link that went silent: such a connection would
                        // otherwise hang whoever gets it next. An abandoned transaction
                        // (see above) is closed with its connection.
                        let alive = matches!(
                            tokio::time::timeout(RELEASE_PING_TIMEOUT, conn.ping()).await,
                            Ok(Ok(()))
                        );
                        Ok(alive && !conn.is_in_transaction())
                    })
                })
        }
    }
}

/// A transaction: every write of one operation goes through one of these so nothing is
/// half-written when a step fails (dropping it rolls back).
pub struct Tx {
    tx: TxConnection,
    /// Ends (for traces) when the transaction does.
    _span: tracing::Span,
    sessions: Arc<SessionCache>,
    /// Whose cached sessions writes of this transaction end or change.
    revoked: Revoked,
    projects: Arc<ProjectCache>,
    /// A project was written: cached projects go when the transaction commits.
    projects_changed: bool,
    local_outbox: Arc<LocalOutbox>,
    /// What happens once (and only if) the transaction is committed.
    on_commit: Vec<Box<dyn FnOnce() + Send>>,
    backend: Backend,
    master: Option<Arc<MasterKey>>,
}

impl Tx {
    /// Commits; the session cache forgets what the transaction ended only once it is
    /// committed. Through sqlx the commit runs in a task of its own, so a caller that goes
    /// away mid-commit cannot leave the cache disagreeing with what was committed; SQLite's
    /// writer runs the cache's update itself, with the COMMIT of the batch.
    pub async fn commit(self) -> StoreResult<()> {
        let Tx {
            tx,
            sessions,
            revoked,
            projects,
            projects_changed,
            on_commit,
            ..
        } = self;
        // For the other replicas (PostgreSQL): sent when (and only if) this commits.
        let notices: Vec<String> = match tx {
            TxConnection::Sqlx(_) => [
                (revoked != Revoked::Nobody).then(|| revocations::payload(&revoked)),
                projects_changed.then(|| revocations::PROJECTS_CHANGED.to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect(),
            TxConnection::Sqlite(_) => Vec::new(),
        };
        let committed = move || {
            forget_sessions(&sessions, &revoked);
            if projects_changed {
                projects.clear();
            }
            on_commit.into_iter().for_each(|then| then());
        };
        match tx {
            TxConnection::Sqlite(tx) => {
                tx.commit(Box::new(committed)).await?;
                Ok(())
            }
            TxConnection::Sqlx(mut tx) => {
                run_to_completion(async move {
                    for notice in notices {
                        sqlx::query("SELECT pg_notify($1, $2)")
                            .bind(revocations::CHANNEL)
                            .bind(notice)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    committed();
                    Ok(())
                })
                .await?
            }
        }
    }

    /// This user's cached sessions go when the transaction commits.
    fn revoke_user(&mut self, user_id: i64) {
        match &mut self.revoked {
            Revoked::Nobody => self.revoked = Revoked::Users(vec![user_id]),
            Revoked::Users(users) if !users.contains(&user_id) => users.push(user_id),
            Revoked::Users(_) => {}
            Revoked::Everyone => {}
        }
    }

    /// Every cached session goes when the transaction commits.
    fn revoke_everyone(&mut self) {
        self.revoked = Revoked::Everyone;
    }
}

fn forget_sessions(sessions: &SessionCache, revoked: &Revoked) {
    match revoked {
        Revoked::Nobody => {}
        Revoked::Users(users) => sessions.revoke_users(users),
        Revoked::Everyone => sessions.clear(),
    }
}

/// Whose cached sessions a transaction ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Revoked {
    Nobody,
    Users(Vec<i64>),
    Everyone,
}

/// Runs `work` on its own task and waits for it: dropping the waiter does not stop it.
async fn run_to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::spawn(work).await {
        Ok(value) => Ok(value),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Only when the runtime itself is shutting down.
        Err(_) => Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)),
    }
}
