//! SQLite's memory from the process's allocator (mimalloc in the binary), without
//! SQLite's allocation statistics.
//!
//! Left to itself SQLite calls the C library's malloc, and takes a global mutex around
//! each call to keep statistics nobody here reads. Each transaction of a group-commit
//! batch runs in a savepoint whose journal is a 64 KiB buffer, malloc'd and freed per
//! transaction: glibc's search for that block and the mutex were ~3 % of a code-login
//! start's CPU.

use libsqlite3_sys as ffi;
use std::alloc::Layout;
use std::ffi::{c_int, c_void};

/// Bytes before each block holding its size: SQLite asks for a block's size
/// (`xSize`), and Rust's allocator needs it to free or grow the block. Eight keep the
/// blocks 8-byte aligned, as SQLite requires.
const HEADER: usize = 8;

/// Configures SQLite once per process, before its first connection opens. SQLite
/// refuses configuration once started (something else in the process opened a database
/// first): then it keeps its defaults, which work, only slower.
pub(super) fn use_process_allocator() {
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
        // SAFETY: both options take the arguments given (SQLite copies the methods);
        // before sqlite3_initialize nothing else runs in SQLite.
        unsafe {
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _);
        }
    });
}

fn layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes.checked_add(HEADER)?, HEADER).ok()
}

/// The block's start and the size its header records.
///
/// # Safety
/// `block` came from [`allocate`] or [`reallocate`] and was not freed.
unsafe fn header_of(block: *mut c_void) -> (*mut u8, usize) {
    // SAFETY: the header sits just before every block handed out.
    unsafe {
        let start = (block as *mut u8).sub(HEADER);
        (start, (start as *const u64).read() as usize)
    }
}

unsafe extern "C" fn allocate(bytes: c_int) -> *mut c_void {
    let Some(layout) = usize::try_from(bytes).ok().and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout is never zero-sized (it holds the header).
    unsafe {
        let start = std::alloc::alloc(layout);
        if start.is_null() {
            return std::ptr::null_mut();
        }
        (start as *mut u64).write(bytes as u64);
        start.add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn free(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    // SAFETY: SQLite frees only blocks it had from `allocate`/`reallocate`; their
    // layout was valid then.
    unsafe {
        let (start, bytes) = header_of(block);
        std::alloc::dealloc(start, layout(bytes).unwrap_unchecked());
    }
}

unsafe extern "C" fn reallocate(block: *mut c_void, bytes: c_int) -> *mut c_void {
    if block.is_null() {
        // SAFETY: as for any new block.
        return unsafe { allocate(bytes) };
    }
    let Some(new_layout) = usize::try_from(bytes).ok().and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the block is SQLite's, from `allocate`/`reallocate`; on failure it stays
    // as it was, which SQLite expects.
    unsafe {
        let (start, old) = header_of(block);
        let start = std::alloc::realloc(start, layout(old).unwrap_unchecked(), new_layout.size());
        if start.is_null() {
            return std::ptr::null_mut();
        }
        (start as *mut u64).write(bytes as u64);
        start.add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn size(block: *mut c_void) -> c_int {
    if block.is_null() {
        return 0;
    }
    // SAFETY: a live block of SQLite's.
    unsafe { header_of(block).1 as c_int }
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

    /// The methods SQLite calls, as it calls them: sizes kept, contents kept across a
    /// growth, a failed growth leaving the block as it was.
    #[test]
    fn blocks_keep_their_size_and_contents_when_they_grow() {
        unsafe {
            let block = allocate(13) as *mut u8;
            assert_eq!(block as usize % 8, 0);
            assert_eq!(size(block as *mut c_void), 13);
            block.copy_from_nonoverlapping(b"thirteen byte".as_ptr(), 13);
            let grown = reallocate(block as *mut c_void, 70_000) as *mut u8;
            assert_eq!(size(grown as *mut c_void), 70_000);
            assert_eq!(std::slice::from_raw_parts(grown, 13), b"thirteen byte");
            assert!(reallocate(grown as *mut c_void, -1).is_null());
            assert_eq!(size(grown as *mut c_void), 70_000);
            free(grown as *mut c_void);
            free(std::ptr::null_mut());
            assert_eq!(round_up(13), 16);
        }
    }
}
