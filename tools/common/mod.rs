//! What the benchmark examples (`bench`, `watch-bench`, `api-bench`, `search-bench`) share:
//! finding the release `obby-sync` binary, the scratch folder, progress
//! lines, seeded note text, reading the engine's database, running `obby-sync
//! run` as a child process and reading its `/proc` figures, statistics, and
//! the Markdown result table.
//!
//! Each example includes it with `#[path = "common/mod.rs"] mod common;` and
//! defines, at its crate root, `const BENCH: &str`: its name, which prefixes
//! every progress line (`[BENCH] ...`) and the error `main` prints.

// Each example uses a different subset of this module; without this, every
// item one of them leaves unused would warn as dead code in its build.
#![allow(dead_code)]

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local, NaiveDateTime, TimeDelta};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt as _, SeedableRng as _};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};
use tempfile::TempDir;

/// A progress line on stderr, prefixed with the example's `BENCH` name, so a
/// long run is visibly alive.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[{}] {}", crate::BENCH, format_args!($($arg)*)) };
}
pub(crate) use progress;

/// Every fallible step returns this (`Send`, so tokio tasks can return it
/// too); `main` prints the message with [`exit_code`].
pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The text generator: a fixed, portable algorithm, so a seed gives the same
/// bytes with every `rand` release.
pub type Prng = Xoshiro256PlusPlus;

/// `main`'s exit code for the result of its run; an error is printed as
/// `BENCH: error: ...`.
pub fn exit_code(result: Res<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {e}", crate::BENCH);
            ExitCode::FAILURE
        }
    }
}

// ------------------------------------------------------------ the binary

/// The release `obby-sync` next to this example
/// (`target/release/examples/BENCH` gives `target/release/obby-sync`).
pub fn find_binary() -> Res<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target folder from the bench's own path")?;
    let bin = profile_dir.join(format!("obby-sync{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        )
        .into());
    }
    if let Some(newer) = newest_source_after(&bin) {
        progress!(
            "warning: {} is newer than the binary; run `cargo build --release` to measure the current code",
            newer.display()
        );
    }
    Ok(bin)
}

/// A source file of the crate modified after `bin` was built, if any.
fn newest_source_after(bin: &Path) -> Option<PathBuf> {
    let built = fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![
        manifest.join("src"),
        manifest.join("schema"),
        manifest.join("proto"),
        manifest.join("Cargo.toml"),
    ];
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Ok(modified) = meta.modified()
            && modified > built
            && newest.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            newest = Some((modified, path));
        }
    }
    newest.map(|(_, p)| p)
}

/// The folder to build everything in: `keep` (`--keep DIR`, created if
/// need be and required to be empty), or else a new temp dir whose name
/// starts with `prefix`. Keep the [`TempDir`] alive until the end: dropping
/// it deletes everything.
pub fn work_dir(keep: Option<&Path>, prefix: &str) -> Res<(Option<TempDir>, PathBuf)> {
    match keep {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            if fs::read_dir(dir)?.next().is_some() {
                return Err(
                    format!("--keep {} must be a new or empty folder", dir.display()).into(),
                );
            }
            Ok((None, fs::canonicalize(dir)?))
        }
        None => {
            let temp = tempfile::Builder::new().prefix(prefix).tempdir()?;
            let base = fs::canonicalize(temp.path())?;
            Ok((Some(temp), base))
        }
    }
}

// ------------------------------------------------------------ /proc

/// Clock ticks per second of `/proc/<pid>/stat`, and whether `getconf` said
/// so (otherwise 100 is assumed).
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    /// Ticks per second.
    pub per_second: u64,
    /// True when `getconf CLK_TCK` gave the figure.
    pub measured: bool,
}

impl Ticks {
    /// `ticks` clock ticks in seconds.
    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.per_second as f64
    }

    /// Where [`Ticks::per_second`] came from, for the table's last line.
    pub fn source(&self) -> &'static str {
        if self.measured {
            "getconf CLK_TCK"
        } else {
            "assumed, getconf failed"
        }
    }
}

/// Asks `getconf CLK_TCK`; warns and assumes 100 when it gives nothing.
pub fn clock_ticks() -> Ticks {
    let reported = Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .filter(|&t| t > 0);
    match reported {
        Some(per_second) => Ticks {
            per_second,
            measured: true,
        },
        None => {
            progress!("warning: `getconf CLK_TCK` gave nothing; assuming 100 ticks per second");
            Ticks {
                per_second: 100,
                measured: false,
            }
        }
    }
}

/// `utime + stime` of a `/proc/.../stat` file, in clock ticks (all threads).
pub fn cpu_ticks_of(stat_path: &str) -> Res<u64> {
    let stat = fs::read_to_string(stat_path)?;
    // The command name may hold spaces: fields are counted after its ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let field = |i: usize| -> Res<u64> {
        Ok(fields
            .get(i - 3)
            .ok_or("short /proc/<pid>/stat")?
            .parse::<u64>()?)
    };
    Ok(field(14)? + field(15)?)
}

/// CPU time the bench itself has used so far, in clock ticks.
pub fn own_cpu_ticks() -> Res<u64> {
    cpu_ticks_of("/proc/self/stat")
}

// ------------------------------------------------------------ the engine

/// How often the database is polled.
pub const POLL: Duration = Duration::from_millis(20);
/// Longest wait for an engine to become ready (initial scan included).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for an engine to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary the stages run, and where they put their databases and the
/// engines' logs.
pub struct Bench {
    /// The release `obby-sync`.
    pub bin: PathBuf,
    /// `BASE/db`: one database per engine.
    pub db_dir: PathBuf,
    /// `BASE/logs`: each engine's stderr.
    pub log_dir: PathBuf,
    /// Clock ticks of `/proc/<pid>/stat`.
    pub ticks: Ticks,
}

impl Bench {
    /// Makes `base/db` and `base/logs`.
    pub fn new(bin: PathBuf, base: &Path, ticks: Ticks) -> Res<Bench> {
        let bench = Bench {
            bin,
            db_dir: base.join("db"),
            log_dir: base.join("logs"),
            ticks,
        };
        fs::create_dir_all(&bench.db_dir)?;
        fs::create_dir_all(&bench.log_dir)?;
        Ok(bench)
    }
}

/// How one engine stopped.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Which stage ran it.
    pub stage: String,
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// SIGTERM to exit.
    pub seconds: f64,
}

/// A running `obby-sync run`; killed (SIGKILL) if dropped without
/// [`Engine::stop`].
pub struct Engine {
    /// The stage's name: its database, log and progress lines.
    name: String,
    /// The `obby-sync run` process.
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its database, `db_dir/NAME.db`.
    db: PathBuf,
    /// Its stderr, `log_dir/NAME.log`.
    log: PathBuf,
    /// Local time just before it was spawned.
    spawned_at: DateTime<Local>,
    /// Serves the gRPC api on ports of its own choosing.
    api: bool,
    /// It has exited and been waited for (nothing to kill on drop).
    finished: bool,
}

/// What the engine looked like once ready.
pub struct Ready {
    /// A connection to its database, for polling.
    pub conn: Connection,
    /// `sync_meta.watch_backend`.
    pub backend: String,
    /// `http://` + `sync_meta.api_tracker_addr`, when it serves the api.
    url: Option<String>,
    /// Spawn to ready.
    pub seconds: f64,
}

impl Ready {
    /// `http://` + `sync_meta.api_tracker_addr`: an error unless the engine
    /// was started with [`Engine::start_with_api`].
    pub fn url(&self) -> Res<&str> {
        self.url
            .as_deref()
            .ok_or_else(|| "the engine was started without the api".into())
    }
}

impl Engine {
    /// Spawns `obby-sync run` on `root` with database `db_dir/NAME.db`,
    /// stderr to `log_dir/NAME.log`, and `--rescan-interval 0`.
    pub fn start(bench: &Bench, root: &Path, name: &str, debounce_ms: u64) -> Res<Engine> {
        Engine::spawn(bench, root, name, debounce_ms, false)
    }

    /// [`Engine::start`], with the gRPC api on ports the engine picks
    /// (`--watcher-port 0 --tracker-port 0`); [`Engine::wait_ready`] then
    /// also waits for `sync_meta.api_tracker_addr`.
    pub fn start_with_api(bench: &Bench, root: &Path, name: &str, debounce_ms: u64) -> Res<Engine> {
        Engine::spawn(bench, root, name, debounce_ms, true)
    }

    /// See [`Engine::start`] and [`Engine::start_with_api`].
    fn spawn(bench: &Bench, root: &Path, name: &str, debounce_ms: u64, api: bool) -> Res<Engine> {
        let db = bench.db_dir.join(format!("{name}.db"));
        let log = bench.log_dir.join(format!("{name}.log"));
        let log_file = fs::File::create(&log)?;
        let spawned_at = Local::now();
        let mut command = Command::new(&bench.bin);
        command
            .args(["--log-level", "info", "run", "--root"])
            .arg(root)
            .arg("--db")
            .arg(&db);
        if api {
            command.args([
                "--watcher-port",
                "0",
                "--tracker-port",
                "0",
                "--query-port",
                "0",
            ]);
            command.args(["--sse-grpc-port", "0", "--sse-http-port", "0"]);
        } else {
            // No api: nothing to collide with another obby-sync's ports.
            command.arg("--no-api");
        }
        let child = command
            .args(["--debounce-ms", &debounce_ms.to_string()])
            .args(["--rescan-interval", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()?;
        let pid = child.id();
        progress!("{name}: started obby-sync run (pid {pid}, debounce {debounce_ms} ms)");
        Ok(Engine {
            name: name.to_owned(),
            child,
            pid,
            db,
            log,
            spawned_at,
            api,
            finished: false,
        })
    }

    /// An error, with the end of the engine's log, when it has exited.
    pub fn check_alive(&mut self) -> Res<()> {
        if let Some(status) = self.child.try_wait()? {
            self.finished = true;
            return Err(format!(
                "{}: obby-sync run exited early ({status}); its log ends:\n{}",
                self.name,
                self.log_tail()
            )
            .into());
        }
        Ok(())
    }

    /// The last 20 lines of the engine's log.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until the engine watches (and, if started with the api, the api
    /// listens), has reconciled since it started, has at least `versions`
    /// versions and an empty queue.
    pub fn wait_ready(&mut self, versions: i64) -> Res<Ready> {
        let started = Instant::now();
        let mut conn = None;
        loop {
            self.check_alive()?;
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "{}: obby-sync run was not ready after {} s; its log ends:\n{}",
                    self.name,
                    READY_TIMEOUT.as_secs(),
                    self.log_tail()
                )
                .into());
            }
            if conn.is_none() && self.db.exists() {
                conn = Some(open_db(&self.db)?);
            }
            // Before the schema exists the queries fail: not ready yet.
            if let Some(c) = &conn
                && let Ok(Some((backend, addr))) = self.ready_state(c, versions)
            {
                let seconds = started.elapsed().as_secs_f64();
                let conn = conn.ok_or("no database connection")?;
                return Ok(Ready {
                    conn,
                    backend,
                    url: addr.map(|addr| format!("http://{addr}")),
                    seconds,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The watch backend and, with the api, its address, once everything
    /// [`Engine::wait_ready`] needs holds.
    fn ready_state(
        &self,
        conn: &Connection,
        versions: i64,
    ) -> rusqlite::Result<Option<(String, Option<String>)>> {
        let Some(backend) = meta(conn, "watch_backend")? else {
            return Ok(None);
        };
        let addr = if self.api {
            let Some(addr) = meta(conn, "api_tracker_addr")? else {
                return Ok(None);
            };
            Some(addr)
        } else {
            None
        };
        let reconciled = meta(conn, "last_reconcile")?
            .and_then(|t| parse_local(&t))
            .is_some_and(|t| t > self.spawned_at);
        if !reconciled || count(conn, "SELECT COUNT(*) FROM file_versions")? < versions {
            return Ok(None);
        }
        Ok((outstanding(conn)? == 0).then_some((backend, addr)))
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> Res<Stop> {
        let stage = self.name.clone();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !kill.success() {
            return Err(format!("kill -TERM {} failed ({kill})", self.pid).into());
        }
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.finished = true;
                let stop = Stop {
                    stage: stage.clone(),
                    code: status.code(),
                    seconds: sent.elapsed().as_secs_f64(),
                };
                if stop.code == Some(0) {
                    progress!(
                        "{stage}: engine exited 0 {:.0} ms after SIGTERM",
                        stop.seconds * 1e3
                    );
                } else {
                    progress!(
                        "warning: {stage}: engine ended with {status} after SIGTERM; its log ends:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(stop);
            }
            if sent.elapsed() > STOP_TIMEOUT {
                return Err(format!(
                    "{stage}: obby-sync run did not exit within {} s of SIGTERM; its log ends:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    self.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// CPU time of the engine so far, in clock ticks (all threads).
    pub fn cpu_ticks(&self) -> Res<u64> {
        cpu_ticks_of(&format!("/proc/{}/stat", self.pid))
    }

    /// A field of `/proc/<pid>/status`, in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> Res<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("/proc/{}/status has no {field}", self.pid).into())
    }

    /// Voluntary plus involuntary context switches over all threads: how
    /// often the engine woke up.
    pub fn context_switches(&self) -> Res<u64> {
        let mut total = 0;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let Ok(status) = fs::read_to_string(task?.path().join("status")) else {
                continue; // a thread that just ended
            };
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += v.trim().parse::<u64>()?;
                }
            }
        }
        Ok(total)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------ the database

/// Text form of `file_versions.timestamp` and `sync_meta.last_reconcile`.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.f";

/// Opens an existing database for reading (never creates one).
pub fn open_db(db: &Path) -> Res<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// `sync_meta.value` of `key`, if set.
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM sync_meta WHERE key = ?1", [key], |r| {
        r.get(0)
    })
    .optional()
}

/// The one integer a `SELECT COUNT(*) ...`-like query gives.
pub fn count(conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
}

/// Queue rows pending or claimed.
pub fn outstanding(conn: &Connection) -> rusqlite::Result<i64> {
    count(
        conn,
        "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed')",
    )
}

/// Queue rows that gave up.
pub fn failed_rows(conn: &Connection) -> rusqlite::Result<i64> {
    count(
        conn,
        "SELECT COUNT(*) FROM event_queue WHERE status = 'failed'",
    )
}

/// A stored local-time stamp (`YYYY-MM-DD HH:MM:SS.ffffff`).
pub fn parse_local(text: &str) -> Option<DateTime<Local>> {
    NaiveDateTime::parse_from_str(text, TIMESTAMP_FORMAT)
        .ok()?
        .and_local_timezone(Local)
        .earliest()
}

// ------------------------------------------------------------ the vaults

/// The watch file every generated root gets.
pub const WATCH_TEXT: &str = "notes/\n";
/// Notes per folder of a generated vault.
pub const FILES_PER_FOLDER: usize = 100;
/// Smallest and largest generated note of a vault.
pub const NOTE_SIZES: std::ops::Range<usize> = 1024..4096;

/// A root with `.obbywatch` and `folders` empty folders under `notes/`;
/// its canonical path.
pub fn skeleton(root: &Path, folders: usize) -> Res<PathBuf> {
    fs::create_dir_all(root.join("notes"))?;
    fs::write(root.join(".obbywatch"), WATCH_TEXT)?;
    let root = fs::canonicalize(root)?;
    for f in 0..folders {
        fs::create_dir_all(folder(&root, f))?;
    }
    Ok(root)
}

/// Folder `index` of a vault: `notes/dNNN`.
pub fn folder(root: &Path, index: usize) -> PathBuf {
    root.join(format!("notes/d{index:03}"))
}

/// Note `index` of a vault, [`FILES_PER_FOLDER`] per folder.
pub fn note_path(root: &Path, index: usize) -> PathBuf {
    folder(root, index / FILES_PER_FOLDER).join(format!("note-{index:05}.md"))
}

/// A generated vault.
pub struct Vault {
    /// The watched root (holds `.obbywatch` and `notes/`).
    pub root: PathBuf,
    /// Every note, absolute and canonical, as the engine stores paths.
    pub files: Vec<PathBuf>,
    /// Their texts, in the same order.
    pub texts: Vec<String>,
}

impl Vault {
    /// `count` seeded notes of 1–4 KiB (see [`texts`]), titled `Note N`, at
    /// [`note_path`]s under a [`skeleton`] at `root`.
    pub fn generate(root: &Path, count: usize, seed: u64, stream: u64) -> Res<Vault> {
        let root = skeleton(root, count.div_ceil(FILES_PER_FOLDER))?;
        let texts = texts(count, seed, stream, "Note");
        let mut files = Vec::with_capacity(count);
        for (i, text) in texts.iter().enumerate() {
            let path = note_path(&root, i);
            fs::write(&path, text)?;
            files.push(path);
        }
        Ok(Vault { root, files, texts })
    }
}

/// `count` seeded notes of 1–4 KiB, note `i` titled `{title} {i}`.
pub fn texts(count: usize, seed: u64, stream: u64, title: &str) -> Vec<String> {
    (0..count)
        .map(|i| {
            let mut rng = Prng::seed_from_u64(sub_seed(seed, stream, i as u64));
            let target = rng.random_range(NOTE_SIZES);
            note(&mut rng, &format!("{title} {i}"), target)
        })
        .collect()
}

/// A well-mixed seed for item `index` of `stream` (SplitMix64 finaliser).
pub fn sub_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        ^ stream.wrapping_mul(0xA076_1D64_78BD_642F)
        ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Vocabulary of the generated vault prose.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "note", "idea", "draft", "meeting", "garden", "river", "project", "review",
    "sketch", "budget", "kernel", "query", "index", "window", "morning", "letter",
    "summer", "travel", "recipe", "reading", "outline", "thread", "signal", "record",
    "the", "a", "of", "and", "to", "in", "with", "for", "on", "about", "after",
    "quickly", "later", "again", "maybe", "clearly", "small", "large", "open",
    "closed", "new", "old", "first", "last", "shared", "private", "weekly",
];

/// `words` words, the first capitalized, ending in a full stop.
pub fn sentence(rng: &mut Prng, words: usize) -> String {
    let mut out = String::new();
    for w in 0..words {
        if w > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    out.push('.');
    out
}

/// A Markdown note of at least `target` bytes: a heading, then paragraphs,
/// lists and task lists.
pub fn note(rng: &mut Prng, title: &str, target: usize) -> String {
    let mut out = format!("# {title}\n\n");
    while out.len() < target {
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(2..6) {
                    let n = rng.random_range(3..10);
                    writeln!(out, "- {}", sentence(rng, n)).expect("writing to a String");
                }
            }
            1 => {
                for _ in 0..rng.random_range(1..4) {
                    let mark = if rng.random_bool(0.5) { 'x' } else { ' ' };
                    let n = rng.random_range(3..8);
                    writeln!(out, "- [{mark}] {}", sentence(rng, n)).expect("writing to a String");
                }
            }
            _ => {
                for s in 0..rng.random_range(2..6) {
                    if s > 0 {
                        out.push(' ');
                    }
                    let n = rng.random_range(6..18);
                    out.push_str(&sentence(rng, n));
                }
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------ statistics

/// The `p`th percentile (nearest rank) of sorted values; NaN if there are
/// none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted values: the middle one, or the mean of the two
/// middle ones; NaN if there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A time difference in microseconds (NaN if it does not fit).
fn micros(delta: TimeDelta) -> f64 {
    delta.num_microseconds().map_or(f64::NAN, |us| us as f64)
}

/// A time difference in milliseconds.
pub fn millis(delta: TimeDelta) -> f64 {
    micros(delta) / 1e3
}

/// A time difference in seconds.
pub fn seconds_of(delta: TimeDelta) -> f64 {
    micros(delta) / 1e6
}

// ------------------------------------------------------------ the report

/// One row of the result table: metric, value, target.
pub type Row = (String, String, String);

/// The target cell of a row without a target.
pub fn dash() -> String {
    "–".to_owned()
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// A target cell: the target and whether it was met.
pub fn verdict(target: &str, met: bool) -> String {
    format!("{target} {}", if met { "✅" } else { "❌" })
}

/// The row saying how the engines took SIGTERM.
pub fn stop_row(stops: &[Stop]) -> Row {
    let clean = stops.iter().all(|s| s.code == Some(0));
    let slowest = stops.iter().map(|s| s.seconds).fold(0.0, f64::max);
    let bad: Vec<String> = stops
        .iter()
        .filter(|s| s.code != Some(0))
        .map(|s| format!("{}: {:?}", s.stage, s.code))
        .collect();
    (
        format!("SIGTERM → exit ({} engines)", stops.len()),
        if clean {
            format!("all exit 0, slowest {:.0} ms", slowest * 1e3)
        } else {
            format!("not 0: {}", bad.join(", "))
        },
        verdict("exit 0", clean),
    )
}

/// Prints `rows` as a Markdown table on stdout, then a blank line.
pub fn print_rows(rows: Vec<Row>) {
    println!("| metric | value | target |");
    println!("|---|---:|---|");
    for (metric, value, target) in rows {
        println!("| {metric} | {value} | {target} |");
    }
    println!();
}

/// The machine's core count (0 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}
