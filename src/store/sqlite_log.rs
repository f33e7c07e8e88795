//! Copying SQLite's write-ahead log into the database file (checkpoints) beside the
//! writer, not in its way.
//!
//! A checkpoint writes the log's pages into the database file and syncs both files: on
//! this kind of disk about 20 ms per 1000 pages, and while the writer connection does it,
//! every write waits. So a thread of its own, the copier, does that work on a connection
//! of its own, woken by the writer's WAL hook every [`COPY_PAGES`] of log.
//!
//! The log only starts over when a write begins with all of it copied, which a copier
//! trailing a busy writer never achieves alone (the log grew by hundreds of megabytes a
//! minute that way, every page lookup slower for it). So once the log is [`RESTART_PAGES`]
//! long, the copier catches up to a short tail and tells the writer, which copies that
//! tail itself between two batches (a few ms) so that the next write starts the log over.
//! Past [`HARD_PAGES`] the writer waits for the copier and copies the rest: the log stays
//! bounded even when the copier cannot keep up or cannot open the database.

use std::ffi::{CString, c_int};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::sqlite_writer::Connection;

/// The copier is woken each time the log grows by this many pages (4 KiB each); SQLite's
/// own automatic checkpoint runs at the same figure.
pub(super) const COPY_PAGES: c_int = 1000;
/// From this log size the copier has the writer start the log over.
pub(super) const RESTART_PAGES: c_int = 4000;
/// From this log size the writer starts the log over whatever the copier does.
pub(super) const HARD_PAGES: c_int = 8000;
/// A tail the writer copies itself: a millisecond or two.
const TAIL_PAGES: c_int = 100;
/// Passes the copier makes to catch up before it settles for the tail it has.
const CATCH_UP_PASSES: usize = 4;

/// What the writer connection, the copier and the writer know of the log.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Pages in the log after the last commit (from the writer's WAL hook).
    pages: std::sync::atomic::AtomicI32,
    /// The multiple of [`COPY_PAGES`] the copier was last woken for.
    woken_at: std::sync::atomic::AtomicI32,
    /// Set by the copier: the log is long and what is left to copy is short.
    tail_only: AtomicBool,
    /// Held by whoever checkpoints, the copier or the writer: one at a time.
    copying: Mutex<()>,
    wake: Mutex<Wake>,
    woken: Condvar,
}

#[derive(Debug, Default)]
struct Wake {
    pending: bool,
    stopped: bool,
}

impl Log {
    /// Starts the copier for the database at `path`; it runs until [`Log::stop`].
    pub(super) fn start(path: CString) -> Arc<Log> {
        let log = Arc::new(Log::default());
        let copier = log.clone();
        let spawned = std::thread::Builder::new()
            .name("sqlite-log-copier".into())
            .spawn(move || copier.copy_until_stopped(&path));
        if let Err(error) = spawned {
            // The writer's hard limit still bounds the log.
            tracing::warn!(%error, "cannot start the thread that copies SQLite's log");
        }
        log
    }

    /// From the writer's WAL hook, after each commit: the log holds `pages`.
    pub(super) fn committed(&self, pages: c_int) {
        let before = self.pages.swap(pages, Ordering::Relaxed);
        if pages < before {
            // The log started over.
            self.woken_at.store(0, Ordering::Relaxed);
        }
        let step = pages / COPY_PAGES;
        if step > self.woken_at.load(Ordering::Relaxed) {
            self.woken_at.store(step, Ordering::Relaxed);
            let mut wake = self.wake.lock().expect("log lock poisoned");
            wake.pending = true;
            self.woken.notify_one();
        }
    }

    /// Whether the writer should copy the log now, between batches: `Some(wait)`, where
    /// `wait` says to wait for the copier rather than try again later if it is busy.
    pub(super) fn writer_copy_due(&self) -> Option<bool> {
        if self.pages.load(Ordering::Relaxed) >= HARD_PAGES {
            return Some(true);
        }
        self.tail_only
            .swap(false, Ordering::Relaxed)
            .then_some(false)
    }

    /// The right to checkpoint; `None` when the copier holds it and `wait` is false.
    pub(super) fn hold(&self, wait: bool) -> Option<MutexGuard<'_, ()>> {
        if wait {
            return Some(self.copying.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.copying.try_lock().ok()
    }

    /// Ends the copier (it closes its connection).
    pub(super) fn stop(&self) {
        let mut wake = self.wake.lock().expect("log lock poisoned");
        wake.stopped = true;
        self.woken.notify_one();
    }

    /// Blocks until there is something to copy; false once stopped.
    fn wait_for_work(&self) -> bool {
        let mut wake = self.wake.lock().expect("log lock poisoned");
        while !wake.pending && !wake.stopped {
            wake = self.woken.wait(wake).expect("log lock poisoned");
        }
        wake.pending = false;
        !wake.stopped
    }

    fn copy_until_stopped(self: &Arc<Log>, path: &CString) {
        // A connection like the writer's (it never commits, so its WAL hook stays quiet).
        // Opening it reads the database, without which it would not know the log.
        let mut connection: Option<Connection> = None;
        while self.wait_for_work() {
            let _copying = self.hold(true);
            let open = match &mut connection {
                Some(open) => open,
                None => match Connection::open(path, self) {
                    Ok(opened) => connection.insert(opened),
                    Err(error) => {
                        tracing::warn!(%error, "cannot open the database to copy its log");
                        continue;
                    }
                },
            };
            for _ in 0..CATCH_UP_PASSES {
                let copied = match open.checkpoint() {
                    Ok(copied) => copied,
                    Err(error) => {
                        tracing::warn!(%error, "copying the database's log failed");
                        connection = None;
                        break;
                    }
                };
                if self.pages.load(Ordering::Relaxed) - copied <= TAIL_PAGES {
                    break;
                }
            }
            if self.pages.load(Ordering::Relaxed) >= RESTART_PAGES {
                self.tail_only.store(true, Ordering::Relaxed);
            }
        }
    }
}
