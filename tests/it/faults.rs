//! Storage faults: a full disk under the database, the root deleted and
//! recreated, a root whose path has spaces and non-ASCII letters. Each ends
//! with a clear message and a clean stop, or a recovery: never a corrupt
//! database, never a lost change.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fixture::{Vault, bin, wait_for};

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped. `None` when
/// this user cannot mount (not root).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_stops_the_scan_with_a_clear_error_and_a_later_scan_recovers() {
    let v = Vault::new();
    let disk_dir = v.db.parent().expect("dir").join("small-disk");
    let Some(_disk) = SmallDisk::mount(&disk_dir, "3m") else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let db = disk_dir.join("obby.db");
    let files = 200;
    for i in 0..files {
        // 24 KiB each: versions and creation diffs need ~10 MiB, the disk has 3.
        v.write(
            &format!("notes/n{i}.md"),
            format!("{i} {}\n", "word ".repeat(4_800)),
        );
    }
    let scan = || {
        Command::new(bin())
            .args(["scan", "--json", "--batch-size", "16", "--root"])
            .arg(&v.root)
            .arg("--db")
            .arg(&db)
            .env("LOG_LEVEL", "error")
            .output()
            .expect("scan")
    };
    let out = scan();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is full") && !err.contains("panicked"),
        "{err}"
    );
    // The database is intact and holds whole changes only.
    let check = |db: &Path| -> (String, i64, i64) {
        let conn = rusqlite::Connection::open(db).expect("open");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        let versions: i64 = conn
            .query_row("SELECT COUNT(*) FROM file_versions", [], |r| r.get(0))
            .expect("count");
        let done: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM event_queue WHERE status = 'done'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        (ok, versions, done)
    };
    let (ok, versions, done) = check(&db);
    assert_eq!(ok, "ok");
    assert_eq!(
        versions, done,
        "every acknowledged change has its version, and only those"
    );
    assert!(
        versions < files,
        "the disk filled before the end ({versions} versions)"
    );
    // Space comes back: move the database to a roomy disk, scan again.
    let roomy = v.db.parent().expect("dir").join("roomy.db");
    std::fs::copy(&db, &roomy).expect("copy");
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", roomy.display())).expect("copy");
        }
    }
    let out = crate::fixture::scan_into(&v.root, &roomy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, versions, _) = check(&roomy);
    assert_eq!((ok.as_str(), versions), ("ok", files));
}

/// The database deleted under a running engine (a root deleted with the
/// database in it): its writes would go to the unlinked file and be lost,
/// and the lock no longer guards the path. The engine stops with an error
/// instead; the next start reconciles into the new file.
#[test]
fn a_database_deleted_under_a_running_engine_stops_it() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    let mut engine = v.start(&["--debounce-ms", "50", "--rescan-interval", "0", "--no-api"]);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", v.db.display()));
    }
    v.write("notes/b.md", "b\n");
    let status = engine
        .exited_within(Duration::from_secs(20))
        .expect("the engine stops by itself");
    assert_eq!(status.code(), Some(1), "{status}");
    drop(engine);
    // Started again, it records the folder into the new file.
    v.scan(&[]);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 2);
}

#[test]
fn a_root_deleted_and_recreated_is_watched_again() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    let engine = v.start(&["--debounce-ms", "50", "--rescan-interval", "0", "--no-api"]);
    assert!(wait_for(Duration::from_secs(10), || v
        .count("SELECT COUNT(*) FROM file_versions")
        == 1));
    std::fs::remove_dir_all(&v.root).expect("rm -rf root");
    assert!(
        wait_for(Duration::from_secs(10), || v.count(
            "SELECT COUNT(*) FROM file_changes WHERE change_type = 'deleted'"
        ) == 1),
        "the deletion is recorded"
    );
    std::fs::create_dir_all(v.path("notes")).expect("mkdir");
    std::fs::write(v.path(".obbywatch"), "notes/\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    v.write("notes/a.md", "a, again\n");
    v.write("notes/b.md", "b\n");
    let back = wait_for(Duration::from_secs(10), || {
        v.count("SELECT COUNT(*) FROM file_states WHERE is_deleted = 0") == 2
    });
    assert!(back, "changes in the recreated root are recorded");
    assert!(engine.stop().success());
}

#[test]
fn a_root_with_spaces_and_unicode_in_its_path_works() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("My Notes — été ✓");
    std::fs::create_dir_all(root.join("notes/sous dossier")).expect("mkdir");
    std::fs::write(root.join(".obbywatch"), "notes/\n").expect("write");
    std::fs::write(root.join("notes/sous dossier/naïve café.md"), "bonjour\n").expect("write");
    let db = dir.path().join("base de données.db");
    let out = crate::fixture::scan_into(&root, &db);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(&db).expect("db");
    let path: String = conn
        .query_row("SELECT file_path FROM file_versions", [], |r| r.get(0))
        .expect("row");
    assert!(
        path.ends_with("My Notes — été ✓/notes/sous dossier/naïve café.md"),
        "{path}"
    );
    let log = Command::new(bin())
        .arg("log")
        .arg(&path)
        .arg("--db")
        .arg(&db)
        .output()
        .expect("log");
    assert!(log.status.success() && String::from_utf8_lossy(&log.stdout).contains("File created"));
}
