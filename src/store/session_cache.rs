//! A short-lived, bounded, in-process cache of live-session lookups for the hot path
//! (Authorize, the Hasura webhook). Anything that ends a session or changes what
//! Authorize reports (logout, deleting a user, renaming) drops that user's entries in this
//! process as its transaction commits; on PostgreSQL the commit also notifies the other
//! replicas, naming the users, and they drop theirs (`revocations`). Everyone else's
//! entries stay. The TTL is the backstop should a notification be missed (a replica
//! reconnecting to the database empties its cache).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::SessionUser;

#[derive(Debug, Default)]
struct Entries {
    /// By the SHA-256 of the presented token (opaque or JWT).
    by_token: HashMap<[u8; 32], (Instant, SessionUser)>,
    /// The tokens cached for each user, to drop them when the user's sessions change.
    by_user: HashMap<i64, Vec<[u8; 32]>>,
    /// Opaque tokens the database knew nothing live for (logged out, expired). That never
    /// changes: a token is handed out only once its session is committed, so a new session
    /// cannot hide behind an entry here.
    refused: HashMap<[u8; 32], (Instant, ())>,
}

impl Entries {
    /// Full: what has outlived the TTL goes, then, if that is not enough, the oldest
    /// quarter. Everyone else stays cached (wiping it all would send every caller to the
    /// database at once).
    fn make_room(&mut self, ttl: Duration, capacity: usize) {
        evict(&mut self.by_token, ttl, capacity);
        let Entries {
            by_token, by_user, ..
        } = self;
        by_user.retain(|_, keys| {
            keys.retain(|key| by_token.contains_key(key));
            !keys.is_empty()
        });
    }
}

/// Drops from a full map what is older than `ttl`, then, if still full, its oldest
/// quarter. Linear, once per `capacity / 4` inserts at most.
fn evict<V>(map: &mut HashMap<[u8; 32], (Instant, V)>, ttl: Duration, capacity: usize) {
    map.retain(|_, (cached_at, _)| cached_at.elapsed() < ttl);
    if map.len() >= capacity {
        let mut ages: Vec<Instant> = map.values().map(|(at, _)| *at).collect();
        let oldest = (capacity / 4).clamp(1, ages.len()) - 1;
        let (_, cutoff, _) = ages.select_nth_unstable(oldest);
        let cutoff = *cutoff;
        map.retain(|_, (cached_at, _)| *cached_at > cutoff);
    }
}

#[derive(Debug)]
pub(super) struct SessionCache {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<Entries>,
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
        let (cached_at, session) = entries.by_token.get(key)?;
        (cached_at.elapsed() < self.ttl && session.expires_at > now).then(|| session.clone())
    }

    pub(super) fn put(&self, key: [u8; 32], session: SessionUser) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().expect("cache lock poisoned");
        if entries.by_token.len() >= self.capacity {
            entries.make_room(self.ttl, self.capacity);
        }
        let user = session.user.id;
        if entries
            .by_token
            .insert(key, (Instant::now(), session))
            .is_none()
        {
            entries.by_user.entry(user).or_default().push(key);
        }
    }

    /// Whether the database was asked about this opaque token within the TTL and knew no
    /// live session for it.
    pub(super) fn is_refused(&self, key: &[u8; 32]) -> bool {
        let entries = self.entries.read().expect("cache lock poisoned");
        entries
            .refused
            .get(key)
            .is_some_and(|(at, _)| at.elapsed() < self.ttl)
    }

    /// Remembers that the database knows no live session for this opaque token.
    pub(super) fn put_refused(&self, key: [u8; 32]) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.write().expect("cache lock poisoned");
        if entries.refused.len() >= self.capacity {
            evict(&mut entries.refused, self.ttl, self.capacity);
        }
        entries.refused.insert(key, (Instant::now(), ()));
    }

    /// Drops every entry of these users.
    pub(super) fn revoke_users(&self, users: &[i64]) {
        let mut entries = self.entries.write().expect("cache lock poisoned");
        for user in users {
            for key in entries.by_user.remove(user).unwrap_or_default() {
                entries.by_token.remove(&key);
            }
        }
    }

    pub(super) fn clear(&self) {
        let mut entries = self.entries.write().expect("cache lock poisoned");
        entries.by_token.clear();
        entries.by_user.clear();
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
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cache.get(&[0; 32], 0).is_none());
        assert!(cache.get(&[2; 32], 0).is_some());
        cache.clear();
        assert!(cache.get(&[2; 32], 0).is_none());
    }

    #[test]
    fn refused_tokens_are_remembered_for_the_ttl_and_bounded() {
        let cache = SessionCache::new(Duration::from_secs(60), 4);
        for i in 0..5u8 {
            cache.put_refused([i; 32]);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!cache.is_refused(&[0; 32]), "the oldest went when full");
        assert!(cache.is_refused(&[4; 32]));
        assert!(!cache.is_refused(&[9; 32]));
        let short = SessionCache::new(Duration::from_millis(1), 4);
        short.put_refused([1; 32]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.is_refused(&[1; 32]));
    }

    #[test]
    fn a_full_cache_drops_its_oldest_quarter_and_keeps_the_rest() {
        let cache = SessionCache::new(Duration::from_secs(60), 100);
        for i in 0..100u8 {
            cache.put([i; 32], session(100));
            std::thread::sleep(Duration::from_millis(1));
        }
        cache.put([200; 32], session(100));
        let kept = (0..100u8)
            .filter(|i| cache.get(&[*i; 32], 0).is_some())
            .count();
        assert_eq!(kept, 75, "the 25 oldest went, not everything");
        assert!(cache.get(&[0; 32], 0).is_none(), "the oldest went");
        assert!(cache.get(&[99; 32], 0).is_some(), "the newest stayed");
        assert!(cache.get(&[200; 32], 0).is_some());
    }

    #[test]
    fn revoking_a_user_drops_only_that_users_tokens() {
        let cache = SessionCache::new(Duration::from_secs(60), 100);
        let of = |user: i64| {
            let mut session = session(100);
            session.user.id = user;
            session
        };
        cache.put([1; 32], of(1)); // an opaque token of user 1
        cache.put([2; 32], of(1)); // and its JWT
        cache.put([3; 32], of(2));
        cache.revoke_users(&[1]);
        assert!(cache.get(&[1; 32], 0).is_none() && cache.get(&[2; 32], 0).is_none());
        assert!(cache.get(&[3; 32], 0).is_some(), "other users stay cached");
        cache.put([1; 32], of(1));
        assert!(
            cache.get(&[1; 32], 0).is_some(),
            "and the user can be cached again"
        );
    }

    #[test]
    fn a_full_cache_first_drops_what_outlived_the_ttl() {
        let cache = SessionCache::new(Duration::from_millis(200), 8);
        cache.put([0; 32], session(100));
        std::thread::sleep(Duration::from_millis(250));
        for i in 1..8u8 {
            cache.put([i; 32], session(100));
        }
        // Full: only the stale entry has to go; the oldest quarter would take a fresh one.
        cache.put([9; 32], session(100));
        for i in (1..8u8).chain([9]) {
            assert!(cache.get(&[i; 32], 0).is_some(), "entry {i} stays");
        }
    }
}
