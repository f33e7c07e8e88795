//! SQLite's one writer connection, driven through SQLite's C API in the caller's own
//! thread.
//!
//! Through sqlx, every statement on SQLite is a hand-off to the connection's worker
//! thread and back: 45-60 µs on a busy 2-core machine whatever the statement, while the
//! write lock is held. A code-login start is seven statements, so writes queued behind
//! thread wake-ups, not work. Here a statement runs where it is called (a few µs,
//! prepared once and cached), so the write lock is held only for the work itself.
//!
//! Statements still come from sqlx's query builders: [`Transaction::run`] takes the SQL
//! and the bound arguments of any `sqlx::query*` and returns sqlx's own `AnyRow`s, so the
//! SQL and row decoding of the store are written once for both backends.
//!
//! What this connection must not do in the caller's thread is wait: on another process's
//! write lock it does not sleep in SQLite's busy handler but returns, and [`Writer::begin`]
//! retries asynchronously; WAL checkpoints (which write the database file and sync it) run
//! on a thread of their own, woken by the WAL hook once the log holds
//! [`CHECKPOINT_PAGES`].

use libsqlite3_sys as ffi;
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The log size (in pages, 4 KiB each) at which the checkpointer is woken; SQLite's own
/// automatic checkpoint uses the same figure.
const CHECKPOINT_PAGES: c_int = 1000;

/// Prepared statements kept per connection; past this the cache starts over (the store's
/// SQL is a fixed set, but some statements carry one placeholder per value).
const STATEMENT_CACHE: usize = 256;

/// The writer: one connection, opened on first use and again after it broke, taken by
/// one transaction at a time in FIFO order.
#[derive(Debug)]
pub(super) struct Writer {
    path: CString,
    connection: Arc<tokio::sync::Mutex<Option<Connection>>>,
    /// How long a transaction may wait for the connection, and then for another process
    /// that holds SQLite's write lock.
    acquire_timeout: Duration,
    closed: AtomicBool,
}

impl Writer {
    /// Nothing is opened yet: the service starts while the file cannot be opened, and
    /// says so in its health checks.
    pub fn new(path: &std::path::Path, acquire_timeout: Duration) -> Result<Writer, sqlx::Error> {
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| sqlx::Error::Configuration("the database path holds a NUL".into()))?;
        Ok(Writer {
            path,
            connection: Arc::new(tokio::sync::Mutex::new(None)),
            acquire_timeout,
            closed: AtomicBool::new(false),
        })
    }

    /// Takes the connection and SQLite's write lock (`BEGIN IMMEDIATE`). Dropping the
    /// future while it waits leaves nothing behind: no statement is in flight between
    /// polls.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        let started = Instant::now();
        let mut guard =
            tokio::time::timeout(self.acquire_timeout, self.connection.clone().lock_owned())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let mut pause = Duration::from_millis(1);
        loop {
            if self.closed.load(Ordering::Acquire) {
                *guard = None;
                return Err(sqlx::Error::PoolClosed);
            }
            let attempt = match guard.as_mut() {
                // Left inside a transaction (never, if `Transaction`'s drop did its job):
                // start over on a new connection rather than fail every write.
                Some(connection) if !connection.autocommit() => {
                    *guard = None;
                    continue;
                }
                Some(connection) => connection.execute_batch("BEGIN IMMEDIATE"),
                None => Connection::open(&self.path).map(|connection| {
                    *guard = Some(connection);
                }),
            };
            match attempt {
                Ok(()) if guard.as_ref().is_some_and(|c| !c.autocommit()) => {
                    return Ok(Transaction { connection: guard });
                }
                // Just opened: begin on the next turn.
                Ok(()) => continue,
                Err(error) if error.is_busy() && started.elapsed() < self.acquire_timeout => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(error) if error.is_busy() => return Err(sqlx::Error::PoolTimedOut),
                Err(error) => {
                    if error.breaks_connection() {
                        *guard = None;
                    }
                    return Err(error.into());
                }
            }
        }
    }

    /// Refuses new transactions and closes the connection once it is free.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut guard) = self.connection.try_lock() {
            *guard = None;
        }
    }
}

/// A write transaction on the writer connection; dropping it rolls back.
pub(super) struct Transaction {
    connection: tokio::sync::OwnedMutexGuard<Option<Connection>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sqlite_writer::Transaction")
    }
}

impl Transaction {
    fn connection(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a transaction holds an open connection")
    }

    /// Runs one statement with its arguments: the rows it returns, then what it changed,
    /// in the order sqlx's `fetch_many` yields them.
    pub fn run(
        &mut self,
        sql: &str,
        arguments: Option<AnyArguments<'_>>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let connection = self.connection();
        let outcome = connection.run(sql, arguments.as_ref());
        if let Err(error) = &outcome {
            if error.breaks_connection() {
                connection.broken = true;
            }
        }
        outcome.map_err(Into::into)
    }

    pub fn commit(mut self) -> Result<(), sqlx::Error> {
        let connection = self.connection();
        connection.execute_batch("COMMIT").map_err(|error| {
            if error.breaks_connection() {
                connection.broken = true;
            }
            error.into()
        })
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        // Committed, or rolled back by SQLite itself after an error, is already over.
        let ended = connection.autocommit() || connection.execute_batch("ROLLBACK").is_ok();
        if !ended || connection.broken {
            // Closing is the one sure way to end the transaction and free the lock.
            *self.connection = None;
        }
    }
}

/// A native connection and its prepared statements. Used by one thread at a time (the
/// writer's mutex), so SQLite's own mutexes are off.
struct Connection {
    db: *mut ffi::sqlite3,
    statements: HashMap<String, Statement>,
    /// Set after an error that leaves the connection unusable (I/O, corruption).
    broken: bool,
    /// The WAL hook's end of the checkpointer's channel; freed after the connection.
    wal_hook: *mut mpsc::SyncSender<()>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_NOMUTEX, which allows using it from
// any thread as long as one thread at a time does; the writer's mutex ensures that.
unsafe impl Send for Connection {}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("statements", &self.statements.len())
            .finish()
    }
}

impl Connection {
    fn open(path: &CStr) -> Result<Connection, SqliteError> {
        let db = open(path)?;
        let (wake, woken) = mpsc::sync_channel(1);
        let mut connection = Connection {
            db,
            statements: HashMap::new(),
            broken: false,
            wal_hook: Box::into_raw(Box::new(wake)),
        };
        // WAL lets readers run beside the writer; NORMAL sync is durable across
        // application crashes, which is what WAL needs. No busy handler: see the module.
        connection.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )?;
        // Replaces SQLite's automatic checkpoint, which would run in the committing
        // caller's thread.
        unsafe {
            ffi::sqlite3_wal_hook(db, Some(wake_checkpointer), connection.wal_hook.cast());
        }
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_when_woken(&path, &woken))
            .map_err(|error| SqliteError::new(ffi::SQLITE_ERROR, error.to_string()))?;
        Ok(connection)
    }

    fn autocommit(&self) -> bool {
        unsafe { ffi::sqlite3_get_autocommit(self.db) != 0 }
    }

    /// Runs statements without arguments or results (BEGIN, COMMIT, pragmas).
    fn execute_batch(&mut self, sql: &str) -> Result<(), SqliteError> {
        let sql = CString::new(sql).expect("fixed SQL holds no NUL");
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        self.check(rc)
    }

    fn run(
        &mut self,
        sql: &str,
        arguments: Option<&AnyArguments<'_>>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), SqliteError> {
        if !self.statements.contains_key(sql) {
            if self.statements.len() >= STATEMENT_CACHE {
                self.statements.clear();
            }
            let statement = Statement::prepare(self.db, sql)?;
            self.statements.insert(sql.to_owned(), statement);
        }
        let db = self.db;
        let statement = &self.statements[sql];
        let values = arguments.map_or(&[][..], |arguments| &arguments.values.0[..]);
        let outcome = statement
            .bind(db, values)
            .and_then(|()| statement.step_all(db));
        unsafe {
            ffi::sqlite3_reset(statement.handle);
            ffi::sqlite3_clear_bindings(statement.handle);
        }
        outcome
    }

    fn check(&self, rc: c_int) -> Result<(), SqliteError> {
        match rc {
            ffi::SQLITE_OK => Ok(()),
            _ => Err(SqliteError::last(self.db)),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.statements.clear();
        unsafe {
            ffi::sqlite3_close(self.db);
            // The checkpointer's thread ends with this, its channel's last sender.
            drop(Box::from_raw(self.wal_hook));
        }
    }
}

fn open(path: &CStr) -> Result<*mut ffi::sqlite3, SqliteError> {
    let mut db = std::ptr::null_mut();
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE | ffi::SQLITE_OPEN_NOMUTEX;
    let rc = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, std::ptr::null()) };
    if rc != ffi::SQLITE_OK {
        let error = if db.is_null() {
            SqliteError::new(rc, "cannot open the database file".into())
        } else {
            SqliteError::last(db)
        };
        unsafe { ffi::sqlite3_close(db) };
        return Err(error);
    }
    unsafe { ffi::sqlite3_extended_result_codes(db, 1) };
    Ok(db)
}

/// Called by SQLite after each commit with the log's size in pages.
unsafe extern "C" fn wake_checkpointer(
    wake: *mut c_void,
    _db: *mut ffi::sqlite3,
    _schema: *const c_char,
    pages: c_int,
) -> c_int {
    if pages >= CHECKPOINT_PAGES {
        // SAFETY: the connection owns the sender and frees it only after closing.
        let wake = unsafe { &*(wake as *const mpsc::SyncSender<()>) };
        // Full: a checkpoint is already due.
        let _ = wake.try_send(());
    }
    ffi::SQLITE_OK
}

/// The checkpointer: its own connection, copying the log into the database file while
/// writers go on (PASSIVE never blocks them).
fn checkpoint_when_woken(path: &CStr, woken: &mpsc::Receiver<()>) {
    let mut db = None;
    while woken.recv().is_ok() {
        if db.is_none() {
            match open(path) {
                Ok(opened) => {
                    unsafe { ffi::sqlite3_busy_timeout(opened, 1000) };
                    db = Some(opened);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot open the database to checkpoint its log");
                    continue;
                }
            }
        }
        let Some(handle) = db else { continue };
        let rc = unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                handle,
                std::ptr::null(),
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK && rc & 0xff != ffi::SQLITE_BUSY {
            let error = SqliteError::last(handle);
            tracing::warn!(%error, "checkpointing the database's log failed");
        }
    }
    if let Some(handle) = db {
        unsafe { ffi::sqlite3_close(handle) };
    }
}

/// A prepared statement, with where each of its parameters takes its value from.
struct Statement {
    handle: *mut ffi::sqlite3_stmt,
    /// For each parameter (SQLite numbers them from 1), the index of its argument:
    /// `$n` and `?n` take the n-th, plain `?` the next.
    arguments: Vec<usize>,
    column_names: Arc<sqlx_core::HashMap<UStr, usize>>,
    columns: Vec<AnyColumn>,
}

impl Statement {
    fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<Statement, SqliteError> {
        let mut handle = std::ptr::null_mut();
        let mut tail = std::ptr::null();
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr().cast(),
                c_int::try_from(sql.len()).unwrap_or(c_int::MAX),
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut handle,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(SqliteError::last(db));
        }
        let mut statement = Statement {
            handle,
            arguments: Vec::new(),
            column_names: Arc::default(),
            columns: Vec::new(),
        };
        if handle.is_null() {
            return Err(SqliteError::new(ffi::SQLITE_MISUSE, "no statement".into()));
        }
        let consumed = tail as usize - sql.as_ptr() as usize;
        if !sql[consumed..].trim().trim_matches(';').trim().is_empty() {
            return Err(SqliteError::new(
                ffi::SQLITE_MISUSE,
                "one statement at a time on the writer connection".into(),
            ));
        }
        let count = unsafe { ffi::sqlite3_bind_parameter_count(handle) };
        for parameter in 1..=count {
            let name = unsafe { ffi::sqlite3_bind_parameter_name(handle, parameter) };
            let index = if name.is_null() {
                parameter as usize - 1
            } else {
                let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                name.strip_prefix(['$', '?'])
                    .and_then(|number| number.parse::<usize>().ok())
                    .filter(|number| *number > 0)
                    .map(|number| number - 1)
                    .ok_or_else(|| {
                        SqliteError::new(
                            ffi::SQLITE_MISUSE,
                            format!("parameter {name} is not numbered"),
                        )
                    })?
            };
            statement.arguments.push(index);
        }
        let mut names = sqlx_core::HashMap::new();
        for ordinal in 0..unsafe { ffi::sqlite3_column_count(handle) } {
            let name = unsafe { CStr::from_ptr(ffi::sqlite3_column_name(handle, ordinal)) };
            let name = UStr::new(&name.to_string_lossy());
            names.insert(name.clone(), ordinal as usize);
            statement.columns.push(AnyColumn {
                ordinal: ordinal as usize,
                name,
                type_info: AnyTypeInfo {
                    kind: AnyTypeInfoKind::Null,
                },
            });
        }
        statement.column_names = Arc::new(names);
        Ok(statement)
    }

    fn bind(&self, db: *mut ffi::sqlite3, values: &[AnyValueKind<'_>]) -> Result<(), SqliteError> {
        for (parameter, &index) in (1..).zip(&self.arguments) {
            let value = values.get(index).ok_or_else(|| {
                SqliteError::new(
                    ffi::SQLITE_RANGE,
                    format!("no argument for parameter {parameter}"),
                )
            })?;
            let rc = unsafe {
                match value {
                    AnyValueKind::Null(_) => ffi::sqlite3_bind_null(self.handle, parameter),
                    AnyValueKind::Bool(flag) => {
                        ffi::sqlite3_bind_int64(self.handle, parameter, i64::from(*flag))
                    }
                    AnyValueKind::SmallInt(n) => {
                        ffi::sqlite3_bind_int64(self.handle, parameter, i64::from(*n))
                    }
                    AnyValueKind::Integer(n) => {
                        ffi::sqlite3_bind_int64(self.handle, parameter, i64::from(*n))
                    }
                    AnyValueKind::BigInt(n) => ffi::sqlite3_bind_int64(self.handle, parameter, *n),
                    AnyValueKind::Real(x) => {
                        ffi::sqlite3_bind_double(self.handle, parameter, f64::from(*x))
                    }
                    AnyValueKind::Double(x) => ffi::sqlite3_bind_double(self.handle, parameter, *x),
                    AnyValueKind::Text(text) => ffi::sqlite3_bind_text(
                        self.handle,
                        parameter,
                        text.as_ptr().cast(),
                        length(text.len())?,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    // A zero-length slice's pointer is dangling but not null, so an empty
                    // blob stays an empty blob (a null pointer would bind NULL).
                    AnyValueKind::Blob(bytes) => ffi::sqlite3_bind_blob(
                        self.handle,
                        parameter,
                        bytes.as_ptr().cast(),
                        length(bytes.len())?,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    _ => {
                        return Err(SqliteError::new(
                            ffi::SQLITE_MISMATCH,
                            format!("argument {} has an unsupported type", index + 1),
                        ));
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(SqliteError::last(db));
            }
        }
        Ok(())
    }

    fn step_all(
        &self,
        db: *mut ffi::sqlite3,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), SqliteError> {
        let mut rows = Vec::new();
        loop {
            match unsafe { ffi::sqlite3_step(self.handle) } {
                ffi::SQLITE_ROW => rows.push(self.row()?),
                ffi::SQLITE_DONE => break,
                _ => return Err(SqliteError::last(db)),
            }
        }
        let done = AnyQueryResult {
            rows_affected: unsafe { ffi::sqlite3_changes64(db) } as u64,
            last_insert_id: Some(unsafe { ffi::sqlite3_last_insert_rowid(db) }),
        };
        Ok((rows, done))
    }

    fn row(&self) -> Result<AnyRow, SqliteError> {
        let mut values = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let i = column.ordinal as c_int;
            let kind = unsafe {
                match ffi::sqlite3_column_type(self.handle, i) {
                    ffi::SQLITE_INTEGER => {
                        AnyValueKind::BigInt(ffi::sqlite3_column_int64(self.handle, i))
                    }
                    ffi::SQLITE_FLOAT => {
                        AnyValueKind::Double(ffi::sqlite3_column_double(self.handle, i))
                    }
                    ffi::SQLITE_TEXT => {
                        let bytes = column_bytes(
                            ffi::sqlite3_column_text(self.handle, i),
                            ffi::sqlite3_column_bytes(self.handle, i),
                        );
                        let text = String::from_utf8(bytes).map_err(|_| {
                            SqliteError::new(
                                ffi::SQLITE_MISMATCH,
                                format!("column {} holds text that is not UTF-8", column.name),
                            )
                        })?;
                        AnyValueKind::Text(Cow::Owned(text))
                    }
                    ffi::SQLITE_BLOB => AnyValueKind::Blob(Cow::Owned(column_bytes(
                        ffi::sqlite3_column_blob(self.handle, i).cast(),
                        ffi::sqlite3_column_bytes(self.handle, i),
                    ))),
                    _ => AnyValueKind::Null(AnyTypeInfoKind::Null),
                }
            };
            values.push(AnyValue { kind });
        }
        Ok(AnyRow {
            column_names: self.column_names.clone(),
            columns: self.columns.clone(),
            values,
        })
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        unsafe { ffi::sqlite3_finalize(self.handle) };
    }
}

/// Copies `len` bytes SQLite returned for a column (a null pointer means none).
unsafe fn column_bytes(data: *const u8, len: c_int) -> Vec<u8> {
    if data.is_null() || len <= 0 {
        return Vec::new();
    }
    unsafe { std::slice::from_raw_parts(data, len as usize) }.to_vec()
}

fn length(len: usize) -> Result<c_int, SqliteError> {
    c_int::try_from(len)
        .map_err(|_| SqliteError::new(ffi::SQLITE_TOOBIG, "an argument is too large".into()))
}

/// An error SQLite reported, with its extended result code: the same codes and kinds
/// sqlx's SQLite driver reports, so the store maps both alike.
#[derive(Debug, thiserror::Error)]
#[error("(code: {code}) {message}")]
pub(super) struct SqliteError {
    code: c_int,
    message: String,
}

impl SqliteError {
    fn new(code: c_int, message: String) -> SqliteError {
        SqliteError { code, message }
    }

    fn last(db: *mut ffi::sqlite3) -> SqliteError {
        let (code, message) = unsafe {
            (
                ffi::sqlite3_extended_errcode(db),
                CStr::from_ptr(ffi::sqlite3_errmsg(db))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        SqliteError { code, message }
    }

    fn is_busy(&self) -> bool {
        self.code & 0xff == ffi::SQLITE_BUSY
    }

    /// Errors after which the connection is closed and opened afresh.
    fn breaks_connection(&self) -> bool {
        matches!(
            self.code & 0xff,
            ffi::SQLITE_IOERR | ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB | ffi::SQLITE_CANTOPEN
        )
    }
}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
