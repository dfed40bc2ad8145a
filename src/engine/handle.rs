//! [`EngineHandle`]: the one door through which the api (and anything else
//! outside the engine that runs beside it) uses a running engine.
//!
//! Input: calls from the api's tasks, on any thread. Output: plain data (the
//! types `engine/mod.rs` re-exports) or an [`EngineError`]. Behind the door:
//! the api's own reader pool (never the workers' or the writer's
//! connection), the enqueuer's control channel, the commit counters and the
//! patterns in force. Reads the Obby tables for status; writes only
//! `event_queue` (through `queue.rs`, its owner) and `sync_meta`. Every
//! method that touches the database blocks on it (a short query, a busy
//! timeout at worst): the api calls those in `spawn_blocking`. It never
//! waits for processing itself: [`EngineHandle::track`] enqueues and
//! [`EngineHandle::tracked`] says what is finished, and the api waits for
//! commits between the two on its runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension as _;

use super::control::Control;
use super::db::{self, SharedPool};
use super::diff::{self, UnifiedDiff};
use super::error::EngineError;
use super::hash::{self, Digest};
use super::history::{
    self, Activity, DiffRow, FileRow, HistoryError, Period, Source, TimeAnalysis, VersionRow,
};
use super::patterns::{ApiPatterns, Patterns, SharedPatterns};
use super::progress::{self, Doorbell, Progress, ProgressSnapshot};
use super::queue::{self, ChangeKind, FailedRow, NewEvent, PathProgress, QueueCounts};
use super::read::{self, ReadError};
use super::search::{self, Hit, SearchError, SearchOptions};
use super::watcher::FsEvent;

/// A pooled connection of the api's.
type Pooled = r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager>;

/// The queue `source` of rows the api enqueues.
const API_SOURCE: &str = "api";

/// A cheap, cloneable handle the api uses to read the database, enqueue
/// files and steer the watcher while the engine runs.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) root: PathBuf,
    pub(super) db: PathBuf,
    /// The api's own connections: api calls can never starve the workers.
    /// Swapped for a new pool when a replica's file is replaced.
    pub(super) readers: SharedPool,
    /// A read-only replica (`obby-sync serve`): nothing records or writes,
    /// and the api refuses every call that would.
    pub(super) read_only: bool,
    pub(super) progress: Arc<Progress>,
    pub(super) doorbell: Arc<Doorbell>,
    pub(super) control: mpsc::Sender<Control>,
    pub(super) nudge: mpsc::SyncSender<FsEvent>,
    pub(super) patterns: SharedPatterns,
    pub(super) max_file_size: u64,
    /// The database and its side files, which no read of a client's may
    /// open (`engine/confined.rs`).
    pub(super) own_files: Arc<[PathBuf]>,
    pub(super) started: Instant,
}

/// What the engine knows about itself, for the api's status call.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    /// Queue rows per status.
    pub queue: QueueCounts,
    /// The oldest failed rows (at most the number asked for).
    pub failures: Vec<FailedRow>,
    /// The watch backend as the watcher recorded it (`inotify`, `poll
    /// (reason)`), or `replica (read-only <db>)` on a replica, whose stored
    /// backend is the recording machine's.
    pub backend: String,
    /// `file_versions` rows.
    pub versions: i64,
    /// `content_diffs` rows.
    pub diffs: i64,
    /// `file_changes` rows.
    pub changes: i64,
    /// Paths tracked and present.
    pub files_tracked: i64,
    /// Paths whose deletion is recorded.
    pub files_deleted: i64,
    /// Time since the engine opened.
    pub uptime: Duration,
    /// The longest write transaction so far, in milliseconds.
    pub longest_write_ms: f64,
}

/// How a tracked path's processing ended ([`EngineHandle::tracked`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackOutcome {
    /// Its last row failed, with this error.
    Failed(Option<String>),
    /// The engine has no record of it: the patterns do not select it, or it
    /// does not exist.
    Untracked,
    /// Its deletion is recorded.
    Deleted,
    /// Its current state as recorded.
    Recorded {
        /// The content hash.
        content_hash: String,
        /// Bytes on disk.
        size: i64,
        /// The version id (0 when none).
        version_id: i64,
    },
}

impl EngineHandle {
    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// True for a read-only replica (`obby-sync serve`): no watcher, no
    /// workers, no writes; services must refuse calls that would write or
    /// steer the engine (the api answers them `FAILED_PRECONDITION`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The committed-work counters.
    pub fn progress(&self) -> ProgressSnapshot {
        self.progress.snapshot()
    }

    /// Calls `hook` after every committed batch (see [`Progress::on_commit`]).
    pub fn on_commit(&self, hook: progress::CommitHook) {
        self.progress.on_commit(hook);
    }

    /// Time since the engine opened.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The patterns in force.
    pub fn patterns(&self) -> Arc<Patterns> {
        self.patterns.get()
    }

    /// Files above this size are hashed only.
    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    /// A pooled connection, for the api's own reads of committed rows (the
    /// change feed); anything that writes goes through a method here.
    ///
    /// # Errors
    /// [`EngineError::Pool`] when none can be had.
    pub fn conn(&self) -> Result<Pooled, EngineError> {
        self.readers.get()
    }

    /// The read side of the history (the Query service's questions), on one
    /// pooled connection held until the [`History`] is dropped.
    ///
    /// # Errors
    /// [`EngineError::Pool`] when no connection can be had.
    pub fn history(&self) -> Result<History, EngineError> {
        Ok(History {
            conn: HistoryConn::Pooled(self.conn()?),
            root: self.root.clone(),
        })
    }

    fn sql(&self, source: rusqlite::Error) -> EngineError {
        EngineError::from_sqlite(&self.db, source)
    }

    /// Sends a request to the watcher and wakes it. Returns false when the
    /// watcher is not running.
    fn send(&self, control: Control) -> bool {
        let sent = self.control.send(control).is_ok();
        let _ = self.nudge.try_send(FsEvent::Nudge);
        sent
    }

    /// Asks the watcher to rescan `scope` (a folder or file under the root).
    /// Returns false when the watcher is not running.
    pub fn rescan(&self, scope: PathBuf) -> bool {
        self.send(Control::Rescan(scope))
    }

    /// Pauses live recording until [`EngineHandle::resume`]. Returns false
    /// when the watcher is not running.
    pub fn pause(&self) -> bool {
        self.send(Control::Pause(true))
    }

    /// Resumes live recording; the watcher rescans the root, so nothing
    /// changed meanwhile is missed. Returns false when the watcher is not
    /// running.
    pub fn resume(&self) -> bool {
        self.send(Control::Pause(false))
    }

    /// Sets a new quiet time per path (the workers' settle time follows).
    /// Returns false when the watcher is not running.
    pub fn set_debounce(&self, debounce: Duration) -> bool {
        self.send(Control::SetDebounce(debounce))
    }

    /// The first step of the `Sync` barrier: the receiver completes once
    /// every change made before this call is in the queue, and fails when
    /// the watcher stops first. None when the watcher is not running.
    pub fn barrier(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.send(Control::Barrier(reply)).then_some(done)
    }

    /// The patterns added through the api, as stored.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn api_patterns(&self) -> Result<ApiPatterns, EngineError> {
        let conn = self.conn()?;
        db::api_patterns(&conn).map_err(|e| self.sql(e))
    }

    /// Validates and stores new api patterns (`sync_meta`, so a restart
    /// keeps them), then has the watcher reload its patterns and rescan.
    ///
    /// # Errors
    /// [`EngineError::Pattern`] for a pattern that is not a valid glob or
    /// leaves the root (nothing is stored then); [`EngineError::Pool`], or
    /// a database error.
    pub fn set_api_patterns(&self, patterns: &ApiPatterns) -> Result<(), EngineError> {
        patterns.validate(&self.root)?;
        let conn = self.conn()?;
        let sql = |e| self.sql(e);
        db::meta_set(&conn, ApiPatterns::WATCH_KEY, &patterns.watch.join("\n")).map_err(sql)?;
        db::meta_set(&conn, ApiPatterns::IGNORE_KEY, &patterns.ignore.join("\n")).map_err(sql)?;
        drop(conn);
        self.send(Control::ReloadPatterns);
        Ok(())
    }

    /// A `sync_meta` value.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn meta(&self, key: &str) -> Result<Option<String>, EngineError> {
        let conn = self.conn()?;
        db::meta_get(&conn, key).map_err(|e| self.sql(e))
    }

    /// Sets `sync_meta` values, in order (the api's bound addresses).
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error (the values before it
    /// are set).
    pub fn set_meta(&self, values: &[(&str, String)]) -> Result<(), EngineError> {
        let conn = self.conn()?;
        for (key, value) in values {
            db::meta_set(&conn, key, value).map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// Queue and table counts, the oldest `max_failures` failed rows, the
    /// watch backend, uptime and the longest write.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn status(&self, max_failures: usize) -> Result<EngineStatus, EngineError> {
        let conn = self.conn()?;
        let sql = |e| self.sql(e);
        let queue = queue::counts(&conn).map_err(sql)?;
        let failures = queue::failures(&conn, max_failures).map_err(sql)?;
        let counts = history::counts(&conn).map_err(sql)?;
        let backend = if self.read_only {
            format!("replica (read-only {})", self.db.display())
        } else {
            db::meta_get(&conn, "watch_backend")
                .map_err(sql)?
                .unwrap_or_default()
        };
        Ok(EngineStatus {
            queue,
            failures,
            backend,
            versions: counts.versions,
            diffs: counts.diffs,
            changes: counts.changes,
            files_tracked: counts.files_tracked,
            files_deleted: counts.files_deleted,
            uptime: self.uptime(),
            longest_write_ms: self.progress().longest_write_us as f64 / 1000.0,
        })
    }

    /// The newest queue row's id (0 for none): the second step of the
    /// `Sync` barrier waits until [`EngineHandle::outstanding_through`] it
    /// is 0.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn queue_horizon(&self) -> Result<i64, EngineError> {
        let conn = self.conn()?;
        queue::newest_id(&conn).map_err(|e| self.sql(e))
    }

    /// Queue rows up to id `horizon` still pending or claimed.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn outstanding_through(&self, horizon: i64) -> Result<i64, EngineError> {
        let conn = self.conn()?;
        queue::outstanding_through(&conn, horizon).map_err(|e| self.sql(e))
    }

    /// Enqueues `paths` (canonical, inside the root; a path that does not
    /// exist as a deletion) in one transaction, coalescing with pending
    /// rows, and wakes the processing loop. Returns, per path, the floor for
    /// [`EngineHandle::tracked`].
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error (nothing is queued then).
    pub fn track(&self, paths: &[String]) -> Result<HashMap<String, i64>, EngineError> {
        let events: Vec<NewEvent> = paths
            .iter()
            .map(|p| NewEvent {
                path: p.clone(),
                kind: if Path::new(p).exists() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Deleted
                },
                old_path: None,
            })
            .collect();
        let conn = self.conn()?;
        let floors =
            queue::enqueue_with_ids(&conn, &events, API_SOURCE).map_err(|e| self.sql(e))?;
        drop(conn);
        self.doorbell.ring();
        Ok(floors)
    }

    /// For each path of `floors` (from [`EngineHandle::track`]) whose rows
    /// are all finished, how it ended; paths still queued are left out.
    ///
    /// # Errors
    /// [`EngineError::Pool`], or a database error.
    pub fn tracked(
        &self,
        floors: &HashMap<String, i64>,
    ) -> Result<Vec<(String, TrackOutcome)>, EngineError> {
        let conn = self.conn()?;
        let sql = |e| self.sql(e);
        let mut state = conn
            .prepare_cached(
                "SELECT content_hash, size, version_id, deleted FROM sync_files WHERE path = ?1",
            )
            .map_err(sql)?;
        let mut out = Vec::new();
        for (path, floor) in floors {
            let outcome = match queue::path_progress(&conn, path, *floor).map_err(sql)? {
                PathProgress::Outstanding => continue,
                PathProgress::Failed(error) => TrackOutcome::Failed(error),
                PathProgress::Finished => {
                    type StateRow = (Option<String>, Option<i64>, Option<i64>, Option<i64>);
                    let row: Option<StateRow> = state
                        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                        .optional()
                        .map_err(sql)?;
                    match row {
                        None => TrackOutcome::Untracked,
                        Some((_, _, _, Some(deleted))) if deleted != 0 => TrackOutcome::Deleted,
                        Some((hash, size, version, _)) => TrackOutcome::Recorded {
                            content_hash: hash.unwrap_or_default(),
                            size: size.unwrap_or(0),
                            version_id: version.unwrap_or(0),
                        },
                    }
                }
            };
            out.push((path.clone(), outcome));
        }
        Ok(out)
    }

    /// The normalized text of `path` (inside the root), opened beneath the
    /// root without following a symlink, a regular file of at most
    /// [`EngineHandle::max_file_size`] bytes (see `engine/read.rs`).
    ///
    /// # Errors
    /// A [`ReadError`]: not openable beneath the root, not a regular file,
    /// too large, not text, or unreadable.
    pub fn read_text(&self, path: &Path) -> Result<String, ReadError> {
        read::text(&self.root, path, &self.own_files, self.max_file_size)
    }

    /// The digest of `path` as the workers compute it (hash only, no text,
    /// above [`EngineHandle::max_file_size`]), opened as
    /// [`EngineHandle::read_text`] opens it.
    ///
    /// # Errors
    /// A [`ReadError`]: not openable beneath the root, not a regular file,
    /// or unreadable.
    pub fn digest(&self, path: &Path) -> Result<Digest, ReadError> {
        read::digest(&self.root, path, &self.own_files, self.max_file_size)
    }

    /// The unified diff from `old` to `new`, as the workers compute it, with
    /// both texts' line endings normalized first as stored text is (CRLF
    /// and lone CR become LF; text from [`EngineHandle::read_text`] already
    /// is). Computes only; stores nothing.
    pub fn diff(&self, old: String, new: String, old_label: &str, new_label: &str) -> UnifiedDiff {
        let lf = |t: String| String::from_utf8(hash::normalize(t.into_bytes())).unwrap_or_default();
        diff::unified(&lf(old), &lf(new), old_label, new_label)
    }
}

/// The history's read side on one of the api's pooled connections
/// ([`EngineHandle::history`]): `engine/history.rs` and `engine/search.rs`,
/// which `obby-sync search` and `stats` share. Only reads.
pub struct History {
    conn: HistoryConn,
    root: PathBuf,
}

/// The connection a [`History`] reads through: one of the api's pool, or a
/// command's own ([`super::Database::into_history`]).
enum HistoryConn {
    Pooled(Pooled),
    Owned(rusqlite::Connection),
}

impl std::ops::Deref for HistoryConn {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        match self {
            HistoryConn::Pooled(c) => c,
            HistoryConn::Owned(c) => c,
        }
    }
}

impl History {
    /// A history on a command's own connection.
    pub(super) fn owned(conn: rusqlite::Connection, root: &Path) -> History {
        History {
            conn: HistoryConn::Owned(conn),
            root: root.to_path_buf(),
        }
    }

    /// The newest `limit` diffs.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn recent_diffs(&self, limit: usize) -> rusqlite::Result<Vec<DiffRow>> {
        history::recent_diffs(&self.conn, limit)
    }

    /// Up to `limit` diffs since unix second `since`.
    ///
    /// # Errors
    /// [`HistoryError`] for a time out of range, or a database error.
    pub fn diffs_since(&self, since: i64, limit: usize) -> Result<Vec<DiffRow>, HistoryError> {
        history::diffs_since(&self.conn, since, limit)
    }

    /// The newest `limit` versions of `path`.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn file_versions(&self, path: &str, limit: usize) -> rusqlite::Result<Vec<VersionRow>> {
        history::file_versions(&self.conn, path, limit)
    }

    /// The full-text search.
    ///
    /// # Errors
    /// [`SearchError`]: a bad query, no index, or a database error.
    pub fn search(&self, query: &str, opts: &SearchOptions) -> Result<Vec<Hit>, SearchError> {
        search::search(&self.conn, &self.root, query, opts)
    }

    /// Up to `limit` files about `topic`, and where the answer came from.
    ///
    /// # Errors
    /// [`HistoryError`] for a bad topic or a failed search, or a database
    /// error.
    pub fn topic_files(
        &self,
        topic: &str,
        limit: usize,
    ) -> Result<(Vec<FileRow>, Source), HistoryError> {
        history::topic_files(&self.conn, &self.root, topic, limit)
    }

    /// What changed in `period`: counts, topics, keywords.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn time_analysis(&self, period: &Period) -> rusqlite::Result<TimeAnalysis> {
        history::time_analysis(&self.conn, &self.root, period)
    }

    /// Activity counts in `period`.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn activity(&self, period: &Period) -> rusqlite::Result<Activity> {
        history::activity(&self.conn, period)
    }
}
