//! The shared database under contention: while the engine records a stream of
//! changes, a Python `sqlite3` process (as Obby's backend does) reads the
//! tables continuously and holds write transactions of 300 ms, flipping
//! `events.processed` and writing a table of its own. The engine must not fail
//! a change because of `SQLITE_BUSY`; it waits and retries, and its own write
//! transactions stay short.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture::{Vault, wait_for};

/// The backend stand-in: `python3 - DB SECONDS`.
const BACKEND: &str = r#"
import sqlite3, sys, time, threading
db, seconds = sys.argv[1], float(sys.argv[2])
stop = time.time() + seconds
reads = writes = 0
def reader():
    global reads
    conn = sqlite3.connect(db, timeout=30)
    while time.time() < stop:
        conn.execute("SELECT cd.*, fv.content_hash FROM content_diffs cd LEFT JOIN file_versions fv ON cd.new_version_id = fv.id ORDER BY cd.timestamp DESC LIMIT 50").fetchall()
        conn.execute("SELECT * FROM file_states ORDER BY last_modified DESC").fetchall()
        reads += 1
t = threading.Thread(target=reader)
t.start()
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS backend_notes (id INTEGER PRIMARY KEY, note TEXT)")
while time.time() < stop:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE events SET processed = 1 WHERE processed = 0")
    conn.execute("INSERT INTO backend_notes (note) VALUES ('seen')")
    time.sleep(0.3)  # a long-ish transaction holding the write lock
    conn.execute("COMMIT")
    writes += 1
    time.sleep(0.1)
t.join()
print(f"{reads} {writes}")
"#;

#[test]
fn a_backend_holding_write_locks_delays_changes_but_fails_none() {
    let v = Vault::new();
    v.write("notes/first.md", "first\n");
    let engine = v.start(&[
        "--debounce-ms",
        "50",
        "--rescan-interval",
        "0",
        "--no-api",
        "--retry-backoff-ms",
        "50",
    ]);
    let backend = Command::new("python3")
        .arg("-")
        .arg(&v.db)
        .arg("6")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write as _;
        let mut stdin = backend.stdin.as_ref().expect("stdin");
        stdin.write_all(BACKEND.as_bytes()).expect("script");
    }
    let mut backend = backend;
    drop(backend.stdin.take());
    let files = 600;
    for i in 0..files {
        v.write(&format!("notes/c{}/n{i}.md", i % 10), format!("note {i}\n"));
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = backend.wait_with_output().expect("backend");
    assert!(out.status.success(), "the backend stand-in failed");
    let counts = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(wait_for(Duration::from_secs(30), || v
        .count("SELECT COUNT(*) FROM file_versions")
        == files + 1));
    assert!(engine.stop().success());
    assert_eq!(
        v.count(
            "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed', 'failed')"
        ),
        0
    );
    let writes: i64 = counts
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    assert!(
        writes >= 5,
        "the backend held the write lock {writes} times"
    );
    let longest: f64 = v
        .meta("longest_write_ms")
        .and_then(|s| s.parse().ok())
        .expect("recorded");
    eprintln!(
        "contention: backend reads/writes {counts}; {files} files recorded; longest engine write transaction {longest:.1} ms"
    );
    // The engine's own transactions stay short, whatever the backend does.
    assert!(longest < 500.0, "longest write {longest} ms");
}
