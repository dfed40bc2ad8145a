//! Memory an idle engine gives back to the operating system.
//!
//! A burst of work (a scan, a flood of edits, index merges) leaves freed
//! buffers (file texts, diffs, SQLite pages) in the C allocator's arenas,
//! and glibc keeps them mapped: an engine idle after scanning 10,000 notes
//! held 70 MiB it no longer used. [`give_back`] asks glibc to return every
//! arena's free pages (`malloc_trim`); callers first drop what SQLite
//! caches (`PRAGMA shrink_memory` on their own connections). It costs one
//! pass over the arenas, so it runs once per idle spell, not per batch. On
//! other targets it does nothing.
//!
//! This module and [`super::rank`] are the crate's only `unsafe` code: a
//! foreign call with no preconditions.
#![allow(unsafe_code)]

use rusqlite::Connection;

/// Drops the pages `conn` caches and does not hold (`PRAGMA
/// shrink_memory`); a failure only costs the memory, so it is logged.
pub fn shrink(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
        tracing::debug!(error = %e, "shrink_memory skipped");
    }
}

/// Returns the allocator's free memory to the operating system (glibc);
/// a no-op elsewhere.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes a byte count to keep at the top of the
        // heap and no pointer; it locks each arena itself, so it is safe to
        // call from any thread at any time, beside any allocation.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::trace!(released = released != 0, "malloc_trim");
    }
}
