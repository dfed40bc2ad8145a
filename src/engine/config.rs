//! Typed configuration: defaults, then environment, then flags (the CLI's
//! clap does the last two), validated once into a [`Config`] that the engine
//! trusts.
//!
//! Part of the engine, because it is the engine's input: it uses only the
//! engine's leaf modules (`db`'s checkpoint mode, `queue`'s retry policy, the
//! errors) and never `engine/mod.rs`, so the engine and its configuration
//! depend one way (the CLI builds a `Config` and hands it to
//! [`super::Engine::open`]). Reads the file system only to check the root
//! and to create the database's folder; no SQL.
//!
//! Paths are made absolute here: the root canonical (symlinks resolved, so
//! every stored `file_path` is canonical), the database absolute in a
//! canonical folder (the file itself may not exist yet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::db::CheckpointMode;
use super::error::EngineError;
use super::queue::QueuePolicy;

/// Where the database lives unless `--db` or `DB_PATH` says otherwise,
/// relative to the root: the file Obby's Python backend opens.
pub const DEFAULT_DB: &str = ".db/obby.db";

/// Queue rows claimed and committed together. Each commit rewrites every
/// page of the backend's `content_hash` indexes that its rows land on, and
/// those rows land at random, so larger batches write less WAL (1,024 rows
/// instead of 256 cut an edit round of 10,000 notes from 254 to 208 MB).
/// They were no faster, though: `bench`, two alternated runs each, initial
/// scan 1.71 / 1.57 s at 1,024 and 1.47 / 1.68 s at 256, edit rounds
/// 2.1-3.8x their floor either way; and they cost peak memory (edit round
/// 110 MiB at 1,024, 61 MiB at 256), hence 256. What a batch holds stays
/// bounded by [`DEFAULT_BATCH_BYTES`].
pub const DEFAULT_BATCH_SIZE: usize = 256;
/// File bytes per batch (32 MiB); a larger file is a batch of its own.
pub const DEFAULT_BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// Files larger than this are hashed only (32 MiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 32 * 1024 * 1024;
/// Attempts before an unreadable file's row is `failed`.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;
/// Wait before the second attempt; doubles after each failure.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(1_000);
/// How long `done` queue rows are kept before pruning.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A file modified less recently than this is read; a fresher one is looked
/// at again shortly (it may be half written).
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(100);

/// How often an idle engine looks for queue rows written by another process
/// (`obby-sync enqueue`); producers inside the process wake it at once.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(200);

/// Everything the engine needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Canonical project root (holds `.obbywatch`).
    pub root: PathBuf,
    /// Absolute path of `obby.db`.
    pub db: PathBuf,
    /// Threads hashing and diffing.
    pub workers: usize,
    /// Rows per claim and per commit.
    pub batch_size: usize,
    /// File bytes per claim (a larger file is claimed alone): with two
    /// batches in flight, what the workers hold is about twice this, plus
    /// each file's diff and previous text.
    pub batch_bytes: u64,
    /// Size above which a file is hashed only.
    pub max_file_size: u64,
    /// Retry rules for rows that fail.
    pub policy: QueuePolicy,
    /// Age at which done queue rows are pruned.
    pub retention: Duration,
    /// Idle poll interval for new queue rows.
    pub idle_poll: Duration,
    /// Quiet time a file needs before it is read.
    pub settle: Duration,
    /// Who checkpoints the WAL (`--checkpoint`; Litestream wants `external`).
    pub checkpoint: CheckpointMode,
}

impl Config {
    /// A configuration with every default, for `root` and `db`.
    ///
    /// # Errors
    /// [`EngineError::Io`] when the root does not exist or is not a folder, or
    /// the database's folder cannot be created;
    /// [`EngineError::NoWatchFile`] when the root has no `.obbywatch`
    /// (checked before that folder is made: a refused command leaves
    /// nothing behind).
    pub fn new(root: &Path, db: &Path) -> Result<Config, EngineError> {
        let root_canon = std::fs::canonicalize(root).map_err(|source| EngineError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !root_canon.is_dir() {
            return Err(EngineError::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "the root must be a folder",
                ),
            });
        }
        if std::fs::symlink_metadata(root_canon.join(super::patterns::WATCH_FILE))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err(EngineError::NoWatchFile { root: root_canon });
        }
        Ok(Config {
            root: root_canon,
            db: prepare_db(db)?,
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            policy: QueuePolicy {
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                backoff: DEFAULT_RETRY_BACKOFF,
            },
            retention: DEFAULT_RETENTION,
            idle_poll: DEFAULT_IDLE_POLL,
            settle: DEFAULT_SETTLE,
            checkpoint: CheckpointMode::default(),
        })
    }

    /// The engine's own files, never tracked: the database and its side files.
    pub fn own_files(&self) -> Vec<PathBuf> {
        own_files(&self.db)
    }
}

/// The database `db` (absolute, as [`prepare_db`] gives it) and its side
/// files: never tracked.
pub fn own_files(db: &Path) -> Vec<PathBuf> {
    let mut files = vec![db.to_path_buf()];
    files.extend(
        ["-wal", "-shm", "-journal", ".lock"].map(|suffix| super::db::side_file(db, suffix)),
    );
    files
}

/// Creates the database's folder (and its parents) where missing, as the
/// backend does for `.db/`, then makes `db` absolute ([`absolute_db`]).
///
/// # Errors
/// [`EngineError::Io`] when the folder cannot be created.
pub fn prepare_db(db: &Path) -> Result<PathBuf, EngineError> {
    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| EngineError::Io {
            path: parent.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!("cannot create the database's folder here: {e}"),
            ),
        })?;
    }
    absolute_db(db)
}

/// Makes `db` absolute with a canonical folder.
///
/// # Errors
/// [`EngineError::Io`] when its folder does not exist.
pub fn absolute_db(db: &Path) -> Result<PathBuf, EngineError> {
    let parent = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent).map_err(|source| EngineError::Io {
        path: parent.clone(),
        source,
    })?;
    let name = db.file_name().ok_or_else(|| EngineError::Io {
        path: db.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    Ok(parent.join(name))
}
