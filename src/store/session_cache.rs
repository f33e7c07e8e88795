//! A short-lived, bounded, in-process cache of live-session lookups for the hot path
//! (Authorize, the Hasura webhook). Anything that ends a session or changes what
//! Authorize reports (logout, deleting a user, renaming) empties it in this process as
//! its transaction commits; on PostgreSQL the commit also notifies the other replicas,
//! which empty theirs (`revocations`). The TTL is the backstop should a notification be
//! missed (a replica reconnecting to the database).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::SessionUser;

#[derive(Debug)]
pub(super) struct SessionCache {
    ttl: Duration,
    capacity: usize,
    /// By the SHA-256 of the presented token (opaque or JWT).
    entries: RwLock<HashMap<[u8; 32], (Instant, SessionUser)>>,
}

impl SessionCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> SessionCache {
        SessionCache {
            ttl,
            capacity,
            entries: RwLock::default(),
        }
    }

    /// A cached live session: fresh enough and not past its own expiry at `now`.
    pub(super) fn get(&self, key: &[u8; 32], now: i64) -> Option<SessionUser> {
        let entries = self.entries.read().expect("cache lock poisoned");
        let (cached_at, session) = entries.get(key)?;
        (cached_at.elapsed() < self.ttl && session.expires_at > now).then(|| session.clone())
    }

    pub(super) fn put(&self, key: [u8; 32], session: SessionUser) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().expect("cache lock poisoned");
        if entries.len() >= self.capacity {
            // Rare at this size; starting over is cheaper than tracking recency.
            entries.clear();
        }
        entries.insert(key, (Instant::now(), session));
    }

    pub(super) fn clear(&self) {
        self.entries.write().expect("cache lock poisoned").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserRecord;

    fn session(expires_at: i64) -> SessionUser {
        SessionUser {
            session_id: "s".into(),
            expires_at,
            created_at: 0,
            user: UserRecord {
                id: 1,
                uid: "u".into(),
                project_id: "p".into(),
                name: None,
                root: false,
                encrypted: false,
                encryption_text: None,
                created_at: 0,
                verified_at: None,
            },
        }
    }

    #[test]
    fn entries_expire_with_the_session_and_with_the_ttl() {
        let cache = SessionCache::new(Duration::from_secs(60), 10);
        let key = [1u8; 32];
        cache.put(key, session(100));
        assert!(cache.get(&key, 99).is_some());
        assert!(
            cache.get(&key, 100).is_none(),
            "never past the session's own end"
        );

        let short = SessionCache::new(Duration::from_millis(1), 10);
        short.put(key, session(100));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&key, 0).is_none());
    }

    #[test]
    fn clearing_and_overflowing_drop_entries() {
        let cache = SessionCache::new(Duration::from_secs(60), 2);
        for i in 0..3 {
            cache.put([i; 32], session(100));
        }
        assert!(cache.get(&[0; 32], 0).is_none());
        assert!(cache.get(&[2; 32], 0).is_some());
        cache.clear();
        assert!(cache.get(&[2; 32], 0).is_none());
    }
}
