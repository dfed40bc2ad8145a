//! `kill -9` at different points of a large scan, restart, and prove every
//! change is captured exactly once and no queue row is lost or done twice.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::fixture::{Vault, bin, query};

const FILES: usize = 2_400;

fn content(i: usize, generation: usize) -> String {
    let mut s = format!("# note {i}\n\ngeneration {generation}\n");
    for line in 0..(i % 37) {
        s.push_str(&format!("- item {line} of note {i}\n"));
    }
    s
}

/// Starts a scan and SIGKILLs it once the database holds at least `versions`
/// versions (or after a deadline). Returns the versions present at the kill.
fn scan_and_kill(v: &Vault, at_versions: i64) -> i64 {
    let mut child = Command::new(bin())
        .args(["scan", "--batch-size", "32", "--root"])
        .arg(&v.root)
        .arg("--db")
        .arg(&v.db)
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the scan finished ({status}) before it could be killed at {at_versions} versions"
            );
        }
        let now = rusqlite::Connection::open(&v.db)
            .and_then(|c| {
                c.busy_timeout(Duration::from_secs(5))?;
                c.query_row("SELECT COUNT(*) FROM file_versions", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0);
        if now >= at_versions || started.elapsed() > Duration::from_secs(60) {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            return now;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_mid_scan_then_restart_captures_every_change_exactly_once() {
    let v = Vault::new();
    let mut generation = vec![0usize; FILES];
    for i in 0..FILES {
        v.write(&format!("notes/d{}/n{i}.md", i % 16), content(i, 0));
    }
    // Kill the first scan at several points.
    let mut kills = Vec::new();
    for target in [300, 900, 1_500] {
        kills.push(scan_and_kill(&v, target));
    }
    // Edit some files while the engine is down, then kill mid-way again.
    for i in (0..FILES).step_by(7) {
        generation[i] = 1;
        v.write(&format!("notes/d{}/n{i}.md", i % 16), content(i, 1));
    }
    let before = v.count("SELECT COUNT(*) FROM file_versions");
    kills.push(scan_and_kill(&v, before + 150));
    // Finish.
    v.scan(&[]);

    eprintln!("versions in the database at each SIGKILL: {kills:?}");
    // At least one kill landed strictly inside processing.
    assert!(
        kills.iter().any(|&n| n > 0 && n < FILES as i64),
        "no kill landed mid-processing: {kills:?}"
    );

    let conn = v.conn();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(integrity, "ok");

    // Every file: one version per distinct content, in order, newest = disk.
    let rows: Vec<(String, String)> = query(
        &conn,
        "SELECT file_path, content_hash FROM file_versions ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    let mut per_file: HashMap<String, Vec<String>> = HashMap::new();
    for (path, hash) in rows {
        per_file.entry(path).or_default().push(hash);
    }
    assert_eq!(per_file.len(), FILES);
    for (i, &last) in generation.iter().enumerate() {
        let path = v.abs(&format!("notes/d{}/n{i}.md", i % 16));
        let hashes = &per_file[&path];
        let settled: Vec<String> = (0..=last)
            .map(|g| hex::encode(Sha256::digest(content(i, g).as_bytes())))
            .collect();
        // A content that was replaced before any engine saw it is never
        // recorded; every other one is recorded once, in order, ending with
        // what is on disk.
        let positions: Vec<usize> = hashes
            .iter()
            .map(|h| {
                settled
                    .iter()
                    .position(|s| s == h)
                    .expect("a version of content that was on disk")
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{path}: duplicate or out of order: {positions:?}"
        );
        assert_eq!(
            positions.last(),
            Some(&generation[i]),
            "{path}: newest version is not the file on disk"
        );
        if last == 0 {
            assert_eq!(hashes.len(), 1, "{path}");
        }
    }

    // The queue: nothing left pending or claimed; each change acknowledged by
    // exactly one done row; as many changes as versions (no deletions here).
    assert_eq!(
        v.count(
            "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed', 'failed')"
        ),
        0
    );
    let versions = v.count("SELECT COUNT(*) FROM file_versions");
    assert_eq!(v.count("SELECT COUNT(*) FROM file_changes"), versions);
    assert_eq!(v.count("SELECT COUNT(*) FROM content_diffs"), versions);
    assert_eq!(v.count("SELECT COUNT(*) FROM events"), versions);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'done' AND change_id IS NOT NULL"),
        versions
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM (SELECT change_id FROM event_queue WHERE change_id IS NOT NULL GROUP BY change_id HAVING COUNT(*) > 1)"),
        0,
        "a change acknowledged twice"
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes fc WHERE NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.change_id = fc.id)"),
        0,
        "a change without its queue row"
    );
}
