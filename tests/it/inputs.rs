//! Bad input, clearly handled: binary, invalid UTF-8, oversized, vanished and
//! unreadable files, FIFOs and symlinks.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use crate::fixture::{Vault, bin, query};

#[test]
fn binary_file_is_hashed_raw_with_no_text_and_no_diff() {
    let v = Vault::new();
    let raw = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    v.write("notes/image.png", &raw);
    v.scan(&[]);
    let (hash, content, lines, size, desc): (String, Option<String>, Option<i64>, i64, String) = v
        .conn()
        .query_row(
            "SELECT content_hash, content, line_count, size, change_description FROM file_versions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("one version");
    use sha2::Digest as _;
    assert_eq!(
        hash,
        hex::encode(sha2::Sha256::digest(&raw)),
        "raw bytes, not normalized"
    );
    assert_eq!((content, lines, size), (None, None, raw.len() as i64));
    assert!(desc.contains("binary"), "{desc}");
    assert_eq!(v.count("SELECT COUNT(*) FROM content_diffs"), 0);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE change_type = 'created'"),
        1
    );
}

/// Text after a binary version has nothing to be diffed against: no diff
/// row (a diff from empty text would claim every line was added), and a
/// diff asked for from the binary version says it has no text.
#[test]
fn text_after_a_binary_version_gets_no_diff() {
    let v = Vault::new();
    v.write("notes/a.md", "keep\nthis\n");
    v.scan(&[]);
    v.write("notes/a.md", b"keep\0this\n");
    v.scan(&[]);
    v.write("notes/a.md", "keep\nthis\nmore\n");
    v.scan(&[]);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 3);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM content_diffs"),
        1,
        "only the creation's: {}",
        v.dump()
    );
    let ids: Vec<i64> = query(&v.conn(), "SELECT id FROM file_versions ORDER BY id", |r| {
        r.get(0)
    });
    let out = Command::new(bin())
        .args(["diff", "--db"])
        .arg(&v.db)
        .arg(v.abs("notes/a.md"))
        .args(["--from", &ids[1].to_string(), "--to", &ids[2].to_string()])
        .output()
        .expect("diff");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no text"), "{err}");
}

#[test]
fn invalid_utf8_is_stored_as_binary() {
    let v = Vault::new();
    v.write("notes/latin1.md", b"caf\xe9 au lait\n");
    v.scan(&[]);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content IS NULL"),
        1
    );
    assert_eq!(v.count("SELECT COUNT(*) FROM content_diffs"), 0);
}

#[test]
fn oversized_file_is_hashed_only() {
    let v = Vault::new();
    v.write("notes/huge.md", "line\n".repeat(100));
    v.scan(&["--max-file-size", "100"]);
    let (content, size, desc): (Option<String>, i64, String) = v
        .conn()
        .query_row(
            "SELECT content, size, change_description FROM file_versions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("one version");
    assert_eq!((content, size), (None, 500));
    assert!(desc.contains("size limit"), "{desc}");
}

#[test]
fn vanished_untracked_file_records_nothing_and_vanished_tracked_file_is_a_deletion() {
    let v = Vault::new();
    v.write("notes/kept.md", "kept\n");
    v.scan(&[]);
    // Never tracked, gone before its row is claimed.
    let ghost = v.abs("notes/ghost.md");
    assert!(
        v.command(&["enqueue", &ghost])
            .status()
            .expect("enqueue")
            .success()
    );
    v.scan(&[]);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_changes"), 1);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE path LIKE '%ghost.md' AND status = 'done'"),
        1
    );
    // Tracked, then gone.
    v.remove("notes/kept.md");
    let kept = v.abs("notes/kept.md");
    assert!(
        v.command(&["enqueue", &kept])
            .status()
            .expect("enqueue")
            .success()
    );
    v.scan(&[]);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE change_type = 'deleted'"),
        1
    );
}

#[test]
fn fifo_and_symlinks_are_not_followed_or_read() {
    let v = Vault::new();
    v.write("notes/real.md", "real\n");
    let fifo = v.path("notes/pipe.md");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    // A symlink pointing out of the root, and one to a file inside it.
    let outside = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(outside.path(), "secret\n").expect("write");
    std::os::unix::fs::symlink(outside.path(), v.path("notes/escape.md")).expect("symlink");
    std::os::unix::fs::symlink(v.path("notes/real.md"), v.path("notes/alias.md")).expect("symlink");
    // The CLI refuses to enqueue a link that resolves outside the root.
    let out = v
        .command(&["enqueue", &v.abs("notes/escape.md")])
        .output()
        .expect("enqueue");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the root"));
    v.scan(&[]);
    // A producer that writes the link paths themselves into the queue (as a
    // watcher event would) gets nothing recorded for them either.
    let conn = v.conn();
    for p in ["notes/pipe.md", "notes/escape.md", "notes/alias.md"] {
        conn.execute(
            "INSERT INTO event_queue (path, kind, enqueued_ms, available_ms) VALUES (?1, 'modified', 0, 0)",
            [v.abs(p)],
        )
        .expect("enqueue");
    }
    v.scan(&[]);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status <> 'done'"),
        0
    );
    let paths: Vec<String> = query(&conn, "SELECT file_path FROM file_versions", |r| r.get(0));
    assert_eq!(paths, vec![v.abs("notes/real.md")]);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content LIKE '%secret%'"),
        0
    );
}

#[test]
fn unreadable_file_is_retried_then_failed_with_its_error_and_retried_when_it_changes() {
    let v = Vault::new();
    v.write("notes/ok.md", "ok\n");
    v.write("notes/secret.md", "secret\n");
    let secret = v.path("notes/secret.md");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads anything, so as root the engine runs as `nobody`.
    let as_root = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
    let scan = |extra: &[&str]| {
        let mut cmd = if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
            c
        } else {
            Command::new(bin())
        };
        cmd.args([
            "scan",
            "--json",
            "--max-attempts",
            "3",
            "--retry-backoff-ms",
            "10",
            "--root",
        ])
        .arg(&v.root)
        .arg("--db")
        .arg(&v.db)
        .args(extra)
        .env("LOG_LEVEL", "error")
        .output()
        .expect("scan")
    };
    if as_root {
        let dir = v.db.parent().expect("db dir");
        for d in [dir, v.root.as_path(), v.path("notes").as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        }
        std::fs::set_permissions(
            v.path("notes/ok.md"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        std::fs::set_permissions(v.path(".obbywatch"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let out = scan(&[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code 3 means some changes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = v.conn();
    let failed: Vec<(String, i64, String)> = query(
        &conn,
        "SELECT path, attempts, last_error FROM event_queue WHERE status = 'failed'",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, v.abs("notes/secret.md"));
    assert_eq!(failed[0].1, 3);
    assert!(failed[0].2.contains("Permission denied"), "{}", failed[0].2);
    // `status` shows it.
    let status = Command::new(bin())
        .args(["status", "--db"])
        .arg(&v.db)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 failed") && text.contains("Permission denied"),
        "{text}"
    );
    // The readable file was not held up.
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);

    // Fixed and changed: the next scan records it and retires the failure.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&secret, "secret, now readable\n").expect("write");
    let out = scan(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 2);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'failed'"),
        0
    );
}
