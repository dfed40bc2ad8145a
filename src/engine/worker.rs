//! Workers: one claimed queue row in, one [`Outcome`] out.
//!
//! A worker stats the file, reads and digests it ([`super::hash`]), compares
//! the hash with the path's `file_states` row and, when the content changed,
//! diffs it against the previous version ([`super::diff`]). The event kind is
//! only a hint: what is on disk decides. Workers read the database through
//! their own pooled connection (`file_states`, `file_versions.content`) and
//! never write: the [`super::store`] commits outcomes, after checking that each
//! path's state is still the one the worker saw. Runs on the rayon pool, so a
//! batch's CPU work (read, hash, diff) is parallel.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
    /// Files larger than this are hashed in a stream and stored without text.
    pub max_file_size: u64,
    /// Which files are tracked; a row for an untracked path does nothing.
    pub patterns: SharedPatterns,
    /// A file modified less than this long ago is looked at again later.
    pub settle: std::time::Duration,
}

/// A path's `file_states` row, as far as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The current version (NULL in a database adopted from the old backend).
    pub version_id: Option<i64>,
    /// The last content hash; kept after deletion.
    pub content_hash: String,
    /// Bytes on disk at the last version.
    pub size: i64,
    /// Lines at the last version.
    pub line_count: Option<i64>,
    /// File mtime in ns at the last look, for reconciliation.
    pub mtime_ns: Option<i64>,
    /// True once the file is gone.
    pub is_deleted: bool,
}

/// The file as the worker read it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Hash, text and counts.
    pub digest: Digest,
    /// Modification time (ns since the epoch) from the stat before reading.
    pub mtime_ns: i64,
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
    /// The previous state: of `path`, or of `old_path` for a move.
    pub prev: Option<FileState>,
    /// The new content; `None` for a deletion.
    pub new: Option<Snapshot>,
    /// The diff from the previous to the new text; `None` when either side is
    /// not stored as text, and for deletions.
    pub diff: Option<UnifiedDiff>,
}

/// What processing one row decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Nothing to record: an untracked path, a file gone before it was ever
    /// tracked, or a spurious event with nothing changed.
    Nothing,
    /// Same content as before, new stat data: refresh `file_states` only.
    Touch {
        /// The file.
        path: String,
        /// The state this is based on.
        prev: FileState,
        /// Size now.
        size: i64,
        /// Mtime now.
        mtime_ns: i64,
    },
    /// Changes to record, in order.
    Write(Vec<Record>),
}

impl Outcome {
    /// Every path whose state this outcome was computed from, with that state,
    /// for the store's check that nothing moved underneath.
    pub fn expectations(&self) -> Vec<(&str, Option<&FileState>)> {
        match self {
            Outcome::Nothing => Vec::new(),
            Outcome::Touch { path, prev, .. } => vec![(path.as_str(), Some(prev))],
            Outcome::Write(records) => records
                .iter()
                .flat_map(|r| match (&r.kind, &r.old_path) {
                    (ChangeKind::Moved, Some(old)) => {
                        vec![(old.as_str(), r.prev.as_ref()), (r.path.as_str(), None)]
                    }
                    _ => vec![(r.path.as_str(), r.prev.as_ref())],
                })
                .collect(),
        }
    }
}

/// Loads a path's state.
///
/// # Errors
/// Any SQLite error.
pub fn load_state(conn: &Connection, path: &str) -> rusqlite::Result<Option<FileState>> {
    conn.prepare_cached(
        "SELECT version_id, content_hash, file_size, line_count, mtime_ns, is_deleted
         FROM file_states WHERE file_path = ?1",
    )?
    .query_row([path], |r| {
        Ok(FileState {
            version_id: r.get(0)?,
            content_hash: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            size: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
            line_count: r.get(3)?,
            mtime_ns: r.get(4)?,
            is_deleted: r.get::<_, Option<i64>>(5)?.unwrap_or(0) != 0,
        })
    })
    .optional()
}

/// The stored text of the version a state points at (the newest version of
/// the path when the state does not name one). `None` when that version has
/// no text (binary, oversized).
fn previous_text(
    conn: &Connection,
    path: &str,
    state: &FileState,
) -> rusqlite::Result<Option<String>> {
    let text: Option<Option<String>> = match state.version_id {
        Some(id) => conn
            .prepare_cached("SELECT content FROM file_versions WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?,
        None => conn
            .prepare_cached(
                "SELECT content FROM file_versions WHERE file_path = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([path], |r| r.get(0))
            .optional()?,
    };
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
    if !cfg.patterns.get().is_tracked(Path::new(&row.path)) {
        return Ok(Outcome::Nothing);
    }
    let live = load_state(conn, &row.path)
        .map_err(db)?
        .filter(|s| !s.is_deleted);
    let old_live = match &row.old_path {
        Some(old) if old != &row.path => load_state(conn, old)
            .map_err(db)?
            .filter(|s| !s.is_deleted && !exists(old)),
        _ => None,
    };
    let Some(meta) = regular_file(&row.path)? else {
        // Gone (or not a regular file any more): a deletion of whatever was
        // tracked, the move's source included.
        let mut records = Vec::new();
        if let (Some(old), Some(prev)) = (&row.old_path, old_live) {
            records.push(deletion(old, prev));
        }
        if let Some(prev) = live {
            records.push(deletion(&row.path, prev));
        }
        return Ok(if records.is_empty() {
            Outcome::Nothing
        } else {
            Outcome::Write(records)
        });
    };
    settled(row, &meta, cfg.settle)?;
    let snap = read_snapshot(&row.path, &meta, cfg.max_file_size)?;
    // Changed while it was read: the text may mix two states.
    if let Ok(after) = std::fs::symlink_metadata(&row.path)
        && (after.len() != meta.len() || after.modified().ok() != meta.modified().ok())
    {
        return Err(ItemError::Unsettled {
            path: row.path.clone(),
            wait: cfg.settle,
        });
    }

    if let (Some(old), Some(prev)) = (&row.old_path, old_live) {
        if let Some(target_prev) = live {
            // Moved onto a tracked file: the target was overwritten (modified),
            // the source is gone.
            let over = change(conn, &row.path, None, Some(target_prev), snap).map_err(db)?;
            return Ok(Outcome::Write(vec![deletion(old, prev), over]));
        }
        let moved = change(conn, &row.path, Some(old), Some(prev), snap).map_err(db)?;
        return Ok(Outcome::Write(vec![moved]));
    }
    match live {
        Some(prev) if prev.content_hash == snap.digest.hash => {
            if prev.size == snap.digest.size as i64 && prev.mtime_ns == Some(snap.mtime_ns) {
                Ok(Outcome::Nothing)
            } else {
                Ok(Outcome::Touch {
                    path: row.path.clone(),
                    prev,
                    size: snap.digest.size as i64,
                    mtime_ns: snap.mtime_ns,
                })
            }
        }
        prev => Ok(Outcome::Write(vec![
            change(conn, &row.path, None, prev, snap).map_err(db)?,
        ])),
    }
}

/// Longest a row is deferred for a file that keeps changing; after that the
/// file is read as it is (a log written forever still gets versions).
pub const MAX_DEFER: std::time::Duration = std::time::Duration::from_secs(10);

/// Errs with [`ItemError::Unsettled`] when the file was modified less than
/// `settle` ago (a writer may be between truncating and writing it), unless
/// the row has waited [`MAX_DEFER`] already.
fn settled(row: &QueueRow, meta: &Metadata, settle: std::time::Duration) -> Result<(), ItemError> {
    let Ok(modified) = meta.modified() else {
        return Ok(());
    };
    let age = std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    let waited = super::clock::now_ms().saturating_sub(row.enqueued_ms);
    let max_defer = i64::try_from(MAX_DEFER.as_millis()).unwrap_or(i64::MAX);
    if age < settle && waited < max_defer {
        return Err(ItemError::Unsettled {
            path: row.path.clone(),
            wait: settle - age,
        });
    }
    Ok(())
}

fn deletion(path: &str, prev: FileState) -> Record {
    Record {
        kind: ChangeKind::Deleted,
        path: path.to_owned(),
        old_path: None,
        prev: Some(prev),
        new: None,
        diff: None,
    }
}

/// A created, modified or moved record for `path`, diffed against `prev`.
fn change(
    conn: &Connection,
    path: &str,
    moved_from: Option<&str>,
    prev: Option<FileState>,
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
            let old_text = previous_text(conn, old_path, p)?.unwrap_or_default();
            Some(diff::unified(&old_text, new, old_path, path))
        }
    };
    Ok(Record {
        kind,
        path: path.to_owned(),
        old_path: moved_from.map(str::to_owned),
        prev,
        new: Some(snap),
        diff,
    })
}

/// Reads and digests a file without touching the database (the api's
/// `GetContentHash`). `None` when there is no regular file at `path`.
///
/// # Errors
/// [`ItemError::Read`] when it exists but cannot be read.
pub fn digest_file(path: &str, max_file_size: u64) -> Result<Option<Snapshot>, ItemError> {
    match regular_file(path)? {
        Some(meta) => read_snapshot(path, &meta, max_file_size).map(Some),
        None => Ok(None),
    }
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Stats `path` without following a symlink. `None` when it does not exist or
/// is not a regular file (a symlink, a folder, a FIFO): nothing to track there.
fn regular_file(path: &str) -> Result<Option<Metadata>, ItemError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(Some(meta)),
        Ok(_) => Ok(None),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            Ok(None)
        }
        Err(source) => Err(ItemError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_snapshot(path: &str, meta: &Metadata, max_size: u64) -> Result<Snapshot, ItemError> {
    let read_err = |source| ItemError::Read {
        path: path.to_owned(),
        source,
    };
    let mtime_ns = meta.modified().map(system_time_ns).unwrap_or(0);
    // O_NOFOLLOW: the path was a regular file at stat time; if it was swapped
    // for a symlink since, fail rather than follow it out of the root.
    // O_NONBLOCK: never hang on a file swapped for a FIFO.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let (digest, oversized) = if meta.len() > max_size {
        (stream_digest(&mut file).map_err(read_err)?, true)
    } else {
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
        file.read_to_end(&mut bytes).map_err(read_err)?;
        if bytes.len() as u64 > max_size {
            // Grew past the limit since the stat: keep the limit's promise.
            let mut d = StreamDigester::new();
            d.update(&bytes);
            (d.finish(), true)
        } else {
            (hash::digest_bytes(bytes), false)
        }
    };
    Ok(Snapshot {
        digest,
        mtime_ns,
        oversized,
    })
}

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
