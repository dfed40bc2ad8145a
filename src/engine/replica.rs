//! A read-only engine on a copy of `obby.db` (a Litestream restore), for
//! `obby-sync serve`.
//!
//! Input: the path of the copy. Output: an [`EngineHandle`] whose
//! [`EngineHandle::read_only`] is true, for the api's read services, and a
//! [`ReplicaGuard`] that keeps it current. Nothing here watches notes,
//! claims queue rows or writes: the file is opened `SQLITE_OPEN_READ_ONLY`
//! (or `immutable=1` in a folder it cannot create the `-shm` in, see
//! [`db::replica_pool`]), the handle's control channels lead nowhere, and
//! the api refuses the calls that would write.
//!
//! A newer restore replaces the file (`litestream restore -o NEW && mv NEW
//! PATH`): the guard looks at the path's inode, size and mtime every
//! [`POLL`], and once a change has held still for one more look it opens a
//! new pool on the new file, swaps it in, and wakes the api as a commit
//! would, so `Subscribe` streams read on from their cursor. A change of the
//! `-wal` alone (another process committing to the same file) only wakes
//! the api. A file that cannot be opened is logged and the old pool kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::db::{self, ReplicaOpen, SharedPool};
use super::patterns::{Patterns, SharedPatterns};
use super::progress::{Doorbell, Progress};
use super::{EngineError, EngineHandle};

/// How often the guard looks at the replica file.
pub const POLL: Duration = Duration::from_millis(250);

/// Connections the api may use at once on a replica.
const POOL_SIZE: u32 = 8;

/// What identifies the file at a path, as far as a replacement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Keeps a replica's pool on the newest file at its path; stops when dropped.
#[derive(Debug)]
pub struct ReplicaGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReplicaGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the copy at `db` read-only and starts its guard.
///
/// # Errors
/// Those of [`db::replica_pool`]; [`EngineError::Io`] when the guard's
/// thread cannot start.
pub fn open(db: &Path) -> Result<(EngineHandle, ReplicaGuard), EngineError> {
    let db = super::config::absolute_db(db)?;
    let first = identity(&db);
    let (pool, how) = db::replica_pool(&db, POOL_SIZE)?;
    log_open(&db, how);
    // Relative paths a client sends resolve against the root the engine
    // recorded (the copy's paths are under it), when it is a folder here
    // too; else against the copy's folder.
    let recorded = pool
        .get()
        .ok()
        .and_then(|conn| db::meta_get(&conn, db::ROOT_KEY).ok().flatten())
        .map(PathBuf::from)
        .filter(|root| root.is_dir());
    let root = recorded.unwrap_or_else(|| {
        db.parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    });
    let patterns = Patterns::from_text(&root, "", "")?;
    let readers = SharedPool::new(pool);
    let progress = Arc::new(Progress::default());
    // Channels whose receivers are gone: every request to a watcher fails.
    let (control, _) = mpsc::channel();
    let (nudge, _) = mpsc::sync_channel(1);
    let handle = EngineHandle {
        root,
        db: db.clone(),
        readers: readers.clone(),
        read_only: true,
        progress: progress.clone(),
        doorbell: Arc::new(Doorbell::default()),
        control,
        nudge,
        patterns: SharedPatterns::new(patterns),
        max_file_size: super::config::DEFAULT_MAX_FILE_SIZE,
        own_files: super::config::own_files(&db).into(),
        started: Instant::now(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("obby-replica".into())
        .spawn(move || guard(&db, first, &readers, &progress, &flag))
        .map_err(|source| EngineError::Io {
            path: handle.db.clone(),
            source,
        })?;
    Ok((
        handle,
        ReplicaGuard {
            stop,
            thread: Some(thread),
        },
    ))
}

fn log_open(db: &Path, how: ReplicaOpen) {
    match how {
        ReplicaOpen::ReadOnly => {
            tracing::info!(db = %db.display(), "serving a read-only copy");
        }
        ReplicaOpen::Immutable => tracing::info!(
            db = %db.display(),
            "serving a read-only copy as immutable (its folder is not writable): only a \
             replaced file brings new rows"
        ),
    }
}

/// The guard's loop: see the module comment.
fn guard(
    db: &Path,
    mut current: Option<Identity>,
    readers: &SharedPool,
    progress: &Progress,
    stop: &AtomicBool,
) {
    let wal = super::db::side_file(db, "-wal");
    let mut wal_seen = identity(&wal);
    // A changed identity waits for one more look at the same value.
    let mut pending: Option<Option<Identity>> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(POLL);
        let now = identity(db);
        if now == current {
            pending = None;
            let wal_now = identity(&wal);
            if wal_now != wal_seen {
                wal_seen = wal_now;
                progress.notify();
            }
            continue;
        }
        if pending != Some(now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        if now.is_none() {
            tracing::warn!(db = %db.display(), "the replica file is gone; still serving the last one opened");
            current = now;
            continue;
        }
        match db::replica_pool(db, POOL_SIZE) {
            Ok((pool, how)) => {
                readers.replace(pool);
                current = now;
                wal_seen = identity(&wal);
                tracing::info!(db = %db.display(), "the replica file changed; reopened");
                log_open(db, how);
                progress.notify();
            }
            Err(e) => {
                // Looked at again at the next change of the path.
                current = now;
                tracing::warn!(error = %e, "the replaced replica file cannot be read; still serving the last one opened");
            }
        }
    }
}
