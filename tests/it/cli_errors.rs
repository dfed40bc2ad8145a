//! Clear one-line errors and non-zero exits, never a panic, for databases and
//! roots the engine must not touch; and `init`, `status`, `log`, `diff`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::fixture::{Vault, bin};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failed run with one `error:` line containing `needle`, no panic.
fn assert_clear_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].contains(needle), "wanted {needle:?} in {err}");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let v = Vault::new();
    let junk = b"this is a text file, not a database\n".repeat(200);
    std::fs::write(&v.db, &junk).expect("write");
    assert_clear_error(&v.scan_output(&[]), "is not a SQLite database");
    assert_eq!(
        std::fs::read(&v.db).expect("read"),
        junk,
        "the file is untouched"
    );
}

#[test]
fn another_programs_database_is_refused() {
    let v = Vault::new();
    let conn = rusqlite::Connection::open(&v.db).expect("db");
    conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
        .expect("create");
    drop(conn);
    assert_clear_error(&v.scan_output(&[]), "is not an obby database");
    let tables: i64 = rusqlite::Connection::open(&v.db)
        .expect("db")
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(tables, 1, "nothing was created in it");
}

#[test]
fn a_corrupt_database_is_refused() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.scan(&[]);
    // Keep the SQLite header, destroy the pages after it.
    let mut bytes = std::fs::read(&v.db).expect("read");
    for b in bytes.iter_mut().skip(100) {
        *b = 0xAB;
    }
    std::fs::write(&v.db, &bytes).expect("write");
    let _ = std::fs::remove_file(v.db.with_extension("db-wal"));
    let out = v.scan_output(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    assert!(
        stderr(&out).contains("corrupt") || stderr(&out).contains("not a SQLite"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_read_only_database_is_refused() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.scan(&[]);
    std::fs::set_permissions(&v.db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    // As root the mode bits do not stop writes; use the immutable-free way:
    // open the database through a read-only bind is not available, so only
    // assert when the file really is unwritable for us.
    let writable = std::fs::OpenOptions::new().write(true).open(&v.db).is_ok();
    if !writable {
        assert_clear_error(&v.scan_output(&[]), "read-only");
    } else {
        // Running as root: check the engine's own refusal path by running it
        // as `nobody`, who can read but not write the file.
        let dir = v.db.parent().expect("dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&v.root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin(),
                "scan",
                "--root",
            ])
            .arg(&v.root)
            .arg("--db")
            .arg(&v.db)
            .env("LOG_LEVEL", "warn")
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("read-only") || err.contains("Permission denied"),
            "{err}"
        );
    }
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 1);
}

/// A read-only command on a database its user cannot write leaves a WAL
/// index (`-shm`) with the file's mode; once the file is writable again the
/// engine still cannot open it, and the error names the `-shm`, not the
/// database (whose mode is fine by then). Run as `nobody`: root ignores
/// mode bits.
#[test]
fn a_read_only_wal_index_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("vault");
    std::fs::create_dir_all(root.join("notes")).expect("mkdir");
    std::fs::write(root.join(".obbywatch"), "notes/\n").expect("watch");
    std::fs::write(root.join("notes/a.md"), "a\n").expect("note");
    let db = root.join(".db/obby.db");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .args(args)
            .arg("--root")
            .arg(&root)
            .env_remove("DB_PATH")
            .env("LOG_LEVEL", "warn")
            .output()
            .expect("setpriv")
    };
    for p in [dir.path(), root.as_path(), &root.join("notes")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let first = as_nobody(&["scan"]);
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let status = as_nobody(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let shm = std::path::PathBuf::from(format!("{}-shm", db.display()));
    if !shm.exists() {
        return; // this SQLite left no -shm behind: nothing to name
    }
    std::fs::write(root.join("notes/a.md"), "a, again\n").expect("edit");
    let out = as_nobody(&["scan"]);
    if out.status.success() {
        return; // this SQLite could open the -shm after all
    }
    assert_clear_error(&out, &format!("{}", shm.display()));
}

#[test]
fn a_root_without_obbywatch_names_init() {
    let v = Vault::new();
    std::fs::remove_file(v.path(".obbywatch")).expect("remove");
    assert_clear_error(&v.scan_output(&[]), "obby-sync init");
    assert!(
        !v.db.exists(),
        "no database is created for a root that tracks nothing"
    );
    // Nor the default database's folder, `<root>/.db/`, by `scan` or `run`.
    for command in ["scan", "run"] {
        let out = Command::new(bin())
            .args([command, "--root"])
            .arg(&v.root)
            .env_remove("DB_PATH")
            .output()
            .expect("run");
        assert_clear_error(&out, "obby-sync init");
        assert!(!v.path(".db").exists(), "{command} made <root>/.db/");
    }
}

#[test]
fn a_second_engine_on_the_same_database_is_refused() {
    let v = Vault::new();
    let lock = crate::fixture::lock_path(&v.db);
    std::fs::write(&lock, "").expect("lock file");
    let held = std::fs::File::open(&lock).expect("open lock");
    held.lock()
        .expect("take the lock as a running engine would");
    assert_clear_error(&v.scan_output(&[]), "already running");
    drop(held);
    v.scan(&[]);
}

#[test]
fn init_writes_default_pattern_files_and_keeps_existing_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin())
        .args(["init", "--root"])
        .arg(dir.path())
        .output()
        .expect("init");
    assert!(out.status.success());
    let watch = std::fs::read_to_string(dir.path().join(".obbywatch")).expect("watch");
    assert!(watch.lines().any(|l| l == "notes/"), "{watch}");
    let ignore = std::fs::read_to_string(dir.path().join(".obbyignore")).expect("ignore");
    for pattern in ["*.swp", "*~", ".git/", "node_modules/", ".goutputstream-*"] {
        assert!(
            ignore.lines().any(|l| l == pattern),
            "{pattern} in {ignore}"
        );
    }
    std::fs::write(dir.path().join(".obbywatch"), "mine/\n").expect("write");
    let out = Command::new(bin())
        .args(["init", "--root"])
        .arg(dir.path())
        .output()
        .expect("init");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".obbywatch")).expect("read"),
        "mine/\n"
    );
}

/// `obby-sync ARGS --db <the vault's database>`, any exit code.
fn cli(v: &Vault, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--db")
        .arg(&v.db)
        .output()
        .expect("run obby-sync")
}

/// [`cli`], required to succeed: its standard output.
fn cli_ok(v: &Vault, args: &[&str]) -> String {
    let out = cli(v, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn status_log_and_diff_show_history() {
    let v = Vault::new();
    v.write("notes/a.md", "one\n");
    v.scan(&[]);
    v.write("notes/a.md", "one\ntwo\n");
    v.scan(&[]);
    let run = |args: &[&str]| cli_ok(&v, args);
    let status: serde_json::Value =
        serde_json::from_str(&run(&["status", "--json"])).expect("json");
    assert_eq!(status["versions"], 2);
    assert_eq!(status["queue"]["pending"], 0);
    assert_eq!(status["files_tracked"], 1);
    let a = v.abs("notes/a.md");
    let log = run(&["log", &a]);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(
        log.contains("File modified") && log.contains("+1 -0"),
        "{log}"
    );
    let diff = run(&["diff", &a]);
    assert!(diff.contains("+two"), "{diff}");
    let ids: Vec<i64> =
        crate::fixture::query(&v.conn(), "SELECT id FROM file_versions ORDER BY id", |r| {
            r.get(0)
        });
    let first = run(&["diff", &a, "--to", &ids[0].to_string()]);
    assert!(first.contains("+one") && !first.contains("+two"), "{first}");
    let between = run(&[
        "diff",
        &a,
        "--from",
        &ids[0].to_string(),
        "--to",
        &ids[1].to_string(),
    ]);
    assert_eq!(between, diff);
    let missing = Command::new(bin())
        .args(["log", &v.abs("notes/nope.md"), "--db"])
        .arg(&v.db)
        .output()
        .expect("log");
    assert_clear_error(&missing, "no history");

    // A version of another file is refused, naming whose it is, rather than
    // printed under this file's name; a file with no history says so.
    v.write(
        "notes/b.md",
        "bee
",
    );
    v.scan(&[]);
    let refuse = |args: &[&str], needle: &str| assert_clear_error(&cli(&v, args), needle);
    let b = v.abs("notes/b.md");
    refuse(
        &["diff", &b, "--to", &ids[1].to_string()],
        &format!("version {} is a version of {a}, not of {b}", ids[1]),
    );
    refuse(
        &[
            "diff",
            &b,
            "--from",
            &ids[0].to_string(),
            "--to",
            &ids[1].to_string(),
        ],
        &format!("is a version of {a}"),
    );
    refuse(&["diff", &v.abs("notes/nope.md")], "no history for");
    refuse(&["log", &a, "--limit", "0"], "--limit must be at least 1");
    refuse(&["diff", &a, "--to", "999999"], "no version 999999");
    // --from may be any version: the old path of a renamed file, say.
    let across = run(&["diff", &b, "--from", &ids[0].to_string()]);
    assert!(
        across.contains("-one") && across.contains("+bee"),
        "{across}"
    );
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_printing_commands_quietly() {
    // `obby-sync log | head -1`, `diff ... | head` and `search ... | grep -q`: once the reader
    // is gone, the command stops with success and no panic. The read end is
    // closed before the command starts, so its first write already fails.
    let v = Vault::new();
    for i in 0..50 {
        v.write(&format!("notes/welcome{i}.md"), format!("welcome {i}\n"));
    }
    v.scan(&[]);
    let db = v.db.to_str().expect("utf-8 path").to_owned();
    let note = v.abs("notes/welcome1.md");
    for args in [
        vec!["search", "--db", &db, "welcome"],
        vec!["log", "--db", &db, &note],
        vec!["diff", "--db", &db, &note],
        vec!["status", "--db", &db],
        vec!["stats", "--db", &db],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(bin())
            .args(&args)
            .stdout(writer)
            .output()
            .expect("run");
        let err = stderr(&out);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn enqueue_refuses_a_folder_and_an_untracked_file_and_queues_nothing() {
    // The engine would skip both without a word: a folder is no file, and
    // `.obbywatch` (`notes/`) does not select `other.txt`.
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.write("other.txt", "not a note\n");
    let a = v.abs("notes/a.md");
    for (path, says) in [
        (v.abs("notes"), "is a folder"),
        (v.abs("other.txt"), "is not tracked"),
    ] {
        let out = v
            .command(&["enqueue", &a, &path])
            .output()
            .expect("enqueue");
        assert_clear_error(&out, says);
        assert!(stderr(&out).contains(&path), "{}", stderr(&out));
    }
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue"),
        0,
        "nothing queued"
    );
    let ok = v.command(&["enqueue", &a]).output().expect("enqueue");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(v.count("SELECT COUNT(*) FROM event_queue"), 1);
}

#[test]
fn log_follow_lists_the_versions_before_each_rename_under_their_path() {
    let v = Vault::new();
    v.write("notes/a.md", "one\n");
    v.scan(&[]);
    v.write("notes/a.md", "one\ntwo\n");
    v.scan(&[]);
    v.rename("notes/a.md", "notes/b.md");
    v.scan(&[]);
    v.rename("notes/b.md", "notes/deep/c.md");
    v.scan(&[]);
    // Another file that once lived at an old path is not history of c.md.
    v.write("notes/a.md", "a newcomer\n");
    v.scan(&[]);
    let c = v.abs("notes/deep/c.md");
    let log = |extra: &[&str]| {
        let mut args = vec!["log", c.as_str()];
        args.extend_from_slice(extra);
        // Each line: a path, or a version: id, then the description last.
        cli_ok(&v, &args)
            .lines()
            .map(|l| {
                if l.starts_with('/') {
                    l.replace(&*v.abs(""), "<root>/")
                } else {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "  {} … {}",
                        words[0],
                        words[words.len().saturating_sub(3)..].join(" ")
                    )
                }
            })
            .collect::<Vec<_>>()
    };
    let plain = log(&[]);
    assert_eq!(plain.len(), 2, "{plain:#?}");
    let all = log(&["--follow"]);
    let shape: Vec<String> = all
        .iter()
        .map(|l| {
            if l.starts_with("  ") {
                "version".into()
            } else {
                l.clone()
            }
        })
        .collect();
    assert_eq!(
        shape,
        [
            "<root>/notes/deep/c.md",
            "version",
            "<root>/notes/b.md",
            "version",
            "<root>/notes/a.md",
            "version",
            "version",
        ],
        "{all:#?}"
    );
    assert!(all[1].contains("Moved from"), "{all:#?}");
    assert!(all[6].ends_with("File created"), "{all:#?}");
    let two = log(&["--follow", "--limit", "3"]);
    assert_eq!(two.len(), 6, "3 versions under their 3 paths: {two:#?}");
}

/// `log --follow`'s versions and the paths they are listed under, oldest
/// path names relative to the vault.
fn followed(v: &Vault, rel: &str) -> Vec<String> {
    cli_ok(v, &["log", &v.abs(rel), "--follow"])
        .lines()
        .map(|l| match l.strip_prefix(&*v.abs("")) {
            Some(path) => path.to_owned(),
            None => format!("  v{}", l.split_whitespace().next().unwrap_or("?")),
        })
        .collect()
}

#[test]
fn log_follow_stops_at_the_move_that_made_the_path() {
    // An earlier note of the same name, deleted before the rename: not
    // the renamed note's history.
    let v = Vault::new();
    v.write(
        "notes/b.md",
        "old
",
    );
    v.scan(&[]);
    v.remove("notes/b.md");
    v.write(
        "notes/a.md",
        "alpha
",
    );
    v.scan(&[]);
    v.write(
        "notes/a.md",
        "alpha
beta
",
    );
    v.scan(&[]);
    v.rename("notes/a.md", "notes/b.md");
    v.scan(&[]);
    let ids = |v: &Vault, sql: &str| -> Vec<i64> {
        let conn = v.conn();
        let mut st = conn.prepare(sql).expect("prepare");
        st.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let all = ids(&v, "SELECT id FROM file_versions ORDER BY id");
    assert_eq!(all.len(), 4, "old b, a twice, the move");
    assert_eq!(
        followed(&v, "notes/b.md"),
        [
            "notes/b.md".to_owned(),
            format!("  v{}", all[3]),
            "notes/a.md".to_owned(),
            format!("  v{}", all[2]),
            format!("  v{}", all[1]),
        ]
    );

    // A round trip: a → b → a, an edit, a → b again: every version once,
    // each under the path it was made at.
    let v = Vault::new();
    v.write(
        "notes/a.md",
        "one
",
    );
    v.scan(&[]);
    v.rename("notes/a.md", "notes/b.md");
    v.scan(&[]);
    v.rename("notes/b.md", "notes/a.md");
    v.scan(&[]);
    v.write(
        "notes/a.md",
        "one
two
",
    );
    v.scan(&[]);
    v.rename("notes/a.md", "notes/b.md");
    v.scan(&[]);
    let all = ids(&v, "SELECT id FROM file_versions ORDER BY id DESC");
    assert_eq!(all.len(), 5, "{}", v.dump());
    let v_ = |i: usize| format!("  v{}", all[i]);
    assert_eq!(
        followed(&v, "notes/b.md"),
        [
            "notes/b.md".to_owned(),
            v_(0),
            "notes/a.md".to_owned(),
            v_(1),
            v_(2),
            "notes/b.md".to_owned(),
            v_(3),
            "notes/a.md".to_owned(),
            v_(4),
        ]
    );
}

/// A vault moved (or another root given the same database): its history
/// names files under the old root, so the files here are new to it; the
/// scan says so instead of doubling the vault in silence.
#[test]
fn a_database_used_with_another_root_says_so() {
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.scan(&[]);
    let moved = v.root.with_file_name("moved");
    std::fs::rename(&v.root, &moved).expect("move the vault");
    let out = Command::new(bin())
        .args(["scan", "--root"])
        .arg(&moved)
        .arg("--db")
        .arg(&v.db)
        .env_remove("DB_PATH")
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("scan");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("last used with another root"), "{err}");
    assert!(err.contains(&*v.root.to_string_lossy()), "{err}");
}
