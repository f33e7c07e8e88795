//! Secret randomness: bytes from the operating system's CSPRNG, fetched a block at a
//! time per thread.
//!
//! A code-login start draws random bytes eight times (two tokens, the code, a uid, a
//! seal key, two nonces, a request id); one `getrandom` system call each was ~3 % of its
//! CPU. Each thread now keeps [`BLOCK`] bytes from the operating system and hands each out
//! once, zeroing it as it goes, so the bytes are the kernel's own, never derived or
//! reused, and what already went out is not left in memory. Not shared across `fork`
//! (the service never forks; children it spawns exec at once).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes fetched per system call: a hundred code starts' worth.
const BLOCK: usize = 4096;

struct Pool {
    bytes: [u8; BLOCK],
    /// Bytes handed out (and zeroed) from the front of `bytes`.
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; BLOCK], used: BLOCK })
    };
}

/// Fills `buf` with bytes from the operating system's CSPRNG. Failure here means the
/// machine cannot produce secrets at all, so it is fatal.
pub(crate) fn fill(buf: &mut [u8]) {
    if buf.len() > BLOCK / 8 {
        return from_os(buf);
    }
    POOL.with_borrow_mut(|pool| {
        if BLOCK - pool.used < buf.len() {
            from_os(&mut pool.bytes);
            pool.used = 0;
        }
        let next = &mut pool.bytes[pool.used..pool.used + buf.len()];
        buf.copy_from_slice(next);
        next.fill(0);
        pool.used += buf.len();
    })
}

fn from_os(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the operating system's random source failed");
}

/// A random (version 4) UUID from [`fill`].
pub(crate) fn uuid_v4() -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The last version 7 UUID's millisecond and counter, `(unix_ms << 12) | counter`.
static LAST_V7: AtomicU64 = AtomicU64::new(0);

/// A time-ordered (version 7) UUID: the millisecond, a 12-bit counter (seeded at random
/// in its lower half each millisecond, so ids made in one process sort as made), then 62
/// random bits from [`fill`]. `uuid::Uuid::now_v7` draws its random bits with a system
/// call each time: one per code-login start, for the new user's uid.
pub(crate) fn uuid_v7() -> uuid::Uuid {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    // The counter's 12 bits (its seed, in the lower half), then the random tail.
    let mut counter_random = [0u8; 10];
    fill(&mut counter_random);
    let seed = u64::from(u16::from_be_bytes([counter_random[0], counter_random[1]]) & 0x7ff);
    let fresh = (now_ms << 12) | seed;
    let mut last = LAST_V7.load(Ordering::Relaxed);
    let next = loop {
        // A new millisecond starts at its seed; within one (or with the clock set back)
        // the counter goes on, into the next millisecond if it must.
        let next = if fresh >> 12 > last >> 12 {
            fresh
        } else {
            last + 1
        };
        match LAST_V7.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(current) => last = current,
        }
    };
    counter_random[..2].copy_from_slice(&((next & 0xfff) as u16).to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(next >> 12, &counter_random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every draw is fresh, across block boundaries and for large requests: no two
    /// 16-byte draws of thousands repeat, and the pool keeps nothing it handed out.
    #[test]
    fn draws_never_repeat_and_leave_nothing_behind() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * BLOCK / 16 {
            let mut draw = [0u8; 16];
            fill(&mut draw);
            assert!(seen.insert(draw), "a draw repeated");
        }
        let mut large = vec![0u8; 2 * BLOCK];
        fill(&mut large);
        assert!(
            large
                .chunks(16)
                .all(|chunk| !seen.contains(&<[u8; 16]>::try_from(chunk).unwrap()))
        );
        POOL.with_borrow(|pool| assert!(pool.bytes[..pool.used].iter().all(|&b| b == 0)));
        let id = uuid_v4();
        assert_eq!(id.get_version_num(), 4);
        assert_ne!(id, uuid_v4());
    }

    /// Version 7 ids carry the time they were made, and sort as made, also when many are
    /// made in one millisecond and on several threads at once.
    #[test]
    fn version_7_ids_sort_as_made_and_carry_the_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5000).map(|_| uuid_v7()).collect::<Vec<_>>()))
            .collect();
        let mut all = Vec::new();
        for made in threads.into_iter().map(|t| t.join().unwrap()) {
            assert!(made.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(
                made.windows(2)
                    .all(|pair| pair[0].to_string() < pair[1].to_string())
            );
            all.extend(made);
        }
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        let first = all.iter().min().unwrap();
        assert_eq!(first.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(first.get_variant(), uuid::Variant::RFC4122);
        let (seconds, nanos) = first.get_timestamp().unwrap().to_unix();
        let millis = seconds * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            millis >= before && millis < before + 5_000,
            "{millis} vs {before}"
        );
    }
}
