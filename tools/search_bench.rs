//! Latency benchmark of full-text search: `SearchContent` of the Query
//! service and the CLI's `obby-sync search`, over a vault with a history.
//!
//! It builds the database through the real engine: `--files` seeded notes
//! (`tools/common`'s generator, each with a rare tag word and a word of its
//! revision), an initial `obby-sync scan`, then `--versions - 1` edit rounds
//! (every note rewritten, then `scan` again), so every note has `--versions`
//! versions. It then starts `obby-sync run` with the Query service on a free
//! port of 127.0.0.1 and calls `SearchContent` for a fixed mix of queries
//! (common, rare, multi-word, phrase, prefix, path words, a word only old
//! versions hold, an absent word), newest-only and all-versions, `--repeat`
//! rounds with the queries interleaved; each call is timed from the request
//! to the end of its stream. Last, `obby-sync search` runs as a child process
//! for a few of them (process start included).
//!
//! Progress goes to stderr; the latency table and a table of what each query
//! returned (hit count and a digest of the version ids in order, to compare
//! the results of two builds) go to stdout:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example search-bench -- [--files N] [--versions V] [--repeat R] [--keep DIR | --reuse DIR]
//! ```
//!
//! `tools/README.md` explains each figure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use obby_sync::api::proto::query::SearchQuery;
use obby_sync::api::proto::query::query_service_client::QueryServiceClient;
use rand::SeedableRng as _;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;

use common::{
    Bench, Engine, Prng, Res, Row, clock_ticks, count, find_binary, meta, note, note_path,
    percentile, print_rows, progress, sentence, skeleton, sub_seed, work_dir,
};

/// This bench's name, in progress lines (`[search-bench] ...`) and errors.
const BENCH: &str = "search-bench";

/// Target: p99 of every `SearchContent` query kind, in milliseconds.
const TARGET_P99_MS: f64 = 20.0;
/// Notes sharing one rare tag word (`kwNNN`).
const NOTES_PER_TAG: usize = 10;
/// Runs of each `obby-sync search` command.
const CLI_RUNS: usize = 10;
/// The engine counts as idle below this share of one core ...
const IDLE_CPU_SHARE: f64 = 0.03;
/// ... over this long.
const IDLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest wait for the engine to go idle before measuring.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// The stage name: the database is `db/search.db`, the engine's log `logs/search.log`.
const NAME: &str = "search";
/// Seed stream of the notes' text (version `r` uses `STREAM_TEXT + r`).
const STREAM_TEXT: u64 = 100;

#[derive(Debug, Parser)]
#[command(about = "Benchmark SearchContent and `obby-sync search` over a vault with history")]
struct Args {
    /// Notes in the vault.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Versions of every note (the initial scan plus VERSIONS - 1 edit rounds).
    #[arg(long, default_value_t = 10)]
    versions: usize,
    /// Rounds of the query mix; p50 and p99 are over these.
    #[arg(long, default_value_t = 60)]
    repeat: usize,
    /// Seed of the notes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Build everything in DIR (new or empty) and keep it afterwards.
    #[arg(long, value_name = "DIR", conflicts_with = "reuse")]
    keep: Option<PathBuf>,
    /// Skip the `obby-sync search` runs.
    #[arg(long)]
    no_cli: bool,
    /// Only the queries whose kind contains this text (e.g. `rare`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Measure on a DIR an earlier `--keep DIR` built (same --files and
    /// --versions), without building it again. The engine's schema
    /// migrations run on it first, as on any start.
    #[arg(long, value_name = "DIR")]
    reuse: Option<PathBuf>,
}

/// One query of the mix.
struct Query {
    /// What kind of query it is, in the table.
    kind: &'static str,
    /// The words, as a person types them.
    words: String,
    /// The last word of each term as a prefix.
    prefix: bool,
}

/// The mix (`tags` is the number of rare tag words in the vault).
fn queries(tags: usize) -> Vec<Query> {
    let tag = tags / 2;
    let q = |kind, words: String, prefix| Query {
        kind,
        words,
        prefix,
    };
    vec![
        q("common word", "meeting".into(), false),
        q("commonest word", "the".into(), false),
        q("two common words", "garden river".into(), false),
        q("phrase", "\"weekly budget\"".into(), false),
        q("rare word", format!("kw{tag:04}"), false),
        q("rare + common word", format!("kw{tag:04} meeting"), false),
        q("prefix, common", "mee".into(), true),
        q("prefix, rare", format!("kw{:03}", tag / 10), true),
        q("path word", "d042".into(), false),
        q("word of old versions only", "rev0".into(), false),
        q("absent word", "zyzzyva".into(), false),
    ]
}

fn main() -> ExitCode {
    common::exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res<()> {
    if args.files == 0 || args.versions == 0 || args.repeat == 0 {
        return Err("--files, --versions and --repeat must be at least 1".into());
    }
    let bin = find_binary()?;
    progress!("obby-sync binary: {}", bin.display());
    // Keep the TempDir alive until the end: dropping it deletes everything.
    let (_temp, base) = match &args.reuse {
        Some(dir) => (None, fs::canonicalize(dir)?),
        None => work_dir(args.keep.as_deref(), "obby-search-bench-")?,
    };
    let bench = Bench::new(bin.clone(), &base, clock_ticks())?;
    let db = bench.db_dir.join(format!("{NAME}.db"));
    let root = base.join("vault");
    let want = i64::try_from(args.files * args.versions)?;
    let build = if args.reuse.is_some() {
        let conn = common::open_db(&db)?;
        let have = count(&conn, "SELECT COUNT(*) FROM file_versions")?;
        if have != want {
            return Err(format!("{} holds {have} versions, not {want}", db.display()).into());
        }
        progress!("reusing {} ({have} versions)", db.display());
        None
    } else {
        Some(build_history(&bin, &root, &db, args)?)
    };
    let root = fs::canonicalize(&root)?;

    let mut engine = Engine::start_with_api(&bench, &root, NAME, 100)?;
    let ready = engine.wait_ready(want)?;
    let idle = wait_idle(engine.pid)?;
    progress!("the engine went idle after {idle:.1} s (its search index merges when idle)");
    let addr =
        meta(&ready.conn, "api_query_addr")?.ok_or("the engine recorded no api_query_addr")?;
    let bytes: i64 = ready.conn.query_row(
        "SELECT COALESCE(SUM(length(content)), 0) FROM file_versions",
        [],
        |r| r.get(0),
    )?;
    progress!(
        "Query service on {addr}; {want} versions, {:.0} MB of text",
        bytes as f64 / 1e6
    );

    let tags = args.files.div_ceil(NOTES_PER_TAG);
    let mut mix = queries(tags);
    if let Some(only) = &args.only {
        mix.retain(|q| q.kind.contains(only.as_str()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(measure(
        &format!("http://{addr}"),
        engine.pid,
        &mix,
        args.repeat,
    ))?;
    let stop = engine.stop()?;
    let cli = cli_runs(&bin, &root, &db, &mix, args.no_cli)?;

    print_tables(args, build.as_ref(), &mix, &measured, &cli, load_average());
    if stop.code != Some(0) {
        progress!("warning: the engine exited with {:?}", stop.code);
    }
    if args.keep.is_some() {
        progress!("kept {} (--reuse it to measure again)", base.display());
    }
    Ok(())
}

// ------------------------------------------------------------ the history

/// How long the history took to build.
struct Build {
    /// The initial scan's own `seconds`.
    initial_scan: f64,
    /// The edit rounds' scans' `seconds`, in order.
    rounds: Vec<f64>,
}

/// Note `i`'s text in version `rev` (0 = first): a fresh seeded note with
/// the same title, a tag word shared by [`NOTES_PER_TAG`] notes, and a
/// sentence naming the revision (`revN`).
fn note_text(seed: u64, i: usize, rev: usize) -> String {
    let mut rng = Prng::seed_from_u64(sub_seed(seed, STREAM_TEXT + rev as u64, i as u64));
    let target = 1024 + (sub_seed(seed, STREAM_TEXT, i as u64) % 3072) as usize;
    let mut text = note(&mut rng, &format!("Note {i}"), target);
    text.push_str(&format!(
        "Tags: #kw{:04} #rev{rev}\n\n{}\n",
        i / NOTES_PER_TAG,
        sentence(&mut rng, 8)
    ));
    text
}

fn write_notes(root: &Path, args: &Args, rev: usize) -> Res<()> {
    for i in 0..args.files {
        fs::write(note_path(root, i), note_text(args.seed, i, rev))?;
    }
    Ok(())
}

/// Builds the vault and its history with `obby-sync scan`.
fn build_history(bin: &Path, root: &Path, db: &Path, args: &Args) -> Res<Build> {
    let root = skeleton(root, args.files.div_ceil(common::FILES_PER_FOLDER))?;
    progress!("writing {} notes in {}", args.files, root.display());
    write_notes(&root, args, 0)?;
    let initial_scan = scan(bin, &root, db)?;
    progress!("initial scan: {initial_scan:.2} s");
    let mut rounds = Vec::new();
    for rev in 1..args.versions {
        write_notes(&root, args, rev)?;
        let s = scan(bin, &root, db)?;
        progress!("edit round {rev}/{}: {s:.2} s", args.versions - 1);
        rounds.push(s);
    }
    Ok(Build {
        initial_scan,
        rounds,
    })
}

/// `obby-sync scan --json`; its own `seconds`.
fn scan(bin: &Path, root: &Path, db: &Path) -> Res<f64> {
    let out = Command::new(bin)
        .args(["--log-level", "warn", "scan", "--json", "--root"])
        .arg(root)
        .arg("--db")
        .arg(db)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "obby-sync scan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    json["seconds"]
        .as_f64()
        .ok_or_else(|| "the scan summary has no `seconds`".into())
}

// ------------------------------------------------------------ the queries

/// What one query in one mode gave.
struct Measured {
    /// Milliseconds per call, sorted.
    millis: Vec<f64>,
    /// The server's CPU time per call (all its threads), in ms, summed.
    cpu_ms: f64,
    /// Hits of the first call.
    hits: usize,
    /// FNV-1a of the first call's version ids, in order.
    digest: u64,
}

/// Calls every query of the mix in both modes, `repeat` rounds, interleaved;
/// result `[q * 2 + all_versions]`.
async fn measure(url: &str, pid: u32, mix: &[Query], repeat: usize) -> Res<Vec<Measured>> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let mut client = QueryServiceClient::new(channel);
    let mut out: Vec<Measured> = (0..mix.len() * 2)
        .map(|_| Measured {
            millis: Vec::with_capacity(repeat),
            cpu_ms: 0.0,
            hits: 0,
            digest: 0,
        })
        .collect();
    // One untimed round first: the page cache and the engine's pool warm up.
    for r in 0..=repeat {
        for (qi, q) in mix.iter().enumerate() {
            for all in [false, true] {
                let cpu_before = cpu_ns(pid)?;
                let started = Instant::now();
                let mut stream = client
                    .search_content(SearchQuery {
                        query: q.words.clone(),
                        limit: 0,
                        all_versions: all,
                        prefix: q.prefix,
                    })
                    .await?
                    .into_inner();
                let mut ids = Vec::new();
                while let Some(hit) = stream.message().await? {
                    ids.push(hit.version_id);
                }
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let cpu = (cpu_ns(pid)? - cpu_before) as f64 / 1e6;
                let m = &mut out[qi * 2 + usize::from(all)];
                if r == 0 {
                    m.hits = ids.len();
                    m.digest = fnv(&ids);
                } else {
                    m.millis.push(ms);
                    m.cpu_ms += cpu;
                }
            }
        }
        if r > 0 && r % 10 == 0 {
            progress!("query rounds: {r}/{repeat}");
        }
    }
    for m in &mut out {
        m.millis.sort_by(f64::total_cmp);
    }
    Ok(out)
}

/// CPU time all threads of process `pid` have run, in ns
/// (`/proc/PID/task/*/schedstat`, first field).
fn cpu_ns(pid: u32) -> Res<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = fs::read_to_string(task?.path().join("schedstat")) else {
            // A thread that ended meanwhile.
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or("unexpected /proc/PID/task/TID/schedstat")?;
    }
    Ok(total)
}

/// Waits until process `pid` used under [`IDLE_CPU_SHARE`] of a core over
/// [`IDLE_WINDOW`] (the engine's idle work, merging the search index, is
/// done), at most [`IDLE_TIMEOUT`]; the seconds waited.
fn wait_idle(pid: u32) -> Res<f64> {
    let started = Instant::now();
    let mut samples = std::collections::VecDeque::new();
    loop {
        samples.push_back((Instant::now(), cpu_ns(pid)?));
        while samples.len() > 1
            && samples[0].0.elapsed() > IDLE_WINDOW + std::time::Duration::from_millis(100)
        {
            samples.pop_front();
        }
        let (t0, c0) = samples[0];
        let (t1, c1) = samples[samples.len() - 1];
        let span = t1.duration_since(t0);
        if span >= IDLE_WINDOW && ((c1 - c0) as f64 / 1e9) < IDLE_CPU_SHARE * span.as_secs_f64() {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > IDLE_TIMEOUT {
            progress!(
                "warning: the engine was still busy after {} s",
                IDLE_TIMEOUT.as_secs()
            );
            return Ok(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// FNV-1a over the ids' little-endian bytes.
fn fnv(ids: &[i64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|id| id.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `obby-sync search` (default limit, newest only) for the first query of
/// each of a few kinds (none with `skip`): `(kind, p50 ms, max ms)` over [`CLI_RUNS`] runs.
fn cli_runs(
    bin: &Path,
    root: &Path,
    db: &Path,
    mix: &[Query],
    skip: bool,
) -> Res<Vec<(String, f64, f64)>> {
    let mut out = Vec::new();
    for q in mix
        .iter()
        .filter(|q| ["common word", "rare word", "prefix, common"].contains(&q.kind))
        .filter(|_| !skip)
    {
        let mut ms = Vec::new();
        for _ in 0..=CLI_RUNS {
            let mut cmd = Command::new(bin);
            cmd.args(["--log-level", "warn", "search", "--json", "--root"])
                .arg(root)
                .arg("--db")
                .arg(db);
            if q.prefix {
                cmd.arg("--prefix");
            }
            let started = Instant::now();
            let o = cmd.arg("--").arg(&q.words).output()?;
            ms.push(started.elapsed().as_secs_f64() * 1e3);
            if !o.status.success() {
                return Err(format!(
                    "obby-sync search {:?} failed: {}",
                    q.words,
                    String::from_utf8_lossy(&o.stderr).trim()
                )
                .into());
            }
        }
        // The first run warms the binary's pages; it is not counted.
        let mut ms = ms.split_off(1);
        ms.sort_by(f64::total_cmp);
        out.push((
            format!("{} ({})", q.kind, q.words),
            percentile(&ms, 50.0),
            ms.last().copied().unwrap_or(f64::NAN),
        ));
    }
    Ok(out)
}

/// The 1-minute load average, for the table's last line.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

// ------------------------------------------------------------ the report

fn print_tables(
    args: &Args,
    build: Option<&Build>,
    mix: &[Query],
    measured: &[Measured],
    cli: &[(String, f64, f64)],
    load: String,
) {
    println!(
        "SearchContent over {} notes × {} versions, {} rounds (limit 100):\n",
        args.files, args.versions, args.repeat
    );
    println!(
        "| query | words | newest: p50 / p99 ms | all versions: p50 / p99 ms | server CPU ms/call newest / all | hits newest / all |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for (qi, q) in mix.iter().enumerate() {
        let (n, a) = (&measured[qi * 2], &measured[qi * 2 + 1]);
        let (n99, a99) = (percentile(&n.millis, 99.0), percentile(&a.millis, 99.0));
        worst = worst.max(n99).max(a99);
        println!(
            "| {} | `{}`{} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {} / {} |",
            q.kind,
            q.words,
            if q.prefix { " (prefix)" } else { "" },
            percentile(&n.millis, 50.0),
            n99,
            percentile(&a.millis, 50.0),
            a99,
            n.cpu_ms / n.millis.len().max(1) as f64,
            a.cpu_ms / a.millis.len().max(1) as f64,
            n.hits,
            a.hits
        );
    }
    println!();
    let mut rows: Vec<Row> = vec![(
        "worst p99".into(),
        format!("{worst:.1} ms"),
        common::verdict(&format!("< {TARGET_P99_MS} ms"), worst < TARGET_P99_MS),
    )];
    for (kind, p50, max) in cli {
        rows.push((
            format!("`obby-sync search`: {kind}"),
            format!("p50 {p50:.0} ms, max {max:.0} ms"),
            "process start included".into(),
        ));
    }
    if let Some(b) = build {
        rows.push((
            "initial scan (building)".into(),
            format!("{:.2} s", b.initial_scan),
            common::dash(),
        ));
        let mut r = b.rounds.clone();
        r.sort_by(f64::total_cmp);
        rows.push((
            "edit round scans (building)".into(),
            format!("median {:.2} s", common::median(&r)),
            common::dash(),
        ));
    }
    print_rows(rows);
    println!("Results (to compare two builds: same digest, same ids in the same order):\n");
    println!("| query | newest: hits, digest | all versions: hits, digest |");
    println!("|---|---|---|");
    for (qi, q) in mix.iter().enumerate() {
        let (n, a) = (&measured[qi * 2], &measured[qi * 2 + 1]);
        println!(
            "| {} | {}, {:016x} | {}, {:016x} |",
            q.kind, n.hits, n.digest, a.hits, a.digest
        );
    }
    println!(
        "\n{} cores, 1-minute load average {load} at the end.",
        common::cores()
    );
}
