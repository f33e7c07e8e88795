//! SQLite's memory from mimalloc, without SQLite's allocation statistics.
//!
//! Left to itself SQLite calls the C library's malloc, and takes a global mutex around
//! each call to keep statistics nobody here reads. Each transaction of a group-commit
//! batch runs in a savepoint whose journal (in memory: `temp_store = MEMORY`) is a chain
//! of ~1 KiB blocks, a dozen pages' worth per transaction, allocated and freed each time:
//! with glibc's malloc and the mutex that was ~3 % of a code-login start's CPU, and
//! through Rust's allocator API (mimalloc's aligned entry points, which take a slow path
//! past 1 KiB) still ~2 %. mimalloc's plain `mi_malloc` serves those from a thread's
//! free list.

use libmimalloc_sys as mimalloc;
use libsqlite3_sys as ffi;
use std::ffi::{c_int, c_void};

/// Configures SQLite once per process, before it first allocates. Anything that opens a
/// SQLite database calls this first (the store, the writer's connections), but the
/// process may hold other users of SQLite (sqlx opened by a test, another library): if
/// one of them got there first, SQLite keeps its own allocator, which works, only slower.
///
/// Swapping the allocator under blocks SQLite already handed out would free them with the
/// wrong one (a crash, seen when tests opened SQLite beside the store). SQLite sets its
/// allocator up under its main mutex, before anything is allocated, and counts what it
/// allocates from then on (statistics are on until this turns them off): with that mutex
/// held, nothing in use means nobody is midway. A build without the statistics fails the
/// test below.
pub(super) fn use_mimalloc() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(allocate),
            xFree: Some(free),
            xRealloc: Some(reallocate),
            xSize: Some(size),
            xRoundup: Some(round_up),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: the static mutex needs no initialization of SQLite's allocator; both
        // options take the arguments given (SQLite copies the methods), and run while
        // SQLite's initialization waits for the mutex, if it is under way.
        unsafe {
            let main = ffi::sqlite3_mutex_alloc(ffi::SQLITE_MUTEX_STATIC_MAIN);
            ffi::sqlite3_mutex_enter(main);
            if ffi::sqlite3_memory_used() == 0 {
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _);
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
            }
            ffi::sqlite3_mutex_leave(main);
        }
    });
}

// mimalloc's blocks are 16-byte aligned (SQLite needs 8) and know their usable size,
// which is what SQLite asks `xSize` for.

unsafe extern "C" fn allocate(bytes: c_int) -> *mut c_void {
    match usize::try_from(bytes) {
        // SAFETY: any size; null when out of memory, which SQLite handles.
        Ok(bytes) => unsafe { mimalloc::mi_malloc(bytes) },
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn free(block: *mut c_void) {
    // SAFETY: SQLite frees only what `allocate`/`reallocate` gave it (or null).
    unsafe { mimalloc::mi_free(block) }
}

unsafe extern "C" fn reallocate(block: *mut c_void, bytes: c_int) -> *mut c_void {
    match usize::try_from(bytes) {
        // SAFETY: a block of mimalloc's (or null); on failure it is left as it was,
        // which SQLite expects.
        Ok(bytes) => unsafe { mimalloc::mi_realloc(block, bytes) },
        Err(_) => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn size(block: *mut c_void) -> c_int {
    // SAFETY: a live block of mimalloc's, or null (0).
    let usable = unsafe { mimalloc::mi_usable_size(block) };
    c_int::try_from(usable).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn round_up(bytes: c_int) -> c_int {
    (bytes + 7) & !7
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The methods SQLite calls, as it calls them: blocks 8-byte aligned and at least as
    /// large as asked, contents kept across a growth, a failed growth leaving the block
    /// as it was.
    #[test]
    fn blocks_hold_what_was_asked_and_keep_it_when_they_grow() {
        unsafe {
            let block = allocate(13) as *mut u8;
            assert_eq!(block as usize % 8, 0);
            assert!(size(block as *mut c_void) >= 13);
            block.copy_from_nonoverlapping(b"thirteen byte".as_ptr(), 13);
            let grown = reallocate(block as *mut c_void, 70_000) as *mut u8;
            assert!(size(grown as *mut c_void) >= 70_000);
            assert_eq!(std::slice::from_raw_parts(grown, 13), b"thirteen byte");
            assert!(reallocate(grown as *mut c_void, -1).is_null());
            assert_eq!(std::slice::from_raw_parts(grown, 13), b"thirteen byte");
            free(grown as *mut c_void);
            free(std::ptr::null_mut());
            assert_eq!(size(std::ptr::null_mut()), 0);
            assert_eq!(round_up(13), 16);
        }
    }

    /// SQLite being set up by another thread (sqlx opened a database first) when the store
    /// asks for mimalloc: what SQLite allocated before must be freed by the allocator that
    /// gave it. SQLite's setup is held where it has allocated but not finished (its page
    /// cache's start), and the store's call comes then. Runs in a fresh process, the only
    /// place SQLite is not set up yet.
    #[test]
    fn the_allocator_stays_the_one_that_gave_out_sqlite_s_blocks() {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::sqlite_memory::tests::setup_under_way",
                "--ignored",
                "--test-threads=1",
            ])
            .env(SETUP_UNDER_WAY, "1")
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && printed.contains("1 passed"),
            "{printed}{}",
            String::from_utf8_lossy(&child.stderr)
        );
    }

    const SETUP_UNDER_WAY: &str = "PORTCULLIS_TEST_SQLITE_SETUP_UNDER_WAY";

    #[test]
    #[ignore = "run in a fresh process by the test above"]
    fn setup_under_way() {
        use std::sync::{Mutex, OnceLock, mpsc};
        if std::env::var_os(SETUP_UNDER_WAY).is_none() {
            return; // only the fresh process's part (`cargo test -- --include-ignored`)
        }
        type CacheInit = unsafe extern "C" fn(*mut c_void) -> c_int;
        static DEFAULT_INIT: OnceLock<CacheInit> = OnceLock::new();
        struct Hold {
            allocated: mpsc::Sender<usize>,
            resume: mpsc::Receiver<()>,
        }
        static HOLD: Mutex<Option<Hold>> = Mutex::new(None);
        unsafe extern "C" fn held_init(argument: *mut c_void) -> c_int {
            let hold = HOLD.lock().unwrap().take().unwrap();
            let block = unsafe { ffi::sqlite3_malloc(64) };
            hold.allocated.send(block as usize).unwrap();
            hold.resume.recv().unwrap();
            unsafe { DEFAULT_INIT.get().unwrap()(argument) }
        }

        let (allocated, before) = mpsc::channel();
        let (resume, resumed) = mpsc::channel();
        *HOLD.lock().unwrap() = Some(Hold {
            allocated,
            resume: resumed,
        });
        unsafe {
            let mut cache: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut cache as *mut _);
            DEFAULT_INIT.set(cache.xInit.unwrap()).unwrap();
            cache.xInit = Some(held_init);
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &cache as *const _);
        }
        let other = std::thread::spawn(|| unsafe { ffi::sqlite3_initialize() });
        let before = before.recv().unwrap() as *mut c_void;
        use_mimalloc();
        resume.send(()).unwrap();
        assert_eq!(other.join().unwrap(), ffi::SQLITE_OK);
        unsafe {
            let after = ffi::sqlite3_malloc(64);
            assert_eq!(
                mimalloc::mi_is_in_heap_region(before),
                mimalloc::mi_is_in_heap_region(after),
                "SQLite's allocator was replaced under a block it had given out"
            );
            ffi::sqlite3_free(before);
            ffi::sqlite3_free(after);
        }
    }

    /// `.cargo/config.toml` builds SQLite without SQLITE_ENABLE_MEMORY_MANAGEMENT (one
    /// global mutex around every connection's page cache); a build that lost the setting
    /// (another config, a LIBSQLITE3_FLAGS of its own) shows here.
    #[test]
    fn sqlite_is_built_without_the_shared_page_cache() {
        let option = c"ENABLE_MEMORY_MANAGEMENT";
        assert_eq!(
            unsafe { ffi::sqlite3_compileoption_used(option.as_ptr()) },
            0
        );
        let threadsafe = c"THREADSAFE=1";
        assert_eq!(
            unsafe { ffi::sqlite3_compileoption_used(threadsafe.as_ptr()) },
            1,
            "the probe reads the compile options"
        );
    }

    /// `.cargo/config.toml` defines SQLite's memory barrier as an acquire-release fence,
    /// which x86 needs no instruction for, instead of a full one (`__sync_synchronize`,
    /// `lock or` or `mfence`). SQLite runs it in `sqlite3_initialize`, which each
    /// `sqlite3_malloc` calls: ~50 times a code start, for the savepoint journal's blocks,
    /// and each waited for the page just copied to leave the store buffer (~2 % of a code
    /// start's CPU). A build that lost the setting has the full fence in the function's
    /// first bytes again (three of them in 1 KiB, seen without it).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sqlite_initialize_runs_no_full_fence() {
        let start = ffi::sqlite3_initialize as *const u8;
        // SAFETY: code pages are readable; 1 KiB from a function's start stays in SQLite's
        // code (the library's functions are laid out together).
        let code = unsafe { std::slice::from_raw_parts(start, 1024) };
        let lock_or = [0xf0, 0x48, 0x83, 0x0c, 0x24, 0x00]; // lock orq $0x0,(%rsp)
        let mfence = [0x0f, 0xae, 0xf0];
        assert!(!code.windows(lock_or.len()).any(|w| w == lock_or));
        assert!(!code.windows(mfence.len()).any(|w| w == mfence));
    }
}
