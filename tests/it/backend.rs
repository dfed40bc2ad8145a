//! obby-sync beside Obby's Python backend (CONTRACT.md section 5): on a
//! database the backend's `schema.sql` made ("backend first") and on one
//! obby-sync made ("engine first") every kind of change is recorded exactly
//! once and no insert trips the backend's constraints; history the backend
//! wrote is kept and continued; a half-adopted file from an older build and
//! a database of an older obby-sync repair themselves; a row the database
//! refuses fails alone.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::fixture::{Vault, query, wait_for};

/// The backend's `schema.sql`, as the tests know it (section 5).
const BACKEND_SCHEMA: &str = include_str!("../fixtures/backend_schema.sql");

/// The first obby-sync schema, for databases of older builds.
const ENGINE_V1_SCHEMA: &str = include_str!("../../schema/0001_init.sql");

/// Creates `db` the way the backend does when it starts first.
fn backend_database(db: &Path) -> Connection {
    let conn = Connection::open(db).expect("create backend db");
    conn.execute_batch(BACKEND_SCHEMA).expect("backend schema");
    conn
}

/// The backend's change id: sha256 of path + type + old hash + new hash.
fn backend_change_id(path: &str, kind: &str, old: &str, new: &str) -> String {
    crate::traps::sha256_hex(format!("{path}{kind}{old}{new}").as_bytes())
}

/// `PRAGMA integrity_check`, and no queue row left pending or claimed.
fn assert_sound(v: &Vault) {
    let conn = v.conn();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed')"),
        0
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM pragma_foreign_key_check"),
        0,
        "dangling references"
    );
}

/// Every kind of change the issue lists, scan by scan; the redacted dump
/// after each scan.
fn scenario(v: &Vault) -> Vec<String> {
    let scan = |v: &Vault| {
        let summary = v.scan(&["--settle-ms", "0"]);
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_sound(v);
        v.dump()
    };
    let mut dumps = Vec::new();
    v.write("notes/a.md", "one\n");
    v.write("notes/b.md", "bee\n");
    v.write("notes/c.md", "see\n");
    v.write("notes/e.md", "e1\ne2\ne3\n");
    v.write("notes/twin1.md", "same text\n");
    v.write("notes/twin2.md", "same text\n");
    v.write("notes/binary.dat", [0u8, 159, 146, 150, 0, 1]);
    v.write("notes/empty.md", "");
    v.write("notes/again.md", "back again\n");
    dumps.push(scan(v));

    v.write("notes/a.md", "one\ntwo\n");
    v.remove("notes/b.md");
    v.rename("notes/c.md", "notes/renamed/c.md");
    v.remove("notes/e.md");
    v.write("notes/f.md", "e1\nE2\ne3\n"); // renamed with an edit
    v.remove("notes/again.md");
    dumps.push(scan(v));

    v.write("notes/a.md", "one\n"); // a revert
    v.write("notes/again.md", "back again\n"); // re-created, same content
    dumps.push(scan(v));

    // Nothing changed: nothing written.
    dumps.push(scan(v));
    assert_eq!(dumps[2], dumps[3]);
    dumps
}

#[test]
fn backend_first_and_engine_first_record_every_change_once_and_alike() {
    let engine_first = Vault::new();
    let backend_first = Vault::new();
    drop(backend_database(&backend_first.db));
    let a = scenario(&engine_first);
    let b = scenario(&backend_first);
    assert_eq!(a, b, "the two kinds of database hold different rows");
    insta::assert_snapshot!("beside_backend_after_create", a[0]);
    insta::assert_snapshot!("beside_backend_after_edits", a[1]);
    insta::assert_snapshot!("beside_backend_after_revert_and_recreate", a[2]);
}

#[test]
fn history_the_backend_wrote_is_kept_and_continued() {
    let v = Vault::new();
    let backend = backend_database(&v.db);
    let old = v.abs("notes/old.md");
    let same = v.abs("notes/same.md");
    let removed = v.abs("notes/removed.md");
    let h = |s: &str| crate::traps::sha256_hex(s.as_bytes());
    let stamp = "2026-11-30 09:00:00.000000";
    for (path, text) in [(&old, "old\n"), (&same, "same\n"), (&removed, "bye\n")] {
        backend
            .execute(
                "INSERT INTO file_versions (file_path, content_hash, content, line_count, timestamp, change_description)
                 VALUES (?1, ?2, ?3, 1, ?4, 'File created')",
                rusqlite::params![path, h(text), text, stamp],
            )
            .expect("backend version");
        backend
            .execute(
                "INSERT INTO file_changes (file_path, change_type, new_content_hash, timestamp, content_hash)
                 VALUES (?1, 'created', ?2, ?3, ?4)",
                rusqlite::params![path, h(text), stamp, backend_change_id(path, "created", "", &h(text))],
            )
            .expect("backend change");
        backend
            .execute(
                "INSERT OR REPLACE INTO file_states (file_path, content_hash, last_modified, line_count, file_size, updated_at)
                 VALUES (?1, ?2, ?3, 1, ?4, ?3)",
                rusqlite::params![path, h(text), stamp, text.len() as i64],
            )
            .expect("backend state");
    }
    let old_version: i64 = backend
        .query_row(
            "SELECT id FROM file_versions WHERE file_path = ?1",
            [&old],
            |r| r.get(0),
        )
        .expect("id");
    backend
        .execute(
            "INSERT INTO semantic_entries (version_id, timestamp, date, time, type, summary, impact, file_path, searchable_text)
             VALUES (?1, ?2, '2026-11-30', '09:00', 'note', 'An old note', 'minor', ?3, 'old words')",
            rusqlite::params![old_version, stamp, old],
        )
        .expect("semantic entry");
    drop(backend);

    v.write("notes/old.md", "old\nnew line\n");
    v.write("notes/same.md", "same\n");
    v.scan(&["--settle-ms", "0"]);
    assert_sound(&v);

    // The backend's rows, ids and semantic entry are all still there.
    assert_eq!(
        v.count(&format!(
            "SELECT COUNT(*) FROM semantic_entries WHERE version_id = {old_version}"
        )),
        1
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM semantic_search WHERE semantic_search MATCH 'words'"),
        1
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE id <= 3"),
        3
    );
    // Unchanged content: no new version. Changed: a diff from the backend's
    // version. Gone: a deletion in the backend's convention.
    let conn = v.conn();
    let versions = |path: &str| -> Vec<(i64, String)> {
        let mut stmt = conn
            .prepare("SELECT id, content_hash FROM file_versions WHERE file_path = ?1 ORDER BY id")
            .expect("prepare");
        stmt.query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(versions(&same).len(), 1);
    assert_eq!(versions(&old).len(), 2);
    let (old_id, diff): (Option<i64>, String) = conn
        .query_row(
            "SELECT old_version_id, diff_content FROM content_diffs WHERE file_path = ?1",
            [&old],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("diff");
    assert_eq!(old_id, Some(old_version));
    assert!(diff.contains("\n+new line\n"), "{diff}");
    let gone: (Option<String>, i64, i64, i64) = conn
        .query_row(
            "SELECT content_hash, line_count, file_size, is_deleted FROM file_states WHERE file_path = ?1",
            [&removed],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("state");
    assert_eq!(gone, (None, 0, 0, 1));
    let kinds = v.changes();
    assert!(
        kinds.contains(&("deleted".into(), "notes/removed.md".into(), None)),
        "{kinds:?}"
    );

    // A revert to the backend's content is history of its own, although the
    // backend's file had UNIQUE(file_path, content_hash).
    v.write("notes/old.md", "old\n");
    v.scan(&["--settle-ms", "0"]);
    let after = versions(&old);
    assert_eq!(after.len(), 3);
    assert_eq!(after[2].1, h("old\n"));
    assert_sound(&v);
}

#[test]
fn a_half_adopted_database_repairs_itself() {
    // What an older build left: the backend's file with user_version and
    // application_id set and some engine columns added, but not all.
    let v = Vault::new();
    let conn = backend_database(&v.db);
    conn.execute_batch(
        "ALTER TABLE file_changes ADD COLUMN old_path TEXT;
         ALTER TABLE file_changes ADD COLUMN version_id INTEGER;
         ALTER TABLE file_changes ADD COLUMN diff_id INTEGER;
         ALTER TABLE file_states ADD COLUMN mtime_ns INTEGER;
         ALTER TABLE file_states ADD COLUMN version_id INTEGER;
         ALTER TABLE events ADD COLUMN old_path TEXT;
         PRAGMA user_version = 1;
         PRAGMA application_id = 1329748307;",
    )
    .expect("half adopt");
    conn.execute_batch(ENGINE_V1_SCHEMA)
        .expect("what the older build ran");
    drop(conn);
    v.write("notes/a.md", "a\n");
    v.write("notes/bin.dat", [0u8, 1, 2, 255]);
    v.scan(&["--settle-ms", "0"]);
    v.remove("notes/a.md");
    v.scan(&["--settle-ms", "0"]);
    assert_sound(&v);
    let columns = |table: &str| -> Vec<String> {
        query(
            &v.conn(),
            &format!("SELECT name FROM pragma_table_info('{table}')"),
            |r| r.get(0),
        )
    };
    assert!(columns("file_states").contains(&"is_deleted".to_owned()));
    assert!(!columns("file_states").contains(&"mtime_ns".to_owned()));
    assert!(columns("file_versions").contains(&"size".to_owned()));
    assert_eq!(
        v.count("PRAGMA user_version"),
        obby_sync::engine::schema::latest_version()
    );
    assert_eq!(
        v.changes()
            .into_iter()
            .map(|(k, p, _)| format!("{k} {p}"))
            .collect::<Vec<_>>(),
        [
            "created notes/a.md",
            "created notes/bin.dat",
            "deleted notes/a.md"
        ]
    );
}

#[test]
fn a_database_of_an_older_obby_sync_keeps_every_row_and_id() {
    let v = Vault::new();
    let conn = Connection::open(&v.db).expect("db");
    conn.execute_batch(ENGINE_V1_SCHEMA).expect("v1 schema");
    let a = v.abs("notes/a.md");
    let h = |s: &str| crate::traps::sha256_hex(s.as_bytes());
    // a.md: x, y, x again (the old build repeated content_hash in
    // file_changes); b.md: created, then deleted.
    conn.execute_batch(&format!(
        "INSERT INTO file_versions (id, file_path, content_hash, content, line_count, size, timestamp, change_description) VALUES
            (1, '{a}', '{x}', 'x\n', 1, 2, '2026-11-01 10:00:00.000001', 'File created'),
            (2, '{a}', '{y}', 'y\n', 1, 2, '2026-11-01 10:00:00.000002', 'File modified'),
            (5, '{a}', '{x}', 'x\n', 1, 2, '2026-11-01 10:00:00.000003', 'File modified');
         INSERT INTO file_changes (id, file_path, change_type, old_content_hash, new_content_hash, content_hash, timestamp, version_id) VALUES
            (1, '{a}', 'created', NULL, '{x}', '{x}', '2026-11-01 10:00:00.000001', 1),
            (2, '{a}', 'modified', '{x}', '{y}', '{y}', '2026-11-01 10:00:00.000002', 2),
            (3, '{a}', 'modified', '{y}', '{x}', '{x}', '2026-11-01 10:00:00.000003', 5);
         INSERT INTO file_states (file_path, content_hash, last_modified, line_count, file_size, updated_at, is_deleted, mtime_ns, version_id) VALUES
            ('{a}', '{x}', '2026-11-01 10:00:00.000000', 1, 2, '2026-11-01 10:00:00.000003', 0, 1, 5),
            ('{b}', '{x}', '2026-11-01 10:00:00.000000', NULL, 2, '2026-11-01 10:00:00.000003', 1, 1, NULL);
         PRAGMA user_version = 1;
         PRAGMA application_id = 1329748307;",
        x = h("x\n"),
        y = h("y\n"),
        b = v.abs("notes/b.md"),
    ))
    .expect("v1 rows");
    drop(conn);
    v.write("notes/a.md", "x\n");
    v.scan(&["--settle-ms", "0"]);
    assert_sound(&v);
    let conn = v.conn();
    let ids: Vec<i64> = query(&conn, "SELECT id FROM file_versions ORDER BY id", |r| {
        r.get(0)
    });
    assert_eq!(
        ids,
        [1, 2, 5],
        "the same content is already the newest version"
    );
    let change_ids: Vec<(i64, String)> = query(
        &conn,
        "SELECT id, content_hash FROM file_changes ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(change_ids.len(), 3);
    assert_eq!(change_ids[0].1, h("x\n"), "the first keeps its id");
    assert_ne!(change_ids[2].1, h("x\n"), "the repeat got one of its own");
    // The deleted file now follows the backend's convention; the engine
    // keeps its last hash.
    let b: (Option<String>, i64) = conn
        .query_row(
            "SELECT content_hash, line_count FROM file_states WHERE file_path LIKE '%b.md'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("b state");
    assert_eq!(b, (None, 0));
    assert_eq!(
        v.count("SELECT COUNT(*) FROM sync_files WHERE deleted = 1 AND content_hash IS NOT NULL"),
        1
    );
    // Insert ids keep counting from where they were.
    v.write("notes/c.md", "c\n");
    v.scan(&["--settle-ms", "0"]);
    assert_eq!(v.count("SELECT MAX(id) FROM file_versions"), 6);
}

#[test]
fn a_row_the_database_refuses_fails_alone_and_the_engine_goes_on() {
    let v = Vault::new();
    let conn = backend_database(&v.db);
    // A constraint of the other program's that obby-sync cannot know of.
    conn.execute_batch(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON file_versions
         WHEN NEW.file_path LIKE '%poison%'
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
         CREATE TRIGGER refuse_event BEFORE INSERT ON events
         WHEN NEW.path LIKE '%eventless%'
         BEGIN SELECT RAISE(ABORT, 'event refused by the test'); END;",
    )
    .expect("trigger");
    drop(conn);
    v.write("notes/ok1.md", "fine\n");
    v.write("notes/poison.md", "refused\n");
    v.write("notes/ok2.md", "fine too\n");
    // Refused at its last row (the event, written after the version, diff
    // and change rows): none of its rows stay.
    v.write("notes/eventless.md", "refused late\n");
    let out = v.scan_output(&["--settle-ms", "0"]);
    assert_eq!(out.status.code(), Some(3), "a failed change is exit code 3");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["versions"], 2);
    for table in ["file_versions", "content_diffs", "file_changes"] {
        assert_eq!(
            v.count(&format!(
                "SELECT COUNT(*) FROM {table} WHERE file_path LIKE '%eventless%'"
            )),
            0,
            "{table}"
        );
    }
    assert_eq!(v.count("SELECT COUNT(*) FROM events"), 2);
    assert_sound(&v);
    let status = v.command(&["status", "--json"]).output().expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let errors: Vec<String> = status["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["last_error"].as_str().expect("error text").to_owned())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (path, words) in [
        ("poison.md", "refused by the test"),
        ("eventless.md", "event refused by the test"),
    ] {
        let error = errors
            .iter()
            .find(|e| e.contains(path))
            .unwrap_or_else(|| panic!("no failure of {path} in {errors:?}"));
        assert!(error.contains(words), "{error}");
        assert_eq!(error.matches(words).count(), 1, "{error}");
    }

    // Under `run` too: the refused row fails, later changes are recorded.
    let running = v.start(&["--no-api", "--debounce-ms", "50", "--settle-ms", "0"]);
    v.write("notes/poison2.md", "refused again\n");
    v.write("notes/later.md", "recorded\n");
    assert!(
        wait_for(Duration::from_secs(20), || {
            v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%later.md'") == 1
                && v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'failed' AND path LIKE '%poison2.md'") == 1
        }),
        "the engine stopped recording after a refused row"
    );
    v.write("notes/later.md", "recorded again\n");
    assert!(wait_for(Duration::from_secs(20), || {
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%later.md'") == 2
    }));
    assert!(running.stop().success());
}

#[test]
fn the_default_database_is_the_backends_file_under_the_root() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    let out = std::process::Command::new(crate::fixture::bin())
        .args(["scan", "--root"])
        .arg(&v.root)
        .env_remove("DB_PATH")
        .env("LOG_LEVEL", "info")
        .output()
        .expect("scan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = v.root.join(".db/obby.db");
    assert!(db.is_file());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(db.to_str().expect("utf-8")),
        "the log names the file in use"
    );
    let status = std::process::Command::new(crate::fixture::bin())
        .args(["status", "--root"])
        .arg(&v.root)
        .env_remove("DB_PATH")
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(db.to_str().expect("utf-8")), "{text}");
    assert!(text.contains("1 versions"), "{text}");

    // An explicit --db in a folder that does not exist yet: made, as the
    // backend makes .db/.
    let nested = v.root.join("deep/er/obby.db");
    let out = crate::fixture::scan_into(&v.root, &nested);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(nested.is_file());
}

#[test]
fn errors_say_their_cause_once() {
    let v = Vault::new();
    // A database path that is a folder: one line, its cause said once.
    std::fs::create_dir_all(&v.db).expect("mkdir");
    let out = v.scan_output(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("obby-sync: error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    let words: Vec<&str> = line.split(": ").collect();
    let mut seen = std::collections::HashSet::new();
    for w in &words[1..] {
        assert!(seen.insert(*w), "{line}: says {w:?} twice");
    }
}

#[test]
fn a_deletion_of_a_file_only_the_backend_versioned_is_recorded_once() {
    let v = Vault::new();
    drop(backend_database(&v.db));
    v.scan(&[]);
    // After obby-sync adopted the file, the backend versions a note the
    // engine never saw, and the note is gone by the time the engine looks.
    let gone = v.abs("notes/only-backend.md");
    v.conn()
        .execute(
            "INSERT INTO file_versions (file_path, content_hash, content, line_count, timestamp)
             VALUES (?1, ?2, 'x', 1, '2026-11-30 09:00:00.000000')",
            rusqlite::params![gone, crate::traps::sha256_hex(b"x")],
        )
        .expect("backend version");
    for _ in 0..2 {
        let out = v.command(&["enqueue", &gone]).output().expect("enqueue");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        v.scan(&["--settle-ms", "0"]);
    }
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE change_type = 'deleted'"),
        1
    );
    assert_sound(&v);
}

/// `status` reads its row counts from `sync_counts` (a watermark and a range
/// above it, deletes counted off by triggers, done queue rows by triggers)
/// instead of a `COUNT(*)` of every table. Whatever the backend inserts or
/// deletes beside the engine, and whatever the engine prunes, the counts it
/// shows are the tables' real ones. (The done rows are counted by
/// `queue.rs`, `event_queue`'s only writer: no other program writes it.)
#[test]
fn status_counts_stay_exact_beside_the_backends_inserts_and_deletes() {
    let v = Vault::new();
    drop(backend_database(&v.db));
    let status = |v: &Vault| -> serde_json::Value {
        let out = v.command(&["status", "--json"]).output().expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json")
    };
    let assert_exact = |v: &Vault, when: &str| {
        let s = status(v);
        for (field, table) in [
            ("versions", "file_versions"),
            ("diffs", "content_diffs"),
            ("changes", "file_changes"),
        ] {
            assert_eq!(
                s[field].as_i64(),
                Some(v.count(&format!("SELECT COUNT(*) FROM {table}"))),
                "{when}: {field} in {s}"
            );
        }
        assert_eq!(
            s["queue"]["done"].as_i64(),
            Some(v.count("SELECT COUNT(*) FROM event_queue WHERE status = 'done'")),
            "{when}: done rows in {s}"
        );
    };
    for i in 0..5 {
        v.write(&format!("notes/n{i}.md"), format!("note {i}\n"));
    }
    v.scan(&["--settle-ms", "0"]);
    assert_exact(&v, "after the first scan");
    // The backend versions a note of its own (above the watermark), then
    // deletes one of the engine's versions with its diff and change (below
    // it), as a clean-up of its own would.
    let conn = v.conn();
    conn.execute(
        "INSERT INTO file_versions (file_path, content_hash, content, line_count, timestamp)
         VALUES (?1, ?2, 'x', 1, '2026-11-30 09:00:00.000000')",
        rusqlite::params![v.abs("notes/backend.md"), crate::traps::sha256_hex(b"x")],
    )
    .expect("backend version");
    let oldest: i64 = conn
        .query_row("SELECT MIN(id) FROM file_versions", [], |r| r.get(0))
        .expect("a version");
    conn.execute_batch(&format!(
        "DELETE FROM content_diffs WHERE new_version_id = {oldest};
         DELETE FROM file_changes WHERE version_id = {oldest};
         DELETE FROM file_versions WHERE id = {oldest};"
    ))
    .expect("backend deletes");
    drop(conn);
    assert_exact(&v, "after the backend's insert and deletes");
    // The engine writes again: its batch moves the watermark past the
    // backend's row.
    v.write("notes/n1.md", "note 1, edited\n");
    v.write("notes/n5.md", "note 5\n");
    v.scan(&["--settle-ms", "0"]);
    assert_exact(&v, "after the second scan");
    // A scan that keeps done rows for no time prunes, when drained, every
    // row done before that millisecond: all but (perhaps) its own.
    v.write("notes/n2.md", "note 2, edited\n");
    v.scan(&["--settle-ms", "0", "--retention-hours", "0"]);
    assert_exact(&v, "after the done rows were pruned");
    let done = status(&v)["queue"]["done"].as_i64();
    assert!(matches!(done, Some(0 | 1)), "done rows left: {done:?}");
}

#[test]
fn a_reader_keeping_an_old_snapshot_does_not_stall_the_engine() {
    // The backend, or a `sqlite3` shell left in a transaction, may hold a
    // read snapshot for a long time. The checkpoint that ends a scan must
    // settle for what it can copy rather than wait out the busy timeout
    // (30 s) for that reader.
    let v = Vault::new();
    v.write("notes/a.md", "one\n");
    v.scan(&[]);
    let reader = v.conn();
    reader.execute_batch("BEGIN").expect("begin");
    let before: i64 = reader
        .query_row("SELECT COUNT(*) FROM file_versions", [], |r| r.get(0))
        .expect("read");
    assert_eq!(before, 1);
    v.write("notes/a.md", "one\ntwo\n");
    // The snapshot is held until the scan has exited: a scan that waited
    // for it would still be running at the deadline.
    let mut scan = v
        .command(&["scan", "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn scan");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = scan.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = scan.kill();
            let _ = scan.wait();
            panic!("scan waited for a reader's old snapshot");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let still: i64 = reader
        .query_row("SELECT COUNT(*) FROM file_versions", [], |r| r.get(0))
        .expect("read");
    assert_eq!(still, 1, "the reader kept its snapshot throughout");
    reader.execute_batch("COMMIT").expect("commit");
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 2);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status <> 'done'"),
        0
    );
}
