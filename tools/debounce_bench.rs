//! Benchmark of the debouncer alone: what one event and one loop turn of the
//! enqueuer cost while many paths are held.
//!
//! In-process, no file system: [`Debouncer`] is pure and takes the time as
//! an argument, so the bench drives it with a fake clock. For each size N
//! (1,000, 10,000, 100,000 and 200,000 paths, the enqueuer's
//! `MAX_PENDING_PATHS`, unless `--held` says otherwise):
//!
//! 1. **fill**: N distinct paths observed once each, 1 µs apart;
//! 2. **loop turn**: what the enqueuer does for each event that arrives on
//!    its own: `observe` of one held path (re-arming it), `next_due` (its
//!    sleep) and `take_due` (nothing is due: the debounce is 60 s), repeated
//!    for about `--seconds` over the held paths in turn;
//! 3. **release**: `take_due(now, all)` of everything (a VCS lock released).
//!
//! A step that walks every held path shows as a loop turn that grows with N;
//! a logarithmic one stays flat. Prints a Markdown table on stdout.
//!
//! ```text
//! cargo run --release --example debounce-bench -- [--held 1000,10000,100000,200000] [--seconds 1]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use obby_sync::engine::debounce::Debouncer;
use obby_sync::engine::queue::ChangeKind;

/// The enqueuer's debounce as far as the bench is concerned: long enough
/// that nothing becomes due while it measures.
const DEBOUNCE: Duration = Duration::from_secs(60);

/// Fewest loop turns measured per size, however slow each is.
const MIN_TURNS: usize = 20;

#[derive(Debug, Parser)]
#[command(about = "Benchmark the debouncer: cost per event and per loop turn with N held paths")]
struct Args {
    /// Held path counts to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,100000,200000"
    )]
    held: Vec<usize>,
    /// Time spent on the loop turns of each size, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

/// One size's figures.
struct Figures {
    held: usize,
    fill_ns_per_path: f64,
    turns: usize,
    turn_us: f64,
    release_ns_per_path: f64,
}

fn main() {
    let args = Args::parse();
    let budget = Duration::from_secs_f64(args.seconds.max(0.01));
    let figures: Vec<Figures> = args
        .held
        .iter()
        .map(|&n| {
            eprintln!("[debounce-bench] {n} held paths ...");
            measure(n, budget)
        })
        .collect();
    println!(
        "| held paths | fill: per path | loop turn (1 event, next_due, take_due) | turns | release all: per path |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {:.0} ns | {:.2} µs | {} | {:.0} ns |",
            f.held, f.fill_ns_per_path, f.turn_us, f.turns, f.release_ns_per_path
        );
    }
}

fn measure(n: usize, budget: Duration) -> Figures {
    // Paths shaped like a vault's: folders of 100 notes.
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| PathBuf::from(format!("/vault/notes/f{:04}/note-{i:06}.md", i / 100)))
        .collect();
    let mut d = Debouncer::new(DEBOUNCE, DEBOUNCE * 10);
    let t0 = Instant::now();
    let clock = |us: usize| t0 + Duration::from_micros(us as u64);

    let start = Instant::now();
    for (i, path) in paths.iter().enumerate() {
        d.observe(path.clone(), ChangeKind::Modified, clock(i));
    }
    let fill = start.elapsed();
    assert_eq!(d.len(), n);

    let mut turns = 0;
    let start = Instant::now();
    while turns < MIN_TURNS || start.elapsed() < budget {
        let now = clock(n + turns);
        d.observe(paths[turns % n].clone(), ChangeKind::Modified, now);
        let next = d.next_due();
        let due = d.take_due(now, false);
        assert!(due.is_empty() && next.is_some_and(|at| at > now));
        turns += 1;
    }
    let looped = start.elapsed();

    let start = Instant::now();
    let released = d.take_due(clock(n + turns), true);
    let release = start.elapsed();
    assert_eq!(released.len(), n);

    Figures {
        held: n,
        fill_ns_per_path: fill.as_nanos() as f64 / n as f64,
        turns,
        turn_us: looped.as_secs_f64() * 1e6 / turns as f64,
        release_ns_per_path: release.as_nanos() as f64 / n as f64,
    }
}
