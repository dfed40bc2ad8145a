//! Workers: one claimed queue row in, one [`Outcome`] out.
//!
//! A worker stats the file, reads and digests it ([`super::hash`]), compares
//! the hash with the version the change would follow and, when the content
//! changed, diffs it against that version's text ([`super::diff`]). The
//! version a change follows is the newest `file_versions` row of the path,
//! whoever wrote it (the backend's monitor writes versions too); the engine's
//! own `sync_files` row says whether the file exists and when it was last
//! looked at. `file_states` is never read: other programs rewrite it. A
//! content that already is the newest version records no change. The event
//! kind is only a hint: what is on disk decides. Workers read the database
//! through their own pooled connection and never write: the [`super::store`]
//! commits outcomes, after checking that each path's `sync_files` row and
//! newest version are still the ones the worker saw. Runs on the rayon pool, so a
//! batch's CPU work (read, hash, diff) is parallel.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension};

use super::clock::system_time_ns;
use super::diff::{self, UnifiedDiff};
use super::error::ItemError;
use super::hash::{self, Digest, StreamDigester};
use super::patterns::SharedPatterns;
use super::queue::{ChangeKind, QueueRow};

/// Read buffer for files hashed in a stream (over the size limit).
const STREAM_CHUNK: usize = 256 * 1024;

/// What a worker needs besides the row.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The canonical root: files are opened beneath it only.
    pub root: std::path::PathBuf,
    /// The database and its side files, never opened (a hard link to one
    /// inside the root is refused: `engine/confined.rs`).
    pub own_files: Vec<std::path::PathBuf>,
    /// Files larger than this are hashed in a stream and stored without text.
    pub max_file_size: u64,
    /// Which files are tracked; a row for an untracked path does nothing.
    pub patterns: SharedPatterns,
    /// Without a watcher, a file modified less than this long ago is looked
    /// at again later.
    pub settle: std::time::Duration,
    /// The watcher's debounce in ms (0 without a watcher), which is then the
    /// settle time: shared with the enqueuer, so a debounce changed through
    /// the api changes the settle time of every source at once.
    pub debounce_ms: Arc<AtomicU64>,
    /// The watcher's `max_wait` in ms (0 without a watcher): under `run`
    /// the longest a file that never settles is deferred, so it becomes a
    /// version about that often; [`MAX_DEFER`] without a watcher.
    pub max_wait_ms: Arc<AtomicU64>,
    /// Faults the tests inject from outside (see [`Faults`]).
    pub faults: Faults,
}

impl WorkerConfig {
    /// The watcher's current debounce under `run`: a change found by any
    /// source becomes a version once it has been quiet that long, like the
    /// watcher's own; `settle` without a watcher (`scan`).
    pub fn effective_settle(&self) -> std::time::Duration {
        match self.debounce_ms.load(Ordering::Relaxed) {
            0 => self.settle,
            ms => std::time::Duration::from_millis(ms),
        }
    }

    /// The longest a row is deferred for a file that keeps changing: the
    /// watcher's `max_wait` under `run`, [`MAX_DEFER`] otherwise.
    pub fn defer_cap(&self) -> std::time::Duration {
        match self.max_wait_ms.load(Ordering::Relaxed) {
            0 => MAX_DEFER,
            ms => std::time::Duration::from_millis(ms),
        }
    }
}

/// Faults injected from outside, so the tests can drive the real binary
/// into a crash: `OBBY_FAULT_PANIC_PATH` makes the worker panic on any path
/// that contains it, `OBBY_FAULT_ABORT_PATH` aborts the whole process there
/// (as a crash in a library or the OOM killer would). Unset, they cost one
/// `None` check per row.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    panic_on: Option<String>,
    abort_on: Option<String>,
}

impl Faults {
    /// Read from the environment once, at start-up.
    pub fn from_env() -> Faults {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Faults {
            panic_on: var("OBBY_FAULT_PANIC_PATH"),
            abort_on: var("OBBY_FAULT_ABORT_PATH"),
        }
    }

    fn strike(&self, path: &str) {
        if self.abort_on.as_deref().is_some_and(|p| path.contains(p)) {
            eprintln!("obby-sync: OBBY_FAULT_ABORT_PATH: aborting on {path}");
            std::process::abort();
        }
        if self.panic_on.as_deref().is_some_and(|p| path.contains(p)) {
            panic!("OBBY_FAULT_PANIC_PATH: injected panic on {path}");
        }
    }
}

/// A path's row in `sync_files`: the engine's own record of it, written only
/// by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The version the engine last wrote or saw for the path.
    pub version_id: Option<i64>,
    /// The last content hash; kept after deletion (moves are found by it).
    pub content_hash: Option<String>,
    /// Bytes on disk at the last look; `None` means "look again".
    pub size: Option<i64>,
    /// File mtime in ns at the last look, for reconciliation.
    pub mtime_ns: Option<i64>,
    /// When it was last read (ns); see [`super::reconcile::racy`].
    pub read_ns: Option<i64>,
    /// True once the file is gone.
    pub deleted: bool,
}

/// The newest `file_versions` row of a path, whoever wrote it: the base of
/// the next diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    /// Its id.
    pub id: i64,
    /// Its content hash.
    pub content_hash: String,
    /// Bytes on disk then (NULL in rows the backend wrote).
    pub size: Option<i64>,
}

/// The version a change follows: what `old_version_id`, `old_content_hash`
/// and a deletion's event size come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prev {
    /// The previous version (none for a file the engine knew without one).
    pub version_id: Option<i64>,
    /// Its content hash.
    pub content_hash: Option<String>,
    /// Its size in bytes.
    pub size: i64,
}

/// What the worker read of one path, for the store's compare-and-set: the
/// outcome is written only if both are unchanged at commit time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The path.
    pub path: String,
    /// Its `sync_files` row.
    pub state: Option<FileState>,
    /// The id of its newest version.
    pub newest: Option<i64>,
}

/// The file as the worker read it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Hash, text and counts.
    pub digest: Digest,
    /// Modification time (ns since the epoch) from the stat before reading.
    pub mtime_ns: i64,
    /// The clock (ns since the epoch) at that stat: when the file was read.
    pub read_ns: i64,
    /// True when the file was over the size limit (hashed only).
    pub oversized: bool,
}

/// One change to record. The store writes its rows in one transaction.
#[derive(Debug, Clone)]
pub struct Record {
    /// `created`, `modified`, `deleted` or `moved`.
    pub kind: ChangeKind,
    /// The path the change is about (a move's destination).
    pub path: String,
    /// A move's source.
    pub old_path: Option<String>,
    /// The version this change follows: of `path`, or of `old_path` for a move.
    pub prev: Option<Prev>,
    /// The new content; `None` for a deletion.
    pub new: Option<Snapshot>,
    /// The diff from the previous to the new text; `None` when either side is
    /// not stored as text, and for deletions.
    pub diff: Option<UnifiedDiff>,
    /// The hash part of the change's id ([`super::hash::change_tag`]),
    /// computed here so the writer only adds the stamp.
    pub tag: String,
}

/// The content of a file is already the newest version of its path (the
/// same content with a new mtime, or a version another program wrote):
/// refresh the engine's state and `file_states`, record no change.
#[derive(Debug, Clone)]
pub struct Touch {
    /// The file.
    pub path: String,
    /// The version that holds this content.
    pub version_id: Option<i64>,
    /// The file as read.
    pub snap: Snapshot,
    /// True when only the read time changed (a racy state read again and
    /// found the same): nothing the backend sees is rewritten.
    pub read_only: bool,
}

/// A worker's decision and what it was based on. Nothing to record (an
/// untracked path, a file gone before it was ever tracked, a spurious event)
/// is no records and no touch.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Changes to record, in order.
    pub records: Vec<Record>,
    /// A state to refresh without a change, after the records.
    pub touch: Option<Touch>,
    /// Every path whose state the outcome was computed from.
    pub seen: Vec<Seen>,
}

/// Loads a path's `sync_files` row.
///
/// # Errors
/// Any SQLite error.
pub fn load_state(conn: &Connection, path: &str) -> rusqlite::Result<Option<FileState>> {
    conn.prepare_cached(
        "SELECT version_id, content_hash, size, mtime_ns, deleted, read_ns FROM sync_files
         WHERE path = ?1",
    )?
    .query_row([path], |r| {
        Ok(FileState {
            version_id: r.get(0)?,
            content_hash: r.get(1)?,
            size: r.get(2)?,
            mtime_ns: r.get(3)?,
            deleted: r.get::<_, i64>(4)? != 0,
            read_ns: r.get(5)?,
        })
    })
    .optional()
}

/// The newest `file_versions` row of a path.
///
/// # Errors
/// Any SQLite error.
pub fn newest_version(conn: &Connection, path: &str) -> rusqlite::Result<Option<Newest>> {
    conn.prepare_cached(
        "SELECT id, content_hash, size FROM file_versions WHERE file_path = ?1
         ORDER BY id DESC LIMIT 1",
    )?
    .query_row([path], |r| {
        Ok(Newest {
            id: r.get(0)?,
            content_hash: r.get(1)?,
            size: r.get(2)?,
        })
    })
    .optional()
}

/// A path as the worker found it in the database.
struct Known {
    seen: Seen,
    /// The version a change of this path follows, when the file is live:
    /// the newest version if another program wrote it after the engine's
    /// own record (a version is never based on a stale one), else the
    /// engine's record while it says the file exists.
    live: Option<Prev>,
    /// True when `live` is a version the engine did not write or see.
    foreign: bool,
}

fn known(conn: &Connection, path: &str) -> rusqlite::Result<Known> {
    let state = load_state(conn, path)?;
    let newest = newest_version(conn, path)?;
    let foreign = match (&newest, &state) {
        (Some(n), Some(s)) => s.version_id != Some(n.id),
        (Some(_), None) => true,
        (None, _) => false,
    };
    let live = match (&newest, &state) {
        (Some(n), _) if foreign => Some(Prev {
            version_id: Some(n.id),
            content_hash: Some(n.content_hash.clone()),
            size: n.size.unwrap_or(0),
        }),
        (_, Some(s)) if !s.deleted => Some(Prev {
            version_id: s.version_id,
            content_hash: s.content_hash.clone(),
            size: s.size.unwrap_or(0),
        }),
        _ => None,
    };
    Ok(Known {
        seen: Seen {
            path: path.to_owned(),
            state,
            newest: newest.map(|n| n.id),
        },
        live,
        foreign,
    })
}

/// The stored text of a version; `None` when it has no text (binary,
/// oversized) or there is no version.
fn version_text(conn: &Connection, version_id: Option<i64>) -> rusqlite::Result<Option<String>> {
    let Some(id) = version_id else {
        return Ok(None);
    };
    let text: Option<Option<String>> = conn
        .prepare_cached("SELECT content FROM file_versions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(text.flatten())
}

/// Processes one claimed row.
///
/// # Errors
/// [`ItemError::Read`] when the file exists but cannot be read;
/// [`ItemError::Db`] when the previous state cannot be loaded.
pub fn process(
    row: &QueueRow,
    conn: &Connection,
    cfg: &WorkerConfig,
) -> Result<Outcome, ItemError> {
    let db = |source| ItemError::Db {
        path: row.path.clone(),
        source,
    };
    cfg.faults.strike(&row.path);
    if !cfg.patterns.get().is_tracked(Path::new(&row.path)) {
        return Ok(Outcome::default());
    }
    let target = known(conn, &row.path).map_err(db)?;
    let source = match &row.old_path {
        Some(old) if old != &row.path => Some((old.clone(), known(conn, old).map_err(db)?)),
        _ => None,
    };
    let mut out = Outcome {
        seen: vec![target.seen.clone()],
        ..Outcome::default()
    };
    // The move's source, when it was live and is gone (a source that still
    // exists was copied, not moved).
    let mut moved_from = None;
    if let Some((old, k)) = source {
        out.seen.push(k.seen);
        if let Some(prev) = k.live.filter(|_| !exists(&old)) {
            moved_from = Some((old, prev));
        }
    }
    let Some((file, meta)) = regular_file(&cfg.root, &row.path, &cfg.own_files)? else {
        // Gone (or not a regular file any more): a deletion of whatever was
        // tracked, the move's source included.
        if let Some((old, prev)) = moved_from {
            out.records.push(deletion(&old, prev));
        }
        if let Some(prev) = target.live {
            out.records.push(deletion(&row.path, prev));
        }
        return Ok(out);
    };
    settled(row, &meta, cfg.effective_settle(), cfg.defer_cap())?;
    let snap = read_snapshot(&row.path, file, &meta, cfg.max_file_size)?;
    // Changed while it was read: the text may mix two states.
    if let Ok(after) = std::fs::symlink_metadata(&row.path)
        && (after.len() != meta.len() || after.modified().ok() != meta.modified().ok())
    {
        return Err(ItemError::Unsettled {
            path: row.path.clone(),
            wait: cfg.effective_settle(),
        });
    }

    let moved_onto_nothing = moved_from.is_some() && target.live.is_none();
    if let Some((old, prev)) = moved_from {
        if moved_onto_nothing {
            out.records
                .push(change(conn, &row.path, Some(&old), Some(prev), snap).map_err(db)?);
            return Ok(out);
        }
        // Moved onto a tracked file: the source is gone, and the target is
        // modified (or already holds this content).
        out.records.push(deletion(&old, prev));
    }
    match target.live {
        Some(prev) if prev.content_hash.as_deref() == Some(snap.digest.hash.as_str()) => {
            let same_stat = !target.foreign
                && target.seen.state.as_ref().is_some_and(|s| {
                    s.size == Some(snap.digest.size as i64) && s.mtime_ns == Some(snap.mtime_ns)
                });
            // A racy state read again and found the same gets this read's
            // time, so it stops being read again once a tick old.
            let racy = same_stat
                && target
                    .seen
                    .state
                    .as_ref()
                    .is_some_and(|s| super::reconcile::racy(s.mtime_ns, s.read_ns));
            if !same_stat || racy {
                out.touch = Some(Touch {
                    path: row.path.clone(),
                    version_id: prev.version_id,
                    snap,
                    read_only: racy,
                });
            }
        }
        prev => out
            .records
            .push(change(conn, &row.path, None, prev, snap).map_err(db)?),
    }
    Ok(out)
}

/// Longest a row is deferred for a file that keeps changing; after that the
/// file is read as it is (a log written forever still gets versions).
pub const MAX_DEFER: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an empty file must have been quiet before it becomes a
/// version. Empty is what a file is between `open(O_TRUNC)` (or a create)
/// and its first write; a writer starved of CPU for longer than the settle
/// time left such states behind as versions under heavy load. A note that
/// really is empty is recorded this much later, and no deferral cap cuts
/// the wait short: a file that keeps being rewritten is read when it is
/// not empty.
pub const EMPTY_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Errs with [`ItemError::Unsettled`] when the file was modified less than
/// `settle` ago (a writer may be between truncating and writing it), unless
/// the row was deferred often enough to have waited `cap` already;
/// an empty file waits for [`EMPTY_SETTLE`] instead, with no cap (a zero
/// `settle` waits for nothing).
/// Deferrals are counted, not timed, and an mtime in the future counts as
/// settled, so a clock stepped backwards defers nothing for longer.
fn settled(
    row: &QueueRow,
    meta: &Metadata,
    settle: std::time::Duration,
    cap: std::time::Duration,
) -> Result<(), ItemError> {
    let Ok(modified) = meta.modified() else {
        return Ok(());
    };
    let Ok(age) = std::time::SystemTime::now().duration_since(modified) else {
        // Modified "in the future": the clock went back; nothing to wait for.
        return Ok(());
    };
    if !settle.is_zero() && meta.len() == 0 && age < EMPTY_SETTLE.max(settle) {
        return Err(ItemError::Unsettled {
            path: row.path.clone(),
            wait: EMPTY_SETTLE.max(settle) - age,
        });
    }
    let max_deferrals = i64::try_from(cap.as_millis() / settle.as_millis().max(1))
        .unwrap_or(i64::MAX)
        .max(1);
    if age < settle && row.deferrals < max_deferrals {
        return Err(ItemError::Unsettled {
            path: row.path.clone(),
            wait: settle - age,
        });
    }
    Ok(())
}

fn deletion(path: &str, prev: Prev) -> Record {
    let tag = super::hash::change_tag(
        path,
        ChangeKind::Deleted.as_str(),
        prev.content_hash.as_deref(),
        None,
        "",
    );
    Record {
        kind: ChangeKind::Deleted,
        path: path.to_owned(),
        old_path: None,
        prev: Some(prev),
        new: None,
        diff: None,
        tag,
    }
}

/// A created, modified or moved record for `path`, diffed against `prev`.
fn change(
    conn: &Connection,
    path: &str,
    moved_from: Option<&str>,
    prev: Option<Prev>,
    snap: Snapshot,
) -> rusqlite::Result<Record> {
    let kind = match (&prev, moved_from) {
        (_, Some(_)) => ChangeKind::Moved,
        (Some(_), None) => ChangeKind::Modified,
        (None, None) => ChangeKind::Created,
    };
    let diff = match (&snap.digest.text, &prev) {
        (None, _) => None,
        (Some(new), None) => Some(diff::unified("", new, path, path)),
        (Some(new), Some(p)) => {
            let old_path = moved_from.unwrap_or(path);
            match (version_text(conn, p.version_id)?, p.version_id) {
                (Some(old_text), _) => Some(diff::unified(&old_text, new, old_path, path)),
                // The previous version is binary or oversized: no text to
                // diff against, so no diff row (as for the binary version).
                (None, Some(_)) => None,
                (None, None) => Some(diff::unified("", new, old_path, path)),
            }
        }
    };
    let tag = super::hash::change_tag(
        path,
        kind.as_str(),
        prev.as_ref().and_then(|p| p.content_hash.as_deref()),
        Some(&snap.digest.hash),
        "",
    );
    Ok(Record {
        kind,
        path: path.to_owned(),
        old_path: moved_from.map(str::to_owned),
        prev,
        new: Some(snap),
        diff,
        tag,
    })
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Opens `path` beneath `root` ([`super::confined::open`]: no symlink
/// followed anywhere on the way, `O_NONBLOCK`) and returns it with its
/// `fstat`. `None` when it does not exist, is not a regular file (a folder,
/// a FIFO) or is reached only through a symlink (outside the root, as the
/// walker sees it): nothing to track there.
fn regular_file(
    root: &Path,
    path: &str,
    shielded: &[std::path::PathBuf],
) -> Result<Option<(File, Metadata)>, ItemError> {
    match super::confined::open(root, Path::new(path), shielded) {
        Ok((file, meta)) if meta.file_type().is_file() => Ok(Some((file, meta))),
        Ok(_) => Ok(None),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.kind() == io::ErrorKind::NotADirectory
                || super::confined::is_outside(&e) =>
        {
            Ok(None)
        }
        Err(source) => Err(ItemError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_snapshot(
    path: &str,
    mut file: File,
    meta: &Metadata,
    max_size: u64,
) -> Result<Snapshot, ItemError> {
    let read_err = |source| ItemError::Read {
        path: path.to_owned(),
        source,
    };
    let mtime_ns = meta.modified().map(system_time_ns).unwrap_or(0);
    let read_ns = system_time_ns(std::time::SystemTime::now());
    let (digest, oversized) = digest_open(&mut file, meta.len(), max_size).map_err(read_err)?;
    Ok(Snapshot {
        digest,
        mtime_ns,
        read_ns,
        oversized,
    })
}

/// Digests an open file of `size` bytes (its `fstat`) as the store keeps it:
/// over `max_size` hashed in a stream without text (also when it grew past
/// the limit since the `fstat`). Returns the digest and whether it was over
/// the limit. The workers' and the api's reads both use it.
///
/// # Errors
/// The read's I/O error.
pub fn digest_open(file: &mut File, size: u64, max_size: u64) -> io::Result<(Digest, bool)> {
    if size > max_size {
        return Ok((stream_digest(file)?, true));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    file.read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_size {
        // Grew past the limit since the fstat: keep the limit's promise.
        let mut d = StreamDigester::new();
        d.update(&bytes);
        return Ok((d.finish(), true));
    }
    Ok((hash::digest_bytes(bytes), false))
}

/// Hashes a file in a stream, without keeping its text (files over the
/// size limit).
///
/// # Errors
/// The read's I/O error.
fn stream_digest(file: &mut File) -> io::Result<Digest> {
    let mut digester = StreamDigester::new();
    let mut buf = vec![0u8; STREAM_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => digester.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(digester.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(path: &str, deferrals: i64) -> QueueRow {
        QueueRow {
            id: super::super::queue::QueueId(1),
            path: path.to_owned(),
            kind: ChangeKind::Modified,
            old_path: None,
            attempts: 1,
            enqueued_ms: 0,
            deferrals,
        }
    }

    #[test]
    fn an_empty_file_waits_for_empty_settle_with_no_cap_a_written_one_for_settle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.md");
        let full = dir.path().join("full.md");
        std::fs::write(&empty, "").expect("write");
        std::fs::write(&full, "# note\n").expect("write");
        let meta = |p: &std::path::Path| std::fs::metadata(p).expect("stat");
        let settle = Duration::from_millis(100);
        let capped = i64::MAX;

        // Just written: both wait; the empty one for about EMPTY_SETTLE.
        match settled(&row("empty.md", 0), &meta(&empty), settle, MAX_DEFER) {
            Err(ItemError::Unsettled { wait, .. }) => {
                assert!(wait > settle && wait <= EMPTY_SETTLE, "{wait:?}");
            }
            other => panic!("an empty fresh file must wait, got {other:?}"),
        }
        assert!(settled(&row("full.md", 0), &meta(&full), settle, MAX_DEFER).is_err());
        // At the deferral cap a written file is read, an empty one still waits.
        assert!(settled(&row("full.md", capped), &meta(&full), settle, MAX_DEFER).is_ok());
        assert!(settled(&row("empty.md", capped), &meta(&empty), settle, MAX_DEFER).is_err());
        // A zero settle waits for nothing.
        assert!(
            settled(
                &row("empty.md", 0),
                &meta(&empty),
                Duration::ZERO,
                MAX_DEFER
            )
            .is_ok()
        );
        // Once older than EMPTY_SETTLE, an empty file is a state like any other.
        let old = std::time::SystemTime::now() - EMPTY_SETTLE * 2;
        std::fs::File::options()
            .write(true)
            .open(&empty)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        assert!(settled(&row("empty.md", 0), &meta(&empty), settle, MAX_DEFER).is_ok());
        // The cap is a number of deferrals of `settle` each: under `run`,
        // `max_wait` (here 3 x 100 ms) instead of MAX_DEFER.
        let cap = Duration::from_millis(300);
        assert!(settled(&row("full.md", 2), &meta(&full), settle, cap).is_err());
        assert!(settled(&row("full.md", 3), &meta(&full), settle, cap).is_ok());
    }
}
