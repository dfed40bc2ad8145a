//! Benchmark of the live engine, `obby-sync run`: how soon an edit is
//! recorded, how fast a flood of new files goes through, and what an idle
//! engine costs.
//!
//! Every stage starts the release `obby-sync` binary as a child process
//! (`run --debounce-ms N --rescan-interval 0`, the database outside the
//! watched root), waits until it is ready (`sync_meta` holds `watch_backend`
//! and a `last_reconcile` newer than the start, the initial versions exist and
//! the queue is empty), measures, then stops it with SIGTERM (`kill -TERM`)
//! and checks that it exits 0.
//!
//! 1. **Latency**, once with a 50 ms and once with a 500 ms debounce: a vault
//!    of 1,000 notes; each note is edited once, 10 ms apart, and the wall
//!    clock is read right after each write returns. Once every note has its
//!    second version, a note's latency is that version's `timestamp` (local
//!    time, stamped just before its transaction commits) minus its write
//!    time. p50, p99 and max; target p99 ≤ debounce + 25 ms.
//! 2. **Flood**: 20,000 new 4 KiB notes written as fast as possible into an
//!    empty vault (folders made beforehand) under a running engine (debounce
//!    500 ms unless `--flood-debounce-ms`), timed from the first write until
//!    `SELECT COUNT(*) FROM file_versions`, polled every 20 ms, reaches
//!    20,000. Files/s end to end (target ≥ 10,000) and the engine's peak RSS
//!    (`VmHWM`).
//! 3. **Idle**: a vault of 10,000 notes, the engine done with its initial
//!    scan (and 1 s to settle); its CPU time (`utime + stime` of
//!    `/proc/<pid>/stat`, in `getconf CLK_TCK` ticks) over 10 s and its
//!    `VmRSS`. Targets ≤ 1% CPU and < 40 MiB.
//!
//! Progress goes to stderr; a Markdown table of figures and targets goes to
//! stdout. Linux only (`/proc`, `kill`). Build the binary first:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example watch-bench -- [--quick] [--flood-debounce-ms N] [--seed S] [--keep DIR]
//! ```
//!
//! `--quick` is a smoke run: 200 edits, 2,000 flood files, 2,000 idle notes,
//! 3 s of idle. `tools/README.md` explains each figure.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use clap::Parser;
use rand::SeedableRng as _;

#[path = "common/mod.rs"]
mod common;

use common::{
    Bench, Engine, FILES_PER_FOLDER, POLL, Prng, Res, Row, Stop, Ticks, Vault, clock_ticks, cores,
    count, dash, exit_code, failed_rows, find_binary, mib, millis, note, note_path, parse_local,
    percentile, print_rows, progress, skeleton, stop_row, sub_seed, thousands, verdict, work_dir,
};

/// This bench's name, in progress lines (`[watch-bench] ...`) and errors.
const BENCH: &str = "watch-bench";

/// Size of every flood file, in bytes.
const FLOOD_FILE_SIZE: usize = 4096;
/// Debounces the latency stage runs with, in milliseconds.
const LATENCY_DEBOUNCES_MS: [u64; 2] = [50, 500];
/// Time between two edits of the latency stage.
const EDIT_SPACING: Duration = Duration::from_millis(10);
/// The debounce `idle` runs with (the engine's default).
const IDLE_DEBOUNCE_MS: u64 = 500;
/// Quiet time after the initial scan before idle CPU is measured.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// After the initial scan the engine merges the search indexes' segments
/// once no commit came for a second: work the scan left, not idle cost. The
/// idle window starts once a window this long used at most one tick.
const AFTER_SCAN_QUIET: Duration = Duration::from_secs(1);
/// Longest wait for that after-scan work to end.
const AFTER_SCAN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait, after the last write, for the changes to be recorded.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra wait after everything arrived, to catch duplicate versions.
const AFTERWATCH: Duration = Duration::from_millis(300);

/// Target: p99 latency may exceed the debounce by this much.
const TARGET_LATENCY_SLACK_MS: f64 = 25.0;
/// Target: files per second of the flood, end to end.
const TARGET_FLOOD_FILES_PER_SECOND: f64 = 10_000.0;
/// Target: CPU share of an idle engine, in percent ("about zero").
const TARGET_IDLE_CPU_PERCENT: f64 = 1.0;
/// Target: resident memory of an idle engine, in bytes.
const TARGET_IDLE_RSS: u64 = 40 * 1024 * 1024;

/// Seed streams, so each vault draws independent numbers from one `--seed`.
const STREAM_LATENCY: u64 = 1;
/// See [`STREAM_LATENCY`].
const STREAM_FLOOD: u64 = 2;
/// See [`STREAM_LATENCY`].
const STREAM_IDLE: u64 = 3;

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark `obby-sync run`: edit-to-commit latency, a flood of new files, idle cost"
)]
struct Args {
    /// Smoke run: 200 edits, 2,000 flood files, 2,000 idle notes, 3 s idle.
    #[arg(long)]
    quick: bool,
    /// Debounce of the flood stage, in milliseconds.
    #[arg(long, default_value_t = 500)]
    flood_debounce_ms: u64,
    /// Seed of every generated note.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Build everything in DIR (new or empty) and keep it afterwards.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

/// How big each stage is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Notes in the latency vault, each edited once.
    edits: usize,
    /// New files of the flood.
    flood: usize,
    /// Notes in the idle vault.
    idle_files: usize,
    /// Length of the idle measurement.
    idle_time: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                edits: 200,
                flood: 2_000,
                idle_files: 2_000,
                idle_time: Duration::from_secs(3),
            }
        } else {
            Sizes {
                edits: 1_000,
                flood: 20_000,
                idle_files: 10_000,
                idle_time: Duration::from_secs(10),
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
    let sizes = Sizes::new(args.quick);
    let bin = find_binary()?;
    progress!("obby-sync binary: {}", bin.display());
    let ticks = clock_ticks();

    // Keep the TempDir alive until the end: dropping it deletes everything.
    let (_temp, base) = work_dir(args.keep.as_deref(), "obby-watch-bench-")?;
    let bench = Bench::new(bin, &base, ticks)?;

    let mut stops = Vec::new();
    let mut latencies = Vec::new();
    for debounce in LATENCY_DEBOUNCES_MS {
        let root = base.join(format!("latency-{debounce}"));
        let (latency, stop) = latency_stage(&bench, &root, debounce, sizes.edits, args.seed)?;
        latencies.push(latency);
        stops.push(stop);
    }
    let (flood, stop) = flood_stage(
        &bench,
        &base.join("flood"),
        args.flood_debounce_ms,
        sizes.flood,
        args.seed,
    )?;
    stops.push(stop);
    let (idle, stop) = idle_stage(&bench, &base.join("idle"), &sizes, args.seed)?;
    stops.push(stop);

    print_table(args, &latencies, &flood, &idle, &stops, ticks);
    if args.keep.is_some() {
        progress!(
            "kept {} (latency-*/, flood/, idle/ are the roots, db/ the databases, logs/ the engines' stderr)",
            base.display()
        );
    }
    Ok(())
}

// ------------------------------------------------------------ latency

/// One latency run's figures.
struct Latency {
    debounce_ms: u64,
    /// Notes edited.
    files: usize,
    /// Notes whose second version never arrived.
    missing: usize,
    /// Versions beyond one per edited note.
    extra_versions: i64,
    /// Sorted latencies in milliseconds.
    sorted_ms: Vec<f64>,
    /// First write to last write.
    edit_seconds: f64,
    backend: String,
}

fn latency_stage(
    bench: &Bench,
    root: &Path,
    debounce_ms: u64,
    files: usize,
    seed: u64,
) -> Res<(Latency, Stop)> {
    let name = format!("latency-{debounce_ms}");
    progress!("generating {files} notes in {}", root.display());
    let vault = Vault::generate(root, files, seed, STREAM_LATENCY)?;
    // Every new text is made before the clock starts: the loop only writes.
    let edited: Vec<String> = vault
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t}\n- [ ] Edited by the watch benchmark, change {i}.\n"))
        .collect();

    let mut engine = Engine::start(bench, &vault.root, &name, debounce_ms)?;
    let ready = engine.wait_ready(files as i64)?;
    progress!(
        "{name}: ready after {:.2} s ({} versions; backend {})",
        ready.seconds,
        files,
        ready.backend
    );
    let conn = &ready.conn;
    let baseline: i64 = count(conn, "SELECT COALESCE(MAX(id), 0) FROM file_versions")?;

    progress!(
        "{name}: editing {files} notes, one every {} ms ...",
        EDIT_SPACING.as_millis()
    );
    // The clock right after each write returns (the latency's start), and
    // right before it began (a version stamped less than a debounce after
    // that would have been recorded early).
    let mut written: Vec<DateTime<Local>> = Vec::with_capacity(files);
    let mut began: Vec<DateTime<Local>> = Vec::with_capacity(files);
    let first_write = Instant::now();
    for (i, (path, text)) in vault.files.iter().zip(&edited).enumerate() {
        let at = first_write + EDIT_SPACING * i as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        began.push(Local::now());
        fs::write(path, text)?;
        written.push(Local::now());
    }
    let edit_seconds = first_write.elapsed().as_secs_f64();
    progress!("{name}: edits done in {edit_seconds:.2} s; waiting for the versions ...");

    let last_write = Instant::now();
    let mut arrived = 0;
    while last_write.elapsed() < DRAIN_TIMEOUT {
        engine.check_alive()?;
        arrived = count(
            conn,
            &format!("SELECT COUNT(DISTINCT file_path) FROM file_versions WHERE id > {baseline}"),
        )?;
        if arrived >= files as i64 {
            break;
        }
        std::thread::sleep(POLL);
    }
    if arrived < files as i64 {
        progress!(
            "warning: {name}: only {arrived} of {files} edits recorded after {} s",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    // Late duplicates would show up within another debounce.
    std::thread::sleep(Duration::from_millis(debounce_ms) + AFTERWATCH);

    let mut first_version = std::collections::HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT file_path, timestamp FROM file_versions WHERE id IN
           (SELECT MIN(id) FROM file_versions WHERE id > ?1 GROUP BY file_path)",
    )?;
    let rows = stmt.query_map([baseline], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (path, stamp) = row?;
        first_version.insert(path, stamp);
    }
    drop(stmt);
    let new_versions = count(
        conn,
        &format!("SELECT COUNT(*) FROM file_versions WHERE id > {baseline}"),
    )?;
    let failed = failed_rows(conn)?;
    if failed > 0 {
        progress!("warning: {name}: {failed} queue rows failed");
    }

    let mut latencies = Vec::with_capacity(files);
    let mut missing = 0;
    let mut early = 0;
    let mut slow_writes = 0;
    for ((path, wrote), began) in vault.files.iter().zip(&written).zip(&began) {
        let key = path.to_str().ok_or("a vault path is not UTF-8")?;
        if millis(wrote.signed_duration_since(*began)) > 5.0 {
            slow_writes += 1;
        }
        match first_version.get(key) {
            Some(stamp) => {
                let at = parse_local(stamp)
                    .ok_or_else(|| format!("unparsable version timestamp {stamp:?}"))?;
                latencies.push(millis(at.signed_duration_since(*wrote)));
                if millis(at.signed_duration_since(*began)) < debounce_ms as f64 {
                    early += 1;
                }
            }
            None => missing += 1,
        }
    }
    if slow_writes > 0 {
        progress!(
            "{name}: {slow_writes} writes took over 5 ms to return (the bench was descheduled?); their latencies read short"
        );
    }
    if early > 0 {
        progress!(
            "warning: {name}: {early} versions stamped less than the debounce after their write began"
        );
    }
    latencies.sort_by(f64::total_cmp);
    let extra_versions = new_versions - first_version.len() as i64;
    if extra_versions > 0 {
        progress!("warning: {name}: {extra_versions} versions beyond one per edit");
    }
    if let Some(min) = latencies.first()
        && *min < 0.0
    {
        progress!("warning: {name}: a version is stamped {min:.1} ms before its write returned");
    }
    progress!(
        "{name}: latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, min {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
        percentile(&latencies, 0.0),
    );
    let backend = ready.backend.clone();
    drop(ready);
    let stop = engine.stop()?;
    Ok((
        Latency {
            debounce_ms,
            files,
            missing,
            extra_versions,
            sorted_ms: latencies,
            edit_seconds,
            backend,
        },
        stop,
    ))
}

// ------------------------------------------------------------ flood

/// The flood's figures.
struct Flood {
    debounce_ms: u64,
    files: usize,
    /// Versions counted when the wait ended.
    versions: i64,
    /// True when every file got its version within the timeout.
    complete: bool,
    /// First write to the poll that saw every version.
    seconds: f64,
    /// First write to the newest version's own timestamp.
    stamp_seconds: f64,
    /// First write to last write.
    write_seconds: f64,
    failed: i64,
    peak_rss: u64,
}

fn flood_stage(
    bench: &Bench,
    root: &Path,
    debounce_ms: u64,
    files: usize,
    seed: u64,
) -> Res<(Flood, Stop)> {
    let name = "flood";
    let root = skeleton(root, files.div_ceil(FILES_PER_FOLDER))?;
    // A pool of bodies; each file is its own heading plus a body cut to 4 KiB.
    let bodies: Vec<String> = (0..16)
        .map(|i| {
            let mut rng = Prng::seed_from_u64(sub_seed(seed, STREAM_FLOOD, i));
            note(&mut rng, "Flood", FLOOD_FILE_SIZE * 2)
        })
        .collect();
    let paths: Vec<PathBuf> = (0..files).map(|i| note_path(&root, i)).collect();

    let mut engine = Engine::start(bench, &root, name, debounce_ms)?;
    let ready = engine.wait_ready(0)?;
    progress!(
        "{name}: ready after {:.2} s (backend {}); writing {files} files of {FLOOD_FILE_SIZE} B ...",
        ready.seconds,
        ready.backend
    );
    let conn = &ready.conn;

    let mut text = String::with_capacity(FLOOD_FILE_SIZE);
    let first_write_at = Local::now();
    let first_write = Instant::now();
    for (i, path) in paths.iter().enumerate() {
        text.clear();
        writeln!(text, "# Flood note {i}\n").expect("writing to a String");
        let body = &bodies[i % bodies.len()];
        // ASCII text, so any cut is on a character boundary.
        text.push_str(&body[..FLOOD_FILE_SIZE - text.len() - 1]);
        text.push('\n');
        fs::write(path, text.as_bytes())?;
    }
    let write_seconds = first_write.elapsed().as_secs_f64();
    progress!(
        "{name}: written in {write_seconds:.2} s ({:.0} files/s); waiting for the versions ...",
        files as f64 / write_seconds
    );

    let mut versions = 0;
    let mut seconds = f64::NAN;
    let mut last_report = Instant::now();
    while first_write.elapsed() < DRAIN_TIMEOUT {
        engine.check_alive()?;
        versions = count(conn, "SELECT COUNT(*) FROM file_versions")?;
        if versions >= files as i64 {
            seconds = first_write.elapsed().as_secs_f64();
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            progress!(
                "{name}: {versions}/{files} versions after {:.1} s",
                first_write.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(POLL);
    }
    let complete = versions >= files as i64;
    if !complete {
        progress!(
            "warning: {name}: only {versions} of {files} versions after {} s",
            DRAIN_TIMEOUT.as_secs()
        );
        seconds = first_write.elapsed().as_secs_f64();
    }
    let newest: Option<String> =
        conn.query_row("SELECT MAX(timestamp) FROM file_versions", [], |r| r.get(0))?;
    let stamp_seconds = newest
        .as_deref()
        .and_then(parse_local)
        .map_or(f64::NAN, |t| {
            millis(t.signed_duration_since(first_write_at)) / 1e3
        });
    std::thread::sleep(Duration::from_millis(debounce_ms) + AFTERWATCH);
    versions = count(conn, "SELECT COUNT(*) FROM file_versions")?;
    let failed = failed_rows(conn)?;
    progress!(
        "{name}: {versions} versions in {seconds:.2} s by polling ({:.0} files/s), newest stamped {stamp_seconds:.2} s after the first write; {failed} failed",
        files as f64 / seconds
    );
    let peak_rss = engine.status_bytes("VmHWM")?;
    drop(ready);
    let stop = engine.stop()?;
    Ok((
        Flood {
            debounce_ms,
            files,
            versions,
            complete,
            seconds,
            stamp_seconds,
            write_seconds,
            failed,
            peak_rss,
        },
        stop,
    ))
}

// ------------------------------------------------------------ idle

/// The idle figures.
struct Idle {
    files: usize,
    /// Spawn to ready: the initial scan.
    scan_seconds: f64,
    /// Measured wall time.
    seconds: f64,
    /// CPU ticks used in it.
    ticks: u64,
    /// CPU share, in percent of one core.
    cpu_percent: f64,
    /// Context switches per second over all threads.
    wakeups_per_second: f64,
    rss: u64,
    /// Peak RSS (the initial scan's).
    peak_rss: u64,
    /// The work the scan left (merging the search indexes): wall seconds
    /// from ready until a quiet window, and the CPU ticks used meanwhile.
    after_scan_seconds: f64,
    after_scan_ticks: u64,
}

fn idle_stage(bench: &Bench, root: &Path, sizes: &Sizes, seed: u64) -> Res<(Idle, Stop)> {
    let name = "idle";
    let files = sizes.idle_files;
    progress!("generating {files} notes in {}", root.display());
    let vault = Vault::generate(root, files, seed, STREAM_IDLE)?;
    drop(vault.texts);
    let mut engine = Engine::start(bench, &vault.root, name, IDLE_DEBOUNCE_MS)?;
    let ready = engine.wait_ready(files as i64)?;
    progress!(
        "{name}: initial scan done, ready after {:.2} s (backend {}); settling {} s, then measuring {} s ...",
        ready.seconds,
        ready.backend,
        IDLE_SETTLE.as_secs(),
        sizes.idle_time.as_secs()
    );
    // Nothing of the bench touches the database while it measures.
    let scan_seconds = ready.seconds;
    drop(ready);
    std::thread::sleep(IDLE_SETTLE);
    engine.check_alive()?;
    // The engine is quiet once a whole window used at most one tick.
    let (after0, started) = (engine.cpu_ticks()?, Instant::now());
    let mut last = after0;
    loop {
        std::thread::sleep(AFTER_SCAN_QUIET);
        let now = engine.cpu_ticks()?;
        if now.saturating_sub(last) <= 1 || started.elapsed() > AFTER_SCAN_TIMEOUT {
            break;
        }
        last = now;
    }
    let (after_scan_seconds, after_scan_ticks) = (
        IDLE_SETTLE.as_secs_f64() + started.elapsed().as_secs_f64(),
        engine.cpu_ticks()?.saturating_sub(after0),
    );
    progress!(
        "{name}: the scan's after-work (search index merges) ended {after_scan_seconds:.1} s after ready, {after_scan_ticks} ticks"
    );

    let (cpu0, switches0, t0) = (
        engine.cpu_ticks()?,
        engine.context_switches()?,
        Instant::now(),
    );
    std::thread::sleep(sizes.idle_time);
    let (cpu1, switches1, seconds) = (
        engine.cpu_ticks()?,
        engine.context_switches()?,
        t0.elapsed().as_secs_f64(),
    );
    let rss = engine.status_bytes("VmRSS")?;
    let peak_rss = engine.status_bytes("VmHWM")?;
    let used = cpu1.saturating_sub(cpu0);
    let cpu_percent = bench.ticks.seconds(used) / seconds * 100.0;
    let wakeups_per_second = switches1.saturating_sub(switches0) as f64 / seconds;
    progress!(
        "{name}: {used} ticks in {seconds:.2} s = {cpu_percent:.2}% CPU, {wakeups_per_second:.0} context switches/s, RSS {:.1} MiB (peak {:.1} MiB)",
        mib(rss),
        mib(peak_rss)
    );
    let stop = engine.stop()?;
    Ok((
        Idle {
            files,
            scan_seconds,
            seconds,
            ticks: used,
            cpu_percent,
            wakeups_per_second,
            rss,
            peak_rss,
            after_scan_seconds,
            after_scan_ticks,
        },
        stop,
    ))
}

// ------------------------------------------------------------ the report

fn print_table(
    args: &Args,
    latencies: &[Latency],
    flood: &Flood,
    idle: &Idle,
    stops: &[Stop],
    ticks: Ticks,
) {
    let mut rows: Vec<Row> = Vec::new();
    for l in latencies {
        let label = format!(
            "latency, debounce {} ms ({} edits, {} ms apart)",
            l.debounce_ms,
            thousands(l.files as f64),
            EDIT_SPACING.as_millis()
        );
        let p99 = percentile(&l.sorted_ms, 99.0);
        let limit = l.debounce_ms as f64 + TARGET_LATENCY_SLACK_MS;
        rows.push((
            format!("{label}: p50"),
            format!("{:.1} ms", percentile(&l.sorted_ms, 50.0)),
            dash(),
        ));
        rows.push((
            format!("{label}: p99"),
            format!("{p99:.1} ms"),
            verdict(&format!("≤ {limit:.0} ms"), p99 <= limit && l.missing == 0),
        ));
        rows.push((
            format!("{label}: max"),
            format!("{:.1} ms", percentile(&l.sorted_ms, 100.0)),
            dash(),
        ));
        if l.missing > 0 || l.extra_versions != 0 {
            rows.push((
                format!("{label}: edits never recorded / extra versions"),
                format!("{} / {}", l.missing, l.extra_versions),
                verdict("0 / 0", false),
            ));
        }
    }
    let flood_fps = flood.files as f64 / flood.seconds;
    let flood_label = format!(
        "flood: {} new {} KiB files, debounce {} ms",
        thousands(flood.files as f64),
        FLOOD_FILE_SIZE / 1024,
        flood.debounce_ms
    );
    rows.push((
        format!("{flood_label}: files/s end to end"),
        if flood.complete {
            format!("{} ({:.2} s)", thousands(flood_fps), flood.seconds)
        } else {
            format!(
                "incomplete: {} of {} after {:.0} s",
                thousands(flood.versions as f64),
                thousands(flood.files as f64),
                flood.seconds
            )
        },
        verdict(
            &format!("≥ {}", thousands(TARGET_FLOOD_FILES_PER_SECOND)),
            flood.complete && flood_fps >= TARGET_FLOOD_FILES_PER_SECOND,
        ),
    ));
    rows.push((
        "flood: … the bench's writes alone".into(),
        format!(
            "{:.2} s ({} files/s)",
            flood.write_seconds,
            thousands(flood.files as f64 / flood.write_seconds)
        ),
        dash(),
    ));
    rows.push((
        "flood: … first write to the newest version's timestamp".into(),
        format!("{:.2} s", flood.stamp_seconds),
        dash(),
    ));
    let exact = flood.versions == flood.files as i64 && flood.failed == 0;
    rows.push((
        "flood: versions recorded (failed rows)".into(),
        format!("{} ({})", thousands(flood.versions as f64), flood.failed),
        verdict(&format!("{} (0)", thousands(flood.files as f64)), exact),
    ));
    rows.push((
        "flood: engine peak RSS (VmHWM)".into(),
        format!("{:.1} MiB", mib(flood.peak_rss)),
        dash(),
    ));
    rows.push((
        "idle: the scan's after-work (search index merges), ready → quiet".into(),
        format!(
            "{:.1} s, {} ticks",
            idle.after_scan_seconds, idle.after_scan_ticks
        ),
        dash(),
    ));
    let idle_label = format!(
        "idle, {} notes, {:.0} s",
        thousands(idle.files as f64),
        idle.seconds
    );
    rows.push((
        format!("{idle_label}: CPU"),
        format!("{:.2}% ({} ticks)", idle.cpu_percent, idle.ticks),
        verdict(
            &format!("~0% (≤ {TARGET_IDLE_CPU_PERCENT}%)"),
            idle.cpu_percent <= TARGET_IDLE_CPU_PERCENT,
        ),
    ));
    rows.push((
        format!("{idle_label}: RSS (VmRSS)"),
        format!("{:.1} MiB", mib(idle.rss)),
        verdict(
            &format!("< {:.0} MiB", mib(TARGET_IDLE_RSS)),
            idle.rss < TARGET_IDLE_RSS,
        ),
    ));
    rows.push((
        format!("{idle_label}: context switches/s, all threads"),
        format!("{:.0}", idle.wakeups_per_second),
        dash(),
    ));
    rows.push((
        format!(
            "idle: initial scan of {} notes (spawn → ready)",
            thousands(idle.files as f64)
        ),
        format!(
            "{:.2} s, peak RSS {:.1} MiB",
            idle.scan_seconds,
            mib(idle.peak_rss)
        ),
        dash(),
    ));
    rows.push(stop_row(stops));

    print_rows(rows);
    let cores = cores();
    let backend = latencies
        .first()
        .map_or_else(|| "?".to_owned(), |l| l.backend.clone());
    let edit_seconds: Vec<String> = latencies
        .iter()
        .map(|l| format!("{:.1} s", l.edit_seconds))
        .collect();
    println!(
        "machine: {cores} cores (obby-sync uses one worker per core); watch backend: {backend}; {}; CPU ticks: {} per second ({}); edit loops took {}; seed {}; engines run with --rescan-interval 0",
        if args.quick {
            "--quick sizes"
        } else {
            "full sizes"
        },
        ticks.per_second,
        ticks.source(),
        edit_seconds.join(" and "),
        args.seed
    );
}
