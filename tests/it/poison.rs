//! Issue 9, item 1: one row that crashes its worker, or the whole engine,
//! never wedges the queue. Faults are injected from outside, through the real
//! binary's `OBBY_FAULT_PANIC_PATH` and `OBBY_FAULT_ABORT_PATH`.

use std::os::unix::process::ExitStatusExt;

use crate::fixture::Vault;

fn failures(v: &Vault) -> Vec<(String, i64, String)> {
    crate::fixture::query(
        &v.conn(),
        "SELECT path, attempts, last_error FROM event_queue WHERE status = 'failed' ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

#[test]
fn poison_row_a_worker_panic_fails_that_row_alone() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.write("notes/poison.md", "panics\n");
    v.write("notes/b.md", "b\n");
    let out = v
        .command(&["scan", "--json", "--settle-ms", "0"])
        .env("OBBY_FAULT_PANIC_PATH", "poison")
        .output()
        .expect("scan");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["versions"], 2);
    assert_eq!(summary["failed"], 1);
    let failed = failures(&v);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].0.ends_with("poison.md"));
    assert!(failed[0].2.contains("panicked"), "{failed:?}");
    assert!(failed[0].2.contains("injected panic"), "{failed:?}");

    // The next start does not try the unchanged file again ...
    let again = v.scan(&["--settle-ms", "0"]);
    assert_eq!(again["enqueued"], 0, "{again}");
    assert_eq!(failures(&v).len(), 1);
    // ... a change of it does, and a success retires the failure.
    v.write("notes/poison.md", "fixed\n");
    let fixed = v.scan(&["--settle-ms", "0"]);
    assert_eq!(fixed["versions"], 1, "{fixed}");
    assert!(failures(&v).is_empty());
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed')"),
        0
    );
}

#[test]
fn poison_row_that_kills_the_engine_fails_after_its_last_attempt() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.write("notes/poison.md", "aborts\n");
    v.write("notes/b.md", "b\n");
    let scan = || {
        v.command(&["scan", "--json", "--settle-ms", "0", "--max-attempts", "2"])
            .env("OBBY_FAULT_ABORT_PATH", "poison")
            .output()
            .expect("scan")
    };
    // Each of the first two starts dies on the row (SIGABRT, as a crash in a
    // library would), its attempt counted.
    for attempt in 1..=2 {
        let out = scan();
        assert_eq!(
            out.status.signal(),
            Some(libc_sigabrt()),
            "start {attempt}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            v.count("SELECT attempts FROM event_queue WHERE path LIKE '%poison.md'"),
            attempt
        );
    }
    // The third start gives the row up without touching it and records the rest.
    let out = scan();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed = failures(&v);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].0.ends_with("poison.md"));
    assert_eq!(failed[0].2, "the engine stopped while processing this row");
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 2);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed')"),
        0
    );
    // And it stays given up: the next start runs clean.
    let out = scan();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGABRT, the signal `std::process::abort` raises.
fn libc_sigabrt() -> i32 {
    6
}

/// Issue 9, item 3: a file modified "in the future" (the clock was stepped
/// back after it was written) is read at once, not deferred through
/// `--settle-ms` until the clock catches up.
#[test]
fn clock_step_back_a_future_mtime_counts_as_settled() {
    let v = Vault::new();
    v.write("notes/ahead.md", "written before the clock went back\n");
    let file = std::fs::File::options()
        .write(true)
        .open(v.path("notes/ahead.md"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3_600))
        .expect("set mtime");
    drop(file);
    let summary = v.scan(&["--settle-ms", "60000"]);
    assert_eq!(summary["versions"], 1, "{summary}");
    assert_eq!(
        v.count("SELECT deferrals FROM event_queue WHERE path LIKE '%ahead.md'"),
        0,
        "the row was deferred"
    );
}

/// Issue 9, item 3: a file that never goes quiet is read after a bounded
/// number of deferrals, counted (not timed against a clock that may step).
#[test]
fn clock_step_back_deferrals_are_counted_and_bounded() {
    let v = Vault::new();
    v.write("notes/log.md", "line 0\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = v.path("notes/log.md");
        std::thread::spawn(move || {
            let mut i = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut text = std::fs::read_to_string(&path).unwrap_or_default();
                text.push_str(&format!("line {i}\n"));
                std::fs::write(&path, text).expect("append");
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    // A settle time the file never reaches: it is read after
    // MAX_DEFER / settle = 10 s / 2 s = 5 deferrals.
    let summary = v.scan(&["--settle-ms", "2000"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert_eq!(summary["versions"], 1, "{summary}");
    // Five for the settle time; a read that a write overlapped is deferred
    // once more (the text may mix two states), which a loaded machine makes
    // likelier: at most a couple of those in this run.
    let deferrals = v.count("SELECT deferrals FROM event_queue WHERE path LIKE '%log.md'");
    assert!((5..=7).contains(&deferrals), "{deferrals} deferrals");
}

/// Issue 9, item 2: what is in flight is bounded by bytes, not only rows: ten
/// 10 MiB notes (over half of `--batch-mib 8` each) are processed one at a
/// time, so the scan never holds them all (all at once took over 400 MiB).
#[test]
fn memory_is_bounded_by_bytes_huge_files_are_processed_alone() {
    let v = Vault::new();
    let line = "a line of a long export, the same words again and again\n";
    let body = line.repeat(10 * 1024 * 1024 / line.len());
    for i in 0..10 {
        v.write(&format!("notes/export-{i}.md"), format!("# {i}\n{body}"));
    }
    let summary = v.scan(&["--batch-mib", "8", "--settle-ms", "0"]);
    assert_eq!(summary["versions"], 10, "{summary}");
    let peak = summary["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    assert!(
        peak < 200 * 1024 * 1024,
        "peak RSS {} MiB: the huge files were held together",
        peak / (1024 * 1024)
    );
    // Every row ran alone, and is marked so.
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE alone = 1"),
        10
    );
}

/// Issue 9, item 3: one stamp far in the future (a clock that was wrong once)
/// does not drag every later stamp there, where the backend's own trigger
/// (`timestamp > now + 1 day`) would refuse every write.
#[test]
fn clock_step_back_a_far_future_stamp_does_not_stop_writes() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.scan(&["--settle-ms", "0"]);
    v.conn()
        .execute(
            "INSERT INTO file_changes (file_path, change_type, content_hash, timestamp)
             VALUES ('elsewhere.md', 'created', 'from-a-wrong-clock', '2999-01-01 00:00:00.000000')",
            [],
        )
        .expect("insert");
    v.write("notes/b.md", "b\n");
    let summary = v.scan(&["--settle-ms", "0"]);
    assert_eq!(summary["versions"], 1, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let stamp: String = v
        .conn()
        .query_row(
            "SELECT timestamp FROM file_versions WHERE file_path LIKE '%b.md'",
            [],
            |r| r.get(0),
        )
        .expect("b.md's version");
    assert!(stamp.as_str() < "2100", "{stamp}");
}
