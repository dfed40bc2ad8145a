//! Benchmark of obby-sync's gRPC api against a live `obby-sync run`: how many
//! `TrackChange` round trips it answers, and whether 100 `Subscribe` streams
//! slow the engine down.
//!
//! Every engine is the release `obby-sync` binary as a child process
//! (`run --watcher-port 0 --tracker-port 0 --sse-grpc-port 0 --sse-http-port 0 --debounce-ms N
//! --rescan-interval 0`, the database outside the watched root). The bench
//! waits until it is ready (`sync_meta` holds `api_tracker_addr`,
//! `watch_backend` and a `last_reconcile` newer than the spawn, the initial
//! versions exist and the queue is empty), talks to it with the tonic clients
//! of `obby_sync::api::proto` (every client its own channel, so its own HTTP/2
//! connection), then stops it with SIGTERM (`kill -TERM`) and checks that it
//! exits 0.
//!
//! 1. **TrackChange on unchanged notes**: a vault (`.obbywatch` = `notes/`) of
//!    1,000 seeded 1–4 KiB notes, the engine done with its initial scan. One
//!    client calls `TrackChange` on the notes in turn for 5 s; every call
//!    enqueues the note, a worker reads and hashes it, finds the stored hash
//!    and records nothing, and the call answers with the existing version.
//!    Calls/s, p50 and p99 of the round trip. Then 8 clients (`--clients`) at
//!    once (tokio tasks, each on its own channel and its own share of the
//!    notes, so no two calls coalesce on one path) for 5 s: total calls/s,
//!    p50, p99. Calls have a 10 s deadline; a failed call is counted, not
//!    fatal, and after each phase the bench waits for the queue to empty and
//!    reports how long that took. Every answer must carry the note's stored
//!    version and hash, and no version or change may be written.
//! 2. **Subscribe fan-out**: 10,000 new notes in the watched folder, processed
//!    once with 100 `Subscribe` streams open and once with none, each on a
//!    fresh root and database with the same seeded texts; `--repeat` rounds,
//!    interleaved, medians reported. The method, so that every subscriber is
//!    connected before the first change is processed and both runs process
//!    exactly the same work:
//!    - the engine starts on an empty `notes/` and becomes ready;
//!    - `FileWatcher.StopWatching` pauses live recording; the bench waits
//!      until `sync_meta.watch_backend` says so (the pause is applied);
//!    - the 10,000 notes are written (the paused watcher drops their events),
//!      then the bench waits a debounce plus 1 s, so every event is drained
//!      and every note's mtime is older than the debounce, and checks that the
//!      queue and the history are still empty;
//!    - the subscribers connect: `Subscribe { from_cursor: 0 }`, each call
//!      answered (its stream exists on the server) before going on. The
//!      database holds no change yet, so cursor 0 is also "now"; `from_cursor`
//!      is used rather than `from_now` because it cannot miss a change even if
//!      a subscription were late;
//!    - `FileWatcher.StartWatching` resumes, which rescans the root: all
//!      10,000 notes are found at once (their mtimes are older than the
//!      debounce) and enqueued in a burst, so the engine, not the bench's
//!      writing, sets the pace.
//!
//!    The engine's throughput is `(versions − 1) / (newest − oldest
//!    file_versions.timestamp)`: first to last committed version, stamped by
//!    the engine just before each commit. Every subscriber must receive exactly
//!    the `file_changes` rows (count equal, first and last cursor equal to the
//!    table's, cursors strictly increasing). Target: with 100 subscribers the
//!    throughput is within 10% of the run without (ratio ≥ 0.90). Also
//!    reported: resume to the first commit, how long after the last commit the
//!    slowest subscriber got its last event, and the CPU seconds the engine
//!    and the bench (the 100 clients) used meanwhile.
//!
//!    With `--sse` the subscribers are SSE hub clients instead: each one reads
//!    `GET /sse?topics=file-changes` with `Last-Event-ID: 0` over its own
//!    HTTP/1.0 connection (so the body is plain lines, no chunk framing), is
//!    counted as connected once its `event: connected` arrived, and counts
//!    the `id:` lines that follow (one per change). The same checks apply.
//!
//! The bench's clients run on the same machine as the engine and compete with
//! it for the cores (as does anything else running), so every figure is of
//! engine plus clients; the table's last line gives the core count. Their
//! threads run at `--clients-nice` (10), the niceness of the engine's own api
//! threads under `run`: what is measured is what serving them costs the
//! engine, and the clients, like the engine's fan-out, take what the engine
//! leaves.
//!
//! Progress goes to stderr; a Markdown table of figures and targets goes to
//! stdout. Linux only (`/proc`, `kill`). Build the binary first:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example api-bench -- [--quick] [--clients N] [--subscribers N]
//!     [--sse] [--repeat R] [--seed S] [--keep DIR]
//! ```
//!
//! `--quick` is a smoke run: 200 notes and 1 s per TrackChange phase, 1,000
//! fan-out notes, one round. `tools/README.md` explains each figure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeDelta};
use clap::Parser;
use obby_sync::api::proto::contenttracker::TrackRequest;
use obby_sync::api::proto::contenttracker::content_tracker_client::ContentTrackerClient;
use obby_sync::api::proto::filewatcher::file_watcher_client::FileWatcherClient;
use obby_sync::api::proto::filewatcher::{StopRequest, WatchRequest};
use obby_sync::api::proto::sync::sync_client::SyncClient;
use obby_sync::api::proto::sync::{ChangeEvent, SubscribeRequest};
use rusqlite::{Connection, OptionalExtension as _};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;

use common::{
    Bench, Engine, FILES_PER_FOLDER, POLL, Ready, Res, Row, Stop, Ticks, Vault, clock_ticks, cores,
    count, dash, exit_code, failed_rows, find_binary, median, meta, note_path, outstanding,
    own_cpu_ticks, parse_local, percentile, print_rows, progress, seconds_of, skeleton, stop_row,
    texts, thousands, verdict, work_dir,
};

/// This bench's name, in progress lines (`[api-bench] ...`) and errors.
const BENCH: &str = "api-bench";

/// Calls each TrackChange phase makes before its clock starts.
const WARMUP_CALLS: usize = 20;
/// The debounce of the TrackChange engine (it sees no file events).
const TRACK_DEBOUNCE_MS: u64 = 500;
/// The debounce of the fan-out engines.
const FANOUT_DEBOUNCE_MS: u64 = 100;
/// Quiet time after the fan-out notes are written, beyond the debounce.
const WRITE_SETTLE: Duration = Duration::from_secs(1);
/// Deadline of every TrackChange call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the pause to be applied.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait, after the resume, for every version.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait, after the last version, for every subscriber to have it all.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the queue to drain after a TrackChange phase.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Target: the fan-out run's throughput as a share of the run without
/// subscribers.
const TARGET_FANOUT_RATIO: f64 = 0.90;

/// Seed streams, so each vault draws independent numbers from one `--seed`.
const STREAM_TRACK: u64 = 1;
/// See [`STREAM_TRACK`].
const STREAM_FANOUT: u64 = 2;

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark obby-sync's gRPC api: TrackChange round trips, Subscribe fan-out cost"
)]
struct Args {
    /// Smoke run: 200 notes and 1 s per TrackChange phase, 1,000 fan-out notes, one round.
    #[arg(long)]
    quick: bool,
    /// Concurrent clients of the second TrackChange phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Subscribe streams open during the fan-out run.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Fan-out rounds (one run with and one without subscribers each); default 3, 1 with --quick.
    #[arg(long)]
    repeat: Option<usize>,
    /// The fan-out subscribers are SSE hub clients (`/sse`) instead of Subscribe streams.
    #[arg(long)]
    sse: bool,
    /// Niceness of the bench's client threads (the engine's api threads run
    /// at `run`'s default `--nice 10`); 0 runs them at the engine's priority.
    #[arg(long, value_name = "N", default_value_t = 10)]
    clients_nice: i32,
    /// Seed of every generated note.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Build everything in DIR (new or empty) and keep it afterwards.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// Sets the calling thread's niceness (Linux: per thread).
fn set_priority(nice: i32) {
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), nice);
}

/// How big each stage is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Notes of the TrackChange vault.
    track_notes: usize,
    /// Length of each TrackChange phase.
    track_time: Duration,
    /// New notes of each fan-out run.
    fanout_files: usize,
    /// Clients of the second TrackChange phase.
    clients: usize,
    /// Subscribers of the fan-out run.
    subscribers: usize,
    /// Fan-out rounds.
    repeat: usize,
}

impl Sizes {
    fn new(args: &Args) -> Sizes {
        if args.quick {
            Sizes {
                track_notes: 200,
                track_time: Duration::from_secs(1),
                fanout_files: 1_000,
                clients: args.clients,
                subscribers: args.subscribers,
                repeat: args.repeat.unwrap_or(1),
            }
        } else {
            Sizes {
                track_notes: 1_000,
                track_time: Duration::from_secs(5),
                fanout_files: 10_000,
                clients: args.clients,
                subscribers: args.subscribers,
                repeat: args.repeat.unwrap_or(3),
            }
        }
    }
}

fn main() -> ExitCode {
    exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res<()> {
    if !cfg!(target_os = "linux") {
        return Err("this benchmark reads /proc and needs Linux".into());
    }
    let sizes = Sizes::new(args);
    if sizes.repeat == 0 || sizes.subscribers == 0 || sizes.clients == 0 {
        return Err("--repeat, --subscribers and --clients must be at least 1".into());
    }
    let bin = find_binary()?;
    progress!("obby-sync binary: {}", bin.display());
    let ticks = clock_ticks();
    // Absolute: a thread inherits its creator's niceness.
    let nice = rustix::process::getpriority_process(None)
        .unwrap_or(0)
        .saturating_add(args.clients_nice)
        .min(19);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(move || set_priority(nice))
        .enable_all()
        .build()?;

    // Keep the TempDir alive until the end: dropping it deletes everything.
    let (_temp, base) = work_dir(args.keep.as_deref(), "obby-api-bench-")?;
    let bench = Bench::new(bin, &base, ticks)?;
    let keep = args.keep.is_some();

    let mut stops = Vec::new();
    let (track, stop) = track_stage(&bench, &runtime, &base.join("track"), &sizes, args.seed)?;
    stops.push(stop);

    let corpus = fanout_corpus(sizes.fanout_files, args.seed);
    let mut alone = Vec::new();
    let mut crowded = Vec::new();
    for round in 0..sizes.repeat {
        for subscribers in [0, sizes.subscribers] {
            let (result, stop) = fanout_run(
                &bench,
                &runtime,
                &base,
                round,
                subscribers,
                &corpus,
                keep,
                args.sse,
            )?;
            stops.push(stop);
            if subscribers == 0 {
                alone.push(result);
            } else {
                crowded.push(result);
            }
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(1));

    print_table(args, &sizes, &track, &alone, &crowded, &stops, ticks);
    if args.keep.is_some() {
        progress!(
            "kept {} (track/ and fanout-*/ are the roots, db/ the databases, logs/ the engines' stderr)",
            base.display()
        );
    }
    Ok(())
}

// ------------------------------------------------------------ the database

/// The local-time stamp a `SELECT MIN/MAX(timestamp) ...` query gives.
fn stamp(conn: &Connection, sql: &str) -> Res<DateTime<Local>> {
    let text: Option<String> = conn.query_row(sql, [], |r| r.get(0))?;
    let text = text.ok_or_else(|| format!("no timestamp from {sql}"))?;
    Ok(parse_local(&text).ok_or_else(|| format!("unparsable timestamp {text:?}"))?)
}

// ------------------------------------------------------------ the api

async fn connect(url: &str) -> Res<Channel> {
    Ok(Channel::from_shared(url.to_owned())?.connect().await?)
}

// ------------------------------------------------------------ TrackChange

/// A note and what `TrackChange` must answer for it.
#[derive(Debug, Clone)]
struct Expected {
    path: String,
    version_id: i64,
    hash: String,
}

/// What one client's loop saw.
#[derive(Debug, Default)]
struct ClientLoop {
    /// Every call's round trip, failed ones included.
    latencies_ms: Vec<f64>,
    /// Calls answered with a `TrackResponse`.
    answered: usize,
    /// Answers without success, or with another version or hash.
    wrong: usize,
    first_wrong: Option<String>,
    /// Calls that failed with a gRPC status (a timeout included).
    errors: usize,
    first_error: Option<String>,
}

/// One TrackChange phase's figures.
#[derive(Debug)]
struct TrackRun {
    clients: usize,
    /// Calls answered (right or wrong).
    calls: usize,
    seconds: f64,
    /// Round trips of every call, failed ones included.
    sorted_ms: Vec<f64>,
    wrong: usize,
    /// Calls that failed with a gRPC status.
    errors: usize,
    /// The phase's end to an empty queue.
    drain_seconds: f64,
    /// Engine CPU over the phase, percent of one core.
    engine_cpu: f64,
    /// The bench's own CPU over the phase, percent of one core.
    bench_cpu: f64,
}

impl TrackRun {
    fn per_second(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
}

/// The TrackChange stage's figures.
struct Track {
    notes: usize,
    single: TrackRun,
    multi: TrackRun,
    /// Versions and changes written during the stage (must be 0).
    new_versions: i64,
    new_changes: i64,
    failed: i64,
    scan_seconds: f64,
    backend: String,
}

/// Calls `TrackChange` on `files` in turn until `deadline`.
async fn track_loop(channel: Channel, files: Vec<Expected>, deadline: Instant) -> Res<ClientLoop> {
    let mut client = ContentTrackerClient::new(channel);
    let mut out = ClientLoop::default();
    for f in files.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let mut request = tonic::Request::new(TrackRequest {
            file_path: f.path.clone(),
            change_type: "modified".into(),
            project_root: String::new(),
        });
        request.set_timeout(CALL_TIMEOUT);
        let sent = Instant::now();
        let result = client.track_change(request).await;
        out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        let answer = match result {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!(
                        "{} after {:.1} s: {status}",
                        f.path,
                        sent.elapsed().as_secs_f64()
                    ));
                }
                continue;
            }
        };
        out.answered += 1;
        if !answer.success || answer.version_id != f.version_id || answer.content_hash != f.hash {
            out.wrong += 1;
            if out.first_wrong.is_none() {
                out.first_wrong = Some(format!("{}: {answer:?}", f.path));
            }
        }
    }
    Ok(out)
}

/// `clients` concurrent loops, client `k` on every `clients`th note from `k`.
fn track_phase(
    bench: &Bench,
    runtime: &Runtime,
    engine: &Engine,
    ready: &Ready,
    files: &[Expected],
    clients: usize,
    time: Duration,
) -> Res<TrackRun> {
    let shares: Vec<Vec<Expected>> = (0..clients)
        .map(|k| files.iter().skip(k).step_by(clients).cloned().collect())
        .collect();
    let url = ready.url()?;
    let channels = runtime.block_on(async {
        let mut channels = Vec::with_capacity(clients);
        for _ in 0..clients {
            channels.push(connect(url).await?);
        }
        Res::Ok(channels)
    })?;
    // Warm-up: every connection has made a call before the clock starts.
    runtime.block_on(async {
        let warm = Instant::now() + Duration::from_secs(60);
        for (channel, share) in channels.iter().zip(&shares) {
            let few: Vec<Expected> = share
                .iter()
                .take(WARMUP_CALLS / clients + 1)
                .cloned()
                .collect();
            let mut client = ContentTrackerClient::new(channel.clone());
            for f in few {
                if Instant::now() > warm {
                    break;
                }
                let mut request = tonic::Request::new(TrackRequest {
                    file_path: f.path,
                    ..TrackRequest::default()
                });
                request.set_timeout(CALL_TIMEOUT);
                client.track_change(request).await?;
            }
        }
        Res::Ok(())
    })?;
    let (engine0, own0) = (engine.cpu_ticks()?, own_cpu_ticks()?);
    let started = Instant::now();
    let deadline = started + time;
    let loops = runtime.block_on(async {
        let tasks: Vec<_> = channels
            .into_iter()
            .zip(shares)
            .map(|(channel, share)| tokio::spawn(track_loop(channel, share, deadline)))
            .collect();
        let mut loops = Vec::with_capacity(tasks.len());
        for task in tasks {
            loops.push(task.await??);
        }
        Res::Ok(loops)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let (engine1, own1) = (engine.cpu_ticks()?, own_cpu_ticks()?);
    // Calls given up by the client may have left rows behind: wait for them.
    let ended = Instant::now();
    while outstanding(&ready.conn)? > 0 {
        if ended.elapsed() > QUEUE_TIMEOUT {
            return Err(format!(
                "track: the queue is not empty {} s after the phase",
                QUEUE_TIMEOUT.as_secs()
            )
            .into());
        }
        std::thread::sleep(POLL);
    }
    let drain_seconds = ended.elapsed().as_secs_f64();
    let mut sorted_ms: Vec<f64> = loops
        .iter()
        .flat_map(|l| l.latencies_ms.iter().copied())
        .collect();
    sorted_ms.sort_by(f64::total_cmp);
    let wrong = loops.iter().map(|l| l.wrong).sum();
    if let Some(first) = loops.iter().find_map(|l| l.first_wrong.as_ref()) {
        progress!("warning: {wrong} wrong TrackChange answers; the first: {first}");
    }
    let errors = loops.iter().map(|l| l.errors).sum();
    if let Some(first) = loops.iter().find_map(|l| l.first_error.as_ref()) {
        progress!("warning: {errors} TrackChange calls failed; the first: {first}");
    }
    if drain_seconds > 1.0 {
        progress!("warning: the queue emptied only {drain_seconds:.1} s after the phase ended");
    }
    let run = TrackRun {
        clients,
        calls: loops.iter().map(|l| l.answered).sum(),
        seconds,
        sorted_ms,
        wrong,
        errors,
        drain_seconds,
        engine_cpu: bench.ticks.seconds(engine1.saturating_sub(engine0)) / seconds * 100.0,
        bench_cpu: bench.ticks.seconds(own1.saturating_sub(own0)) / seconds * 100.0,
    };
    progress!(
        "track: {clients} client(s): {} answers ({errors} errors) in {seconds:.2} s = {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; engine CPU {:.0}%, bench CPU {:.0}%",
        run.calls,
        run.per_second(),
        percentile(&run.sorted_ms, 50.0),
        percentile(&run.sorted_ms, 99.0),
        percentile(&run.sorted_ms, 100.0),
        run.engine_cpu,
        run.bench_cpu
    );
    Ok(run)
}

fn track_stage(
    bench: &Bench,
    runtime: &Runtime,
    root: &Path,
    sizes: &Sizes,
    seed: u64,
) -> Res<(Track, Stop)> {
    let notes = sizes.track_notes;
    progress!("track: generating {notes} notes in {}", root.display());
    let vault = Vault::generate(root, notes, seed, STREAM_TRACK)?;
    let mut engine = Engine::start_with_api(bench, &vault.root, "track", TRACK_DEBOUNCE_MS)?;
    let ready = engine.wait_ready(notes as i64)?;
    progress!(
        "track: initial scan done, ready after {:.2} s (backend {}, api {})",
        ready.seconds,
        ready.backend,
        ready.url()?
    );
    let conn = &ready.conn;
    let mut files = Vec::with_capacity(notes);
    {
        let mut stmt = conn.prepare(
            "SELECT version_id, content_hash FROM sync_files WHERE path = ?1 AND deleted = 0",
        )?;
        for path in &vault.files {
            let path = path.to_str().ok_or("a note path is not UTF-8")?.to_owned();
            let (version_id, hash): (i64, String) = stmt
                .query_row([&path], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .ok_or_else(|| format!("{path} is not tracked after the initial scan"))?;
            files.push(Expected {
                path,
                version_id,
                hash,
            });
        }
    }
    let versions0 = count(conn, "SELECT COUNT(*) FROM file_versions")?;
    let changes0 = count(conn, "SELECT COUNT(*) FROM file_changes")?;

    progress!(
        "track: 1 client, {} s of TrackChange on unchanged notes ...",
        sizes.track_time.as_secs()
    );
    let single = track_phase(bench, runtime, &engine, &ready, &files, 1, sizes.track_time)?;
    engine.check_alive()?;
    progress!(
        "track: {} clients, {} s ...",
        sizes.clients,
        sizes.track_time.as_secs()
    );
    let multi = track_phase(
        bench,
        runtime,
        &engine,
        &ready,
        &files,
        sizes.clients,
        sizes.track_time,
    )?;
    engine.check_alive()?;

    let new_versions = count(conn, "SELECT COUNT(*) FROM file_versions")? - versions0;
    let new_changes = count(conn, "SELECT COUNT(*) FROM file_changes")? - changes0;
    let failed = failed_rows(conn)?;
    if new_versions != 0 || new_changes != 0 || failed != 0 {
        progress!(
            "warning: track: unchanged notes wrote {new_versions} versions and {new_changes} changes; {failed} failed rows"
        );
    }
    let track = Track {
        notes,
        single,
        multi,
        new_versions,
        new_changes,
        failed,
        scan_seconds: ready.seconds,
        backend: ready.backend.clone(),
    };
    drop(ready);
    let stop = engine.stop()?;
    Ok((track, stop))
}

// ------------------------------------------------------------ fan-out

/// What one subscriber received.
#[derive(Debug, Default)]
struct Received {
    count: usize,
    first: i64,
    last: i64,
    /// Every cursor larger than the one before.
    increasing: bool,
    /// When its last event arrived.
    last_at: Option<Instant>,
    /// Why its stream ended early, if it did.
    error: Option<String>,
}

/// Reads a `Subscribe` stream until `stop`.
async fn read_feed(
    mut stream: Streaming<ChangeEvent>,
    mut stop: watch::Receiver<bool>,
    seen: Arc<AtomicUsize>,
) -> Received {
    let mut r = Received {
        increasing: true,
        ..Received::default()
    };
    loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    if r.count == 0 {
                        r.first = event.cursor;
                    } else if event.cursor <= r.last {
                        r.increasing = false;
                    }
                    r.last = event.cursor;
                    r.count += 1;
                    r.last_at = Some(Instant::now());
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    r.error = Some("the stream ended".into());
                    break;
                }
                Err(status) => {
                    r.error = Some(status.to_string());
                    break;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    r
}

/// Reads an SSE hub stream (past its `connected` event) until `stop`: every
/// `id:` line is a change's cursor.
async fn read_sse(
    mut lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
    mut stop: watch::Receiver<bool>,
    seen: Arc<AtomicUsize>,
) -> Received {
    let mut r = Received {
        increasing: true,
        ..Received::default()
    };
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let Some(id) = line.strip_prefix("id: ") else { continue };
                    let Ok(cursor) = id.trim().parse::<i64>() else {
                        r.error = Some(format!("bad id line {line:?}"));
                        break;
                    };
                    if r.count == 0 {
                        r.first = cursor;
                    } else if cursor <= r.last {
                        r.increasing = false;
                    }
                    r.last = cursor;
                    r.count += 1;
                    r.last_at = Some(Instant::now());
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {
                    r.error = Some("the stream ended".into());
                    break;
                }
                Err(e) => {
                    r.error = Some(e.to_string());
                    break;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    r
}

/// Connects `n` SSE clients from cursor 0, each past its `connected` event,
/// and starts reading their streams.
fn open_sse_clients(
    runtime: &Runtime,
    addr: &str,
    n: usize,
    stop: &watch::Receiver<bool>,
) -> Res<Vec<(Arc<AtomicUsize>, tokio::task::JoinHandle<Received>)>> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let streams = runtime.block_on(async {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.write_all(b"GET /sse?topics=file-changes HTTP/1.0\r\nLast-Event-ID: 0\r\n\r\n")
                .await?;
            let mut lines = tokio::io::BufReader::new(tcp).lines();
            // The response head, then the connected event up to its blank line.
            let mut blanks = 0;
            while blanks < 2 {
                match lines.next_line().await? {
                    Some(line) if line.trim().is_empty() => blanks += 1,
                    Some(_) => {}
                    None => return Err("an SSE stream ended before its connected event".into()),
                }
            }
            streams.push(lines);
        }
        Res::Ok(streams)
    })?;
    Ok(streams
        .into_iter()
        .map(|lines| {
            let seen = Arc::new(AtomicUsize::new(0));
            let task = runtime.spawn(read_sse(lines, stop.clone(), seen.clone()));
            (seen, task)
        })
        .collect())
}

/// One fan-out run's figures.
#[derive(Debug)]
struct FanoutRun {
    files: usize,
    versions: i64,
    changes: i64,
    failed: i64,
    /// Versions/s from the first to the last committed version.
    engine_fps: f64,
    /// The resume call to the first version's stamp.
    resume_to_first: f64,
    /// The resume call to the poll that saw every version.
    resume_to_all: f64,
    /// Subscribers that got exactly every change, in order.
    complete_subscribers: usize,
    /// The last commit's stamp to the slowest subscriber's last event.
    slowest_lag: f64,
    /// CPU seconds from the resume to the last version.
    engine_cpu: f64,
    bench_cpu: f64,
}

/// The same texts for every fan-out run.
fn fanout_corpus(files: usize, seed: u64) -> Vec<String> {
    progress!("fan-out: generating {files} notes");
    texts(files, seed, STREAM_FANOUT, "Fan-out note")
}

/// Subscribes `n` clients from cursor 0 and starts reading their streams.
fn open_subscribers(
    runtime: &Runtime,
    url: &str,
    n: usize,
    stop: &watch::Receiver<bool>,
) -> Res<Vec<(Arc<AtomicUsize>, tokio::task::JoinHandle<Received>)>> {
    let streams = runtime.block_on(async {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut client = SyncClient::new(connect(url).await?);
            // Answered once the server has made the stream.
            let stream = client
                .subscribe(SubscribeRequest {
                    from_cursor: 0,
                    from_now: false,
                })
                .await?
                .into_inner();
            streams.push(stream);
        }
        Res::Ok(streams)
    })?;
    Ok(streams
        .into_iter()
        .map(|stream| {
            let seen = Arc::new(AtomicUsize::new(0));
            let task = runtime.spawn(read_feed(stream, stop.clone(), seen.clone()));
            (seen, task)
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn fanout_run(
    bench: &Bench,
    runtime: &Runtime,
    base: &Path,
    round: usize,
    subscribers: usize,
    corpus: &[String],
    keep: bool,
    sse: bool,
) -> Res<(FanoutRun, Stop)> {
    let name = format!("fanout-{subscribers}-{}", round + 1);
    let files = corpus.len();
    let root = skeleton(&base.join(&name), files.div_ceil(FILES_PER_FOLDER))?;
    let mut engine = Engine::start_with_api(bench, &root, &name, FANOUT_DEBOUNCE_MS)?;
    let ready = engine.wait_ready(0)?;
    let conn = &ready.conn;
    let url = ready.url()?;
    let mut watcher =
        runtime.block_on(async { Res::Ok(FileWatcherClient::new(connect(url).await?)) })?;

    // Pause, and wait until the watcher has applied it.
    let paused = runtime
        .block_on(watcher.stop_watching(StopRequest {}))?
        .into_inner();
    if !paused.success {
        return Err(format!("{name}: StopWatching failed: {}", paused.error).into());
    }
    let asked = Instant::now();
    while !meta(conn, "watch_backend")?.is_some_and(|b| b.contains("paused")) {
        engine.check_alive()?;
        if asked.elapsed() > PAUSE_TIMEOUT {
            return Err(format!("{name}: the watcher did not pause").into());
        }
        std::thread::sleep(POLL);
    }

    let written = Instant::now();
    for (i, text) in corpus.iter().enumerate() {
        fs::write(note_path(&root, i), text)?;
    }
    let write_seconds = written.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(FANOUT_DEBOUNCE_MS) + WRITE_SETTLE);
    engine.check_alive()?;
    let early = count(conn, "SELECT COUNT(*) FROM file_versions")? + outstanding(conn)?;
    if early != 0 {
        return Err(format!(
            "{name}: the paused engine queued or recorded {early} changes; the pause did not hold"
        )
        .into());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let feeds = if sse {
        let addr =
            meta(conn, "api_sse_http_addr")?.ok_or("the SSE hub's address is not recorded")?;
        open_sse_clients(runtime, &addr, subscribers, &stop_rx)?
    } else {
        open_subscribers(runtime, url, subscribers, &stop_rx)?
    };
    progress!(
        "{name}: {files} notes written in {write_seconds:.2} s while paused; {subscribers} subscribers open; resuming ...",
    );

    // The clocks: wall time for the engine's stamps, Instant for the bench's.
    let (engine0, own0) = (engine.cpu_ticks()?, own_cpu_ticks()?);
    let resumed_at = Local::now();
    let resumed = Instant::now();
    let resume = runtime
        .block_on(watcher.start_watching(WatchRequest::default()))?
        .into_inner();
    if !resume.success {
        return Err(format!("{name}: StartWatching failed: {}", resume.error).into());
    }
    let mut versions = 0;
    let mut last_report = Instant::now();
    while versions < files as i64 {
        engine.check_alive()?;
        if resumed.elapsed() > DRAIN_TIMEOUT {
            return Err(format!(
                "{name}: only {versions} of {files} versions {} s after the resume",
                DRAIN_TIMEOUT.as_secs()
            )
            .into());
        }
        std::thread::sleep(POLL);
        versions = count(conn, "SELECT COUNT(*) FROM file_versions")?;
        if last_report.elapsed() >= Duration::from_secs(2) {
            progress!(
                "{name}: {versions}/{files} versions after {:.1} s",
                resumed.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let resume_to_all = resumed.elapsed().as_secs_f64();
    let (engine1, own1) = (engine.cpu_ticks()?, own_cpu_ticks()?);

    let first_version = stamp(conn, "SELECT MIN(timestamp) FROM file_versions")?;
    let last_version = stamp(conn, "SELECT MAX(timestamp) FROM file_versions")?;
    let span = seconds_of(last_version.signed_duration_since(first_version));
    let engine_fps = (versions - 1) as f64 / span;
    let (changes, min_cursor, max_cursor): (i64, i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) FROM file_changes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let last_change = stamp(conn, "SELECT MAX(timestamp) FROM file_changes")?;

    // Every subscriber should get every change; wait for them, then stop them.
    let waited = Instant::now();
    let expected = usize::try_from(changes)?;
    while feeds
        .iter()
        .any(|(seen, _)| seen.load(Ordering::Relaxed) < expected)
        && waited.elapsed() < DELIVERY_TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A subscriber sent more than it should would show up here.
    std::thread::sleep(Duration::from_millis(100));
    let _ = stop_tx.send(true);
    let received: Vec<Received> = runtime.block_on(async {
        let mut received = Vec::with_capacity(feeds.len());
        for (_, task) in feeds {
            received.push(task.await?);
        }
        Res::Ok(received)
    })?;
    let complete_subscribers = received
        .iter()
        .filter(|r| {
            r.error.is_none()
                && r.count == expected
                && r.increasing
                && r.first == min_cursor
                && r.last == max_cursor
        })
        .count();
    if let Some(bad) = received.iter().find(|r| {
        r.error.is_some()
            || r.count != expected
            || !r.increasing
            || r.first != min_cursor
            || r.last != max_cursor
    }) {
        progress!(
            "warning: {name}: {} of {subscribers} subscribers did not get exactly the {changes} changes (cursors {min_cursor}..={max_cursor}); one got {} ({}..={}, increasing {}, error {:?})",
            subscribers - complete_subscribers,
            bad.count,
            bad.first,
            bad.last,
            bad.increasing,
            bad.error
        );
    }
    // The wall time of the slowest subscriber's last event, from its Instant.
    let slowest_lag = received
        .iter()
        .filter_map(|r| r.last_at)
        .max()
        .map_or(f64::NAN, |at| {
            let at = resumed_at
                + TimeDelta::from_std(at.saturating_duration_since(resumed)).unwrap_or_default();
            seconds_of(at.signed_duration_since(last_change))
        });

    let failed = failed_rows(conn)?;
    let run = FanoutRun {
        files,
        versions,
        changes,
        failed,
        engine_fps,
        resume_to_first: seconds_of(first_version.signed_duration_since(resumed_at)),
        resume_to_all,
        complete_subscribers,
        slowest_lag,
        engine_cpu: bench.ticks.seconds(engine1.saturating_sub(engine0)),
        bench_cpu: bench.ticks.seconds(own1.saturating_sub(own0)),
    };
    progress!(
        "{name}: {versions} versions, {changes} changes; first to last commit {span:.2} s = {:.0} files/s; resume → first commit {:.0} ms, → all {:.2} s; engine CPU {:.2} s, bench CPU {:.2} s; {complete_subscribers}/{subscribers} subscribers complete{}",
        run.engine_fps,
        run.resume_to_first * 1e3,
        run.resume_to_all,
        run.engine_cpu,
        run.bench_cpu,
        if subscribers > 0 {
            format!(
                ", the slowest {:.0} ms after the last commit",
                run.slowest_lag * 1e3
            )
        } else {
            String::new()
        }
    );
    drop(ready);
    drop(watcher);
    let stop = engine.stop()?;
    if !keep {
        fs::remove_dir_all(&root)?;
    }
    Ok((run, stop))
}

// ------------------------------------------------------------ the report

/// `median (a, b, c)` of per-round values.
fn rounds(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let m = show(median(values));
    if values.len() < 2 {
        return m;
    }
    let all: Vec<String> = values.iter().map(|v| show(*v)).collect();
    format!("{m} (runs: {})", all.join(", "))
}

fn print_table(
    args: &Args,
    sizes: &Sizes,
    track: &Track,
    alone: &[FanoutRun],
    crowded: &[FanoutRun],
    stops: &[Stop],
    ticks: Ticks,
) {
    let mut rows: Vec<Row> = Vec::new();
    for run in [&track.single, &track.multi] {
        let label = format!(
            "TrackChange, unchanged note, {} client{}",
            run.clients,
            if run.clients == 1 { "" } else { "s" }
        );
        rows.push((
            format!("{label}: calls/s"),
            format!(
                "{} ({} calls in {:.1} s)",
                thousands(run.per_second()),
                thousands(run.calls as f64),
                run.seconds
            ),
            dash(),
        ));
        rows.push((
            format!("{label}: p50 / p99 / max latency"),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                percentile(&run.sorted_ms, 50.0),
                percentile(&run.sorted_ms, 99.0),
                percentile(&run.sorted_ms, 100.0)
            ),
            dash(),
        ));
        rows.push((
            format!("{label}: CPU, engine / bench (% of one core)"),
            format!("{:.0}% / {:.0}%", run.engine_cpu, run.bench_cpu),
            dash(),
        ));
        rows.push((
            format!(
                "{label}: failed calls (deadline {} s) / queue drained after the phase",
                CALL_TIMEOUT.as_secs()
            ),
            format!("{} / {:.2} s", run.errors, run.drain_seconds),
            verdict("0 / –", run.errors == 0),
        ));
    }
    let wrong = track.single.wrong + track.multi.wrong;
    let clean =
        wrong == 0 && track.new_versions == 0 && track.new_changes == 0 && track.failed == 0;
    rows.push((
        "TrackChange: wrong answers / versions / changes written / failed rows".into(),
        format!(
            "{wrong} / {} / {} / {}",
            track.new_versions, track.new_changes, track.failed
        ),
        verdict("0 / 0 / 0 / 0", clean),
    ));

    let fps = |runs: &[FanoutRun]| runs.iter().map(|r| r.engine_fps).collect::<Vec<f64>>();
    let (fps_alone, fps_crowded) = (fps(alone), fps(crowded));
    let ratio = median(&fps_crowded) / median(&fps_alone);
    let label = format!(
        "fan-out: {} new notes, engine files/s (first → last commit)",
        thousands(sizes.fanout_files as f64)
    );
    rows.push((
        format!("{label}, 0 subscribers"),
        rounds(&fps_alone, thousands),
        dash(),
    ));
    rows.push((
        format!(
            "{label}, {} {}",
            sizes.subscribers,
            if args.sse {
                "SSE clients"
            } else {
                "subscribers"
            }
        ),
        rounds(&fps_crowded, thousands),
        dash(),
    ));
    rows.push((
        format!("fan-out: ratio, {} subscribers ÷ 0", sizes.subscribers),
        format!("{ratio:.2}"),
        verdict(
            &format!("≥ {TARGET_FANOUT_RATIO:.2}"),
            ratio >= TARGET_FANOUT_RATIO,
        ),
    ));
    let expected_subscribers = sizes.subscribers * crowded.len();
    let complete: usize = crowded.iter().map(|r| r.complete_subscribers).sum();
    let all_changes: Vec<String> = crowded
        .iter()
        .map(|r| thousands(r.changes as f64))
        .collect();
    rows.push((
        format!(
            "fan-out: subscribers that got every change, cursors strictly increasing ({} round{})",
            crowded.len(),
            if crowded.len() == 1 { "" } else { "s" }
        ),
        format!(
            "{complete} / {expected_subscribers} (changes per run: {})",
            all_changes.join(", ")
        ),
        verdict(
            &format!("{expected_subscribers} / {expected_subscribers}"),
            complete == expected_subscribers,
        ),
    ));
    rows.push((
        "fan-out: last commit → slowest subscriber's last event".into(),
        rounds(
            &crowded.iter().map(|r| r.slowest_lag).collect::<Vec<_>>(),
            |s| format!("{:.0} ms", s * 1e3),
        ),
        dash(),
    ));
    for (runs, who) in [(alone, "0"), (crowded, &sizes.subscribers.to_string())] {
        rows.push((
            format!("fan-out, {who} subscribers: resume → first commit / → all versions"),
            format!(
                "{:.0} ms / {:.2} s",
                median(&runs.iter().map(|r| r.resume_to_first).collect::<Vec<_>>()) * 1e3,
                median(&runs.iter().map(|r| r.resume_to_all).collect::<Vec<_>>())
            ),
            dash(),
        ));
        rows.push((
            format!("fan-out, {who} subscribers: CPU s resume → all versions, engine / bench"),
            format!(
                "{:.2} / {:.2}",
                median(&runs.iter().map(|r| r.engine_cpu).collect::<Vec<_>>()),
                median(&runs.iter().map(|r| r.bench_cpu).collect::<Vec<_>>())
            ),
            dash(),
        ));
    }
    let exact = alone
        .iter()
        .chain(crowded)
        .all(|r| r.versions == r.files as i64 && r.changes == r.files as i64 && r.failed == 0);
    rows.push((
        "fan-out: every run: versions = changes = notes, no failed row".into(),
        if exact { "yes".into() } else { "no".into() },
        verdict("yes", exact),
    ));
    rows.push(stop_row(stops));

    print_rows(rows);
    let cores = cores();
    println!(
        "machine: {cores} cores, shared by the engine (one worker per core, 2 api threads at nice 10) and the bench's clients (nice {}); watch backend: {}; {}; TrackChange vault of {} notes (initial scan {:.2} s); fan-out medians of {} round(s), subscribers from cursor 0, debounce {FANOUT_DEBOUNCE_MS} ms; CPU ticks: {} per second ({}); seed {}",
        args.clients_nice,
        track.backend,
        if args.quick {
            "--quick sizes"
        } else {
            "full sizes"
        },
        thousands(track.notes as f64),
        track.scan_seconds,
        sizes.repeat,
        ticks.per_second,
        ticks.source(),
        args.seed
    );
}
