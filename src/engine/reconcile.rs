//! Reconciliation: find what changed while nobody was watching.
//!
//! Walks the root (or a subtree) with the `ignore` crate's walker, symlinks not
//! followed, ignored folders pruned, and compares every tracked regular file
//! with the engine's own `sync_files` row by size and mtime. New files, changed files and
//! tracked files that are gone become pending queue rows. A vanished tracked
//! file whose content (same size, then same hash) reappears at a new path is
//! enqueued as one move. Reads `sync_files` (never the backend's `file_states`,
//! which other programs rewrite); writes only `event_queue`, through
//! [`enqueue_all`] (transactions of [`ENQUEUE_CHUNK`] rows, a busy database
//! retried), in file-name order so a tree is always processed the same way. Never hashes a file it need not. A file
//! whose last change `failed` and that was not modified after the failure is
//! left alone: it is tried again when it changes, not at every start. A file
//! with a whole-second mtime read within one tick of that mtime is read
//! again even when size and mtime match ([`racy`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ignore::WalkBuilder;
use rusqlite::Connection;

use super::clock::system_time_ns;
use super::error::EngineError;
use super::hash;
use super::patterns::Patterns;
use super::queue::{self, ChangeKind, NewEvent};

/// Queue rows written per transaction, so each write stays short.
pub const ENQUEUE_CHUNK: usize = 2_000;

/// What one reconciliation found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Tracked files seen on disk.
    pub seen: usize,
    /// Files with no live state: enqueued as created.
    pub new: usize,
    /// Files whose size or mtime differ: enqueued as modified.
    pub changed: usize,
    /// Tracked files that are gone: enqueued as deleted.
    pub gone: usize,
    /// Gone files found again at a new path: enqueued as moves.
    pub moved: usize,
    /// Entries skipped: names that are not UTF-8, unreadable folders.
    pub skipped: usize,
    /// Files whose last change failed and that have not been modified since
    /// the failure: not enqueued again (a failed file is retried when it
    /// changes, not at every start).
    pub still_failed: usize,
}

impl ReconcileReport {
    /// Queue rows this reconciliation wrote.
    pub fn enqueued(&self) -> usize {
        self.new + self.changed + self.gone + self.moved
    }
}

struct Known {
    size: Option<i64>,
    mtime_ns: Option<i64>,
    read_ns: Option<i64>,
    hash: Option<String>,
    deleted: bool,
}

struct OnDisk {
    path: String,
    size: u64,
    mtime_ns: i64,
}

/// Reconciles `scope` (the root or a folder under it) and enqueues the
/// differences.
///
/// # Errors
/// [`EngineError::Db`] when `sync_files` cannot be read or the queue written.
pub fn reconcile(
    conn: &Connection,
    patterns: &Patterns,
    scope: &Path,
) -> Result<ReconcileReport, EngineError> {
    reconcile_scopes(conn, patterns, &[scope.to_path_buf()])
}

/// Reconciles several scopes at once (none inside another), so a file that
/// left one scope and appeared in another (a folder renamed) pairs up as a
/// move.
///
/// # Errors
/// [`EngineError::Db`] when `sync_files` cannot be read or the queue written.
pub fn reconcile_scopes(
    conn: &Connection,
    patterns: &Patterns,
    scopes: &[PathBuf],
) -> Result<ReconcileReport, EngineError> {
    let (found, report) = differences(conn, patterns, scopes, &[])?;
    let events: Vec<NewEvent> = found.into_iter().map(|d| d.event).collect();
    enqueue_all(conn, &events, "reconcile")?;
    Ok(report)
}

/// Rows that must get into the queue are retried while the database is
/// busy, even while stopping: dropped, they would be lost until the next
/// reconciliation.
static NEVER_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `events` into `event_queue` in transactions of [`ENQUEUE_CHUNK`]
/// rows, retrying a busy database until they get through: the one way into
/// the queue for changes a reconciliation found and for those the watcher
/// debounced (`source` names which, for the coalescing rules of
/// [`queue::enqueue`]).
///
/// # Errors
/// [`EngineError::Db`] for a database error other than busy.
pub fn enqueue_all(
    conn: &Connection,
    events: &[NewEvent],
    source: &str,
) -> Result<(), EngineError> {
    for chunk in events.chunks(ENQUEUE_CHUNK) {
        super::db::retry_busy(&NEVER_STOP, || queue::enqueue(conn, chunk, source)).map_err(
            |source| EngineError::Db {
                path: "event_queue".into(),
                source,
            },
        )?;
    }
    Ok(())
}

/// One difference between the disk and `sync_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The queue row it calls for.
    pub event: NewEvent,
    /// The file's mtime (ns since the epoch); `None` for a file that is gone.
    pub mtime_ns: Option<i64>,
}

/// Compares `scopes` with `sync_files` without enqueuing anything: what
/// [`reconcile_scopes`] would enqueue, with each file's mtime (the poller
/// debounces by it). `moved_dirs` are folder renames the watcher saw
/// (`from`, `to`; oldest first): a new file under a `to` whose path under
/// the matching `from` is gone is that file moved, edited or not, which
/// no content match could tell; the others pair by content.
///
/// # Errors
/// [`EngineError::Db`] when `sync_files` cannot be read.
pub fn differences(
    conn: &Connection,
    patterns: &Patterns,
    scopes: &[PathBuf],
    moved_dirs: &[(PathBuf, PathBuf)],
) -> Result<(Vec<Difference>, ReconcileReport), EngineError> {
    let db = |source| EngineError::Db {
        path: "sync_files".into(),
        source,
    };
    let mut report = ReconcileReport::default();
    let mut known = HashMap::new();
    let mut on_disk = Vec::new();
    for scope in scopes {
        known.extend(load_known(conn, patterns, scope).map_err(db)?);
        on_disk.extend(walk(patterns, scope, &mut report));
    }
    report.seen = on_disk.len();

    let mut found = Vec::new();
    let event = |path, kind, old_path| NewEvent {
        path,
        kind,
        old_path,
    };
    let failed = queue::failed_paths(conn).map_err(db)?;
    // Modified at or before its failure (unix ms): the state that failed.
    let unchanged_since_failure = |file: &OnDisk| {
        failed
            .get(&file.path)
            .is_some_and(|&ms| file.mtime_ns <= ms.saturating_mul(1_000_000))
    };
    let mut new_files = Vec::new();
    for file in on_disk {
        if unchanged_since_failure(&file) {
            report.still_failed += 1;
            known.remove(&file.path);
            continue;
        }
        match known.remove(&file.path) {
            Some(k) if !k.deleted => {
                let same = k.size == Some(file.size as i64)
                    && k.mtime_ns == Some(file.mtime_ns)
                    && !racy(k.mtime_ns, k.read_ns);
                if !same {
                    report.changed += 1;
                    found.push(Difference {
                        mtime_ns: Some(file.mtime_ns),
                        event: event(file.path, ChangeKind::Modified, None),
                    });
                }
            }
            _ => new_files.push(file),
        }
    }
    // Whatever live state is left was not seen: gone, or moved.
    let mut gone: Vec<(String, Known)> = known.into_iter().filter(|(_, k)| !k.deleted).collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for file in new_files {
        let mtime_ns = Some(file.mtime_ns);
        let by_folder = origins(&file.path, moved_dirs).find_map(|old| {
            let index = gone.iter().position(|(path, _)| *path == old)?;
            Some(gone.swap_remove(index).0)
        });
        match by_folder.or_else(|| match_move(&file, &mut gone)) {
            Some(old) => {
                report.moved += 1;
                found.push(Difference {
                    mtime_ns,
                    event: event(file.path, ChangeKind::Moved, Some(old)),
                });
            }
            None => {
                report.new += 1;
                found.push(Difference {
                    mtime_ns,
                    event: event(file.path, ChangeKind::Created, None),
                });
            }
        }
    }
    for (path, _) in gone {
        report.gone += 1;
        found.push(Difference {
            mtime_ns: None,
            event: event(path, ChangeKind::Deleted, None),
        });
    }
    Ok((found, report))
}

/// The time stamps of a file system with whole-second mtimes (FAT and some
/// network file systems keep 1 or 2 s): an mtime with no fraction is taken
/// to come from one.
const COARSE_TICK_NS: i64 = 2_000_000_000;

/// True when a file read at `read_ns` with a whole-second mtime `mtime_ns`
/// may have been written again within the same tick after the read: same
/// size and mtime would hide that change, so it is read again (git's racy
/// entries). A fine mtime needs no such care: a file is read only once it
/// has been quiet for the settle time, far longer than the clock's tick.
pub fn racy(mtime_ns: Option<i64>, read_ns: Option<i64>) -> bool {
    let (Some(mtime), Some(read)) = (mtime_ns, read_ns) else {
        return false;
    };
    mtime % 1_000_000_000 == 0 && mtime.saturating_add(COARSE_TICK_NS) >= read
}

/// Where `path` was before the folder renames `moved_dirs` (oldest first),
/// newest rename undone first: for `a → b` then `b → c`, `c/x` was `b/x`,
/// and before that `a/x`.
fn origins<'a>(
    path: &str,
    moved_dirs: &'a [(PathBuf, PathBuf)],
) -> impl Iterator<Item = String> + 'a {
    let mut at = PathBuf::from(path);
    moved_dirs.iter().rev().filter_map(move |(from, to)| {
        let rest = at.strip_prefix(to).ok()?.to_path_buf();
        at = from.join(rest);
        Some(at.to_string_lossy().into_owned())
    })
}

/// Finds (and removes) the gone file that `file` is a copy of, hashing `file`
/// only when some gone file has its size. Among gone files of the same
/// content (notes made from one template, say), the one of the same name
/// is taken: a renamed folder's `b.md` keeps `b.md`'s history, not `e.md`'s.
fn match_move(file: &OnDisk, gone: &mut Vec<(String, Known)>) -> Option<String> {
    let size = i64::try_from(file.size).ok()?;
    if !gone.iter().any(|(_, k)| k.size == Some(size)) {
        return None;
    }
    let bytes = std::fs::read(&file.path).ok()?;
    let digest = hash::digest_bytes(bytes);
    let same = |k: &Known| k.size == Some(size) && k.hash.as_deref() == Some(digest.hash.as_str());
    let name = Path::new(&file.path).file_name();
    let index = gone
        .iter()
        .position(|(path, k)| same(k) && Path::new(path).file_name() == name)
        .or_else(|| gone.iter().position(|(_, k)| same(k)))?;
    Some(gone.swap_remove(index).0)
}

fn load_known(
    conn: &Connection,
    patterns: &Patterns,
    scope: &Path,
) -> rusqlite::Result<HashMap<String, Known>> {
    // The scope itself and everything under it, as a range on the primary key:
    // "scope/" <= path < "scope0" ('0' follows '/').
    let scope_text = scope.to_string_lossy();
    let (low, high) = (format!("{scope_text}/"), format!("{scope_text}0"));
    let mut stmt = conn.prepare_cached(
        "SELECT path, size, mtime_ns, content_hash, deleted, read_ns FROM sync_files
         WHERE path = ?1 OR (path >= ?2 AND path < ?3)",
    )?;
    let mut rows = stmt.query(rusqlite::params![scope_text, low, high])?;
    let mut known = HashMap::new();
    while let Some(r) = rows.next()? {
        let path: String = r.get(0)?;
        // A file the patterns no longer select is left alone: its history
        // stays, and it is not reported as deleted.
        if !patterns.is_tracked(Path::new(&path)) {
            continue;
        }
        known.insert(
            path,
            Known {
                size: r.get(1)?,
                mtime_ns: r.get(2)?,
                hash: r.get(3)?,
                deleted: r.get::<_, i64>(4)? != 0,
                read_ns: r.get(5)?,
            },
        );
    }
    Ok(known)
}

fn walk(patterns: &Patterns, scope: &Path, report: &mut ReconcileReport) -> Vec<OnDisk> {
    // The walker follows a symlink given as its start, though never one
    // met on the way: a folder replaced by a link holds nothing tracked
    // (what the link leads to is outside the root, as the workers see it).
    // A scope that is gone (a folder renamed away) holds nothing either,
    // which is no error to warn about.
    match std::fs::symlink_metadata(scope) {
        Ok(m) if m.file_type().is_symlink() => return Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        _ => {}
    }
    let filter = patterns.clone();
    let walker = WalkBuilder::new(scope)
        .standard_filters(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            !(e.file_type().is_some_and(|t| t.is_dir()) && filter.is_ignored_dir(e.path()))
        })
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // The walk's error names its path twice (its own and the
                // I/O error's): say the path once, then the OS error.
                match (walk_error_path(&e), e.io_error()) {
                    (Some(path), Some(io)) => tracing::warn!(
                        path = %path.display(),
                        error = %io,
                        "skipping an entry the walk could not read"
                    ),
                    _ => tracing::warn!(error = %e, "skipping an entry the walk could not read"),
                }
                report.skipped += 1;
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) || !patterns.is_tracked(entry.path()) {
            continue;
        }
        let Some(path) = entry.path().to_str() else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            report.skipped += 1;
            continue;
        };
        match entry.metadata() {
            Ok(meta) => files.push(OnDisk {
                path: path.to_owned(),
                size: meta.len(),
                mtime_ns: meta.modified().map(system_time_ns).unwrap_or(0),
            }),
            Err(e) => {
                // Vanished mid-walk, or unreadable: if it was tracked, the
                // worker finds out which when its row comes up.
                tracing::debug!(path, error = %e, "cannot stat during the walk");
                files.push(OnDisk {
                    path: path.to_owned(),
                    size: u64::MAX,
                    mtime_ns: 0,
                });
            }
        }
    }
    files
}

/// The path a walk error is about, under its depth and path wrappers.
fn walk_error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            walk_error_path(err)
        }
        _ => None,
    }
}
