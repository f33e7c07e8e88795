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
//! beside it on a thread of their own, and only a short tail between batches, on a
//! blocking thread (see `sqlite_log`).

use libsqlite3_sys as ffi;
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;
use std::borrow::Cow;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::sqlite_log::Log;

/// Prepared statements kept per connection; past this the cache starts over (the store's
/// SQL is a fixed set, but some statements carry one placeholder per value).
const STATEMENT_CACHE: usize = 256;

/// The writer: one connection, opened on first use and again after it broke, taken by
/// one transaction at a time in FIFO order.
///
/// Group commit: a transaction runs inside a savepoint of a longer SQLite transaction,
/// the batch, and its commit releases the savepoint and waits for the batch's COMMIT.
/// Whoever leaves the connection with nobody queued behind it (or with the batch full)
/// commits the batch and tells its members, after giving the tasks ready to run a turn
/// to join it (see [`CommitAfterTurn`]). Under load, many transactions share one
/// COMMIT: its locks, its WAL write, and the pages they have in common. Alone, a
/// transaction commits at once: with nothing else to run, the turn is over. A
/// transaction's work is visible to the ones after it in the batch, which commit with it
/// or not at all; nobody is told "done" before the COMMIT, and readers on other
/// connections see nothing before it either.
#[derive(Debug)]
pub(super) struct Writer {
    path: CString,
    state: Arc<tokio::sync::Mutex<State>>,
    /// Transactions waiting for the connection.
    queued: Arc<AtomicUsize>,
    /// How long a transaction may wait for the connection, and then for another process
    /// that holds SQLite's write lock.
    acquire_timeout: Duration,
    closed: AtomicBool,
    /// The log and its copier.
    log: Arc<Log>,
}

/// Most transactions one COMMIT carries: past this the batch commits even with
/// transactions queued, which bounds how long the first of them waits. 32 rather than
/// 64: under 64 requests in flight a batch of ~45 held nearly every request, all waiting
/// for one COMMIT while the writer idled for the next ones to come back (busy 55 % of the
/// time); two batches of at most 32 take turns, one forming while the other's requests
/// are answered: 15.6-15.9k → 17.0-17.4k code starts a second at the same CPU per start.
const BATCH_LIMIT: usize = 32;

/// How long a transaction waits for its batch's COMMIT before it makes sure someone will
/// commit it (a transaction queued behind it can give up after it left the connection).
const BATCH_PATIENCE: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct State {
    connection: Option<Connection>,
    batch: Option<Batch>,
    /// Numbers batches, so a transaction knows whether its batch is still open.
    batches: u64,
}

/// The SQLite transaction open on the writer connection.
struct Batch {
    number: u64,
    /// Transactions released into it, which wait for its COMMIT.
    members: usize,
    outcome: watch::Sender<Option<Result<(), SqliteError>>>,
    /// What members do once their writes are committed (the session cache's updates).
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("number", &self.number)
            .field("members", &self.members)
            .finish()
    }
}

impl State {
    /// Opens the connection if needed, the batch if none is open, and a savepoint in it.
    fn join_batch(&mut self, path: &CStr, log: &Arc<Log>) -> Result<u64, SqliteError> {
        let connection = match &mut self.connection {
            // Left inside a transaction that is no batch (never, if every path below does
            // its job): start over on a new connection rather than fail every write.
            Some(connection) if self.batch.is_none() && !connection.autocommit() => {
                self.connection.insert(Connection::open(path, log)?)
            }
            Some(connection) => connection,
            None => self.connection.insert(Connection::open(path, log)?),
        };
        if self.batch.is_none() {
            connection.execute("BEGIN IMMEDIATE")?;
            self.batches += 1;
            self.batch = Some(Batch {
                number: self.batches,
                members: 0,
                outcome: watch::Sender::new(None),
                after_commit: Vec::new(),
            });
        }
        match connection.execute("SAVEPOINT member") {
            Ok(()) => Ok(self.batches),
            Err(error) => {
                self.fail_batch(&error);
                Err(error)
            }
        }
    }

    fn is_open(&self, batch: u64) -> bool {
        self.batch.as_ref().is_some_and(|open| open.number == batch)
    }

    /// The open batch's connection, if `batch` is still the open one.
    fn batch_connection(&mut self, batch: u64) -> Result<&mut Connection, SqliteError> {
        let open = self.is_open(batch);
        match &mut self.connection {
            Some(connection) if open => Ok(connection),
            _ => Err(SqliteError::new(
                ffi::SQLITE_ABORT,
                "the transaction was rolled back with its batch".into(),
            )),
        }
    }

    /// Runs `work` on the connection of batch `batch`, if it is still the open one. After
    /// an error that breaks the connection, the connection is closed when left. Some
    /// errors (a full disk, I/O) end SQLite's whole transaction: the batch fails, with this
    /// transaction's part and the parts released into it before. Whatever ended it,
    /// nothing more may run outside it, one statement at a time.
    fn in_batch<T>(
        &mut self,
        batch: u64,
        work: impl FnOnce(&mut Connection) -> Result<T, SqliteError>,
    ) -> Result<T, SqliteError> {
        let connection = self.batch_connection(batch)?;
        let outcome = work(connection);
        if outcome.as_ref().is_err_and(SqliteError::breaks_connection) {
            connection.broken = true;
        }
        if connection.autocommit() {
            let ended = SqliteError::new(
                ffi::SQLITE_ABORT,
                "the statement ended the batch's transaction".into(),
            );
            self.fail_batch(outcome.as_ref().err().unwrap_or(&ended));
        }
        outcome
    }

    /// Leaving the connection: commits the batch unless another transaction is queued to
    /// join it; closes a connection that broke.
    fn settle(&mut self, queued: usize) {
        if self
            .batch
            .as_ref()
            .is_some_and(|batch| queued == 0 || batch.members >= BATCH_LIMIT)
        {
            self.commit_batch();
        }
        if self.connection.as_ref().is_some_and(|c| c.broken) {
            self.close();
        }
    }

    fn commit_batch(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let committed = match &mut self.connection {
            Some(connection) => connection.execute("COMMIT"),
            None => Err(SqliteError::new(ffi::SQLITE_ABORT, "no connection".into())),
        };
        match committed {
            Ok(()) => {
                batch.after_commit.into_iter().for_each(|then| then());
                batch.outcome.send_replace(Some(Ok(())));
            }
            Err(error) => {
                self.batch = Some(batch);
                self.fail_batch(&error);
            }
        }
    }

    /// Rolls the batch back (if SQLite has not already) and tells its members why.
    fn fail_batch(&mut self, error: &SqliteError) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        if let Some(connection) = &mut self.connection {
            if !connection.autocommit() && connection.execute("ROLLBACK").is_err() {
                // Closing is the one sure way to end the transaction and free the lock.
                self.connection = None;
            }
        }
        batch.outcome.send_replace(Some(Err(error.clone())));
    }

    fn close(&mut self) {
        self.fail_batch(&SqliteError::new(
            ffi::SQLITE_ABORT,
            "the writer connection was closed".into(),
        ));
        self.connection = None;
    }
}

/// The connection, held; leaving it settles the batch.
struct Held {
    state: tokio::sync::OwnedMutexGuard<State>,
    queued: Arc<AtomicUsize>,
    /// Leave the batch open, for a [`CommitAfterTurn`] to settle.
    leave_open: bool,
}

impl Held {
    fn new(state: tokio::sync::OwnedMutexGuard<State>, queued: Arc<AtomicUsize>) -> Held {
        Held {
            state,
            queued,
            leave_open: false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.leave_open {
            self.state.settle(self.queued.load(Ordering::SeqCst));
        }
    }
}

/// Settles the batch now if nobody holds the connection (whoever does settles it on
/// leaving): for those who leave the queue, or a batch left open, without holding it.
fn settle_if_free(state: &Arc<tokio::sync::Mutex<State>>, queued: &Arc<AtomicUsize>) {
    if let Ok(state) = state.clone().try_lock_owned() {
        drop(Held::new(state, queued.clone()));
    }
}

/// A batch left open by a transaction that found nobody queued behind it: the other
/// tasks ready to run get a turn (two yields) to join it first. Requests a few
/// microseconds from their first statement would otherwise each pay a COMMIT of their own
/// (its fixed cost and the pages every write shares: the ends of the tables and indexes),
/// while alone, with nothing else to run, the turn is over at once. Dropped (also when
/// the waiting transaction's caller goes away), it settles the batch if the connection is
/// free; whoever holds it settles it on leaving.
struct CommitAfterTurn {
    state: Arc<tokio::sync::Mutex<State>>,
    queued: Arc<AtomicUsize>,
}

impl CommitAfterTurn {
    async fn run(self) {
        // Two: with one, a third of the batches ended while a request was on its way
        // (41 transactions a COMMIT against 49 under 64 connections).
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
}

impl Drop for CommitAfterTurn {
    fn drop(&mut self) {
        settle_if_free(&self.state, &self.queued);
    }
}

/// Counts a transaction waiting for the connection. One that gives up settles the batch
/// if the connection is free: whoever left it may have counted on this one to commit.
struct Queued<'a> {
    writer: &'a Writer,
    served: bool,
}

impl<'a> Queued<'a> {
    fn enter(writer: &'a Writer) -> Queued<'a> {
        writer.queued.fetch_add(1, Ordering::SeqCst);
        Queued {
            writer,
            served: false,
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.writer.queued.fetch_sub(1, Ordering::SeqCst);
        if !self.served {
            settle_if_free(&self.writer.state, &self.writer.queued);
        }
    }
}

impl Writer {
    /// Nothing is opened yet: the service starts while the file cannot be opened, and
    /// says so in its health checks.
    pub fn new(path: &std::path::Path, acquire_timeout: Duration) -> Result<Writer, sqlx::Error> {
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| sqlx::Error::Configuration("the database path holds a NUL".into()))?;
        Ok(Writer {
            log: Log::start(path.clone()),
            path,
            state: Arc::default(),
            queued: Arc::default(),
            acquire_timeout,
            closed: AtomicBool::new(false),
        })
    }

    fn held(&self, state: tokio::sync::OwnedMutexGuard<State>) -> Held {
        Held::new(state, self.queued.clone())
    }

    /// Takes the connection and joins the batch, opening it with `BEGIN IMMEDIATE` (SQLite's
    /// write lock) if none is open. Dropping the future while it waits leaves nothing
    /// behind: no statement is in flight between polls.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        let started = Instant::now();
        let mut queued = Queued::enter(self);
        let state = tokio::time::timeout(self.acquire_timeout, self.state.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        queued.served = true;
        drop(queued);
        let state = copy_log_if_due(state, &self.log).await;
        let mut held = self.held(state);
        let mut pause = Duration::from_millis(1);
        loop {
            if self.closed.load(Ordering::Acquire) {
                held.state.close();
                return Err(sqlx::Error::PoolClosed);
            }
            match held.state.join_batch(&self.path, &self.log) {
                Ok(batch) => {
                    return Ok(Transaction {
                        held: Some(held),
                        batch,
                    });
                }
                Err(error) if error.is_busy() && started.elapsed() < self.acquire_timeout => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(error) if error.is_busy() => return Err(sqlx::Error::PoolTimedOut),
                Err(error) => {
                    if error.breaks_connection() {
                        held.state.close();
                    }
                    return Err(error.into());
                }
            }
        }
    }

    /// Refuses new transactions and closes the connection once it is free.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.log.stop();
        if let Ok(mut state) = self.state.try_lock() {
            state.commit_batch();
            state.close();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.log.stop();
    }
}

/// Between batches, when the log is due to start over, copies what the copier left of it
/// on a blocking thread, the connection held meanwhile (writers queue, readers go on);
/// the next write then starts the log over. The thread owns the guard, so a caller that
/// goes away meanwhile leaves the connection intact.
async fn copy_log_if_due(
    mut state: tokio::sync::OwnedMutexGuard<State>,
    log: &Arc<Log>,
) -> tokio::sync::OwnedMutexGuard<State> {
    if state.batch.is_some() || state.connection.is_none() {
        return state;
    }
    let Some(wait) = log.writer_copy_due() else {
        return state;
    };
    let mutex = tokio::sync::OwnedMutexGuard::mutex(&state).clone();
    let log = log.clone();
    match tokio::task::spawn_blocking(move || {
        // Busy copier, no hurry: the copier says when to try again.
        if let (Some(_copying), Some(connection)) = (log.hold(wait), &mut state.connection) {
            if let Err(error) = connection.checkpoint() {
                tracing::warn!(%error, "copying the database's log failed");
            }
        }
        state
    })
    .await
    {
        Ok(state) => state,
        // The blocking pool is shutting down (the runtime is): take the connection again.
        Err(_) => mutex.lock_owned().await,
    }
}

/// A write transaction: a savepoint in the writer's batch; dropping it rolls back.
pub(super) struct Transaction {
    /// `None` once committed.
    held: Option<Held>,
    batch: u64,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sqlite_writer::Transaction")
    }
}

impl Transaction {
    fn state(&mut self) -> &mut State {
        &mut self
            .held
            .as_mut()
            .expect("an open transaction holds the connection")
            .state
    }

    /// Runs one statement with its arguments: the rows it returns, then what it changed,
    /// in the order sqlx's `fetch_many` yields them.
    pub fn run(
        &mut self,
        sql: &str,
        arguments: Option<AnyArguments<'_>>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), sqlx::Error> {
        let batch = self.batch;
        Ok(self
            .state()
            .in_batch(batch, |connection| connection.run(sql, arguments.as_ref()))?)
    }

    /// Releases the savepoint into the batch and waits for the batch's COMMIT; then (and
    /// only if it committed) `after_commit` has run. Dropping the future after the release
    /// does not undo it: the batch commits or fails as a whole.
    pub async fn commit(
        mut self,
        after_commit: Box<dyn FnOnce() + Send>,
    ) -> Result<(), sqlx::Error> {
        let batch = self.batch;
        let mut held = self
            .held
            .take()
            .expect("an open transaction holds the connection");
        let state = &mut held.state;
        if let Err(error) = state.in_batch(batch, |connection| connection.execute("RELEASE member"))
        {
            // Dropping the transaction rolls its part back, if its batch is still open.
            self.held = Some(held);
            return Err(error.into());
        }
        let broken = state.connection.as_ref().is_some_and(|c| c.broken);
        let open = state.batch.as_mut().expect("released into it");
        open.members += 1;
        open.after_commit.push(after_commit);
        let mut outcome = open.outcome.subscribe();
        let room = open.members < BATCH_LIMIT;
        let writer_state = tokio::sync::OwnedMutexGuard::mutex(&held.state).clone();
        let queued = held.queued.clone();
        if queued.load(Ordering::SeqCst) == 0 && room && !broken {
            held.leave_open = true;
            drop(held);
            CommitAfterTurn {
                state: writer_state.clone(),
                queued: queued.clone(),
            }
            .run()
            .await;
        } else {
            drop(held);
        }
        loop {
            let waited = tokio::time::timeout(BATCH_PATIENCE, outcome.wait_for(Option::is_some))
                .await
                .map(|told| told.map(|result| result.clone().expect("waited for an outcome")));
            match waited {
                Ok(Ok(result)) => return Ok(result?),
                Ok(Err(_)) => {
                    let error = SqliteError::new(ffi::SQLITE_ABORT, "the batch was dropped".into());
                    return Err(error.into());
                }
                // Not committed yet: take the connection and leave it, which commits the
                // batch unless a transaction is queued to join it.
                Err(_) => {}
            }
            drop(Held::new(
                writer_state.clone().lock_owned().await,
                queued.clone(),
            ));
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        let batch = self.batch;
        let Some(held) = &mut self.held else {
            return;
        };
        let state = &mut held.state;
        let undone = state.in_batch(batch, |connection| {
            connection.execute("ROLLBACK TO member")?;
            connection.execute("RELEASE member")
        });
        if let Err(error) = undone {
            // This part cannot be undone alone: the batch goes with it (if it is not gone).
            if state.is_open(batch) {
                state.fail_batch(&error);
            }
        }
        // Leaving the connection (`held` drops) commits the batch if it is its turn.
    }
}

/// A native connection and its prepared statements. Used by one thread at a time (the
/// writer's mutex), so SQLite's own mutexes are off.
pub(super) struct Connection {
    db: *mut ffi::sqlite3,
    /// Prepared statements by their SQL, with hashbrown's default hasher (foldhash): SipHash
    /// over each statement's text was 0.5 % of a code start's CPU, in the writer's critical
    /// section.
    statements: sqlx_core::HashMap<String, Statement>,
    /// Set after an error that leaves the connection unusable (I/O, corruption).
    broken: bool,
    /// What the WAL hook tells of the log; released after the connection.
    log: *const Log,
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
    pub(super) fn open(path: &CStr, log: &Arc<Log>) -> Result<Connection, SqliteError> {
        let db = open(path)?;
        let mut connection = Connection {
            db,
            statements: sqlx_core::HashMap::new(),
            broken: false,
            log: Arc::into_raw(log.clone()),
        };
        // WAL lets readers run beside the writer; NORMAL sync is durable across
        // application crashes, which is what WAL needs. No busy handler: see the module.
        // The log is cut back to 64 MiB when it starts over after a burst. Each
        // transaction is a savepoint of its batch (group commit), and SQLite keeps the
        // pages a savepoint may restore in a sub-journal, a temporary file once past 64 KiB:
        // under load its writes were a sixth of the service's CPU (the kernel's file
        // writes). In memory it holds one member's pages at most (a member's savepoint is
        // the outermost one, so its RELEASE empties the journal).
        connection.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
             PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;",
        )?;
        // Replaces SQLite's automatic checkpoint, which would run in the committing
        // caller's thread.
        unsafe {
            let log = connection.log.cast_mut().cast();
            ffi::sqlite3_wal_hook(db, Some(note_log_size), log);
        }
        Ok(connection)
    }

    /// Copies what the log holds beyond what was copied already (PASSIVE: neither readers
    /// nor the writer wait for it); returns how many of the log's pages are copied now.
    /// Blocks on the disk: run it on a thread that may block.
    pub(super) fn checkpoint(&mut self) -> Result<c_int, SqliteError> {
        let (mut in_log, mut copied) = (0, 0);
        let rc = unsafe {
            ffi::sqlite3_wal_checkpoint_v2(
                self.db,
                std::ptr::null(),
                ffi::SQLITE_CHECKPOINT_PASSIVE,
                &mut in_log,
                &mut copied,
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(copied),
            // Another process checkpoints: it copies for us.
            rc if rc & 0xff == ffi::SQLITE_BUSY => Ok(0),
            _ => Err(SqliteError::last(self.db)),
        }
    }

    fn autocommit(&self) -> bool {
        unsafe { ffi::sqlite3_get_autocommit(self.db) != 0 }
    }

    /// Runs one statement without arguments (BEGIN, COMMIT, savepoints), prepared once.
    fn execute(&mut self, sql: &str) -> Result<(), SqliteError> {
        self.run(sql, None).map(drop)
    }

    /// Runs statements without arguments or results (the pragmas), parsed each time.
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
        let db = self.db;
        // One lookup for a statement prepared already (every one but the first time).
        if let Some(statement) = self.statements.get(sql) {
            return Connection::run_prepared(db, statement, arguments);
        }
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        let statement = Statement::prepare(db, sql)?;
        let statement = self.statements.entry(sql.to_owned()).insert(statement);
        Connection::run_prepared(db, statement.get(), arguments)
    }

    fn run_prepared(
        db: *mut ffi::sqlite3,
        statement: &Statement,
        arguments: Option<&AnyArguments<'_>>,
    ) -> Result<(Vec<AnyRow>, AnyQueryResult), SqliteError> {
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
            drop(Arc::from_raw(self.log));
        }
    }
}

fn open(path: &CStr) -> Result<*mut ffi::sqlite3, SqliteError> {
    super::sqlite_memory::use_mimalloc();
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
unsafe extern "C" fn note_log_size(
    log: *mut c_void,
    _db: *mut ffi::sqlite3,
    _schema: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: the connection holds the log and releases it only after closing.
    unsafe { &*(log as *const Log) }.committed(pages);
    ffi::SQLITE_OK
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

    /// Text and blobs are bound in place (`SQLITE_STATIC`), not copied: `values` outlives
    /// the statement's run, and [`Connection::run_prepared`] clears the bindings before it
    /// returns, so SQLite never holds a pointer into them after.
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
                        ffi::SQLITE_STATIC(),
                    ),
                    // A zero-length slice's pointer is dangling but not null, so an empty
                    // blob stays an empty blob (a null pointer would bind NULL).
                    AnyValueKind::Blob(bytes) => ffi::sqlite3_bind_blob(
                        self.handle,
                        parameter,
                        bytes.as_ptr().cast(),
                        length(bytes.len())?,
                        ffi::SQLITE_STATIC(),
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
        // sqlite3_changes counts the last INSERT, UPDATE or DELETE: after a read, that is
        // someone else's count.
        let read_only = unsafe { ffi::sqlite3_stmt_readonly(self.handle) } != 0;
        let done = AnyQueryResult {
            rows_affected: if read_only {
                0
            } else {
                unsafe { ffi::sqlite3_changes64(db) as u64 }
            },
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
#[derive(Clone, Debug, thiserror::Error)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// A writer on a new database holding table `t`.
    async fn writer_with_table() -> (tempfile::TempDir, Arc<Writer>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let writer = Arc::new(Writer::new(&path, Duration::from_secs(3)).unwrap());
        let mut tx = writer.begin().await.unwrap();
        tx.run("CREATE TABLE t (name TEXT PRIMARY KEY)", None)
            .unwrap();
        commit(tx).await.unwrap();
        (dir, writer)
    }

    async fn commit(tx: Transaction) -> Result<(), sqlx::Error> {
        tx.commit(Box::new(|| {})).await
    }

    /// A flag, and what sets it once a batch commits.
    fn flag_after_commit() -> (Arc<AtomicBool>, Box<dyn FnOnce() + Send>) {
        let flag = Arc::new(AtomicBool::new(false));
        let set = flag.clone();
        (flag, Box::new(move || set.store(true, Ordering::SeqCst)))
    }

    /// What another connection (a reader) sees in the table.
    fn committed_names(dir: &tempfile::TempDir) -> Vec<String> {
        let path = CString::new(dir.path().join("db.sqlite").to_str().unwrap()).unwrap();
        let mut reader = Connection::open(&path, &Arc::default()).unwrap();
        let (rows, _) = reader
            .run("SELECT name FROM t ORDER BY name", None)
            .unwrap();
        rows.iter()
            .map(|row| row.try_get("name").unwrap())
            .collect()
    }

    fn insert(tx: &mut Transaction, name: &str) -> Result<(), sqlx::Error> {
        let mut query =
            sqlx::query::<sqlx::Any>("INSERT INTO t (name) VALUES ($1)").bind(name.to_owned());
        let arguments = sqlx::Execute::take_arguments(&mut query).unwrap();
        tx.run(sqlx::Execute::sql(&query), arguments).map(drop)
    }

    /// Waits until `count` transactions are queued for the connection.
    async fn queued(writer: &Writer, count: usize) {
        while writer.queued.load(Ordering::SeqCst) != count {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_commit_waits_for_its_batch_and_an_abandoned_member_takes_nothing_with_it() {
        let (dir, writer) = writer_with_table().await;

        let mut first = writer.begin().await.unwrap();
        insert(&mut first, "a").unwrap();
        // A second transaction queues behind the first, inserts, and is abandoned.
        let (go_on, carry_on) = tokio::sync::oneshot::channel::<()>();
        let second = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut second = writer.begin().await.unwrap();
                insert(&mut second, "b").unwrap();
                // The same key again: a statement's error ends only the statement.
                let conflict = insert(&mut second, "a").unwrap_err();
                assert!(
                    conflict
                        .as_database_error()
                        .is_some_and(|e| e.is_unique_violation()),
                    "{conflict}"
                );
                carry_on.await.unwrap();
            }
        });
        queued(&writer, 1).await;
        let (after_commit, set_flag) = flag_after_commit();
        let committing = tokio::spawn(first.commit(set_flag));
        // The second holds the batch: the first is not committed, and nobody sees it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!committing.is_finished());
        assert!(!after_commit.load(Ordering::SeqCst));
        assert_eq!(committed_names(&dir), Vec::<String>::new());

        go_on.send(()).unwrap();
        second.await.unwrap();
        committing.await.unwrap().unwrap();
        assert!(after_commit.load(Ordering::SeqCst));
        assert_eq!(committed_names(&dir), ["a"]);
    }

    #[tokio::test]
    async fn when_sqlite_ends_the_batch_every_member_is_told_and_nothing_is_kept() {
        let (dir, writer) = writer_with_table().await;

        let mut first = writer.begin().await.unwrap();
        insert(&mut first, "a").unwrap();
        let second = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut second = writer.begin().await.unwrap();
                insert(&mut second, "b").unwrap();
                // Ends SQLite's whole transaction, as a full disk or an I/O error does.
                second.run("ROLLBACK", None).unwrap();
                let after = insert(&mut second, "c").unwrap_err();
                assert!(after.to_string().contains("rolled back"), "{after}");
                assert!(commit(second).await.is_err());
            }
        });
        queued(&writer, 1).await;
        let (after_commit, set_flag) = flag_after_commit();
        let committed = first.commit(set_flag).await;
        second.await.unwrap();
        assert!(
            committed.is_err(),
            "the first member's work was lost with the batch"
        );
        assert!(!after_commit.load(Ordering::SeqCst));
        assert_eq!(committed_names(&dir), Vec::<String>::new());

        // The writer goes on.
        let mut third = writer.begin().await.unwrap();
        insert(&mut third, "d").unwrap();
        commit(third).await.unwrap();
        assert_eq!(committed_names(&dir), ["d"]);
    }

    #[tokio::test]
    async fn a_batch_is_committed_even_when_the_one_queued_behind_it_gives_up() {
        let (dir, writer) = writer_with_table().await;

        let mut first = writer.begin().await.unwrap();
        insert(&mut first, "a").unwrap();
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.begin().await.map(drop) }
        });
        queued(&writer, 1).await;
        let committing = tokio::spawn(commit(first));
        // The first left the batch open for the queued one, which now goes away
        // (whether it got the connection or not).
        waiting.abort();
        tokio::time::timeout(Duration::from_secs(2), committing)
            .await
            .expect("committed without anyone else writing")
            .unwrap()
            .unwrap();
        assert_eq!(committed_names(&dir), ["a"]);
    }

    /// A batch that reaches its limit commits though transactions are queued behind it;
    /// they start the next one (fails with the limit gone: one batch of all).
    #[tokio::test]
    async fn a_full_batch_commits_and_those_queued_start_the_next() {
        let (dir, writer) = writer_with_table().await;
        let batches_before = writer.state.lock().await.batches;
        let transactions: Vec<_> = (0..BATCH_LIMIT + 8)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut tx = writer.begin().await.unwrap();
                    insert(&mut tx, &format!("t{n}")).unwrap();
                    commit(tx).await
                })
            })
            .collect();
        for transaction in transactions {
            transaction.await.unwrap().unwrap();
        }
        assert_eq!(writer.state.lock().await.batches - batches_before, 2);
        assert_eq!(committed_names(&dir).len(), BATCH_LIMIT + 8);
    }

    #[tokio::test]
    async fn the_last_transaction_in_line_lets_ready_ones_join_its_commit() {
        let (dir, writer) = writer_with_table().await;
        let batches_before = writer.state.lock().await.batches;

        // Nobody is queued when the first commits; the second is ready to run and
        // reaches the writer during the first's turn (one thread: it runs only then).
        let mut first = writer.begin().await.unwrap();
        insert(&mut first, "a").unwrap();
        let second = tokio::spawn({
            let writer = writer.clone();
            async move {
                let mut second = writer.begin().await.unwrap();
                insert(&mut second, "b").unwrap();
                commit(second).await
            }
        });
        commit(first).await.unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(committed_names(&dir), ["a", "b"]);
        assert_eq!(
            writer.state.lock().await.batches - batches_before,
            1,
            "one COMMIT for both"
        );
    }

    #[tokio::test]
    async fn a_transaction_abandoned_during_its_turn_is_committed_all_the_same() {
        let (dir, writer) = writer_with_table().await;

        let mut first = writer.begin().await.unwrap();
        insert(&mut first, "a").unwrap();
        // Polled once (released into the batch, giving others a turn), then dropped, as
        // when the client goes away: nobody else writes, yet the batch commits.
        let mut committing = Box::pin(commit(first));
        let once = std::future::poll_fn(|cx| std::task::Poll::Ready(committing.as_mut().poll(cx)));
        assert!(once.await.is_pending(), "still in its turn when dropped");
        drop(committing);
        assert_eq!(committed_names(&dir), ["a"]);
        // And the writer goes on.
        let mut second = writer.begin().await.unwrap();
        insert(&mut second, "b").unwrap();
        commit(second).await.unwrap();
        assert_eq!(committed_names(&dir), ["a", "b"]);
    }

    #[tokio::test]
    async fn the_log_starts_over_instead_of_growing_with_every_write() {
        let (dir, writer) = writer_with_table().await;
        // Three or more pages a row (the row, its index entry and the entry's overflow):
        // over 100 MiB of log if it never started over.
        let page = "x".repeat(4000);
        for n in 0..8000 {
            let mut tx = writer.begin().await.unwrap();
            insert(&mut tx, &format!("{n}{page}")).unwrap();
            commit(tx).await.unwrap();
        }
        let log = std::fs::metadata(dir.path().join("db.sqlite-wal"))
            .unwrap()
            .len();
        let bound = (crate::store::sqlite_log::HARD_PAGES as u64 + 1000) * 4096;
        assert!(log < bound, "the log holds {} MiB", log >> 20);
    }

    #[tokio::test]
    async fn the_log_is_copied_beside_the_writer() {
        let (dir, writer) = writer_with_table().await;
        // Three or more pages of log a row: past the copier's threshold, well short of
        // the writer's own.
        let page = "x".repeat(4000);
        let rows = crate::store::sqlite_log::COPY_PAGES as usize * 2 / 5;
        for n in 0..rows {
            let mut tx = writer.begin().await.unwrap();
            insert(&mut tx, &format!("{n}{page}")).unwrap();
            commit(tx).await.unwrap();
        }
        // Nothing more is written: only the copier can fill the database file.
        let file = dir.path().join("db.sqlite");
        let copied = || std::fs::metadata(&file).unwrap().len() / 4096;
        let deadline = Instant::now() + Duration::from_secs(10);
        while copied() < rows as u64 * 3 / 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(copied() >= rows as u64 * 3 / 4, "{} pages copied", copied());
    }

    #[tokio::test]
    async fn rows_affected_counts_the_statement_itself() {
        let (_dir, writer) = writer_with_table().await;
        let mut tx = writer.begin().await.unwrap();
        insert(&mut tx, "a").unwrap();
        let (_, inserted) = tx
            .run("INSERT INTO t (name) VALUES ('b'), ('c')", None)
            .unwrap();
        assert_eq!(inserted.rows_affected, 2);
        let (rows, read) = tx.run("SELECT name FROM t", None).unwrap();
        assert_eq!((rows.len(), read.rows_affected), (3, 0));
    }
}
