//! Hostile input, each with a defined outcome: odd file names, very long
//! paths, empty, huge and million-line files, mixed line endings, a symlink
//! loop, unreadable folders, a file replaced by a folder.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use sha2::Digest as _;

use crate::fixture::{Vault, query};

fn scan_stderr(v: &Vault) -> String {
    let out = v
        .command(&["scan", "--json"])
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("scan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_newline_in_a_file_name_is_tracked_under_its_exact_name() {
    let v = Vault::new();
    v.write("notes/line\nbreak.md", "odd name\n");
    scan_stderr(&v);
    let paths: Vec<String> = query(&v.conn(), "SELECT file_path FROM file_versions", |r| {
        r.get(0)
    });
    assert_eq!(paths, vec![v.abs("notes/line\nbreak.md")]);
}

#[test]
fn a_name_that_is_not_utf8_is_skipped_with_a_warning_and_the_rest_is_tracked() {
    let v = Vault::new();
    let bad = v.path("notes").join(OsStr::from_bytes(b"caf\xe9.md"));
    std::fs::write(&bad, "latin-1 name\n").expect("write");
    v.write("notes/ok.md", "fine\n");
    let stderr = scan_stderr(&v);
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);
}

#[test]
fn a_very_long_path_is_tracked() {
    let v = Vault::new();
    let segment = "d".repeat(200);
    let rel = format!("notes/{}/deep.md", vec![segment.as_str(); 18].join("/"));
    assert!(v.abs(&rel).len() > 3_600);
    v.write(&rel, "deep\n");
    scan_stderr(&v);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);
}

#[test]
fn empty_file_mixed_line_endings_and_all_binary() {
    let v = Vault::new();
    v.write("notes/empty.md", "");
    v.write("notes/mixed.md", "unix\nwindows\r\nold mac\rend");
    v.write(
        "notes/noise.bin",
        (0..=255u8).cycle().take(4096).collect::<Vec<u8>>(),
    );
    scan_stderr(&v);
    let rows: Vec<(String, Option<String>, Option<i64>, String)> = query(
        &v.conn(),
        "SELECT file_path, content, line_count, content_hash FROM file_versions ORDER BY file_path",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    );
    assert_eq!(rows[0].1.as_deref(), Some(""));
    assert_eq!(rows[0].2, Some(0));
    assert_eq!(rows[1].1.as_deref(), Some("unix\nwindows\nold mac\nend"));
    assert_eq!(rows[1].2, Some(4));
    assert_eq!(
        rows[1].3,
        hex::encode(sha2::Sha256::digest(b"unix\nwindows\nold mac\nend"))
    );
    assert_eq!((rows[2].1.as_deref(), rows[2].2), (None, None));
}

#[test]
fn a_100_mib_file_is_hashed_only_and_a_million_line_file_gets_a_one_line_diff() {
    let v = Vault::new();
    let big = "0123456789abcdef".repeat(64 * 1024 * 100); // 100 MiB, no newline
    v.write("notes/huge.md", &big);
    let million: String = (0..1_000_000).map(|i| format!("{i}\n")).collect();
    v.write("notes/million.md", &million);
    scan_stderr(&v);
    let (content, size, hash): (Option<String>, i64, String) = v
        .conn()
        .query_row(
            "SELECT content, size, content_hash FROM file_versions WHERE file_path LIKE '%huge.md'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("huge");
    assert_eq!((content, size), (None, 100 * 1024 * 1024));
    assert_eq!(hash, hex::encode(sha2::Sha256::digest(big.as_bytes())));
    let edited = million.replacen("500000\n", "five hundred thousand\n", 1);
    v.write("notes/million.md", &edited);
    scan_stderr(&v);
    let (added, removed, text): (i64, i64, String) = v
        .conn()
        .query_row(
            "SELECT lines_added, lines_removed, diff_content FROM content_diffs WHERE change_type = 'modified'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("diff");
    assert_eq!((added, removed), (1, 1));
    assert!(text.lines().count() < 15, "a small diff: {text}");
}

#[test]
fn a_symlink_loop_does_not_hang_the_walk() {
    let v = Vault::new();
    std::fs::create_dir_all(v.path("notes/a")).expect("mkdir");
    std::os::unix::fs::symlink(v.path("notes"), v.path("notes/a/back-to-notes")).expect("symlink");
    std::os::unix::fs::symlink(v.path("notes/self"), v.path("notes/self")).expect("self-loop");
    v.write("notes/a/real.md", "real\n");
    scan_stderr(&v);
    let paths: Vec<String> = query(&v.conn(), "SELECT file_path FROM file_versions", |r| {
        r.get(0)
    });
    assert_eq!(paths, vec![v.abs("notes/a/real.md")]);
}

#[test]
fn an_unreadable_folder_is_skipped_with_a_warning_and_the_rest_is_tracked() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let v = Vault::new();
    v.write("notes/locked/secret.md", "secret\n");
    v.write("notes/open.md", "open\n");
    std::fs::set_permissions(
        v.path("notes/locked"),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod");
    let as_root = std::fs::metadata("/proc/self").expect("proc").uid() == 0;
    let mut cmd = if as_root {
        for d in [
            v.db.parent().expect("dir"),
            v.root.as_path(),
            v.path("notes").as_path(),
        ] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        std::fs::set_permissions(v.path(".obbywatch"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        std::fs::set_permissions(
            v.path("notes/open.md"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            crate::fixture::bin(),
        ]);
        c
    } else {
        Command::new(crate::fixture::bin())
    };
    let out = cmd
        .args(["scan", "--json", "--root"])
        .arg(&v.root)
        .arg("--db")
        .arg(&v.db)
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("scan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("could not read") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    let paths: Vec<String> = query(&v.conn(), "SELECT file_path FROM file_versions", |r| {
        r.get(0)
    });
    assert_eq!(paths, vec![v.abs("notes/open.md")]);
    std::fs::set_permissions(
        v.path("notes/locked"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod back");
}

#[test]
fn a_file_replaced_by_a_folder_of_the_same_name_is_a_deletion_and_new_files() {
    let v = Vault::new();
    v.write("notes/x.md", "a file\n");
    scan_stderr(&v);
    v.remove("notes/x.md");
    v.write("notes/x.md/inside.md", "now a folder\n");
    scan_stderr(&v);
    // The deletion and the new file are independent: their order is not.
    let mut changes = v.changes();
    changes.sort();
    assert_eq!(
        changes,
        vec![
            ("created".to_owned(), "notes/x.md".to_owned(), None),
            (
                "created".to_owned(),
                "notes/x.md/inside.md".to_owned(),
                None
            ),
            ("deleted".to_owned(), "notes/x.md".to_owned(), None),
        ]
    );
}

/// Issue 10: a folder replaced by a symlink to a folder outside the root
/// (notes moved to a synced folder and linked back) is outside the root for
/// the walker and the workers alike: its files are recorded deleted once,
/// and not found gone again at every later scan; nothing is read through
/// the link.
#[test]
fn a_symlinked_parent_folder_is_outside_the_root_for_walker_and_worker_alike() {
    let v = Vault::new();
    v.write("notes/real/x.md", "inside\n");
    v.write("notes/kept.md", "kept\n");
    v.scan(&["--settle-ms", "0"]);
    let outside = v.root.parent().expect("parent").join("synced");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::rename(v.path("notes/real"), outside.join("real")).expect("move out");
    std::os::unix::fs::symlink(outside.join("real"), v.path("notes/real")).expect("link");
    std::fs::write(outside.join("real/x.md"), "changed outside\n").expect("write");
    let first = v.scan(&["--settle-ms", "0"]);
    assert_eq!(first["changes"], 1, "{first}");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE change_type = 'deleted' AND file_path LIKE '%real/x.md'"),
        1
    );
    // Found once: the next scan finds nothing to do.
    let second = v.scan(&["--settle-ms", "0"]);
    assert_eq!(second["enqueued"], 0, "{second}");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content = 'changed outside\n'"),
        0,
        "a file was read through the link"
    );
}
