//! Projects by app token, for the calls that name their project by it (every browser call
//! of the passwordless API): each would otherwise read the project, a trip to a reader
//! connection's thread and back per request. A transaction that changes a project drops
//! every entry as it commits, in this process and (PostgreSQL) on the other replicas; a
//! short TTL bounds what a change by another process on the same SQLite file (an
//! operator's command) leaves stale. Unknown tokens are not cached: a project created
//! now is found at once.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::ProjectRecord;

/// How long an entry is trusted without a word from the database.
const TTL: Duration = Duration::from_secs(2);

/// Projects are few; past this (a flood of rotated tokens?) the cache starts over.
const CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct ProjectCache {
    entries: RwLock<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_app_token: HashMap<String, (Instant, ProjectRecord)>,
    /// Counts clears: a project read before one must not be cached after it.
    generation: u64,
}

impl ProjectCache {
    pub(super) fn get(&self, app_token: &str) -> Option<ProjectRecord> {
        let entries = self.entries.read().expect("project cache lock poisoned");
        let (cached_at, project) = entries.by_app_token.get(app_token)?;
        (cached_at.elapsed() < TTL).then(|| project.clone())
    }

    /// The generation to pass to [`ProjectCache::insert`]: taken before reading the
    /// project from the database.
    pub(super) fn generation(&self) -> u64 {
        self.entries
            .read()
            .expect("project cache lock poisoned")
            .generation
    }

    /// Caches `project`, unless a change was committed since `generation` was taken
    /// (what was read may be the version before it).
    pub(super) fn insert(&self, generation: u64, app_token: &str, project: &ProjectRecord) {
        let mut entries = self.entries.write().expect("project cache lock poisoned");
        if entries.generation != generation {
            return;
        }
        if entries.by_app_token.len() >= CAPACITY {
            entries.by_app_token.clear();
        }
        entries
            .by_app_token
            .insert(app_token.to_owned(), (Instant::now(), project.clone()));
    }

    /// A project changed (or may have: a notification was missed): forget them all.
    pub(super) fn clear(&self) {
        let mut entries = self.entries.write().expect("project cache lock poisoned");
        entries.by_app_token.clear();
        entries.generation += 1;
    }
}
