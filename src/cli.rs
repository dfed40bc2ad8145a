//! The `obby-sync` command line (clap). The only module that uses `anyhow`:
//! engine errors arrive typed and leave as one line on stderr with a non-zero
//! exit code.
//!
//! Commands: `init`, `scan`, `run`, `serve`, `enqueue`, `status`, `log`,
//! `diff`, `search`, `stats`.
//! Flags fall back to the contract's environment variables (`DB_PATH`,
//! `LOG_LEVEL`, `WATCHER_PORT`, ...), then to defaults. The api token is
//! read from `OBBY_TOKEN` or `--token-file`; `--token` works but is warned
//! about, since the process list shows it to every user.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::engine::{
    ChangeKind, CheckpointMode, Config, Database, DiffLookup, Engine, NewEvent, Progress,
    ProgressSnapshot, Until, WatchConfig,
};
use crate::engine::{DEFAULT_IGNORE, DEFAULT_WATCH, IGNORE_FILE, WATCH_FILE};

/// `println!` that hands a failed write back (`?`) instead of panicking: a
/// reader that closed the pipe ends the command quietly (see [`main`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}

// search and stats (issue 12)
mod query;

#[derive(Debug, Parser)]
#[command(
    name = "obby-sync",
    version,
    about = "Crash-safe version history for a folder of Markdown notes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
}

#[derive(Debug, Args)]
struct Location {
    /// Project root: the folder that holds .obbywatch.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    #[command(flatten)]
    db: DbArg,
}

#[derive(Debug, Args)]
struct DbArg {
    /// The database file (default: <root>/.db/obby.db, the Obby backend's own).
    #[arg(long, env = "DB_PATH")]
    db: Option<PathBuf>,
}

impl Location {
    /// The database file: `--db` / `DB_PATH`, else the backend's
    /// `<root>/.db/obby.db`.
    fn db(&self) -> PathBuf {
        match &self.db.db {
            Some(db) => db.clone(),
            None => {
                let db = self.root.join(crate::engine::DEFAULT_DB);
                let legacy = self.root.join("obby.db");
                if legacy.is_file() && !db.exists() {
                    tracing::warn!(
                        found = %legacy.display(),
                        using = %db.display(),
                        "a database from an older obby-sync default is in the root; this run uses the backend's file (pass --db to keep the old one)"
                    );
                }
                db
            }
        }
    }
}

#[derive(Debug, Args)]
struct Tuning {
    /// Worker threads that read, hash and diff (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Queue rows claimed and committed together.
    #[arg(long, default_value_t = crate::engine::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// MiB of files claimed and committed together (a larger file alone):
    /// bounds the memory a batch holds.
    #[arg(long, default_value_t = crate::engine::DEFAULT_BATCH_BYTES / (1024 * 1024))]
    batch_mib: u64,
    /// Files larger than this many bytes are hashed only, without text.
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_FILE_SIZE)]
    max_file_size: u64,
    /// Attempts before an unreadable file's change is marked failed.
    #[arg(long, default_value_t = crate::engine::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: i64,
    /// Milliseconds before the first retry; doubles after each failure.
    #[arg(long, default_value_t = crate::engine::DEFAULT_RETRY_BACKOFF.as_millis() as u64)]
    retry_backoff_ms: u64,
    /// A file modified less than this many milliseconds ago is read a little
    /// later (it may be half written); under `run` the debounce is the
    /// settle time instead.
    #[arg(long, default_value_t = crate::engine::DEFAULT_SETTLE.as_millis() as u64)]
    settle_ms: u64,
    /// Hours to keep finished queue rows before pruning them.
    #[arg(long, default_value_t = crate::engine::DEFAULT_RETENTION.as_secs() / 3600)]
    retention_hours: u64,
    /// Who checkpoints the WAL: auto (obby-sync), passive (obby-sync, PASSIVE
    /// only, the WAL never truncated) or external (nobody here: use it with
    /// Litestream, which must see every WAL frame).
    #[arg(long, default_value = "auto", value_name = "MODE")]
    checkpoint: CheckpointMode,
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// Address the gRPC api binds; anything but loopback needs a token (or
    /// --insecure-listen).
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Allow a non-loopback --listen without a token (a trusted network only).
    #[arg(long)]
    insecure_listen: bool,
    /// Port of the FileWatcher service (all services answer on both ports).
    #[arg(long, env = "WATCHER_PORT", default_value_t = 50051)]
    watcher_port: u16,
    /// Port of the ContentTracker service.
    #[arg(long, env = "TRACKER_PORT", default_value_t = 50052)]
    tracker_port: u16,
    /// Port of the Query service (obby.query.QueryService; 0 picks a free one).
    #[arg(long, env = "QUERY_PORT", default_value_t = 50053)]
    query_port: u16,
    /// Run without the Query service.
    #[arg(long)]
    no_query: bool,
    /// Shared secret every gRPC call must carry (`authorization: Bearer
    /// <token>`). Visible to every user in the process list: prefer
    /// OBBY_TOKEN or --token-file.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the token (its first line; trailing whitespace dropped).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// GenerateDiff and GetContentHash calls served at once (each holds whole
    /// texts in memory); more wait up to 3 s, then get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = crate::api::limits::DEFAULT_MAX_CONTENT_CALLS)]
    max_content_calls: usize,
    /// Run without the gRPC api.
    #[arg(long)]
    no_api: bool,
    /// Niceness the api's threads (gRPC, Query service, SSE hub) add to the
    /// engine's under `run`, so that answering and streaming to clients
    /// never takes a core from recording changes; 0 runs them at the
    /// engine's priority.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    nice: i32,
    // --- SSE hub (issue 12) ---
    /// Port of the SSE hub's gRPC service (obby.sse.SSEService); 0 picks a free port.
    #[arg(long, env = "SSE_GRPC_PORT", default_value_t = crate::api::sse::DEFAULT_GRPC_PORT)]
    sse_grpc_port: u16,
    /// Port of the SSE hub's HTTP server (/sse, /health, /api/files/updates/stream); 0 picks a free port.
    #[arg(long, env = "SSE_HTTP_PORT", default_value_t = crate::api::sse::DEFAULT_HTTP_PORT)]
    sse_http_port: u16,
    /// Run without the SSE hub.
    #[arg(long)]
    no_hub: bool,
    // --- end SSE hub ---
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Quiet time per file before a change counts, in milliseconds.
    #[arg(long, env = "DEBOUNCE_MS", default_value_t = 500)]
    debounce_ms: u64,
    /// Longest a file written continuously waits for its row (default 10 × debounce).
    #[arg(long)]
    max_wait_ms: Option<u64>,
    /// Seconds between safety rescans of the whole root (0 disables them).
    #[arg(long, default_value_t = 600)]
    rescan_interval: u64,
    /// Poll instead of using native file-system events.
    #[arg(long)]
    poll: bool,
    /// Milliseconds between two polls.
    #[arg(long, default_value_t = 2_000)]
    poll_interval_ms: u64,
    /// Milliseconds the canary file's event may take before polling takes over.
    #[arg(long, default_value_t = 3_000)]
    canary_timeout_ms: u64,
    /// Seconds changes are held while a VCS lock (`.git/index.lock`) exists;
    /// a lock older than that is ignored until it changes (a crashed git).
    #[arg(long, default_value_t = 120)]
    vcs_hold_secs: u64,
}

/// The variable the token is read from when no flag names one.
const TOKEN_VAR: &str = "OBBY_TOKEN";

impl ApiArgs {
    /// The token: `--token-file`, else `--token` (warned about: other users
    /// see it in /proc/<pid>/cmdline), else `OBBY_TOKEN`, else none. An empty
    /// token is an error, not "no token".
    fn token(&self) -> Result<Option<String>> {
        let (token, from) = if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --token-file {}", path.display()))?;
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_owned();
            (Some(first), format!("--token-file {}", path.display()))
        } else if let Some(token) = &self.token {
            tracing::warn!(
                "--token is visible to every user of this machine in the process list \
                 (/proc/<pid>/cmdline); pass it in OBBY_TOKEN or --token-file instead"
            );
            (Some(token.clone()), "--token".to_owned())
        } else {
            match std::env::var(TOKEN_VAR) {
                Ok(token) => (Some(token), TOKEN_VAR.to_owned()),
                Err(std::env::VarError::NotPresent) => (None, String::new()),
                Err(std::env::VarError::NotUnicode(_)) => bail!("{TOKEN_VAR} is not valid UTF-8"),
            }
        };
        if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            bail!("the token from {from} is empty");
        }
        Ok(token)
    }

    /// The api's configuration, checked (a non-loopback address needs a token
    /// or --insecure-listen).
    fn config(&self) -> Result<crate::api::ApiConfig> {
        if self.max_content_calls == 0 {
            bail!("--max-content-calls must be at least 1");
        }
        let config = crate::api::ApiConfig {
            watcher: std::net::SocketAddr::new(self.listen, self.watcher_port),
            tracker: std::net::SocketAddr::new(self.listen, self.tracker_port),
            query: (!self.no_query)
                .then(|| std::net::SocketAddr::new(self.listen, self.query_port)),
            token: self.token()?,
            insecure_listen: self.insecure_listen,
            max_content_calls: self.max_content_calls,
            // SSE hub (issue 12)
            sse: (!self.no_hub).then_some(crate::api::sse::SseAddrs {
                grpc: std::net::SocketAddr::new(self.listen, self.sse_grpc_port),
                http: std::net::SocketAddr::new(self.listen, self.sse_http_port),
            }),
        };
        config.check()?;
        Ok(config)
    }
}

impl WatchArgs {
    fn config(&self) -> Result<WatchConfig> {
        if self.poll_interval_ms == 0 {
            bail!("--poll-interval-ms must be at least 1");
        }
        let debounce = Duration::from_millis(self.debounce_ms);
        Ok(WatchConfig {
            debounce,
            max_wait: self
                .max_wait_ms
                .map_or(debounce * 10, Duration::from_millis),
            rescan_interval: (self.rescan_interval > 0)
                .then(|| Duration::from_secs(self.rescan_interval)),
            force_poll: self.poll,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            canary_timeout: Duration::from_millis(self.canary_timeout_ms),
            vcs_hold: Duration::from_secs(self.vcs_hold_secs),
            ..WatchConfig::default()
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a default .obbywatch (notes/) and .obbyignore into the root, if missing.
    Init {
        /// Project root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Reconcile once, process the queue until it is empty, then exit.
    Scan {
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        tuning: Tuning,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Watch the root and record every change until SIGINT or SIGTERM
    /// (reconciles first, so changes made while stopped are found).
    Run {
        #[command(flatten)]
        location: Location,
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        watch: WatchArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Serve the read parts of the api from a read-only copy of obby.db (a
    /// Litestream restore): status, the change feed; no watching, no writes.
    /// A newer restore moved over the file is picked up.
    Serve {
        /// The copy to serve.
        #[arg(long, env = "DB_PATH")]
        db: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Add files to the queue (a running engine picks them up).
    Enqueue {
        #[command(flatten)]
        location: Location,
        /// Files to (re)process.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Queue depth, failures and history counts.
    Status {
        #[command(flatten)]
        location: Location,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A file's versions, newest first.
    Log {
        /// The file (relative to the current folder, or absolute).
        path: PathBuf,
        #[command(flatten)]
        location: Location,
        /// Versions to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Follow the file across renames: the versions of the path it was
        /// moved from come next (each path is named above its versions).
        #[arg(long)]
        follow: bool,
    },
    /// Full-text search of every note: the newest version of each file, or
    /// every version with --all-versions; best match first.
    Search {
        /// The words to find (all must match); "double quotes" make a phrase.
        #[arg(required = true)]
        words: Vec<String>,
        #[command(flatten)]
        location: Location,
        /// Search every version of every file, deleted ones included.
        #[arg(long)]
        all_versions: bool,
        /// The last word of each term matches as a prefix (meet finds meeting).
        #[arg(long)]
        prefix: bool,
        /// Most results.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Changes, lines, topics and keywords of a period (default: all history).
    Stats {
        #[command(flatten)]
        location: Location,
        /// Start: a date (2026-11-30), "2026-11-30 14:00", an age (36h, 7d) or @unix-seconds.
        #[arg(long)]
        since: Option<String>,
        /// End (included), in the same forms.
        #[arg(long)]
        until: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A stored diff of a file: the newest, or the one that made its version
    /// --to, or from any version --from to one of its versions.
    Diff {
        /// The file (relative to the current folder, or absolute).
        path: PathBuf,
        #[command(flatten)]
        location: Location,
        /// Old version id (any version: the old path of a renamed file, say).
        #[arg(long)]
        from: Option<i64>,
        /// New version id (a version of PATH; default: its newest).
        #[arg(long)]
        to: Option<i64>,
    },
}

/// Parses the arguments, runs the command, and turns any error into one line
/// on stderr and exit code 1 (2 for usage errors, from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    match run(cli.command) {
        Ok(code) => code,
        // The reader of stdout went away (`obby-sync log | head`): what it
        // wanted it has, so the command ends as if it had read everything.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("obby-sync: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// True when `error` is a write to a closed pipe.
fn closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// An error and its causes on one line, each said once. The chain ends at
/// the first typed error: an [`crate::engine::EngineError`] already says its
/// source's words (`{:#}` would repeat them: `database x: no such column: y:
/// no such column: y`), and so does a SQLite error.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        if cause.is::<crate::engine::EngineError>() || cause.is::<rusqlite::Error>() {
            break;
        }
    }
    line
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .compact()
        .init();
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Init { root } => init(&root),
        Command::Scan {
            location,
            tuning,
            json,
        } => scan(&location, &tuning, json),
        Command::Run {
            location,
            tuning,
            watch,
            api,
        } => run_engine(&location, &tuning, &watch, &api),
        Command::Serve { db, api } => serve_replica(&db, &api),
        Command::Enqueue { location, paths } => enqueue(&location, &paths),
        Command::Status { location, json } => status(&location.db(), json),
        Command::Log {
            path,
            location,
            limit,
            follow,
        } => log(&path, &location.db(), limit, follow),
        Command::Diff {
            path,
            location,
            from,
            to,
        } => show_diff(&path, &location.db(), from, to),
        Command::Search {
            words,
            location,
            all_versions,
            prefix,
            limit,
            json,
        } => query::search(&location.db(), &words, all_versions, prefix, limit, json),
        Command::Stats {
            location,
            since,
            until,
            json,
        } => query::stats(
            &location.db(),
            &location.root,
            since.as_deref(),
            until.as_deref(),
            json,
        ),
    }
}

fn config(location: &Location, tuning: &Tuning) -> Result<Config> {
    let mut cfg = Config::new(&location.root, &location.db())?;
    if let Some(workers) = tuning.workers {
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        cfg.workers = workers;
    }
    if tuning.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if tuning.max_attempts < 1 {
        bail!("--max-attempts must be at least 1");
    }
    cfg.batch_size = tuning.batch_size;
    if tuning.batch_mib == 0 {
        bail!("--batch-mib must be at least 1");
    }
    cfg.batch_bytes = tuning.batch_mib.saturating_mul(1024 * 1024);
    cfg.max_file_size = tuning.max_file_size;
    cfg.policy.max_attempts = tuning.max_attempts;
    cfg.policy.backoff = Duration::from_millis(tuning.retry_backoff_ms);
    cfg.retention = Duration::from_secs(tuning.retention_hours.saturating_mul(3600));
    cfg.settle = Duration::from_millis(tuning.settle_ms);
    cfg.checkpoint = tuning.checkpoint;
    Ok(cfg)
}

fn init(root: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    for (name, text) in [(WATCH_FILE, DEFAULT_WATCH), (IGNORE_FILE, DEFAULT_IGNORE)] {
        let path = root.join(name);
        if path.exists() {
            outln!("kept     {} (already there)", path.display());
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            outln!("wrote    {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Peak resident memory of this process, in bytes (Linux; 0 elsewhere).
fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[derive(serde::Serialize)]
struct ScanSummary {
    files_seen: usize,
    enqueued: usize,
    rows: u64,
    versions: u64,
    diffs: u64,
    changes: u64,
    failed: u64,
    seconds: f64,
    /// Start to the drained queue: `seconds` less the final checkpoint and
    /// the search index backfill.
    drained_seconds: f64,
    files_per_second: f64,
    peak_rss_bytes: u64,
    longest_write_ms: f64,
    /// Versions the search index backfill indexed in this scan.
    search_indexed: u64,
}

/// Builds the search index of versions that predate it, after a scan's
/// queue drained; a progress bar on a terminal.
fn backfill_search(db_path: &Path, quiet: bool, checkpoints: CheckpointMode) -> Result<u64> {
    let bar = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let n = crate::engine::build_search_index(
        db_path,
        checkpoints,
        &mut |first| {
            let total = u64::try_from(first.indexed + first.pending).unwrap_or(0);
            let started = progress_bar(total, quiet);
            if let Some(b) = &started {
                b.set_message("search index");
                b.set_position(u64::try_from(first.indexed).unwrap_or(0));
            } else if !quiet {
                eprintln!(
                    "obby-sync: indexing {} earlier versions for search",
                    first.pending
                );
            }
            *bar.borrow_mut() = started;
        },
        &mut |p| {
            if let Some(b) = &*bar.borrow() {
                b.set_position(u64::try_from(p.indexed).unwrap_or(0));
            }
        },
    )
    .with_context(|| format!("building the search index in {}", db_path.display()))?;
    if let Some(b) = bar.into_inner() {
        b.finish_and_clear();
    }
    Ok(n)
}

fn scan(location: &Location, tuning: &Tuning, json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let mut engine = Engine::open(config(location, tuning)?)?;
    let report = engine.reconcile()?;
    let total = engine.queue_counts()?.outstanding();
    let bar = progress_bar(u64::try_from(total).unwrap_or(0), json);
    let stop = AtomicBool::new(false);
    let mut on_batch = |p: &ProgressSnapshot| {
        if let Some(bar) = &bar {
            bar.set_position(p.rows);
        }
    };
    engine.process(Until::Drained, &stop, &mut on_batch)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // The search index of versions older than it (issue 12), resumable.
    let search_indexed = backfill_search(&engine.config().db, json, engine.config().checkpoint)?;
    let p = engine.progress().snapshot();
    let seconds = started.elapsed().as_secs_f64();
    let drained_seconds = engine
        .drained_at()
        .map_or(seconds, |at| at.duration_since(started).as_secs_f64());
    let summary = ScanSummary {
        files_seen: report.seen,
        enqueued: report.enqueued(),
        rows: p.rows,
        versions: p.versions,
        diffs: p.diffs,
        changes: p.changes,
        failed: p.failed,
        seconds,
        drained_seconds,
        files_per_second: if seconds > 0.0 {
            p.rows as f64 / seconds
        } else {
            0.0
        },
        peak_rss_bytes: peak_rss_bytes(),
        longest_write_ms: p.longest_write_us as f64 / 1000.0,
        search_indexed,
    };
    if json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "scanned {} files: {} changes, {} versions, {} diffs, {} failed in {:.2} s ({:.0} files/s, peak RSS {} MiB)",
            summary.files_seen,
            summary.changes,
            summary.versions,
            summary.diffs,
            summary.failed,
            summary.seconds,
            summary.files_per_second,
            summary.peak_rss_bytes / (1024 * 1024)
        );
    }
    Ok(if p.failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn progress_bar(total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || total == 0 || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {bar:40} {pos}/{len} files  {per_sec}  eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn run_engine(
    location: &Location,
    tuning: &Tuning,
    watch: &WatchArgs,
    api: &ApiArgs,
) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let watch = watch.config()?;
    // Checked before the engine opens, so a refusal changes nothing.
    let api_config = if api.no_api {
        None
    } else {
        Some(api.config()?)
    };
    let mut engine = Engine::open(config(location, tuning)?)?;
    let cfg = engine.config();
    eprintln!(
        "obby-sync: watching {} into {} ({} workers, debounce {} ms); Ctrl-C stops",
        cfg.root.display(),
        cfg.db.display(),
        cfg.workers,
        watch.debounce.as_millis()
    );
    // The api runs on a small tokio runtime beside the synchronous engine,
    // its threads below the engine's priority.
    // Relative to this thread's: a thread inherits its creator's niceness,
    // and the runtime's blocking threads are created by its workers.
    let api_priority = rustix::process::getpriority_process(None)
        .unwrap_or(0)
        .saturating_add(api.nice)
        .min(19);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("obby-api")
        .on_thread_start(move || set_priority(api_priority))
        .enable_all()
        .build()
        .context("starting the api runtime")?;
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = match api_config {
        None => None,
        Some(config) => Some((engine.handle()?, config)),
    };
    let server = handle.map(|(handle, config)| {
        let engine_stop = stop.clone();
        runtime.spawn(async move {
            let result = crate::api::serve(handle, config, async {
                let _ = api_stopped.await;
            })
            .await;
            if let Err(e) = &result {
                // Without its api the engine is not what was asked for: stop.
                tracing::error!(error = %e, "the gRPC api failed; stopping");
                engine_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result
        })
    });
    let status = LiveStatus::start(engine.progress(), cfg.db.clone());
    // The search index of versions older than it (issue 12), in the background.
    let backfill = crate::engine::BackfillGuard::start(&cfg.db, cfg.checkpoint)?;
    let result = engine.watch_and_process(watch, stop, &mut |p: &ProgressSnapshot| {
        tracing::debug!(
            rows = p.rows,
            versions = p.versions,
            failed = p.failed,
            "committed"
        );
    });
    drop(backfill);
    drop(status);
    let _ = api_stop.send(());
    if let Some(server) = server {
        match runtime.block_on(server) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                result?;
                return Err(e.into());
            }
            Err(e) => tracing::warn!(error = %e, "the api task ended abnormally"),
        }
    }
    result?;
    let p = engine.progress().snapshot();
    tracing::info!(
        rows = p.rows,
        versions = p.versions,
        failed = p.failed,
        "stopped cleanly"
    );
    Ok(ExitCode::SUCCESS)
}

/// Sets the calling thread's niceness (Linux: `setpriority` applies to one
/// thread) when it differs. A refusal is logged, not fatal.
fn set_priority(nice: i32) {
    let tid = rustix::thread::gettid();
    if rustix::process::getpriority_process(Some(tid)).ok() == Some(nice) {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(error = %e, nice, "could not set the api thread's priority");
    }
}

/// `serve`: the api on a read-only copy until SIGINT or SIGTERM.
fn serve_replica(db_path: &Path, api: &ApiArgs) -> Result<ExitCode> {
    if api.no_api {
        bail!("serve is the api: --no-api leaves nothing to do");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let api_config = api.config()?;
    let (handle, guard) = crate::engine::open_replica(db_path)?;
    eprintln!(
        "obby-sync: serving {} read-only; Ctrl-C stops",
        handle.db_path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("obby-api")
        .enable_all()
        .build()
        .context("starting the api runtime")?;
    let result = runtime.block_on(crate::api::serve(handle, api_config, async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    drop(guard);
    result?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The live one-line status of `run` on a terminal: queued, processed,
/// failed, rate. Stops when dropped.
struct LiveStatus {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveStatus {
    fn start(progress: Arc<Progress>, db_path: PathBuf) -> LiveStatus {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return LiveStatus { stop, thread: None };
        }
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new_spinner();
            let db = Database::open_read_only(&db_path).ok();
            let mut last = (Instant::now(), progress.snapshot().rows);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let p = progress.snapshot();
                let queued = db
                    .as_ref()
                    .and_then(|d| d.queue_counts().ok())
                    .map_or(0, |c| c.outstanding());
                let rate = (p.rows - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
                last = (Instant::now(), p.rows);
                bar.set_message(format!(
                    "queued {queued} · processed {} · versions {} · failed {} · {rate:.0} files/s",
                    p.rows, p.versions, p.failed
                ));
                bar.tick();
            }
            bar.finish_and_clear();
        });
        LiveStatus {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LiveStatus {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Makes `path` absolute against the current folder, symlinks of its
/// existing part resolved (the form `file_path` is stored in).
fn absolute(path: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current folder")?;
    Ok(crate::engine::resolve_path(&cwd.join(path)))
}

fn utf8(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

fn enqueue(location: &Location, paths: &[PathBuf]) -> Result<ExitCode> {
    let root = std::fs::canonicalize(&location.root)
        .with_context(|| format!("root {}", location.root.display()))?;
    let mut files = Vec::new();
    for p in paths {
        let abs = absolute(p)?;
        if !abs.starts_with(&root) {
            bail!("{} is outside the root {}", abs.display(), root.display());
        }
        if abs.is_dir() {
            bail!(
                "{} is a folder: name the files in it (`obby-sync scan`, or a running engine, finds every change under the root)",
                abs.display()
            );
        }
        files.push(abs);
    }
    let db = Database::open_to_enqueue(&location.db())?;
    // What the engine would skip: nothing is queued when one of them is.
    if let Some(skipped) = db.first_untracked(&root, &files)? {
        bail!(
            "{} is not tracked: .obbywatch does not select it or .obbyignore excludes it",
            skipped.display()
        );
    }
    let mut events = Vec::new();
    for abs in files {
        let kind = if abs.exists() {
            ChangeKind::Modified
        } else {
            ChangeKind::Deleted
        };
        events.push(NewEvent {
            path: utf8(&abs)?,
            kind,
            old_path: None,
        });
    }
    db.enqueue(&events, "cli")?;
    outln!("enqueued {} file(s)", events.len());
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Status {
    database: String,
    #[serde(flatten)]
    status: crate::engine::DatabaseStatus,
}

fn status(db_path: &Path, json: bool) -> Result<ExitCode> {
    let s = Status {
        database: absolute(db_path)?.display().to_string(),
        status: Database::open_read_only(db_path)?.status(20)?,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let database = &s.database;
    let s = &s.status;
    let c = &s.counts;
    outln!("database       {} (schema {})", database, s.schema_version);
    outln!(
        "queue          {} pending, {} claimed, {} failed, {} done",
        s.queue.pending,
        s.queue.claimed,
        s.queue.failed,
        s.queue.done
    );
    outln!(
        "files          {} tracked, {} deleted",
        c.files_tracked,
        c.files_deleted
    );
    outln!(
        "history        {} versions, {} diffs, {} changes",
        c.versions,
        c.diffs,
        c.changes
    );
    outln!(
        "last change    {}",
        s.last_change.as_deref().unwrap_or("none")
    );
    outln!(
        "last reconcile {}",
        s.last_reconcile.as_deref().unwrap_or("never")
    );
    outln!(
        "watch backend  {}",
        s.watch_backend
            .as_deref()
            .unwrap_or("none yet (recorded by `run`)")
    );
    match s.search_index {
        None => outln!("search index   none yet (made by the next scan or run)"),
        Some(p) if p.complete() => outln!("search index   complete ({} versions)", p.indexed),
        Some(p) => outln!(
            "search index   {} of {} versions ({:.0}%; `run` or `scan` indexes the rest)",
            p.indexed,
            p.indexed + p.pending,
            100.0 * p.indexed as f64 / (p.indexed + p.pending).max(1) as f64
        ),
    }
    if !s.failures.is_empty() {
        outln!("failed changes (retried when the file changes again):");
        for f in &s.failures {
            outln!(
                "  #{} {} after {} attempt(s): {}",
                f.id,
                f.path,
                f.attempts,
                f.last_error.as_deref().unwrap_or("?")
            );
        }
        let more = s
            .queue
            .failed
            .saturating_sub(i64::try_from(s.failures.len()).unwrap_or(i64::MAX));
        if more > 0 {
            outln!("  … and {more} more (the oldest are listed)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn log(path: &Path, db_path: &Path, limit: usize, follow: bool) -> Result<ExitCode> {
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let db = Database::open_read_only(db_path)?;
    let file = utf8(&absolute(path)?)?;
    let rows = db.log(&file, limit, follow)?;
    if rows.is_empty() {
        bail!("no history for {file}");
    }
    let mut heading = None;
    for v in rows {
        if heading.as_ref() != Some(&v.file_path) {
            outln!("{}", v.file_path);
            heading = Some(v.file_path.clone());
        }
        let delta = v
            .delta
            .map_or_else(|| "-".to_owned(), |(a, r)| format!("+{a} -{r}"));
        outln!(
            "{:>8}  {}  {:>9} B {:>6} lines  {:>12}  {}  {}",
            v.id,
            v.timestamp.unwrap_or_default(),
            v.size.unwrap_or(0),
            v.line_count
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            delta,
            &v.content_hash[..v.content_hash.len().min(12)],
            v.description.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show_diff(path: &Path, db_path: &Path, from: Option<i64>, to: Option<i64>) -> Result<ExitCode> {
    let db = Database::open_read_only(db_path)?;
    let file = utf8(&absolute(path)?)?;
    match db.diff(&file, from, to)? {
        DiffLookup::Text(text) => {
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        DiffLookup::NoText if from.is_some() => {
            bail!("one of those versions has no text (binary or oversized file)")
        }
        DiffLookup::NoText => bail!("that change has no text diff (binary or oversized file)"),
        DiffLookup::NotStored => match to {
            Some(id) => bail!("no diff stored for version {id}"),
            None => bail!("no diff stored for {file}"),
        },
        DiffLookup::NoHistory => bail!("no history for {file}"),
        DiffLookup::NoVersion(id) => bail!("no version {id}"),
        DiffLookup::OtherFile(id, other) => {
            bail!(
                "version {id} is a version of {other}, not of {file} (see `obby-sync log {file}`)"
            )
        }
    }
}
