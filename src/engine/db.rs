//! Opening `obby.db`: the only place a SQLite connection is made.
//!
//! Every connection gets WAL, `synchronous=NORMAL`, `foreign_keys=ON` and a
//! busy timeout, because the Python backend and `sqlite3` share the file.
//! [`open_writer`] also checks that the file is ours (or an Obby database the
//! Python backend made, which is adopted in place) and brings its schema up
//! to date ([`super::schema::migrate`]). [`reader_pool`] hands
//! out read connections for workers and queries. [`EngineLock`] makes sure only
//! one engine works on a database at a time.
//!
//! Who checkpoints the WAL is the [`CheckpointMode`]: `auto`, the engine's
//! [`Checkpointer`] (PASSIVE from [`CHECKPOINT_WAL_BYTES`], TRUNCATE when the
//! queue drains); `passive`, the same thread but PASSIVE only and the WAL
//! file never truncated; `external`, nobody in this process (Litestream
//! does). In the last two every connection is told not to checkpoint when it
//! closes (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`) and never to checkpoint by
//! itself (`wal_autocheckpoint = 0`). [`replica_pool`] opens a copy read-only
//! (`obby-sync serve`): nothing in this module writes such a file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::error::EngineError;

/// How long a connection waits for another process's lock before SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a `TRUNCATE` checkpoint waits for readers (and another writer)
/// before it settles for what it could copy: a reader that keeps an old
/// snapshot open (the backend, a `sqlite3` shell) must not stall the writer
/// for [`BUSY_TIMEOUT`]; the next drained queue tries again.
pub const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// `PRAGMA application_id` of an obby-sync database ("OBYS").
pub const APPLICATION_ID: i32 = 0x4F42_5953;

/// The WAL is truncated back to this size after a checkpoint.
pub const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// Page cache of the write connection, in KiB (SQLite's negative form). Large
/// enough that a batch's pages never spill to the WAL before its commit.
pub const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// WAL size at which the [`Checkpointer`] copies it back into the database.
pub const CHECKPOINT_WAL_BYTES: u64 = 8 * 1024 * 1024;

/// How often the [`Checkpointer`] looks at the WAL size.
const CHECKPOINT_POLL: Duration = Duration::from_millis(100);

/// Page size of a database the engine creates.
pub const PAGE_SIZE: i64 = 16384;

/// The side file of database `db` named by `suffix` (`-wal`, `-shm`,
/// `-journal`, `.lock`): the database's own name with the suffix appended.
pub fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// A pool of read connections.
pub type ReaderPool = r2d2::Pool<SqliteConnectionManager>;

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    super::schema::latest_version()
}

/// Who checkpoints the WAL back into the database (`--checkpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckpointMode {
    /// The engine: PASSIVE checkpoints from [`CHECKPOINT_WAL_BYTES`] of WAL
    /// on a thread of their own, a TRUNCATE when the queue drains (at the end
    /// of `scan`, when `run` stops or idles); the WAL file is cut back to
    /// [`JOURNAL_SIZE_LIMIT`] when it starts over.
    #[default]
    Auto,
    /// The engine's PASSIVE checkpoints only (they never wait for a reader,
    /// so Litestream's read transaction holds them back from frames it has
    /// not copied yet); the WAL file is never truncated.
    Passive,
    /// None at all: another program (Litestream) checkpoints. The WAL grows
    /// until it does.
    External,
}

impl CheckpointMode {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Auto => "auto",
            CheckpointMode::Passive => "passive",
            CheckpointMode::External => "external",
        }
    }
}

impl std::fmt::Display for CheckpointMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CheckpointMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CheckpointMode::Auto),
            "passive" => Ok(CheckpointMode::Passive),
            "external" => Ok(CheckpointMode::External),
            other => Err(format!(
                "unknown checkpoint mode {other:?} (auto, passive or external)"
            )),
        }
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// What `mode` asks of every connection: in `passive` and `external` no
/// checkpoint when it closes (SQLite checkpoints and deletes the WAL when
/// the last connection to a database closes) and none after a commit.
fn configure_checkpoints(conn: &Connection, mode: CheckpointMode) -> rusqlite::Result<()> {
    if mode != CheckpointMode::Auto {
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    Ok(())
}

/// Opens the single write connection, creating and migrating the database.
///
/// # Errors
/// [`EngineError::NotSqlite`], [`EngineError::NotObby`],
/// [`EngineError::Corrupt`], [`EngineError::ReadOnly`] and
/// [`EngineError::SchemaTooNew`] for files the engine must not touch; any other
/// SQLite failure as [`EngineError::Db`].
pub fn open_writer(path: &Path) -> Result<Connection, EngineError> {
    open_writer_with(path, CheckpointMode::Auto)
}

/// Prepared statements kept per write connection: more than the store, the
/// queue and the counts run in one batch.
pub const WRITER_STATEMENT_CACHE: usize = 64;

/// [`open_writer`] for an engine whose WAL is checkpointed as `mode` says.
///
/// # Errors
/// As [`open_writer`].
pub fn open_writer_with(
    path: &Path,
    checkpoints: CheckpointMode,
) -> Result<Connection, EngineError> {
    let err = |e| EngineError::from_sqlite(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
        return Err(EngineError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    configure(&conn).map_err(err)?;
    configure_checkpoints(&conn, checkpoints).map_err(err)?;
    // Every statement a batch runs stays prepared: past rusqlite's 16 the
    // cache evicted some each batch and SQLite parsed them again.
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .map_err(err)?;
    if pages == 0 {
        // A new file: larger pages suit rows of whole notes (fewer overflow
        // pages and WAL frames). Only possible before anything is written.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(err)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(EngineError::NotObby {
            path: path.to_path_buf(),
            reason: format!("cannot switch it to WAL (journal mode stays {mode})"),
        });
    }
    // -1: the WAL file keeps its size when it starts over (only `auto`
    // truncates it).
    let limit = if checkpoints == CheckpointMode::Auto {
        JOURNAL_SIZE_LIMIT
    } else {
        -1
    };
    conn.pragma_update(None, "journal_size_limit", limit)
        .map_err(err)?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(err)?;
    // Statement journals (an insert into a table with triggers or UNIQUE
    // constraints keeps one, so a failed statement can be undone) in memory,
    // not in a temporary file: each holds only the pages one statement touched.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(err)?;
    let adopt = check_identity(&conn, path)?;
    super::schema::migrate(&conn, path, adopt)?;
    Ok(conn)
}

/// Opens a connection that only reads (CLI queries); fails on a missing file
/// instead of creating one.
///
/// # Errors
/// As [`open_writer`], and [`EngineError::Io`] when the file does not exist.
pub fn open_reader(path: &Path) -> Result<Connection, EngineError> {
    if !path.exists() {
        return Err(EngineError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no database here yet (run `obby-sync scan` first, or pass --db)",
            ),
        });
    }
    let err = |e| EngineError::from_sqlite(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    if app_id != APPLICATION_ID {
        // The backend's file is adopted by the first scan; another
        // program's is refused by it too, so say which this is.
        let backend: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'file_versions')",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let reason = if backend {
            "obby-sync has not adopted this Obby database yet (run `obby-sync scan`)"
        } else {
            "it holds neither obby-sync's nor the Obby backend's tables"
        };
        return Err(EngineError::NotObby {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    }
    Ok(conn)
}

/// A pool of read connections to an already opened (migrated) database.
///
/// # Errors
/// [`EngineError::Pool`] when the first connection cannot be made.
pub fn reader_pool(path: &Path, size: u32) -> Result<ReaderPool, EngineError> {
    reader_pool_with(path, size, CheckpointMode::Auto)
}

/// [`reader_pool`] whose connections follow `mode` (see [`CheckpointMode`]).
///
/// # Errors
/// As [`reader_pool`].
pub fn reader_pool_with(
    path: &Path,
    size: u32,
    mode: CheckpointMode,
) -> Result<ReaderPool, EngineError> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(move |c| {
            configure(c)?;
            configure_checkpoints(c, mode)
        });
    Ok(r2d2::Pool::builder().max_size(size.max(1)).build(manager)?)
}

/// How [`replica_pool`] opened a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaOpen {
    /// `SQLITE_OPEN_READ_ONLY`: SQLite may create the `-shm` and an empty
    /// `-wal` beside the file (it needs them to read a WAL database), and
    /// sees what another process commits.
    ReadOnly,
    /// The folder is not writable and there is no `-shm`: opened
    /// `immutable=1` (no side files, no locks), as a restored file, which
    /// holds everything in the database file itself, allows. Only a new
    /// file at the path (see `engine::replica`) brings new rows.
    Immutable,
}

/// A pool of read-only connections to a copy of an obby-sync database (a
/// Litestream restore), for `obby-sync serve`. Checks that the file is an
/// obby-sync database this binary can read; never writes it.
///
/// # Errors
/// [`EngineError::Io`] when the file is missing; [`EngineError::NotObby`]
/// for another program's file; [`EngineError::SchemaTooNew`] for a newer
/// obby-sync's; [`EngineError::Pool`] or [`EngineError::Db`] when it cannot
/// be read.
pub fn replica_pool(path: &Path, size: u32) -> Result<(ReaderPool, ReplicaOpen), EngineError> {
    if !path.is_file() {
        return Err(EngineError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no database file here (restore one first: litestream restore -o PATH ...)",
            ),
        });
    }
    let plain = replica_manager(path, false);
    let how = match probe_replica(path, &plain) {
        Ok(()) => ReplicaOpen::ReadOnly,
        Err(e) if needs_immutable(path, &e) => {
            probe_replica(path, &replica_manager(path, true))?;
            ReplicaOpen::Immutable
        }
        Err(e) => return Err(e),
    };
    let manager = replica_manager(path, how == ReplicaOpen::Immutable);
    let pool = r2d2::Pool::builder().max_size(size.max(1)).build(manager)?;
    Ok((pool, how))
}

/// A read-only manager; `immutable` opens through a `file:` URI with
/// `mode=ro&immutable=1`.
fn replica_manager(path: &Path, immutable: bool) -> SqliteConnectionManager {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let manager = if immutable {
        SqliteConnectionManager::file(format!("file:{}?mode=ro&immutable=1", uri_path(path)))
            .with_flags(flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        SqliteConnectionManager::file(path).with_flags(flags)
    };
    manager.with_init(|c| c.busy_timeout(BUSY_TIMEOUT))
}

/// `path` as the path part of a `file:` URI (RFC 3986: unreserved bytes and
/// `/` as they are, every other byte percent-encoded).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Opens one connection from `manager` and checks the file is a readable
/// obby-sync database.
fn probe_replica(path: &Path, manager: &SqliteConnectionManager) -> Result<(), EngineError> {
    use r2d2::ManageConnection as _;
    let err = |e| EngineError::from_sqlite(path, e);
    let conn = manager.connect().map_err(err)?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    if app_id != APPLICATION_ID {
        return Err(EngineError::NotObby {
            path: path.to_path_buf(),
            reason: "it has no obby-sync application_id".into(),
        });
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > latest_version() {
        return Err(EngineError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            known: latest_version(),
        });
    }
    conn.query_row("SELECT COUNT(*) FROM file_changes", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(err)?;
    Ok(())
}

/// True when a read-only open failed only for want of the `-shm` (an
/// unwritable folder) and the file can be read as immutable: no `-wal` with
/// frames in it, which immutable would ignore.
fn needs_immutable(path: &Path, e: &EngineError) -> bool {
    let refused = matches!(
        e,
        EngineError::ReadOnly { .. }
            | EngineError::CannotOpen { .. }
            | EngineError::Db { .. }
            | EngineError::Io { .. }
    );
    let wal_empty = std::fs::metadata(side_file(path, "-wal")).map_or(true, |m| m.len() == 0);
    refused && wal_empty && !side_file(path, "-shm").exists()
}

/// A reader pool that can be swapped for a new one while handles to it are
/// out (`serve` reopens a replica file replaced by a newer restore).
#[derive(Clone)]
pub struct SharedPool(std::sync::Arc<std::sync::RwLock<ReaderPool>>);

impl SharedPool {
    /// Wraps `pool`.
    pub fn new(pool: ReaderPool) -> Self {
        SharedPool(std::sync::Arc::new(std::sync::RwLock::new(pool)))
    }

    /// A connection from the current pool.
    ///
    /// # Errors
    /// [`EngineError::Pool`] when none can be had.
    pub fn get(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, EngineError> {
        let pool = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(pool.get()?)
    }

    /// Replaces the pool: connections handed out before stay on the old
    /// file until they are returned, then close.
    pub fn replace(&self, pool: ReaderPool) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pool;
    }
}

/// Decides whether the file is ours, an Obby database to adopt, or foreign.
/// Returns true when it must be adopted.
fn check_identity(conn: &Connection, path: &Path) -> Result<bool, EngineError> {
    let err = |e| EngineError::from_sqlite(path, e);
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    if app_id == APPLICATION_ID {
        return Ok(false);
    }
    if app_id != 0 {
        return Err(EngineError::NotObby {
            path: path.to_path_buf(),
            reason: format!("its application_id is {app_id:#x}, another program's"),
        });
    }
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(err)?;
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    if tables.is_empty() || tables.iter().any(|t| t == "file_versions") {
        return Ok(!tables.is_empty());
    }
    let mut listed = tables
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 5 {
        listed.push_str(", ...");
    }
    Err(EngineError::NotObby {
        path: path.to_path_buf(),
        reason: format!("it holds other tables ({listed}) and no file_versions"),
    })
}

/// The longest wait between retries of a write that found the database busy.
pub const MAX_BUSY_WAIT: Duration = Duration::from_secs(2);

/// Runs a write, retrying for as long as the database is busy (another
/// process holds the write lock past the busy timeout) and `stop` is not set:
/// a busy database delays a change, it never fails one. Other errors return.
///
/// # Errors
/// The first error that is not "busy" or "locked", or "busy" once stopping.
pub fn retry_busy<T>(
    stop: &std::sync::atomic::AtomicBool,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    use rusqlite::ErrorCode;
    let mut wait = Duration::from_millis(10);
    loop {
        match f() {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && !stop.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                tracing::warn!(error = %e, "database busy, retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(MAX_BUSY_WAIT);
            }
            other => return other,
        }
    }
}

/// `sync_meta` key: the canonical root the last engine on this database
/// watched (its files' paths are under it).
pub const ROOT_KEY: &str = "root";

/// A `sync_meta` value.
///
/// # Errors
/// Any SQLite error.
pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached("SELECT value FROM sync_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

/// Sets a `sync_meta` value.
///
/// # Errors
/// Any SQLite error.
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO sync_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// The patterns added through the api, as stored.
///
/// # Errors
/// Any SQLite error.
pub fn api_patterns(conn: &Connection) -> rusqlite::Result<super::patterns::ApiPatterns> {
    use super::patterns::ApiPatterns;
    let watch = meta_get(conn, ApiPatterns::WATCH_KEY)?;
    let ignore = meta_get(conn, ApiPatterns::IGNORE_KEY)?;
    Ok(ApiPatterns::from_stored(
        watch.as_deref(),
        ignore.as_deref(),
    ))
}

/// Checkpoints the WAL back into the database and truncates it, so it stays
/// small. Best effort: another checkpoint in progress (in
/// another process: the engine's own waits for it, [`Checkpointer::drained`])
/// makes SQLite refuse it at once; a reader holding an old snapshot past
/// [`CHECKPOINT_WAIT`] makes it partial (it copies what no reader needs and
/// leaves the WAL as it is). SQLite says either in the pragma's row (its
/// first column, 1), not as an error; either is logged (debug).
pub fn checkpoint(conn: &Connection) {
    // Setting a busy timeout cannot fail but for a closed connection.
    let _ = conn.busy_timeout(CHECKPOINT_WAIT);
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore the busy timeout after a checkpoint");
    }
    match done {
        Ok(0) => {}
        Ok(_) => tracing::debug!("wal checkpoint blocked: the WAL is not truncated"),
        Err(e) => tracing::debug!(error = %e, "wal checkpoint skipped"),
    }
}

/// Attempts of a PASSIVE checkpoint when the queue drains in `passive` mode.
const DRAINED_TRIES: usize = 5;

/// Runs a PASSIVE checkpoint; returns the WAL's frames and how many of them
/// are now in the database (None when it could not run).
fn passive(conn: &Connection) -> Option<(i64, i64)> {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((0, log, copied)) => Some((log, copied)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "passive checkpoint skipped");
            None
        }
    }
}

/// Checkpoints the WAL on a thread of its own, so the single writer never
/// stalls on copying pages back into the database: the engine's connections
/// switch SQLite's automatic checkpoint off ([`Checkpointer::adopt`]) and this
/// thread runs a `PASSIVE` checkpoint (which never blocks writers or readers)
/// whenever the WAL passes [`CHECKPOINT_WAL_BYTES`], unless the mode is
/// `external`. The same thread looks for a Litestream process replicating the
/// database every [`super::litestream::LOOK_EVERY`] and says so in the log
/// ([`super::litestream::Watch`]). Stops when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    /// Set (and the thread woken) to stop it: dropping the checkpointer
    /// does not wait out a poll interval.
    stop: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Held by whoever checkpoints, the thread or [`Checkpointer::drained`]:
    /// SQLite refuses a checkpoint while another runs (at once, without its
    /// busy handler), so the one at the end of a burst waits for the
    /// thread's to finish instead of being refused.
    turn: std::sync::Arc<std::sync::Mutex<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    mode: CheckpointMode,
}

impl Checkpointer {
    /// Starts the thread with a connection from `pool`.
    ///
    /// # Errors
    /// [`EngineError::Pool`] when no connection can be had;
    /// [`EngineError::Io`] when the thread cannot start.
    pub fn start(
        db: &Path,
        pool: &ReaderPool,
        mode: CheckpointMode,
    ) -> Result<Checkpointer, EngineError> {
        let conn = pool.get()?;
        let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let turn = std::sync::Arc::new(std::sync::Mutex::new(()));
        let my_turn = turn.clone();
        let wal = side_file(db, "-wal");
        let mut litestream = super::litestream::Watch::new(db, mode);
        litestream.look(&conn);
        let thread = std::thread::Builder::new()
            .name("obby-checkpoint".into())
            .spawn(move || {
                let mut last_look = std::time::Instant::now();
                // The WAL's size and mtime when a checkpoint last copied all of it.
                let mut done_at = None;
                loop {
                    let (lock, bell) = &*flag;
                    let stopped = lock
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (stopped, _) = bell
                        .wait_timeout_while(stopped, CHECKPOINT_POLL, |stop| !*stop)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *stopped {
                        break;
                    }
                    drop(stopped);
                    if last_look.elapsed() >= super::litestream::LOOK_EVERY {
                        litestream.look(&conn);
                        last_look = std::time::Instant::now();
                    }
                    if mode == CheckpointMode::External {
                        continue;
                    }
                    let now = std::fs::metadata(&wal)
                        .ok()
                        .map(|m| (m.len(), m.modified().ok()));
                    let size = now.map_or(0, |(len, _)| len);
                    // A WAL that is not truncated keeps its size: nothing is
                    // new in it until it is written again.
                    if size < CHECKPOINT_WAL_BYTES || (done_at.is_some() && done_at == now) {
                        continue;
                    }
                    let _turn = my_turn
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    done_at =
                        passive(&conn).and_then(|(log, copied)| (copied >= log).then_some(now?));
                }
            })
            .map_err(|source| EngineError::Io {
                path: db.to_path_buf(),
                source,
            })?;
        Ok(Checkpointer {
            stop,
            turn,
            thread: Some(thread),
            mode,
        })
    }

    /// Turns SQLite's automatic checkpoint off on `conn`: this thread does it.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn adopt(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)
    }

    /// The checkpoint that ends a burst of work (the queue drained, the
    /// engine stopping or idle): TRUNCATE in `auto`, PASSIVE in `passive`,
    /// none in `external`. Waits for a checkpoint the thread has in progress
    /// (SQLite would refuse this one meanwhile, and the copy left would then
    /// fall to the thread's join and the last connection's close, after
    /// `scan` has printed its summary); [`Checkpointer::idle`] does not.
    /// Best effort.
    pub fn drained(&self, conn: &Connection) {
        if self.mode == CheckpointMode::External {
            return;
        }
        let _turn = self
            .turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.end_burst(conn);
    }

    /// [`Checkpointer::drained`] for an idle engine that more work may
    /// reach at any moment: skipped while the thread checkpoints, rather
    /// than waited for (the next idle maintenance tries again).
    pub fn idle(&self, conn: &Connection) {
        if self.mode == CheckpointMode::External {
            return;
        }
        let _turn = match self.turn.try_lock() {
            Ok(turn) => turn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        self.end_burst(conn);
    }

    /// The checkpoint itself, the turn held.
    fn end_burst(&self, conn: &Connection) {
        match self.mode {
            CheckpointMode::Auto => checkpoint(conn),
            CheckpointMode::Passive => {
                // Another process may be checkpointing at this moment (then
                // this one is refused at once): a few tries, short.
                for _ in 0..DRAINED_TRIES {
                    if passive(conn).is_some_and(|(log, copied)| copied >= log) {
                        break;
                    }
                    std::thread::sleep(CHECKPOINT_POLL / 4);
                }
            }
            CheckpointMode::External => {}
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, bell) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        bell.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Holds the engine's exclusive lock on a database. Dropping it (or the
/// process dying, even by SIGKILL) releases the lock.
#[derive(Debug)]
pub struct EngineLock {
    _file: File,
    path: PathBuf,
}

impl EngineLock {
    /// The lock file that belongs to database `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        side_file(db, ".lock")
    }

    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`EngineError::Locked`] when another process holds it;
    /// [`EngineError::Io`] when the lock file cannot be created.
    pub fn acquire(db: &Path) -> Result<EngineLock, EngineError> {
        let path = Self::path_for(db);
        let io = |source| EngineError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(EngineError::Locked {
                    path: db.to_path_buf(),
                    lock: path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(EngineLock { _file: file, path })
    }

    /// Where the lock file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_len(db: &Path) -> u64 {
        std::fs::metadata(side_file(db, "-wal")).map_or(0, |m| m.len())
    }

    /// A new database in `dir` with its writer and an `auto` checkpointer
    /// thread (which keeps the pool's connection), and a `filler` table.
    fn checkpointed(dir: &Path) -> (PathBuf, Connection, Checkpointer) {
        let db = dir.join("obby.db");
        let conn = open_writer(&db).expect("writer");
        let pool = reader_pool(&db, 2).expect("pool");
        let checkpointer = Checkpointer::start(&db, &pool, CheckpointMode::Auto).expect("start");
        checkpointer.adopt(&conn).expect("adopt");
        conn.execute_batch("CREATE TABLE filler (b BLOB)")
            .expect("table");
        (db, conn, checkpointer)
    }

    #[test]
    fn drained_truncates_the_wal_even_while_the_thread_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, conn, checkpointer) = checkpointed(dir.path());
        for round in 0..4 {
            // 64 MiB of new pages: the thread's next look (within one poll)
            // starts a PASSIVE copy of them, which takes a while.
            conn.execute_batch(
                "BEGIN;
                 DELETE FROM filler;
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64)
                 INSERT INTO filler SELECT randomblob(1048576) FROM n;
                 COMMIT;",
            )
            .expect("fill");
            assert!(wal_len(&db) > CHECKPOINT_WAL_BYTES, "round {round}");
            // Most likely in the middle of the thread's copy: SQLite refuses
            // a second checkpoint meanwhile, unless drained waits for it.
            std::thread::sleep(CHECKPOINT_POLL + CHECKPOINT_POLL / 5);
            checkpointer.drained(&conn);
            assert_eq!(wal_len(&db), 0, "round {round}: the WAL was not truncated");
        }
    }

    #[test]
    fn idle_skips_the_checkpoint_while_the_thread_has_its_turn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, conn, checkpointer) = checkpointed(dir.path());
        conn.execute_batch("INSERT INTO filler VALUES (randomblob(65536))")
            .expect("fill");
        // As if the thread were copying: another thread holds the turn
        // until idle returns (or 10 s pass, should idle wait for it).
        let turn = checkpointer.turn.clone();
        let (held, is_held) = std::sync::mpsc::channel();
        let (done, is_done) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _turn = turn.lock().expect("turn");
            held.send(()).expect("send");
            let _ = is_done.recv_timeout(Duration::from_secs(10));
        });
        is_held.recv().expect("held");
        checkpointer.idle(&conn);
        let wal_during_turn = wal_len(&db);
        done.send(()).expect("done");
        holder.join().expect("holder");
        assert!(
            wal_during_turn > 0,
            "idle waited for the thread's turn and checkpointed"
        );
        checkpointer.idle(&conn);
        assert_eq!(
            wal_len(&db),
            0,
            "idle did not truncate once the turn was free"
        );
    }
}
