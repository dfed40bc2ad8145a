//! The pipeline end to end through `obby-sync scan`: create, modify, delete,
//! move, revert, unchanged files, and 1 worker versus several.

use crate::fixture::Vault;

/// Runs the same history of edits and scans with the given worker flags and
/// returns the redacted dump after each scan.
fn history(workers: &str) -> Vec<String> {
    let v = Vault::new();
    let scan = |v: &Vault| {
        // No settle delay: the order of rows must not depend on timing.
        v.scan(&[
            "--workers",
            workers,
            "--batch-size",
            "3",
            "--settle-ms",
            "0",
        ]);
        v.dump()
    };
    let mut dumps = Vec::new();
    v.write("notes/a.md", "# A\n\nfirst\n");
    v.write("notes/b.md", "b1\nb2\n");
    v.write("notes/sub/c.md", "see also\n");
    v.write("notes/keep.md", "unchanged\n");
    v.write("outside.md", "not tracked: .obbywatch says notes/\n");
    dumps.push(scan(&v));

    v.write("notes/a.md", "# A\n\nfirst\nsecond\n");
    v.remove("notes/b.md");
    v.rename("notes/sub/c.md", "notes/moved/c.md");
    dumps.push(scan(&v));

    // Revert a.md to its first content, re-create b.md, move and edit c.md.
    v.write("notes/a.md", "# A\n\nfirst\n");
    v.write("notes/b.md", "b1\nb2\n");
    v.rename("notes/moved/c.md", "notes/c-renamed.md");
    dumps.push(scan(&v));
    dumps
}

#[test]
fn create_modify_delete_move_rows() {
    let dumps = history("1");
    insta::assert_snapshot!("after_create", dumps[0]);
    insta::assert_snapshot!("after_modify_delete_move", dumps[1]);
    insta::assert_snapshot!("after_revert_recreate_move", dumps[2]);
}

#[test]
fn one_worker_and_many_workers_write_identical_rows() {
    assert_eq!(history("1"), history("4"));
}

#[test]
fn rescanning_an_unchanged_tree_writes_nothing() {
    let v = Vault::new();
    for i in 0..20 {
        v.write(&format!("notes/n{i}.md"), format!("note {i}\n"));
    }
    let first = v.scan(&[]);
    assert_eq!(first["versions"], 20);
    let before = v.dump();
    let second = v.scan(&[]);
    assert_eq!(second["enqueued"], 0, "{second}");
    assert_eq!(v.dump(), before);
}

#[test]
fn touching_a_file_without_changing_it_creates_no_version() {
    let v = Vault::new();
    v.write("notes/a.md", "same\n");
    v.scan(&[]);
    // New mtime, same bytes: enqueued by size/mtime, dropped by hash.
    std::thread::sleep(std::time::Duration::from_millis(20));
    v.write("notes/a.md", "same\n");
    let s = v.scan(&[]);
    assert_eq!(s["enqueued"], 1);
    assert_eq!(s["versions"], 0);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);
    // And the refreshed mtime means the next scan does not even enqueue it.
    assert_eq!(v.scan(&[])["enqueued"], 0);
}

#[test]
fn processing_the_same_queue_row_twice_creates_one_version() {
    let v = Vault::new();
    v.write("notes/a.md", "hello\n");
    v.scan(&[]);
    let a = v.abs("notes/a.md");
    // Put the already-processed change back in the queue, twice, as a crash
    // between commit and exit or a duplicate producer would.
    for _ in 0..2 {
        let out = v.command(&["enqueue", &a]).output().expect("enqueue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        v.scan(&[]);
    }
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_changes"), 1);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'done'"),
        3
    );
}

#[test]
fn pending_events_for_one_path_coalesce_into_one_row() {
    let v = Vault::new();
    v.write("notes/a.md", "x\n");
    v.scan(&[]);
    let a = v.abs("notes/a.md");
    for _ in 0..5 {
        assert!(
            v.command(&["enqueue", &a])
                .status()
                .expect("enqueue")
                .success()
        );
    }
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'pending'"),
        1
    );
}

#[test]
fn the_engines_own_database_is_never_tracked() {
    let v = Vault::with_watch("*\n");
    v.write("notes/a.md", "a\n");
    // A database inside the root, caught by the `*` pattern.
    let db = v.path("obby.db");
    let out = crate::fixture::scan_into(&v.root, &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Twice: the second run sees the db, its WAL and SHM and lock on disk.
    let out = crate::fixture::scan_into(&v.root, &db);
    assert!(out.status.success());
    let conn = rusqlite::Connection::open(&db).expect("db");
    let paths: Vec<String> =
        crate::fixture::query(&conn, "SELECT file_path FROM file_states ORDER BY 1", |r| {
            r.get(0)
        });
    let root = v.root.to_str().expect("utf-8");
    let rel: Vec<String> = paths.iter().map(|p| p.replace(root, "")).collect();
    assert_eq!(rel, vec!["/.obbywatch", "/notes/a.md"]);
}

#[test]
fn schema_is_reviewed() {
    let v = Vault::new();
    v.scan(&[]);
    let conn = v.conn();
    let schema: Vec<String> = crate::fixture::query(
        &conn,
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name",
        |r| r.get(0),
    );
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("pragma");
    insta::assert_snapshot!(format!(
        "user_version = {version}\n\n{}",
        schema.join(";\n\n")
    ));
}
