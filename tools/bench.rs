//! Throughput benchmark of `obby-sync scan`, measured against a bare-SQLite
//! floor.
//!
//! It generates a seeded Markdown corpus (`--files` notes under `notes/` in
//! three folder levels, log-normal sizes around a 4 KiB median) and measures,
//! each figure the median of `--repeat` runs:
//!
//! 1. the initial scan, on a fresh database each run: files/s, MB/s, peak RSS;
//! 2. the floor: the same files read and inserted, each with its creation
//!    diff, into one bare table in one transaction (in-process rusqlite, WAL,
//!    `synchronous=NORMAL`); the initial scan is reported as a multiple of it;
//! 3. an edit round: about 10% of the lines of every file changed, then a
//!    rescan on the same database;
//! 4. one 5 MiB file with 1% of its lines changed: the rescan time, and
//!    `obby_sync::engine::diff::unified` on the same pair in-process, so the
//!    diff's share of that time is known.
//!
//! The scans run the release `obby-sync` binary as a child process
//! (`scan --json`), with the database outside the scanned root and the page
//! cache warm. Progress goes to stderr; a Markdown table of figures and
//! targets goes to stdout. Build the binary first:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench -- [--files N] [--seed S] [--repeat R] [--keep DIR]
//! ```
//!
//! `tools/README.md` explains each figure.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Parser;
use obby_sync::engine::diff;
use rand::{RngExt as _, SeedableRng as _};
use rusqlite::{Connection, params};

#[path = "common/mod.rs"]
mod common;

use common::{
    Prng, Res, Row, cores, dash, exit_code, find_binary, median, mib, print_rows, progress,
    skeleton, sub_seed, thousands, verdict, work_dir,
};

/// This bench's name, in progress lines (`[bench] ...`) and errors.
const BENCH: &str = "bench";

/// Median file size of the corpus, in bytes.
const MEDIAN_SIZE: f64 = 4096.0;
/// Standard deviation of the log of the file size (a long tail of big notes).
const SIZE_SIGMA: f64 = 0.9;
/// Smallest generated file, in bytes.
const MIN_SIZE: f64 = 200.0;
/// Largest generated file, in bytes.
const MAX_SIZE: f64 = 256.0 * 1024.0;
/// Files per leaf folder the three folder levels aim at.
const FILES_PER_LEAF: usize = 10;
/// Share of lines changed per file in an edit round.
const EDIT_FRACTION: f64 = 0.10;
/// Size of the single big file.
const BIG_SIZE: usize = 5 * 1024 * 1024;
/// Share of the big file's lines changed per edit.
const BIG_EDIT_FRACTION: f64 = 0.01;
/// In-process runs of `diff::unified` on the big pair.
const DIFF_RUNS: usize = 5;

/// Target: files per second of the initial scan and of an edit round.
const TARGET_FILES_PER_SECOND: f64 = 10_000.0;
/// Target: the initial scan's time as a multiple of the floor's.
const TARGET_FLOOR_RATIO: f64 = 1.5;
/// Target: an edit round at most this many times its edit floor.
const TARGET_EDIT_FLOOR_RATIO: f64 = 1.3;
/// Target: the last edit round's floor ratio within this factor of the first's.
const TARGET_ROUND_DRIFT: f64 = 1.10;
/// Target: seconds to record one 1% change of the 5 MiB file.
const TARGET_BIG_CHANGE_SECONDS: f64 = 0.150;
/// Target: peak resident memory of one scan, in bytes.
const TARGET_PEAK_RSS: u64 = 100 * 1024 * 1024;
/// Target: seconds from an edit round's drained queue to the process's exit.
const TARGET_DRAINED_TO_EXIT: f64 = 0.010;

/// Seed streams, so the corpus, the edit rounds and the big file draw
/// independent numbers from one `--seed`.
const STREAM_CORPUS: u64 = 1;
/// See [`STREAM_CORPUS`].
const STREAM_EDIT: u64 = 2;
/// See [`STREAM_CORPUS`].
const STREAM_BIG: u64 = 3;

#[derive(Debug, Parser)]
#[command(
    about = "Benchmark `obby-sync scan` on a generated Markdown corpus against a bare-SQLite floor"
)]
struct Args {
    /// Markdown files in the corpus.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Seed of the corpus and of every edit.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Runs of each scan measurement; the table reports medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Edit rounds on one database (its history grows with each), each
    /// judged against an edit floor measured just before it.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Build everything in DIR (new or empty) and keep it afterwards.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Instead of the corpus stages: peak memory while scanning twenty and
    /// fifty 30 MiB text files (about 1.5 GB of disk, a minute or two).
    #[arg(long)]
    huge: bool,
    /// Instead of the corpus stages: how cost grows, with the vault's size
    /// (`--scale-sizes`) and with history (`--history` versions of each of
    /// `--files` notes). The full run takes an hour and ~15 GB of disk.
    #[arg(long)]
    scale: bool,
    /// `--scale`: vault sizes of the initial-scan table.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 100_000])]
    scale_sizes: Vec<usize>,
    /// `--scale`: versions of every note the history stage builds (the first
    /// is the initial scan, each other one an engine rescan after a one-line
    /// edit of every note).
    #[arg(long, default_value_t = 100)]
    history: usize,
}

fn main() -> ExitCode {
    exit_code(run(&Args::parse()))
}

fn run(args: &Args) -> Res<()> {
    if args.files == 0 || args.repeat == 0 || args.rounds == 0 {
        return Err("--files, --repeat and --rounds must be at least 1".into());
    }
    if cfg!(debug_assertions) {
        progress!(
            "warning: this is a debug build of the bench; the floor and the in-process diff are slow (use --release)"
        );
    }
    let bin = find_binary()?;
    progress!("obby-sync binary: {}", bin.display());

    // Keep the TempDir alive until the end: dropping it deletes everything.
    let (_temp, base) = work_dir(args.keep.as_deref(), "obby-bench-")?;
    if args.huge {
        return huge_files(&bin, &base, args);
    }
    if args.scale {
        return scale(&bin, &base, args);
    }
    let db_dir = base.join("db");
    fs::create_dir_all(&db_dir)?;

    let corpus = Corpus::generate(&base.join("vault"), args.files, args.seed)?;
    let initial = initial_scans(&bin, &corpus, &db_dir.join("obby.db"), args.repeat)?;
    let floor = floor_runs(&corpus, &db_dir.join("floor.db"), args.repeat)?;
    let edits = edit_rounds(
        &bin,
        &corpus,
        &db_dir.join("obby.db"),
        &db_dir.join("floor.db"),
        args,
    )?;
    let big = big_file(&bin, &base.join("big"), &db_dir.join("big.db"), args)?;

    print_table(args, &corpus, &initial, floor, &edits, &big);
    if args.keep.is_some() {
        progress!(
            "kept {} (vault/ and big/ are the roots, db/ the databases)",
            base.display()
        );
    }
    Ok(())
}

// ------------------------------------------------------------ the binary

/// What one `obby-sync scan --json` reported.
#[derive(Debug, Clone, Copy)]
struct Scan {
    /// Queue rows finished: the files the scan processed.
    rows: u64,
    /// `file_versions` rows written.
    versions: u64,
    /// `content_diffs` rows written.
    diffs: u64,
    /// The scan's own time (engine open to its summary: the drained queue,
    /// then the final checkpoint and the search index backfill).
    seconds: f64,
    /// Engine open to the drained queue.
    drained: f64,
    /// Spawn to exit, as seen from here (process start and exit included).
    wall: f64,
    /// Peak resident memory of the scan process.
    peak_rss: u64,
}

fn run_scan(bin: &Path, root: &Path, db: &Path) -> Res<Scan> {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["--log-level", "warn", "scan", "--json", "--root"])
        .arg(root)
        .arg("--db")
        .arg(db)
        .output()?;
    let wall = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("obby-sync scan failed ({}): {}", out.status, stderr.trim()).into());
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        progress!("obby-sync: {line}");
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("obby-sync scan printed no JSON summary ({e})"))?;
    let int = |key: &str| {
        json[key]
            .as_u64()
            .ok_or_else(|| format!("the scan summary has no integer `{key}`"))
    };
    Ok(Scan {
        rows: int("rows")?,
        versions: int("versions")?,
        diffs: int("diffs")?,
        seconds: json["seconds"]
            .as_f64()
            .ok_or("the scan summary has no `seconds`")?,
        drained: json["drained_seconds"]
            .as_f64()
            .ok_or("the scan summary has no `drained_seconds`")?,
        wall,
        peak_rss: int("peak_rss_bytes")?,
    })
}

/// Deletes a database and its side files, so the next scan starts fresh.
fn remove_db(db: &Path) -> Res<()> {
    for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        match fs::remove_file(PathBuf::from(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Warns when a scan did not write what the benchmark expects, since its
/// timing would then measure something else.
fn check_scan(stage: &str, scan: &Scan, files: u64, want_versions: u64, want_diffs: u64) {
    if scan.rows != files || scan.versions != want_versions || scan.diffs != want_diffs {
        progress!(
            "warning: {stage}: expected {files} rows, {want_versions} versions, {want_diffs} diffs; got {} rows, {} versions, {} diffs",
            scan.rows,
            scan.versions,
            scan.diffs
        );
    }
}

// ------------------------------------------------------------ the corpus

/// The generated vault.
struct Corpus {
    /// The scanned root (holds `.obbywatch` and `notes/`).
    root: PathBuf,
    /// Every note, absolute and canonical, as the engine stores paths.
    files: Vec<PathBuf>,
    /// Bytes of all notes together.
    bytes: u64,
    /// The median note size, in bytes.
    median_size: u64,
}

impl Corpus {
    /// Writes `count` seeded notes under `root/notes/aNN/bNN/cNN/`.
    fn generate(root: &Path, count: usize, seed: u64) -> Res<Corpus> {
        progress!(
            "generating {count} notes in {} (seed {seed})",
            root.display()
        );
        let started = Instant::now();
        let root = skeleton(root, 0)?;
        // Three levels with `fanout` folders each, about FILES_PER_LEAF notes per leaf.
        let leaves_wanted = count.div_ceil(FILES_PER_LEAF).max(1);
        let mut fanout = 1;
        while fanout * fanout * fanout < leaves_wanted {
            fanout += 1;
        }
        let leaves = fanout * fanout * fanout;
        let mut files = Vec::with_capacity(count);
        let mut sizes = Vec::with_capacity(count);
        let mut bytes = 0u64;
        for i in 0..count {
            let leaf = i % leaves;
            let dir = root.join(format!(
                "notes/a{:02}/b{:02}/c{:02}",
                leaf / (fanout * fanout),
                (leaf / fanout) % fanout,
                leaf % fanout
            ));
            if i < leaves {
                fs::create_dir_all(&dir)?;
            }
            let mut rng = Prng::seed_from_u64(sub_seed(seed, STREAM_CORPUS, i as u64));
            let target = log_normal_size(&mut rng);
            let text = note(&mut rng, target);
            let path = dir.join(format!("note-{i:05}.md"));
            fs::write(&path, &text)?;
            bytes += text.len() as u64;
            sizes.push(text.len() as u64);
            files.push(path);
            if (i + 1) % (count / 10).max(1) == 0 {
                progress!("  {}/{count} notes, {:.1} MB", i + 1, bytes as f64 / 1e6);
            }
        }
        sizes.sort_unstable();
        let median_size = sizes[sizes.len() / 2];
        progress!(
            "corpus ready: {count} notes, {:.1} MB, median {median_size} B, {leaves} leaf folders, {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        Ok(Corpus {
            root,
            files,
            bytes,
            median_size,
        })
    }

    /// Changes about `fraction` of the lines of every note (edit round `round`).
    fn edit_all(&self, seed: u64, round: u64, fraction: f64) -> Res<()> {
        for (i, path) in self.files.iter().enumerate() {
            let mut rng =
                Prng::seed_from_u64(sub_seed(seed, STREAM_EDIT, (round << 32) | i as u64));
            let old = fs::read_to_string(path)?;
            fs::write(path, edit(&old, fraction, &mut rng))?;
        }
        Ok(())
    }
}

/// A note size drawn from a log-normal around [`MEDIAN_SIZE`] (Box–Muller).
fn log_normal_size(rng: &mut Prng) -> usize {
    let u1: f64 = rng.random();
    let u2: f64 = rng.random();
    let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let size = (MEDIAN_SIZE.ln() + SIZE_SIGMA * z)
        .exp()
        .clamp(MIN_SIZE, MAX_SIZE);
    // Clamped to at most MAX_SIZE, so the cast cannot overflow.
    size as usize
}

/// Vocabulary of the generated prose.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "a", "of", "to", "and", "in", "is", "for", "on", "with", "that", "this", "it", "as",
    "we", "be", "at", "by", "from", "or", "not", "but", "if", "then", "when", "after", "before",
    "project", "meeting", "notes", "idea", "draft", "review", "plan", "design", "release",
    "database", "query", "index", "cache", "latency", "budget", "deadline", "team", "customer",
    "feedback", "roadmap", "sprint", "backlog", "ticket", "bug", "fix", "test", "deploy", "server",
    "client", "sync", "version", "history", "diff", "merge", "branch", "commit", "folder", "file",
    "markdown", "heading", "link", "tag", "archive", "inbox", "weekly", "monthly", "quarterly",
    "goal", "metric", "result", "summary", "question", "answer", "decision", "risk", "owner",
    "status", "blocked", "done", "pending", "next", "step", "research", "paper", "book", "chapter",
    "quote", "reading", "garden", "recipe", "travel", "budget", "invoice", "contract", "call",
    "email", "follow", "up", "check", "update", "should", "could", "would", "must", "maybe",
    "probably", "quickly", "carefully", "again", "small", "large", "new", "old", "first", "last",
    "good", "better", "simple", "clear", "important", "urgent", "open", "closed", "shared",
    "private", "local", "remote",
];

/// Code-ish words for fenced blocks.
#[rustfmt::skip]
const CODE_WORDS: &[&str] = &[
    "let", "fn", "return", "if", "else", "for", "match", "Some", "None", "Ok", "Err", "self",
    "config", "path", "value", "count", "items", "result", "db", "query", "row", "=", "+", "->",
];

/// Languages of fenced code blocks.
const LANGS: &[&str] = &["rust", "python", "sql", "bash", "json", ""];

fn pick<'a>(rng: &mut Prng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

/// One word of prose, now and then with inline Markdown around it.
fn push_word(rng: &mut Prng, out: &mut String) {
    let w = pick(rng, WORDS);
    match rng.random_range(0..100u32) {
        0..3 => write!(out, "**{w}**"),
        3..5 => write!(out, "`{w}`"),
        5..7 => write!(out, "[[{} {}]]", capitalized(w), pick(rng, WORDS)),
        7..8 => write!(out, "[{w}](https://example.com/{w})"),
        8..9 => write!(out, "#{w}"),
        _ => write!(out, "{w}"),
    }
    .expect("writing to a String cannot fail");
}

fn capitalized(w: &str) -> String {
    let mut chars = w.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

/// A sentence of about `words` words, capitalized and ending in a full stop.
fn sentence(rng: &mut Prng, words: usize) -> String {
    let mut out = capitalized(pick(rng, WORDS));
    for _ in 1..words.max(2) {
        out.push(' ');
        push_word(rng, &mut out);
    }
    out.push_str(if rng.random_bool(0.1) { "?" } else { "." });
    out
}

/// A title of `words` capitalized words.
fn title(rng: &mut Prng, words: usize) -> String {
    (0..words.max(1))
        .map(|_| capitalized(pick(rng, WORDS)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One Markdown block and the blank line after it.
fn push_block(rng: &mut Prng, out: &mut String) {
    let line = |out: &mut String, text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    match rng.random_range(0..100u32) {
        0..12 => {
            let level = *[2usize, 2, 3, 3, 3, 4]
                .get(rng.random_range(0..6))
                .expect("index is in range");
            let n = rng.random_range(2..7);
            line(out, &format!("{} {}", "#".repeat(level), title(rng, n)));
        }
        12..48 => {
            for _ in 0..rng.random_range(1..5) {
                let n = rng.random_range(6..18);
                line(out, &sentence(rng, n));
            }
        }
        48..72 => {
            let style = rng.random_range(0..4u32);
            for i in 1..=rng.random_range(2..8) {
                let marker = match style {
                    0 => "- ".to_owned(),
                    1 => "* ".to_owned(),
                    2 => format!("{i}. "),
                    _ if rng.random_bool(0.5) => "- [x] ".to_owned(),
                    _ => "- [ ] ".to_owned(),
                };
                let indent = if i > 1 && rng.random_bool(0.15) {
                    "  "
                } else {
                    ""
                };
                let n = rng.random_range(3..12);
                line(out, &format!("{indent}{marker}{}", sentence(rng, n)));
            }
        }
        72..79 => line(out, "---"),
        79..87 => {
            for _ in 0..rng.random_range(1..4) {
                let n = rng.random_range(6..16);
                line(out, &format!("> {}", sentence(rng, n)));
            }
        }
        87..95 => {
            line(out, &format!("```{}", pick(rng, LANGS)));
            for _ in 0..rng.random_range(2..9) {
                let words: Vec<&str> = (0..rng.random_range(2..9))
                    .map(|_| pick(rng, CODE_WORDS))
                    .collect();
                let indent = "    ".repeat(rng.random_range(0..3));
                line(out, &format!("{indent}{}", words.join(" ")));
            }
            line(out, "```");
        }
        _ => {
            let cols = rng.random_range(2..5);
            let head: Vec<String> = (0..cols).map(|_| title(rng, 1)).collect();
            line(out, &format!("| {} |", head.join(" | ")));
            line(out, &format!("|{}", "---|".repeat(cols)));
            for _ in 0..rng.random_range(2..6) {
                let cells: Vec<&str> = (0..cols).map(|_| pick(rng, WORDS)).collect();
                line(out, &format!("| {} |", cells.join(" | ")));
            }
        }
    }
    out.push('\n');
}

/// A note of at least `target` bytes (the last block may run past it).
fn note(rng: &mut Prng, target: usize) -> String {
    let mut out = String::with_capacity(target + 512);
    if rng.random_bool(0.3) {
        let n = rng.random_range(2..6);
        let t = title(rng, n);
        let tags = [pick(rng, WORDS), pick(rng, WORDS)].join(", ");
        let day = rng.random_range(1..29);
        let month = rng.random_range(1..13);
        write!(
            out,
            "---\ntitle: {t}\ntags: [{tags}]\ncreated: 2024-{month:02}-{day:02}\n---\n\n"
        )
        .expect("writing to a String cannot fail");
    }
    let n = rng.random_range(2..7);
    let heading = title(rng, n);
    out.push_str("# ");
    out.push_str(&heading);
    out.push_str("\n\n");
    while out.len() < target {
        push_block(rng, &mut out);
    }
    out
}

/// Splits a line into its Markdown marker (indent, `## `, `- [ ] `, `1. `,
/// `> ` ...) and the prose after it.
fn split_marker(line: &str) -> (&str, &str) {
    let indent = line.len() - line.trim_start().len();
    let t = &line[indent..];
    let marker = if t.starts_with('#') {
        let hashes = t.bytes().take_while(|b| *b == b'#').count();
        if t[hashes..].starts_with(' ') {
            hashes + 1
        } else {
            0
        }
    } else if t.starts_with("- [ ] ") || t.starts_with("- [x] ") {
        6
    } else if t.starts_with("- ") || t.starts_with("* ") || t.starts_with("> ") {
        2
    } else {
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && t[digits..].starts_with(". ") {
            digits + 2
        } else {
            0
        }
    };
    line.split_at(indent + marker)
}

/// Changes about `fraction` of the lines of `text` (at least one): a line
/// with prose gets new prose behind the same marker; a blank, rule, fence or
/// table line gets a new sentence inserted after it.
fn edit(text: &str, fraction: f64, rng: &mut Prng) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.is_empty() {
        return sentence(rng, 8) + "\n";
    }
    let mut chosen: Vec<bool> = lines.iter().map(|_| rng.random_bool(fraction)).collect();
    if !chosen.contains(&true) {
        let i = rng.random_range(0..lines.len());
        chosen[i] = true;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (line, pick_it) in lines.iter().zip(chosen) {
        if !pick_it {
            out.push_str(line);
            continue;
        }
        let body = line.strip_suffix('\n').unwrap_or(line);
        let (marker, prose) = split_marker(body);
        let words = prose.split_whitespace().count();
        let structural =
            body.starts_with("---") || body.starts_with("```") || body.starts_with('|');
        if words == 0 || structural {
            out.push_str(body);
            out.push('\n');
            let n = rng.random_range(6..16);
            out.push_str(&sentence(rng, n));
        } else if marker.trim_start().starts_with('#') {
            out.push_str(marker);
            out.push_str(&title(rng, words));
        } else {
            let n = (words + rng.random_range(0..5)).saturating_sub(2).max(3);
            out.push_str(marker);
            out.push_str(&sentence(rng, n));
        }
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------ the stages

/// The initial scans' figures.
struct Initial {
    /// Median seconds of a scan into a fresh database.
    seconds: f64,
    /// Highest peak RSS over the runs.
    peak_rss: u64,
}

fn initial_scans(bin: &Path, corpus: &Corpus, db: &Path, repeat: usize) -> Res<Initial> {
    let files = corpus.files.len() as u64;
    let mut seconds = Vec::new();
    let mut peak_rss = 0;
    for r in 1..=repeat {
        remove_db(db)?;
        progress!("initial scan {r}/{repeat} ...");
        let scan = run_scan(bin, &corpus.root, db)?;
        check_scan("initial scan", &scan, files, files, files);
        progress!(
            "initial scan {r}/{repeat}: {:.3} s ({:.3} s wall), {:.0} files/s, {:.1} MB/s, peak RSS {:.1} MiB",
            scan.seconds,
            scan.wall,
            scan.rows as f64 / scan.seconds,
            corpus.bytes as f64 / 1e6 / scan.seconds,
            mib(scan.peak_rss)
        );
        seconds.push(scan.seconds);
        peak_rss = peak_rss.max(scan.peak_rss);
    }
    // The last run's database stays for the edit rounds.
    Ok(Initial {
        seconds: median(&seconds),
        peak_rss,
    })
}

/// Median seconds to read every note and insert it, with its creation diff,
/// into one bare table in one transaction.
fn floor_runs(corpus: &Corpus, db: &Path, repeat: usize) -> Res<f64> {
    progress!("floor: computing creation diffs (untimed) ...");
    let mut rows = Vec::with_capacity(corpus.files.len());
    for path in &corpus.files {
        let label = path
            .to_str()
            .ok_or("a corpus path is not UTF-8")?
            .to_owned();
        let text = fs::read_to_string(path)?;
        let creation = diff::unified("", &text, &label, &label).text;
        rows.push((path.as_path(), label, creation));
    }
    let mut seconds = Vec::new();
    for r in 1..=repeat {
        remove_db(db)?;
        let mut conn = Connection::open(db)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("the floor database stayed in {mode} mode, not WAL").into());
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch("CREATE TABLE v(path TEXT, content TEXT, diff TEXT)")?;
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare("INSERT INTO v (path, content, diff) VALUES (?1, ?2, ?3)")?;
            for (path, label, creation) in &rows {
                let text = fs::read_to_string(path)?;
                insert.execute(params![label, text, creation])?;
            }
        }
        tx.commit()?;
        let elapsed = started.elapsed().as_secs_f64();
        drop(conn);
        progress!(
            "floor {r}/{repeat}: {elapsed:.3} s ({:.0} files/s)",
            rows.len() as f64 / elapsed
        );
        seconds.push(elapsed);
    }
    Ok(median(&seconds))
}

/// The edit rounds' figures.
struct Edits {
    /// Each round's rescan seconds and its edit floor's seconds.
    rounds: Vec<(f64, f64)>,
    /// Median seconds of a rescan after an edit round.
    seconds: f64,
    /// Highest peak RSS over the rescans.
    peak_rss: u64,
    /// Median seconds from the drained queue to the process's exit (the
    /// final checkpoint, then closing; the process's start, ~1 ms, too).
    drained_to_exit: f64,
}

fn edit_rounds(bin: &Path, corpus: &Corpus, db: &Path, floor_db: &Path, args: &Args) -> Res<Edits> {
    let files = corpus.files.len() as u64;
    let mut rounds = Vec::new();
    let mut peak_rss = 0;
    let mut exits = Vec::new();
    // The floor's history: the last initial floor run's table, with the
    // index a lookup of a path's newest text needs (built untimed).
    Connection::open(floor_db)?.execute_batch("CREATE INDEX IF NOT EXISTS v_path ON v(path)")?;
    for r in 1..=args.rounds {
        progress!(
            "edit round {r}/{}: changing {:.0}% of the lines of every note ...",
            args.rounds,
            EDIT_FRACTION * 100.0
        );
        corpus.edit_all(args.seed, r as u64, EDIT_FRACTION)?;
        let floor = edit_floor(corpus, floor_db)?;
        let scan = run_scan(bin, &corpus.root, db)?;
        check_scan("edit round", &scan, files, files, files);
        progress!(
            "edit round {r}/{}: rescan {:.3} s ({:.3} s wall), {:.0} files/s, floor {floor:.3} s, {:.2}× the floor, peak RSS {:.1} MiB",
            args.rounds,
            scan.seconds,
            scan.wall,
            scan.rows as f64 / scan.seconds,
            scan.seconds / floor,
            mib(scan.peak_rss)
        );
        rounds.push((scan.seconds, floor));
        peak_rss = peak_rss.max(scan.peak_rss);
        exits.push(scan.wall - scan.drained);
    }
    let seconds: Vec<f64> = rounds.iter().map(|(s, _)| *s).collect();
    Ok(Edits {
        seconds: median(&seconds),
        rounds,
        peak_rss,
        drained_to_exit: median(&exits),
    })
}

/// The edit floor: what storing an edit round costs in bare SQLite. For
/// every note, in one transaction: read the file, read the path's previous
/// text from the table, insert the new text and its diff (computed
/// beforehand, untimed, like the initial floor's creation diffs). The
/// table keeps every round, so its history grows like the engine's.
fn edit_floor(corpus: &Corpus, floor_db: &Path) -> Res<f64> {
    let mut conn = Connection::open(floor_db)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let previous = |conn: &Connection, label: &str| -> Res<String> {
        Ok(conn
            .prepare_cached("SELECT content FROM v WHERE path = ?1 ORDER BY rowid DESC LIMIT 1")?
            .query_row([label], |r| r.get(0))?)
    };
    let mut rows = Vec::with_capacity(corpus.files.len());
    for path in &corpus.files {
        let label = path
            .to_str()
            .ok_or("a corpus path is not UTF-8")?
            .to_owned();
        let old = previous(&conn, &label)?;
        let new = fs::read_to_string(path)?;
        let diff = diff::unified(&old, &new, &label, &label).text;
        rows.push((path.as_path(), label, diff));
    }
    let started = Instant::now();
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO v (path, content, diff) VALUES (?1, ?2, ?3)")?;
        for (path, label, diff) in &rows {
            let text = fs::read_to_string(path)?;
            let old = previous(&tx, label)?;
            std::hint::black_box(old.len());
            insert.execute(params![label, text, diff])?;
        }
    }
    tx.commit()?;
    Ok(started.elapsed().as_secs_f64())
}

/// The big file's figures.
struct Big {
    /// Its size in bytes.
    bytes: usize,
    /// Its line count.
    lines: usize,
    /// Seconds of its first scan.
    first_scan: f64,
    /// Median seconds of a rescan after a 1% edit.
    change_seconds: f64,
    /// Median seconds of `diff::unified` on the first edit's pair.
    diff_seconds: f64,
    /// Highest peak RSS over its scans.
    peak_rss: u64,
}

// ------------------------------------------------------------ --scale

/// Target (issue 11): peak RSS of the 100,000-note initial scan.
const TARGET_SCALE_RSS: u64 = 150 * 1024 * 1024;
/// Target (issue 11): an edit round's floor ratio on the grown history
/// within this factor of the fresh database's.
const TARGET_HISTORY_DRIFT: f64 = 1.10;
/// Target (issue 11): `status` and the backend's recent-diffs query.
const TARGET_QUERY_SECONDS: f64 = 0.050;
/// Runs of each timed query of the history stage.
const QUERY_RUNS: usize = 5;

/// One vault size's initial scan.
struct SizeRow {
    files: usize,
    bytes: u64,
    initial: Initial,
    floor: f64,
}

/// The history stage's figures at one history size.
struct HistoryRow {
    versions: u64,
    db_bytes: u64,
    /// Rescan seconds after a 10% edit of every note, and its edit floor.
    edit: (f64, f64),
    peak_rss: u64,
    /// Median seconds of `obby-sync status --json`, process included.
    status: f64,
    /// Median seconds of the backend's recent-diffs query (50 rows).
    recent_diffs: f64,
}

/// `--scale`: the initial scan at each of `--scale-sizes`, then an edit
/// round on a fresh database and on one grown to `--history` versions per
/// note.
fn scale(bin: &Path, base: &Path, args: &Args) -> Res<()> {
    let db_dir = base.join("db");
    fs::create_dir_all(&db_dir)?;
    let mut sizes = Vec::new();
    for &n in &args.scale_sizes {
        let root = base.join(format!("vault-{n}"));
        let corpus = Corpus::generate(&root, n, args.seed)?;
        let db = db_dir.join(format!("scale-{n}.db"));
        let initial = initial_scans(bin, &corpus, &db, args.repeat)?;
        let floor = floor_runs(&corpus, &db_dir.join(format!("floor-{n}.db")), args.repeat)?;
        progress!(
            "{n} notes: {:.0} files/s, {:.2}× the floor, peak RSS {:.1} MiB",
            n as f64 / initial.seconds,
            initial.seconds / floor,
            mib(initial.peak_rss)
        );
        sizes.push(SizeRow {
            files: n,
            bytes: corpus.bytes,
            initial,
            floor,
        });
        if args.keep.is_none() {
            // Room for the next size and the history (100,000 notes and
            // their databases take a few GB).
            fs::remove_dir_all(&root)?;
            remove_db(&db)?;
            remove_db(&db_dir.join(format!("floor-{n}.db")))?;
        }
    }

    let corpus = Corpus::generate(&base.join("history"), args.files, args.seed)?;
    let db = db_dir.join("history.db");
    let first = run_scan(bin, &corpus.root, &db)?;
    let files = corpus.files.len() as u64;
    check_scan("history: initial scan", &first, files, files, files);
    let mut history = vec![history_row(bin, &corpus, &db, &db_dir, args, 1)?];
    // Versions so far: the initial scan's and the measured round's.
    let mut versions = 2;
    let mut round = 1_000u64;
    // The measured round at the end makes the last one.
    while versions + 1 < args.history {
        round += 1;
        corpus.edit_all(args.seed, round, 0.0)?;
        let scan = run_scan(bin, &corpus.root, &db)?;
        check_scan("history: one-line round", &scan, files, files, files);
        versions += 1;
        if versions % 10 == 0 || versions == args.history {
            progress!(
                "history: {versions}/{} versions per note ({:.0} files/s this round)",
                args.history,
                scan.rows as f64 / scan.seconds
            );
        }
    }
    if args.history > 2 {
        history.push(history_row(bin, &corpus, &db, &db_dir, args, 2)?);
    }
    print_scale_table(args, &sizes, &history);
    if args.keep.is_some() {
        progress!("kept {}", base.display());
    }
    Ok(())
}

/// Measures one history size: a 10% edit round against its edit floor (a
/// fresh floor table each time: the machine's speed, not history's), then
/// `status` and the recent-diffs query.
fn history_row(
    bin: &Path,
    corpus: &Corpus,
    db: &Path,
    db_dir: &Path,
    args: &Args,
    round: u64,
) -> Res<HistoryRow> {
    let floor_db = db_dir.join("history-floor.db");
    remove_db(&floor_db)?;
    {
        let conn = Connection::open(&floor_db)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE v(path TEXT, content TEXT, diff TEXT); CREATE INDEX v_path ON v(path)",
        )?;
        let mut insert = conn.prepare("INSERT INTO v (path, content) VALUES (?1, ?2)")?;
        for path in &corpus.files {
            let label = path.to_str().ok_or("a corpus path is not UTF-8")?;
            insert.execute(params![label, fs::read_to_string(path)?])?;
        }
    }
    corpus.edit_all(args.seed, round, EDIT_FRACTION)?;
    let floor = edit_floor(corpus, &floor_db)?;
    let scan = run_scan(bin, &corpus.root, db)?;
    let files = corpus.files.len() as u64;
    check_scan("history: edit round", &scan, files, files, files);
    let conn = Connection::open(db)?;
    let versions: i64 = conn.query_row("SELECT COUNT(*) FROM file_versions", [], |r| r.get(0))?;
    let mut status = Vec::new();
    for _ in 0..QUERY_RUNS {
        let started = Instant::now();
        let out = Command::new(bin)
            .args(["--log-level", "warn", "status", "--json", "--db"])
            .arg(db)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "obby-sync status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        status.push(started.elapsed().as_secs_f64());
    }
    let mut recent = Vec::new();
    for _ in 0..QUERY_RUNS {
        let started = Instant::now();
        // The backend's query (CONTRACT.md, "Diffs").
        let mut stmt = conn.prepare(
            "SELECT cd.*, fv_old.content_hash AS old_hash, fv_old.timestamp AS old_timestamp, \
             fv_new.content_hash AS new_hash, fv_new.timestamp AS new_timestamp \
             FROM content_diffs cd LEFT JOIN file_versions fv_old ON cd.old_version_id = fv_old.id \
             LEFT JOIN file_versions fv_new ON cd.new_version_id = fv_new.id \
             ORDER BY cd.timestamp DESC LIMIT ?",
        )?;
        let n = stmt.query_map([50], |_| Ok(()))?.count();
        std::hint::black_box(n);
        recent.push(started.elapsed().as_secs_f64());
    }
    let row = HistoryRow {
        versions: u64::try_from(versions).unwrap_or(0),
        db_bytes: file_size(db) + file_size(&db.with_extension("db-wal")),
        edit: (scan.seconds, floor),
        peak_rss: scan.peak_rss,
        status: median(&status),
        recent_diffs: median(&recent),
    };
    progress!(
        "history at {} versions: edit round {:.3} s, {:.2}× its floor; status {:.1} ms, recent diffs {:.1} ms",
        row.versions,
        scan.seconds,
        scan.seconds / floor,
        row.status * 1e3,
        row.recent_diffs * 1e3
    );
    Ok(row)
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn print_scale_table(args: &Args, sizes: &[SizeRow], history: &[HistoryRow]) {
    println!("| notes | MB | initial scan files/s | × floor | peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    for s in sizes {
        println!(
            "| {} | {:.0} | {} | {:.2} | {:.0} MiB |",
            thousands(s.files as f64),
            s.bytes as f64 / 1e6,
            thousands(s.files as f64 / s.initial.seconds),
            s.initial.seconds / s.floor,
            mib(s.initial.peak_rss)
        );
    }
    println!();
    println!(
        "| versions in the database | database | edit round files/s | × its floor | peak RSS | status | recent diffs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for h in history {
        println!(
            "| {} | {:.0} MB | {} | {:.2} | {:.0} MiB | {:.1} ms | {:.1} ms |",
            thousands(h.versions as f64),
            h.db_bytes as f64 / 1e6,
            thousands(args.files as f64 / h.edit.0),
            h.edit.0 / h.edit.1,
            mib(h.peak_rss),
            h.status * 1e3,
            h.recent_diffs * 1e3
        );
    }
    println!();
    let mut rows: Vec<Row> = Vec::new();
    let ratios: Vec<(usize, f64)> = sizes
        .iter()
        .map(|s| (s.files, s.initial.seconds / s.floor))
        .collect();
    // Against 10,000 notes when measured (the issue's reference), else the
    // smallest vault.
    let reference = ratios.iter().find(|(n, _)| *n == 10_000).or(ratios.first());
    if let (Some(small), Some(large)) = (reference, ratios.last())
        && small.0 != large.0
    {
        rows.push((
            format!(
                "initial scan ÷ floor, {} notes vs {} notes",
                thousands(large.0 as f64),
                thousands(small.0 as f64)
            ),
            format!("{:.2} vs {:.2}", large.1, small.1),
            verdict("same ratio (within 10%)", large.1 <= small.1 * 1.10),
        ));
    }
    if let Some(largest) = sizes.last() {
        rows.push((
            format!(
                "initial scan peak RSS, {} notes",
                thousands(largest.files as f64)
            ),
            format!("{:.0} MiB", mib(largest.initial.peak_rss)),
            verdict(
                &format!("< {:.0} MiB", mib(TARGET_SCALE_RSS)),
                largest.initial.peak_rss < TARGET_SCALE_RSS,
            ),
        ));
    }
    if let (Some(fresh), Some(grown)) = (history.first(), history.get(1)) {
        let (a, b) = (fresh.edit.0 / fresh.edit.1, grown.edit.0 / grown.edit.1);
        rows.push((
            format!(
                "edit round ÷ its floor, {} vs {} versions",
                thousands(grown.versions as f64),
                thousands(fresh.versions as f64)
            ),
            format!("{b:.2} vs {a:.2}"),
            verdict(
                &format!("within {:.0}%", (TARGET_HISTORY_DRIFT - 1.0) * 100.0),
                b <= a * TARGET_HISTORY_DRIFT,
            ),
        ));
    }
    if let Some(last) = history.last() {
        let target = format!("< {:.0} ms", TARGET_QUERY_SECONDS * 1e3);
        rows.push((
            format!(
                "status / recent diffs at {} versions",
                thousands(last.versions as f64)
            ),
            format!(
                "{:.1} / {:.1} ms",
                last.status * 1e3,
                last.recent_diffs * 1e3
            ),
            verdict(
                &target,
                last.status < TARGET_QUERY_SECONDS && last.recent_diffs < TARGET_QUERY_SECONDS,
            ),
        ));
    }
    print_rows(rows);
    println!(
        "machine: {} cores; medians of {} run(s) per size; history stage on {} notes, {} versions each; seed {}",
        cores(),
        args.repeat,
        thousands(args.files as f64),
        args.history,
        args.seed
    );
}

/// Size of each file of the `--huge` stage: under the default
/// `--max-file-size` (32 MiB), so each is stored as text with its diff.
const HUGE_SIZE: usize = 30 * 1024 * 1024;
/// Files of the `--huge` stage, in the two scans.
const HUGE_COUNTS: [usize; 2] = [20, 50];
/// Target: peak resident memory while scanning them.
const TARGET_HUGE_PEAK_RSS: u64 = 400 * 1024 * 1024;

/// `--huge`: scans of twenty and of fifty 30 MiB notes (text exports, say)
/// into fresh databases; reports each scan's time and peak RSS.
fn huge_files(bin: &Path, base: &Path, args: &Args) -> Res<()> {
    let most = HUGE_COUNTS.iter().copied().max().unwrap_or(0);
    let mut rng = Prng::seed_from_u64(sub_seed(args.seed, STREAM_BIG, 1));
    // One seeded 30 MiB text; each file gets its own first line, so no two
    // files share a hash (and none is taken for a move of another).
    let mut body = note(&mut rng, HUGE_SIZE);
    if let Some(cut) = body.get(..HUGE_SIZE).and_then(|head| head.rfind('\n')) {
        body.truncate(cut + 1);
    }
    let mut rows = Vec::new();
    for count in HUGE_COUNTS {
        let root = skeleton(&base.join(format!("huge{count}")), 0)?;
        progress!(
            "huge files: writing {count} x {} MiB ...",
            HUGE_SIZE / (1024 * 1024)
        );
        for i in 0..count {
            let path = root.join(format!("notes/export-{i:02}.md"));
            let mut file = std::io::BufWriter::new(fs::File::create(&path)?);
            std::io::Write::write_all(&mut file, format!("# Export {i} of {most}\n").as_bytes())?;
            std::io::Write::write_all(&mut file, body.as_bytes())?;
            std::io::Write::flush(&mut file)?;
        }
        let db = base.join(format!("db/huge{count}.db"));
        remove_db(&db)?;
        let scan = run_scan(bin, &root, &db)?;
        let n = u64::try_from(count).unwrap_or(u64::MAX);
        check_scan("huge files", &scan, n, n, n);
        progress!(
            "huge files: {count} scanned in {:.2} s, peak RSS {:.1} MiB",
            scan.seconds,
            mib(scan.peak_rss)
        );
        rows.push((count, scan));
        fs::remove_dir_all(&root)?;
        remove_db(&db)?;
    }
    println!(
        "| huge text files ({} MiB each) | scan | peak RSS | target |",
        HUGE_SIZE / (1024 * 1024)
    );
    println!("|---|---|---|---|");
    for (count, scan) in rows {
        let ok = if scan.peak_rss < TARGET_HUGE_PEAK_RSS {
            "✅"
        } else {
            "❌"
        };
        println!(
            "| {count} files | {:.2} s | {:.1} MiB | < {} MiB {ok} |",
            scan.seconds,
            mib(scan.peak_rss),
            TARGET_HUGE_PEAK_RSS / (1024 * 1024)
        );
    }
    Ok(())
}

fn big_file(bin: &Path, root: &Path, db: &Path, args: &Args) -> Res<Big> {
    progress!("big file: generating {} MiB ...", BIG_SIZE / (1024 * 1024));
    let root = skeleton(root, 0)?;
    let path = root.join("notes/big.md");
    let label = path.to_str().ok_or("the big file's path is not UTF-8")?;
    let mut rng = Prng::seed_from_u64(sub_seed(args.seed, STREAM_BIG, 0));
    let mut text = note(&mut rng, BIG_SIZE);
    if let Some(cut) = text.get(..BIG_SIZE).and_then(|head| head.rfind('\n')) {
        text.truncate(cut + 1);
    }
    fs::write(&path, &text)?;
    let (bytes, lines) = (text.len(), text.lines().count());

    remove_db(db)?;
    let first = run_scan(bin, &root, db)?;
    check_scan("big file, first scan", &first, 1, 1, 1);
    progress!(
        "big file: {bytes} B, {lines} lines; first scan {:.3} s, peak RSS {:.1} MiB",
        first.seconds,
        mib(first.peak_rss)
    );
    let mut peak_rss = first.peak_rss;
    let mut seconds = Vec::new();
    let mut first_pair = None;
    for r in 1..=args.repeat {
        let new = edit(&text, BIG_EDIT_FRACTION, &mut rng);
        fs::write(&path, &new)?;
        let scan = run_scan(bin, &root, db)?;
        check_scan("big file, rescan", &scan, 1, 1, 1);
        progress!(
            "big file change {r}/{}: rescan {:.1} ms ({:.1} ms wall), peak RSS {:.1} MiB",
            args.repeat,
            scan.seconds * 1e3,
            scan.wall * 1e3,
            mib(scan.peak_rss)
        );
        seconds.push(scan.seconds);
        peak_rss = peak_rss.max(scan.peak_rss);
        let old = std::mem::replace(&mut text, new);
        if first_pair.is_none() {
            first_pair = Some((old, text.clone()));
        }
    }
    let (old, new) = first_pair.ok_or("no big-file edit was made")?;
    let mut diff_runs = Vec::new();
    for r in 1..=DIFF_RUNS {
        let started = Instant::now();
        let d = diff::unified(&old, &new, label, label);
        let elapsed = started.elapsed().as_secs_f64();
        progress!(
            "big file diff {r}/{DIFF_RUNS}: {:.1} ms (+{} -{})",
            elapsed * 1e3,
            d.lines_added,
            d.lines_removed
        );
        diff_runs.push(elapsed);
    }
    Ok(Big {
        bytes,
        lines,
        first_scan: first.seconds,
        change_seconds: median(&seconds),
        diff_seconds: median(&diff_runs),
        peak_rss,
    })
}

// ------------------------------------------------------------ the report

fn print_table(
    args: &Args,
    corpus: &Corpus,
    initial: &Initial,
    floor: f64,
    edits: &Edits,
    big: &Big,
) {
    let n = corpus.files.len() as f64;
    let initial_fps = n / initial.seconds;
    let ratio = initial.seconds / floor;
    let edit_fps = n / edits.seconds;
    let target_fps = format!("≥ {}", thousands(TARGET_FILES_PER_SECOND));
    let target_rss = format!("< {:.0} MiB", mib(TARGET_PEAK_RSS));
    let mut rows: Vec<Row> = vec![
        (
            "initial scan: files/s".into(),
            thousands(initial_fps),
            verdict(&target_fps, initial_fps >= TARGET_FILES_PER_SECOND),
        ),
        (
            "initial scan: MB/s (corpus bytes / scan time)".into(),
            format!("{:.1}", corpus.bytes as f64 / 1e6 / initial.seconds),
            dash(),
        ),
        (
            "initial scan: time".into(),
            format!("{:.3} s", initial.seconds),
            dash(),
        ),
        (
            "floor: read + insert into one bare table, one transaction".into(),
            format!("{floor:.3} s ({} files/s)", thousands(n / floor)),
            dash(),
        ),
        (
            "initial scan ÷ floor".into(),
            format!("{ratio:.2}×"),
            verdict(
                &format!("≤ {TARGET_FLOOR_RATIO}×"),
                ratio <= TARGET_FLOOR_RATIO,
            ),
        ),
        (
            format!(
                "edit round ({:.0}% of lines in every file): files/s",
                EDIT_FRACTION * 100.0
            ),
            format!("{} ({:.3} s)", thousands(edit_fps), edits.seconds),
            verdict(&target_fps, edit_fps >= TARGET_FILES_PER_SECOND),
        ),
    ];
    for (i, (scan, floor)) in edits.rounds.iter().enumerate() {
        let ratio = scan / floor;
        rows.push((
            format!(
                "edit round {} ÷ edit floor (read previous text, insert text + diff)",
                i + 1
            ),
            format!(
                "{ratio:.2}× ({} files/s vs {} files/s)",
                thousands(n / scan),
                thousands(n / floor)
            ),
            verdict(
                &format!("≤ {TARGET_EDIT_FLOOR_RATIO}×"),
                ratio <= TARGET_EDIT_FLOOR_RATIO,
            ),
        ));
    }
    if let (Some((s1, f1)), Some((sn, fnl))) = (edits.rounds.first(), edits.rounds.last()) {
        let drift = (sn / fnl) / (s1 / f1);
        rows.push((
            format!("edit round {} ratio ÷ round 1 ratio", edits.rounds.len()),
            format!("{drift:.2}"),
            verdict(
                &format!("≤ {TARGET_ROUND_DRIFT}"),
                drift <= TARGET_ROUND_DRIFT,
            ),
        ));
    }
    rows.push((
        format!(
            "edit round: drained queue to process exit (median of {}; the final checkpoint)",
            edits.rounds.len()
        ),
        format!("{:.1} ms", edits.drained_to_exit * 1e3),
        verdict(
            &format!("≤ {:.0} ms", TARGET_DRAINED_TO_EXIT * 1e3),
            edits.drained_to_exit <= TARGET_DRAINED_TO_EXIT,
        ),
    ));
    rows.extend::<Vec<Row>>(vec![
        (
            format!(
                "{:.1} MiB file, {:.0}% of lines changed: rescan",
                mib(big.bytes as u64),
                BIG_EDIT_FRACTION * 100.0
            ),
            format!("{:.1} ms", big.change_seconds * 1e3),
            verdict(
                &format!("≤ {:.0} ms", TARGET_BIG_CHANGE_SECONDS * 1e3),
                big.change_seconds <= TARGET_BIG_CHANGE_SECONDS,
            ),
        ),
        (
            format!("… of which `diff::unified` alone (median of {DIFF_RUNS})"),
            format!("{:.1} ms", big.diff_seconds * 1e3),
            dash(),
        ),
        (
            format!("{:.1} MiB file: first scan", mib(big.bytes as u64)),
            format!("{:.1} ms", big.first_scan * 1e3),
            dash(),
        ),
        (
            "peak RSS: initial scan".into(),
            format!("{:.1} MiB", mib(initial.peak_rss)),
            verdict(&target_rss, initial.peak_rss < TARGET_PEAK_RSS),
        ),
        (
            "peak RSS: edit round".into(),
            format!("{:.1} MiB", mib(edits.peak_rss)),
            verdict(&target_rss, edits.peak_rss < TARGET_PEAK_RSS),
        ),
        (
            "peak RSS: big file".into(),
            format!("{:.1} MiB", mib(big.peak_rss)),
            verdict(&target_rss, big.peak_rss < TARGET_PEAK_RSS),
        ),
    ]);
    print_rows(rows);
    let cores = cores();
    println!(
        "machine: {cores} cores (obby-sync uses one worker per core); corpus: {} notes, {:.1} MB, median {} B, seed {}; big file: {} lines; medians of {} runs, warm page cache",
        corpus.files.len(),
        corpus.bytes as f64 / 1e6,
        corpus.median_size,
        args.seed,
        big.lines,
        args.repeat
    );
}
