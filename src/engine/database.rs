//! [`Database`]: the engine's door for the commands that work on a database
//! file with no engine running (`obby-sync enqueue`, `status`, `log`,
//! `diff`, `search`, `stats`), as [`super::EngineHandle`] is the api's door
//! to a running one.
//!
//! Input: a database path. Output: plain data, or an [`EngineError`] that
//! names the file. Opened read-only ([`Database::open_read_only`]) it only
//! reads: the Obby tables, `sync_files`, `sync_meta` and the queue's counts;
//! opened to enqueue ([`Database::open_to_enqueue`]) it writes
//! `event_queue` only, through `queue.rs`, its owner. A running engine on
//! the same file notices enqueued rows at its next idle poll.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::config;
use super::db::{self, CheckpointMode};
use super::diff;
use super::error::EngineError;
use super::handle::History;
use super::history::{self, Counts};
use super::patterns::Patterns;
use super::queue::{self, FailedRow, NewEvent, QueueCounts};
use super::search::{self, IndexProgress};

/// A database file opened by a command, with no engine running.
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

/// What `obby-sync status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseStatus {
    /// `PRAGMA user_version`.
    pub schema_version: i64,
    /// Queue rows per status.
    pub queue: QueueCounts,
    /// The oldest failed rows (at most the number asked for).
    pub failures: Vec<FailedRow>,
    /// Row counts of the history.
    #[serde(flatten)]
    pub counts: Counts,
    /// The newest change: `timestamp change_type file_path`.
    pub last_change: Option<String>,
    /// When reconciliation last finished (`sync_meta`).
    pub last_reconcile: Option<String>,
    /// The watch backend the last `run` recorded.
    pub watch_backend: Option<String>,
    /// How far the search index is built (None: no index in this schema).
    pub search_index: Option<IndexProgress>,
}

/// One version in a file's log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The version's id.
    pub id: i64,
    /// The path it is a version of.
    pub file_path: String,
    /// Its stored local-time stamp.
    pub timestamp: Option<String>,
    /// `change_description`.
    pub description: Option<String>,
    /// Bytes.
    pub size: Option<i64>,
    /// Lines (None for a binary file).
    pub line_count: Option<i64>,
    /// SHA-256 of the normalized text.
    pub content_hash: String,
    /// Lines added and removed by the diff that made it, when one is stored.
    pub delta: Option<(i64, i64)>,
}

/// The answer to a diff request ([`Database::diff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffLookup {
    /// The unified diff.
    Text(String),
    /// The change or one of the versions has no text (a binary or
    /// oversized file).
    NoText,
    /// No diff is stored for those versions of that path.
    NotStored,
    /// The path has no version at all.
    NoHistory,
    /// No version has this id.
    NoVersion(i64),
    /// Version `to` is a version of another file (named here), not of the
    /// one asked about.
    OtherFile(i64, String),
}

impl Database {
    /// Opens an existing database to read it.
    ///
    /// # Errors
    /// [`EngineError::Io`] when there is no database at `path`; the open
    /// errors of [`db::open_reader`].
    pub fn open_read_only(path: &Path) -> Result<Database, EngineError> {
        Ok(Database {
            conn: db::open_reader(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Opens the database to enqueue into it, creating its folder as the
    /// backend does ([`config::prepare_db`]).
    ///
    /// # Errors
    /// [`EngineError::Io`] when the folder cannot be made; the open errors
    /// of [`db::open_writer`].
    pub fn open_to_enqueue(path: &Path) -> Result<Database, EngineError> {
        let path = config::prepare_db(path)?;
        Ok(Database {
            conn: db::open_writer(&path)?,
            path,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> EngineError {
        EngineError::from_sqlite(&self.path, source)
    }

    /// The first of `paths` an engine on `root` and this database would
    /// skip: one its patterns (`.obbywatch`, `.obbyignore` and those added
    /// through the api) do not select, or this database or a side file of it.
    ///
    /// # Errors
    /// A database error; [`Patterns::load_with`]'s errors.
    pub fn first_untracked<'a>(
        &self,
        root: &Path,
        paths: &'a [PathBuf],
    ) -> Result<Option<&'a PathBuf>, EngineError> {
        let api = db::api_patterns(&self.conn).map_err(|e| self.sql(e))?;
        let patterns = Patterns::load_with(root, &api)?.exclude(config::own_files(&self.path));
        Ok(paths.iter().find(|p| !patterns.is_tracked(p)))
    }

    /// Enqueues `events` in one transaction, coalescing with pending rows.
    ///
    /// # Errors
    /// A database error (nothing is queued then).
    pub fn enqueue(&self, events: &[NewEvent], source: &str) -> Result<(), EngineError> {
        queue::enqueue(&self.conn, events, source).map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Queue rows per status.
    ///
    /// # Errors
    /// A database error.
    pub fn queue_counts(&self) -> Result<QueueCounts, EngineError> {
        queue::counts(&self.conn).map_err(|e| self.sql(e))
    }

    /// Schema, queue, history counts, the newest change, the watcher's last
    /// records and the search index's progress.
    ///
    /// # Errors
    /// A database error.
    pub fn status(&self, max_failures: usize) -> Result<DatabaseStatus, EngineError> {
        let sql = |e| self.sql(e);
        let conn = &self.conn;
        Ok(DatabaseStatus {
            schema_version: conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(sql)?,
            queue: queue::counts(conn).map_err(sql)?,
            failures: queue::failures(conn, max_failures).map_err(sql)?,
            counts: history::counts(conn).map_err(sql)?,
            last_change: conn
                .query_row(
                    "SELECT timestamp || ' ' || change_type || ' ' || file_path
                     FROM file_changes ORDER BY id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?,
            last_reconcile: db::meta_get(conn, "last_reconcile").map_err(sql)?,
            watch_backend: db::meta_get(conn, "watch_backend").map_err(sql)?,
            search_index: search::progress(conn).map_err(sql)?,
        })
    }

    /// How far the search index is built (None when the schema has none).
    ///
    /// # Errors
    /// A database error.
    pub fn search_progress(&self) -> Result<Option<IndexProgress>, EngineError> {
        search::progress(&self.conn).map_err(|e| self.sql(e))
    }

    /// The newest `limit` versions of `file`, with their diffs' line counts.
    /// With `follow`, across renames too: the path's versions are listed
    /// newest first until one that a move made (a `moved` diff from a
    /// version of another path); the versions of that path up to the one
    /// moved come next, and so on. What the path held before the move (an
    /// earlier file of the same name) is not this file's history.
    ///
    /// # Errors
    /// A database error.
    pub fn log(
        &self,
        file: &str,
        limit: usize,
        follow: bool,
    ) -> Result<Vec<LogEntry>, EngineError> {
        let sql = |e| self.sql(e);
        let mut versions = self
            .conn
            .prepare(
                "SELECT fv.id, fv.file_path, fv.timestamp, fv.change_description, fv.size,
                        fv.line_count, fv.content_hash, cd.lines_added, cd.lines_removed
                 FROM file_versions fv LEFT JOIN content_diffs cd ON cd.new_version_id = fv.id
                 WHERE fv.file_path = ?1 AND fv.id <= ?2 ORDER BY fv.id DESC LIMIT ?3",
            )
            .map_err(sql)?;
        let mut moved_from = self
            .conn
            .prepare(
                "SELECT old.file_path, old.id FROM content_diffs cd
                 JOIN file_versions old ON old.id = cd.old_version_id
                 WHERE cd.new_version_id = ?1 AND cd.change_type = 'moved'
                   AND old.file_path <> ?2 AND old.id < ?1
                 ORDER BY cd.id DESC LIMIT 1",
            )
            .map_err(sql)?;
        let mut entries: Vec<LogEntry> = Vec::new();
        let (mut path, mut through) = (file.to_owned(), i64::MAX);
        loop {
            let left = limit.saturating_sub(entries.len());
            let found = versions
                .query_map(params![path, through, history::sql_limit(left)], |r| {
                    let added: Option<i64> = r.get(7)?;
                    let removed: Option<i64> = r.get(8)?;
                    Ok(LogEntry {
                        id: r.get(0)?,
                        file_path: r.get(1)?,
                        timestamp: r.get(2)?,
                        description: r.get(3)?,
                        size: r.get(4)?,
                        line_count: r.get(5)?,
                        content_hash: r.get(6)?,
                        delta: added.zip(removed),
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            if !follow {
                entries.extend(found);
                break;
            }
            let mut origin = None;
            for entry in found {
                origin = moved_from
                    .query_row(params![entry.id, path], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()
                    .map_err(sql)?;
                entries.push(entry);
                if origin.is_some() {
                    break;
                }
            }
            // Ids only fall from one path to the next, so this ends.
            match origin.filter(|_| entries.len() < limit) {
                Some((old_path, old_id)) => (path, through) = (old_path, old_id),
                None => break,
            }
        }
        Ok(entries)
    }

    /// A diff of `file`: the newest stored one (no versions given), the one
    /// that made version `to`, or from version `from` to `to` (default: the
    /// newest version), computed when no stored diff joins the two. `to`
    /// must be a version of `file`; `from` may be any version (the old path
    /// of a renamed file, say).
    ///
    /// # Errors
    /// A database error.
    pub fn diff(
        &self,
        file: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<DiffLookup, EngineError> {
        let sql = |e| self.sql(e);
        let stored = |q: &str, p: &[&dyn rusqlite::ToSql]| {
            self.conn
                .query_row(q, p, |r| r.get::<_, Option<String>>(0))
                .optional()
                .map_err(sql)
        };
        if let Some(to) = to {
            let owner: Option<String> = self
                .conn
                .query_row(
                    "SELECT file_path FROM file_versions WHERE id = ?1",
                    [to],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            match owner {
                None => return Ok(DiffLookup::NoVersion(to)),
                Some(path) if path != file => return Ok(DiffLookup::OtherFile(to, path)),
                Some(_) => {}
            }
        }
        let found = match (from, to) {
            (None, None) => {
                let newest = stored(
                    "SELECT diff_content FROM content_diffs WHERE file_path = ?1 ORDER BY id DESC LIMIT 1",
                    &[&file],
                )?;
                if newest.is_none() && !self.has_history(file)? {
                    return Ok(DiffLookup::NoHistory);
                }
                newest
            }
            (None, Some(to)) => stored(
                "SELECT diff_content FROM content_diffs WHERE new_version_id = ?1",
                &[&to],
            )?,
            (Some(from), to) => {
                let to = match to {
                    Some(to) => to,
                    None => {
                        let newest: Option<i64> = self
                            .conn
                            .query_row(
                                "SELECT MAX(id) FROM file_versions WHERE file_path = ?1",
                                [file],
                                |r| r.get(0),
                            )
                            .map_err(sql)?;
                        match newest {
                            Some(id) => id,
                            None => return Ok(DiffLookup::NoHistory),
                        }
                    }
                };
                match stored(
                    "SELECT diff_content FROM content_diffs WHERE old_version_id = ?1 AND new_version_id = ?2",
                    &[&from, &to],
                )? {
                    Some(text) => Some(text),
                    None => return self.diff_versions(from, to),
                }
            }
        };
        Ok(match found {
            Some(Some(text)) => DiffLookup::Text(text),
            Some(None) => DiffLookup::NoText,
            None => DiffLookup::NotStored,
        })
    }

    /// True when `file` has at least one version.
    fn has_history(&self, file: &str) -> Result<bool, EngineError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM file_versions WHERE file_path = ?1)",
                [file],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// The unified diff between two stored versions, computed now.
    fn diff_versions(&self, from: i64, to: i64) -> Result<DiffLookup, EngineError> {
        let load = |id: i64| {
            self.conn
                .query_row(
                    "SELECT file_path, content FROM file_versions WHERE id = ?1",
                    [id],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .optional()
                .map_err(|e| self.sql(e))
        };
        let Some((old_path, old)) = load(from)? else {
            return Ok(DiffLookup::NoVersion(from));
        };
        let Some((new_path, new)) = load(to)? else {
            return Ok(DiffLookup::NoVersion(to));
        };
        Ok(match (old, new) {
            (Some(old), Some(new)) => {
                DiffLookup::Text(diff::unified(&old, &new, &old_path, &new_path).text)
            }
            _ => DiffLookup::NoText,
        })
    }

    /// The read side the Query service uses ([`History`]), on this file;
    /// `root` is the notes' folder (topics are its subfolders).
    pub fn into_history(self, root: &Path) -> History {
        History::owned(self.conn, root)
    }
}

/// Builds the search index of the versions older than it (a `scan` does
/// this once its queue drained): `on_start` with the progress before the
/// first batch when anything is pending, `on_step` after each batch.
/// Returns the versions indexed. Stale entries and segments are left to a
/// `run`'s idle work (`search::merge_when_idle`).
///
/// # Errors
/// The open errors of [`db::open_writer_with`]; a database error.
pub fn build_search_index(
    path: &Path,
    checkpoints: CheckpointMode,
    on_start: &mut dyn FnMut(&IndexProgress),
    on_step: &mut dyn FnMut(&IndexProgress),
) -> Result<u64, EngineError> {
    let conn = db::open_writer_with(path, checkpoints)?;
    let sql = |source| EngineError::from_sqlite(path, source);
    let Some(first) = search::progress(&conn)
        .map_err(sql)?
        .filter(|p| !p.complete())
    else {
        return Ok(0);
    };
    on_start(&first);
    let stop = AtomicBool::new(false);
    search::backfill(&conn, &stop, Duration::ZERO, on_step).map_err(sql)
}
