//! Regression tests for traps the previous trackers fell into, each named
//! after what it guards.

use sha2::{Digest as _, Sha256};

use crate::fixture::{Vault, query};

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn removed_and_added_lines_starting_with_dashes_or_pluses_are_counted() {
    let v = Vault::new();
    v.write(
        "notes/fm.md",
        "---\ntitle: one\n---\n\n-- signature\n++ bonus\nbody\n",
    );
    v.scan(&[]);
    v.write(
        "notes/fm.md",
        "---\ntitle: two\n---\n\n--- rule\n+++ plus\nbody\n",
    );
    v.scan(&[]);
    let (added, removed): (i64, i64) = v
        .conn()
        .query_row(
            "SELECT lines_added, lines_removed FROM content_diffs WHERE change_type = 'modified'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("a modified diff");
    assert_eq!((added, removed), (3, 3));
}

#[test]
fn line_count_counts_newline_terminated_lines_not_unicode_separators() {
    let v = Vault::new();
    v.write(
        "notes/u.md",
        "one\u{2028}still one\u{2029}and \u{85} more\nsecond\nthird without newline",
    );
    v.scan(&[]);
    let lines = v.count("SELECT line_count FROM file_versions");
    assert_eq!(lines, 3);
    assert_eq!(v.count("SELECT line_count FROM file_states"), 3);
}

#[test]
fn crlf_split_across_read_buffer_boundary_hashes_like_the_whole_file() {
    // Over the size limit, the file is hashed in 256 KiB chunks; put a CRLF
    // exactly across the first chunk boundary.
    let chunk = 256 * 1024;
    let mut raw = vec![b'x'; chunk - 1];
    raw.extend_from_slice(b"\r\nafter the boundary\r\n");
    let v = Vault::new();
    v.write("notes/big.md", &raw);
    v.scan(&["--max-file-size", "1024"]);
    let normalized = String::from_utf8(raw).expect("utf-8").replace("\r\n", "\n");
    let (hash, content): (String, Option<String>) = v
        .conn()
        .query_row("SELECT content_hash, content FROM file_versions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("one version");
    assert_eq!(hash, sha256_hex(normalized.as_bytes()));
    assert_eq!(content, None, "over the size limit: hash only");
}

#[test]
fn versions_within_one_second_keep_their_order() {
    let v = Vault::new();
    for i in 0..5 {
        v.write("notes/fast.md", format!("version {i}\n"));
        v.scan(&[]);
    }
    let conn = v.conn();
    let by_time: Vec<i64> = query(
        &conn,
        "SELECT id FROM file_versions ORDER BY timestamp DESC",
        |r| r.get(0),
    );
    let by_id: Vec<i64> = query(
        &conn,
        "SELECT id FROM file_versions ORDER BY id DESC",
        |r| r.get(0),
    );
    assert_eq!(by_time.len(), 5);
    assert_eq!(by_time, by_id);
    let stamps: Vec<String> = query(
        &conn,
        "SELECT timestamp FROM file_versions ORDER BY id",
        |r| r.get(0),
    );
    for pair in stamps.windows(2) {
        assert!(pair[0] < pair[1], "{pair:?}");
        assert_eq!(pair[0].len(), "2026-01-01 00:00:00.000000".len());
    }
}

#[test]
fn deletion_writes_change_and_event_and_keeps_last_hash() {
    let v = Vault::new();
    v.write("notes/gone.md", "soon gone\n");
    v.scan(&[]);
    v.remove("notes/gone.md");
    v.scan(&[]);
    let conn = v.conn();
    // The backend's convention in file_states: a NULL hash, no lines, no bytes.
    let state: (Option<String>, i64, i64, i64) = conn
        .query_row(
            "SELECT content_hash, line_count, file_size, is_deleted FROM file_states",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("state");
    assert_eq!(state, (None, 0, 0, 1));
    // The engine keeps the last hash in its own table.
    let (hash, deleted): (Option<String>, i64) = conn
        .query_row("SELECT content_hash, deleted FROM sync_files", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("engine state");
    assert_eq!(hash.as_deref(), Some(sha256_hex(b"soon gone\n").as_str()));
    assert_eq!(deleted, 1);
    let change: (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT old_content_hash, new_content_hash FROM file_changes WHERE change_type = 'deleted'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("deleted change");
    assert_eq!(change, (Some(sha256_hex(b"soon gone\n")), None));
    assert_eq!(
        v.count("SELECT COUNT(*) FROM events WHERE type = 'deleted'"),
        1
    );
}

#[test]
fn timestamps_are_local_time_text_not_integers() {
    let v = Vault::new();
    v.write("notes/t.md", "t\n");
    v.scan(&[]);
    let conn = v.conn();
    for (table, column) in [
        ("file_versions", "timestamp"),
        ("content_diffs", "timestamp"),
        ("file_changes", "timestamp"),
        ("file_states", "last_modified"),
        ("file_states", "updated_at"),
        ("events", "timestamp"),
        ("events", "created_at"),
    ] {
        let (kind, len): (String, i64) = conn
            .query_row(
                &format!("SELECT typeof({column}), length({column}) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect(table);
        assert_eq!((kind.as_str(), len), ("text", 26), "{table}.{column}");
    }
}

/// Issue 10: on a file system with whole-second mtimes, a same-size rewrite
/// within the second of the last read keeps size and mtime; the file is read
/// again because its mtime is within one tick of that read, as git does for
/// racy index entries. Reading it again records no phantom version.
#[test]
fn racy_mtime_a_same_size_rewrite_within_one_coarse_tick_is_seen() {
    let v = Vault::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    // A whole-second mtime, as FAT or an SMB share gives (the next second,
    // so the scans below run well within one 2 s tick of it even when slow).
    let tick = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs() + 1);
    let write = |text: &str| {
        v.write("notes/racy.md", text);
        std::fs::File::options()
            .write(true)
            .open(v.path("notes/racy.md"))
            .expect("open")
            .set_modified(tick)
            .expect("mtime");
    };
    write("aaaa\n");
    v.scan(&["--settle-ms", "0"]);
    write("bbbb\n");
    let summary = v.scan(&["--settle-ms", "0"]);
    assert_eq!(summary["versions"], 1, "the rewrite was missed: {summary}");
    let newest: String = v
        .conn()
        .query_row(
            "SELECT content FROM file_versions ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("version");
    assert_eq!(newest, "bbbb\n");
    // Read again while still racy: the same content, no new version.
    let again = v.scan(&["--settle-ms", "0"]);
    assert_eq!(again["versions"], 0, "{again}");
}
