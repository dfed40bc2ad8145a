//! The engine's two error tiers.
//!
//! [`EngineError`] stops the engine: the database cannot be opened or migrated,
//! the root is unusable, another engine holds the lock. Its messages are one line
//! and say what to do. [`ItemError`] belongs to one queue row: it is stored in
//! `event_queue.last_error`, and [`ItemError::is_permanent`] decides between a
//! retry with backoff and `failed`.

use std::io;
use std::path::PathBuf;

/// An error that stops the engine (or a CLI command) as a whole.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database file exists but is not a SQLite database.
    #[error("{path} is not a SQLite database (is it the right file?)")]
    NotSqlite {
        /// The database path as given.
        path: PathBuf,
    },
    /// The file is SQLite but holds somebody else's tables.
    #[error("{path} is not an obby database: {reason}")]
    NotObby {
        /// The database path as given.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// SQLite reported corruption.
    #[error("{path} is corrupt ({detail}); restore it from a backup or move it aside")]
    Corrupt {
        /// The database path as given.
        path: PathBuf,
        /// SQLite's own words.
        detail: String,
    },
    /// The database (or its folder) cannot be written.
    #[error("{path} is read-only: obby-sync needs write access to the file and its folder")]
    ReadOnly {
        /// The database path as given.
        path: PathBuf,
    },
    /// SQLite cannot open the file at all.
    #[error(
        "cannot open {path} as a database: is it a folder, or is its folder missing or not writable?"
    )]
    CannotOpen {
        /// The database path as given.
        path: PathBuf,
    },
    /// The database file was deleted or replaced while the engine ran (a
    /// root deleted with the database in it, say): what the engine would
    /// write next would go to a file nobody can open.
    #[error(
        "{path} was deleted or replaced while obby-sync ran: start obby-sync again (it reconciles the folder into the database found there)"
    )]
    DatabaseGone {
        /// The database path.
        path: PathBuf,
    },
    /// The disk holding the database is full.
    #[error(
        "the disk holding {path} is full: free some space, then start obby-sync again (queued changes are kept, none is lost)"
    )]
    DiskFull {
        /// The database path as given.
        path: PathBuf,
    },
    /// The schema was written by a newer obby-sync.
    #[error(
        "{path} has schema version {found}, newer than this obby-sync knows ({known}); upgrade obby-sync"
    )]
    SchemaTooNew {
        /// The database path as given.
        path: PathBuf,
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest migration compiled into this binary.
        known: i64,
    },
    /// Any other database failure, with the operation that failed.
    #[error("database {path}: {source}")]
    Db {
        /// The database path as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The reader pool could not hand out a connection.
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    /// Another engine process works on the same database.
    #[error("another obby-sync is already running on {path} (lock file {lock})")]
    Locked {
        /// The database path.
        path: PathBuf,
        /// The lock file that is held.
        lock: PathBuf,
    },
    /// The root has no `.obbywatch`, so nothing would ever be tracked.
    #[error(
        "{root} has no .obbywatch, so nothing would be tracked; run `obby-sync init --root {root}` to create one"
    )]
    NoWatchFile {
        /// The root folder.
        root: PathBuf,
    },
    /// A `.obbywatch` or `.obbyignore` line is not a valid glob.
    #[error("{file}: {message}")]
    Pattern {
        /// The pattern file.
        file: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A pattern sent through the api (`UpdatePatterns`, `StartWatching`)
    /// is refused.
    #[error("{list} pattern {message}")]
    ApiPattern {
        /// Which list: `watch` or `ignore`.
        list: &'static str,
        /// What is wrong, with the pattern.
        message: String,
    },
    /// The file-system watcher could not be set up.
    #[error("cannot watch {root}: {message}")]
    Watch {
        /// The root being watched.
        root: PathBuf,
        /// What went wrong, with advice where there is some.
        message: String,
    },
    /// A thread of the engine panicked outside the per-row guard (a compute
    /// job between its rows, or the watcher thread), so its work never came
    /// back; a panic inside a row fails that row alone instead.
    #[error("an engine thread panicked; the rows it held return to pending at the next start")]
    WorkerLost,
    /// A file-system operation outside any one queue row failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl EngineError {
    /// Wraps a rusqlite error for `path`, turning the cases a user can act on
    /// (not a database, corrupt, read-only) into their own variants.
    pub fn from_sqlite(path: &std::path::Path, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => EngineError::NotSqlite { path },
            Some(ErrorCode::DiskFull) => EngineError::DiskFull { path },
            Some(ErrorCode::DatabaseCorrupt) => EngineError::Corrupt {
                path,
                detail: source.to_string(),
            },
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) if is_read_only(&path) => {
                EngineError::ReadOnly { path }
            }
            // A writable file whose WAL index or WAL is not (left by a
            // command run while the file was read-only): name that file.
            Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen)
                if let Some(side) = ["-shm", "-wal"]
                    .iter()
                    .map(|s| super::db::side_file(&path, s))
                    .find(|p| is_read_only(p)) =>
            {
                EngineError::ReadOnly { path: side }
            }
            Some(ErrorCode::ReadOnly) => EngineError::ReadOnly { path },
            Some(ErrorCode::CannotOpen) => EngineError::CannotOpen { path },
            _ => EngineError::Db { path, source },
        }
    }
}

fn is_read_only(path: &std::path::Path) -> bool {
    match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().readonly(),
        Err(_) => false,
    }
}

/// An error that belongs to one queue row. Stored in `event_queue.last_error`.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// Reading or stat-ing the file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file changed moments ago (or while it was read): it is looked at
    /// again once it has been quiet, so a half-written state is never a version.
    #[error("{path} is still being written")]
    Unsettled {
        /// The file.
        path: String,
        /// How long to wait before looking again.
        wait: std::time::Duration,
    },
    /// A database error while computing this row (reading the previous version).
    #[error("database error while processing {path}: {source}")]
    Db {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database refused this row's writes (a constraint or trigger of a
    /// table another program made): retrying would fail the same way.
    #[error("the database refused the change of {path}: {message}")]
    Rejected {
        /// The file.
        path: String,
        /// SQLite's words.
        message: String,
    },
    /// The worker panicked on this row (a bug, in obby-sync or a library):
    /// the panic is caught, so it fails this row alone; permanent, since the
    /// same input would panic again.
    #[error("processing {path} panicked: {message}")]
    Panicked {
        /// The file.
        path: String,
        /// The panic's message.
        message: String,
    },
    /// No pooled reader connection was available.
    #[error("no database connection for {path}: {message}")]
    Pool {
        /// The file.
        path: String,
        /// The pool's error.
        message: String,
    },
}

impl ItemError {
    /// True when retrying cannot help, so the row fails at once. Read errors are
    /// never permanent: permissions get fixed and locks get released, and the
    /// attempt limit bounds the retries anyway.
    pub fn is_permanent(&self) -> bool {
        match self {
            ItemError::Read { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::InvalidFilename | io::ErrorKind::IsADirectory
            ),
            ItemError::Rejected { .. } | ItemError::Panicked { .. } => true,
            ItemError::Db { .. } | ItemError::Pool { .. } | ItemError::Unsettled { .. } => false,
        }
    }
}
