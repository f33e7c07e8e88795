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
}
