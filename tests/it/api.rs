//! The gRPC api against the real server on 127.0.0.1 (ephemeral ports):
//! every RPC, its errors, the resumable feed, the barrier and the token.

use std::time::Duration;

use sha2::Digest as _;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use obby_sync::api::proto::contenttracker::content_tracker_client::ContentTrackerClient;
use obby_sync::api::proto::contenttracker::{BatchRequest, DiffRequest, HashRequest, TrackRequest};
use obby_sync::api::proto::filewatcher::file_watcher_client::FileWatcherClient;
use obby_sync::api::proto::filewatcher::{EventRequest, PatternUpdate, StopRequest, WatchRequest};
use obby_sync::api::proto::sync::sync_client::SyncClient;
use obby_sync::api::proto::sync::{GetStatusRequest, RescanRequest, SubscribeRequest, SyncRequest};

use crate::fixture::{Running, Vault, query, wait_for};

const FLAGS: &[&str] = &["--debounce-ms", "50", "--rescan-interval", "0"];

fn started(extra: &[&str]) -> (Vault, Running) {
    let v = Vault::new();
    v.write("notes/a.md", "alpha\n");
    let mut flags: Vec<&str> = if extra.contains(&"--debounce-ms") {
        vec!["--rescan-interval", "0"]
    } else {
        FLAGS.to_vec()
    };
    flags.extend_from_slice(extra);
    let running = v.start(&flags);
    assert!(wait_for(Duration::from_secs(10), || v
        .count("SELECT COUNT(*) FROM file_versions")
        == 1));
    (v, running)
}

async fn channel(url: String) -> Channel {
    Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn track_change_answers_with_the_committed_version_and_is_idempotent() {
    let (v, engine) = started(&[]);
    let mut ct = ContentTrackerClient::new(channel(engine.api_url(&v)).await);
    v.write("notes/b.md", "bravo\n");
    let req = TrackRequest {
        file_path: v.abs("notes/b.md"),
        change_type: "modified".into(),
        project_root: String::new(),
    };
    let first = ct
        .track_change(req.clone())
        .await
        .expect("track")
        .into_inner();
    assert!(first.success, "{}", first.error);
    let (id, hash): (i64, String) = v
        .conn()
        .query_row(
            "SELECT id, content_hash FROM file_versions WHERE file_path = ?1",
            [v.abs("notes/b.md")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("version row");
    assert_eq!(
        (
            first.version_id,
            first.content_hash.as_str(),
            first.file_size
        ),
        (id, hash.as_str(), 6)
    );
    assert_eq!(hash, sha256("bravo\n"));
    let second = ct.track_change(req).await.expect("track").into_inner();
    assert_eq!(second, first, "a second call gets the same answer");
    // Relative to project_root.
    let rel = ct
        .track_change(TrackRequest {
            file_path: "b.md".into(),
            change_type: String::new(),
            project_root: v.abs("notes"),
        })
        .await
        .expect("track")
        .into_inner();
    assert_eq!(rel.version_id, id);
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%b.md'"),
        1
    );
    // A file the patterns do not select is not tracked, and says so.
    v.write("elsewhere.md", "x\n");
    let out = ct
        .track_change(TrackRequest {
            file_path: v.abs("elsewhere.md"),
            ..TrackRequest::default()
        })
        .await
        .expect("track")
        .into_inner();
    assert!(!out.success && out.error.contains("not tracked"), "{out:?}");
    drop(engine);
}

#[tokio::test]
async fn paths_outside_the_root_are_refused_and_bad_input_is_invalid() {
    let (v, engine) = started(&[]);
    let url = engine.api_url(&v);
    let mut ct = ContentTrackerClient::new(channel(url.clone()).await);
    let outside = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(outside.path(), "secret\n").expect("write");
    std::os::unix::fs::symlink(outside.path(), v.path("notes/link.md")).expect("symlink");
    let escapes = [
        outside.path().display().to_string(),
        format!("{}/../../etc/passwd", v.abs("notes")),
        "../outside.md".to_owned(),
        v.abs("notes/link.md"),
    ];
    for path in &escapes {
        let track = ct
            .track_change(TrackRequest {
                file_path: path.clone(),
                ..TrackRequest::default()
            })
            .await;
        assert_eq!(
            track.expect_err(path).code(),
            Code::PermissionDenied,
            "track {path}"
        );
        let hash = ct
            .get_content_hash(HashRequest {
                file_path: path.clone(),
            })
            .await;
        assert_eq!(
            hash.expect_err(path).code(),
            Code::PermissionDenied,
            "hash {path}"
        );
        let diff = ct
            .generate_diff(DiffRequest {
                old_file_path: v.abs("notes/a.md"),
                new_file_path: path.clone(),
                ..DiffRequest::default()
            })
            .await;
        assert_eq!(
            diff.expect_err(path).code(),
            Code::PermissionDenied,
            "diff {path}"
        );
    }
    let empty = ct
        .track_change(TrackRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("file_path is empty"));
    let folder = ct
        .track_change(TrackRequest {
            file_path: v.abs("notes"),
            ..TrackRequest::default()
        })
        .await;
    assert_eq!(folder.expect_err("folder").code(), Code::InvalidArgument);
    // A request larger than the limit is refused, not buffered.
    let huge = "x".repeat(obby_sync::api::MAX_REQUEST_BYTES + 1024);
    let big = ct
        .generate_diff(DiffRequest {
            old_content: huge,
            new_content: "y".into(),
            ..DiffRequest::default()
        })
        .await;
    let code = big.expect_err("huge").code();
    assert!(
        matches!(code, Code::OutOfRange | Code::ResourceExhausted),
        "{code:?}"
    );
    // Nothing outside the root got into the database.
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content LIKE '%secret%'"),
        0
    );
    let mut fw = FileWatcherClient::new(channel(url).await);
    let start = fw
        .start_watching(WatchRequest {
            watch_paths: vec!["/etc".into()],
            ..WatchRequest::default()
        })
        .await;
    assert_eq!(start.expect_err("outside").code(), Code::PermissionDenied);
    let bad = fw
        .update_patterns(PatternUpdate {
            watch_patterns: vec!["../*".into()],
            ignore_patterns: vec![],
        })
        .await;
    assert_eq!(bad.expect_err("escape").code(), Code::InvalidArgument);
    drop(engine);
}

#[tokio::test]
async fn hash_diff_and_batch() {
    let (v, engine) = started(&[]);
    let mut ct = ContentTrackerClient::new(channel(engine.api_url(&v)).await);
    // Inside the root but not watched, so only the api reads it.
    v.write("scratch/crlf.md", "one\r\ntwo\r\n");
    let hash = ct
        .get_content_hash(HashRequest {
            file_path: v.abs("scratch/crlf.md"),
        })
        .await
        .expect("hash")
        .into_inner();
    assert!(hash.success);
    assert_eq!(
        (hash.content_hash.as_str(), hash.file_size),
        (sha256("one\ntwo\n").as_str(), 10)
    );
    let missing = ct
        .get_content_hash(HashRequest {
            file_path: v.abs("notes/none.md"),
        })
        .await
        .expect("hash")
        .into_inner();
    assert!(!missing.success && !missing.error.is_empty());
    let by_text = ct
        .generate_diff(DiffRequest {
            old_content: "a\nb\n".into(),
            new_content: "a\nc\n".into(),
            ..DiffRequest::default()
        })
        .await
        .expect("diff")
        .into_inner();
    assert!(by_text.success);
    assert_eq!((by_text.lines_added, by_text.lines_removed), (1, 1));
    assert!(
        by_text.diff_content.contains("-b\n+c\n"),
        "{}",
        by_text.diff_content
    );
    let by_path = ct
        .generate_diff(DiffRequest {
            old_file_path: v.abs("notes/a.md"),
            new_file_path: v.abs("scratch/crlf.md"),
            ..DiffRequest::default()
        })
        .await
        .expect("diff")
        .into_inner();
    assert!(
        by_path.success && by_path.diff_content.contains("+two"),
        "{by_path:?}"
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%crlf.md'"),
        0,
        "hash and diff store nothing"
    );

    for i in 0..3 {
        v.write(&format!("notes/batch{i}.md"), format!("batch {i}\n"));
    }
    let mut requests: Vec<TrackRequest> = (0..3)
        .map(|i| TrackRequest {
            file_path: v.abs(&format!("notes/batch{i}.md")),
            ..TrackRequest::default()
        })
        .collect();
    requests.push(TrackRequest {
        file_path: "/etc/passwd".into(),
        ..TrackRequest::default()
    });
    let mut stream = ct
        .track_batch(BatchRequest { requests })
        .await
        .expect("batch")
        .into_inner();
    let mut answers = Vec::new();
    while let Some(item) = stream.next().await {
        answers.push(item.expect("progress"));
    }
    answers.sort_by(|a, b| a.file_path.cmp(&b.file_path));
    assert_eq!(answers.len(), 4);
    assert!(
        !answers[0].success && answers[0].error.contains("PermissionDenied"),
        "{:?}",
        answers[0]
    );
    for a in &answers[1..] {
        assert!(a.success && a.version_id > 0, "{a:?}");
    }
    drop(engine);
}

#[tokio::test]
async fn start_stop_and_update_patterns_steer_the_watcher_and_persist() {
    let (v, engine) = started(&[]);
    let url = engine.api_url(&v);
    let mut fw = FileWatcherClient::new(channel(url.clone()).await);
    let mut sy = SyncClient::new(channel(url).await);
    // A new watch path inside the root.
    v.write("research/paper.md", "paper\n");
    let ok = fw
        .start_watching(WatchRequest {
            watch_paths: vec![v.abs("research")],
            ignore_patterns: vec!["*.draft".into()],
            debounce_ms: 30,
        })
        .await
        .expect("start")
        .into_inner();
    assert!(ok.success, "{}", ok.error);
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%research/paper.md'"),
        1
    );
    assert_eq!(v.meta("api_watch_patterns").as_deref(), Some("/research/"));
    assert_eq!(v.meta("api_ignore_patterns").as_deref(), Some("*.draft"));
    // Paused: nothing recorded; resumed: the rescan finds what changed.
    assert!(
        fw.stop_watching(StopRequest {})
            .await
            .expect("stop")
            .into_inner()
            .success
    );
    std::thread::sleep(Duration::from_millis(200));
    v.write("notes/while-paused.md", "p\n");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%while-paused.md'"),
        0
    );
    assert!(
        fw.start_watching(WatchRequest::default())
            .await
            .expect("start")
            .into_inner()
            .success
    );
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%while-paused.md'"),
        1
    );
    // UpdatePatterns replaces the api patterns.
    let up = fw
        .update_patterns(PatternUpdate {
            watch_patterns: vec![],
            ignore_patterns: vec!["notes/private/".into()],
        })
        .await
        .expect("update")
        .into_inner();
    assert!(up.success);
    v.write("notes/private/diary.md", "secret\n");
    v.write("notes/public.md", "hello\n");
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%diary.md'"),
        0
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%public.md'"),
        1
    );
    // The api patterns survive a restart.
    assert!(engine.stop().success());
    let engine = v.start(FLAGS);
    v.write("notes/private/diary2.md", "still secret\n");
    let mut sy = SyncClient::new(channel(engine.api_url(&v)).await);
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%diary%'"),
        0
    );
    drop(engine);
}

#[tokio::test]
async fn stream_events_sends_committed_changes() {
    let (v, engine) = started(&[]);
    let mut fw = FileWatcherClient::new(channel(engine.api_url(&v)).await);
    let mut events = fw
        .stream_events(EventRequest {})
        .await
        .expect("stream")
        .into_inner();
    v.write("notes/live.md", "live\n");
    v.rename("notes/a.md", "notes/renamed.md");
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("ok");
        got.push((
            e.event_type.clone(),
            e.path.replace(&format!("{}/", v.root.display()), ""),
            e.old_path.replace(&format!("{}/", v.root.display()), ""),
        ));
        assert!(e.timestamp > 1_700_000_000, "unix seconds: {}", e.timestamp);
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("created".into(), "notes/live.md".into(), String::new()),
            (
                "renamed".into(),
                "notes/renamed.md".into(),
                "notes/a.md".into()
            )
        ]
    );
    drop(engine);
}

#[tokio::test]
async fn subscribe_resumes_from_a_cursor_without_gap_or_duplicate() {
    let (v, engine) = started(&[]);
    let url = engine.api_url(&v);
    let mut sy = SyncClient::new(channel(url.clone()).await);
    let mut stream = sy
        .subscribe(SubscribeRequest {
            from_cursor: 0,
            from_now: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut seen: Vec<i64> = Vec::new();
    for i in 0..10 {
        v.write(&format!("notes/s{i}.md"), format!("{i}\n"));
    }
    while seen.len() < 5 {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        seen.push(e.cursor);
    }
    drop(stream); // disconnect mid-stream
    for i in 10..20 {
        v.write(&format!("notes/s{i}.md"), format!("{i}\n"));
    }
    let last = *seen.last().expect("seen");
    let mut sy2 = SyncClient::new(channel(url).await);
    let mut resumed = sy2
        .subscribe(SubscribeRequest {
            from_cursor: last,
            from_now: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    sy2.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    let total = v.count("SELECT COUNT(*) FROM file_changes") as usize;
    while seen.len() < total {
        let e = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        seen.push(e.cursor);
    }
    let ids: Vec<i64> = query(&v.conn(), "SELECT id FROM file_changes ORDER BY id", |r| {
        r.get(0)
    });
    assert_eq!(seen, ids, "every change once, in order");
    // Cursors the database cannot serve.
    let future = sy2
        .subscribe(SubscribeRequest {
            from_cursor: 1_000_000,
            from_now: false,
        })
        .await;
    assert_eq!(future.expect_err("future").code(), Code::OutOfRange);
    v.conn()
        .execute("DELETE FROM file_changes WHERE id <= 5", [])
        .expect("prune as a backend might");
    let old = sy2
        .subscribe(SubscribeRequest {
            from_cursor: 1,
            from_now: false,
        })
        .await;
    let err = old.expect_err("pruned");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("re-read"), "{}", err.message());
    drop(engine);
}

#[tokio::test]
async fn sync_is_a_barrier_and_rescan_is_accepted() {
    let (v, engine) = started(&["--debounce-ms", "300"]);
    let mut sy = SyncClient::new(channel(engine.api_url(&v)).await);
    for i in 0..50 {
        v.write(&format!("notes/b{i}.md"), format!("{i}\n"));
    }
    // No sleeping: the barrier covers the debounce.
    let cursor = sy
        .sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync")
        .into_inner()
        .cursor;
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), 51);
    assert_eq!(cursor, v.count("SELECT MAX(id) FROM file_changes"));
    let ok = sy
        .rescan(RescanRequest {
            path: v.abs("notes"),
        })
        .await
        .expect("rescan")
        .into_inner();
    assert!(ok.accepted);
    let outside = sy.rescan(RescanRequest { path: "/".into() }).await;
    assert_eq!(outside.expect_err("outside").code(), Code::PermissionDenied);
    let bad = sy.sync(SyncRequest { timeout_ms: -1 }).await;
    assert_eq!(bad.expect_err("negative").code(), Code::InvalidArgument);
    drop(engine);
}

#[tokio::test]
async fn get_status_reports_queue_counts_and_backend() {
    let (v, engine) = started(&[]);
    let mut sy = SyncClient::new(channel(engine.api_url(&v)).await);
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    let s = sy
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(s.uptime_seconds >= 0);
    let mut redacted = s.clone();
    redacted.uptime_seconds = 0;
    assert!(
        s.longest_write_ms > 0.0 && s.longest_write_ms < 10_000.0,
        "{}",
        s.longest_write_ms
    );
    redacted.longest_write_ms = 0.0;
    redacted.queue.as_mut().expect("queue").done = 0;
    redacted.roots[0].path = "<root>".into();
    redacted.roots[0].detail = redacted.roots[0]
        .detail
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ");
    insta::assert_debug_snapshot!(redacted);
    drop(engine);
}

#[tokio::test]
async fn a_token_protects_every_service_but_health() {
    let (v, engine) = started(&["--token", "s3cret"]);
    let ch = channel(engine.api_url(&v)).await;
    let mut sy = SyncClient::new(ch.clone());
    let denied = sy
        .get_status(GetStatusRequest {})
        .await
        .expect_err("no token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    let mut ct = ContentTrackerClient::new(ch.clone());
    assert_eq!(
        ct.get_content_hash(HashRequest {
            file_path: v.abs("notes/a.md")
        })
        .await
        .expect_err("no token")
        .code(),
        Code::Unauthenticated
    );
    let mut with = SyncClient::with_interceptor(ch.clone(), |mut req: tonic::Request<()>| {
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().expect("header"));
        Ok(req)
    });
    assert!(with.get_status(GetStatusRequest {}).await.is_ok());
    let mut wrong = SyncClient::with_interceptor(ch.clone(), |mut req: tonic::Request<()>| {
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().expect("header"));
        Ok(req)
    });
    assert_eq!(
        wrong
            .get_status(GetStatusRequest {})
            .await
            .expect_err("wrong")
            .code(),
        Code::Unauthenticated
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "obby.sync.v1.Sync".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        h.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    drop(engine);
}

#[tokio::test]
async fn a_subscribe_sequence_from_the_beginning() {
    let (v, engine) = started(&[]);
    let mut sy = SyncClient::new(channel(engine.api_url(&v)).await);
    let barrier = SyncRequest { timeout_ms: 10_000 };
    v.write("notes/b.md", "one\n");
    sy.sync(barrier).await.expect("sync");
    v.write("notes/b.md", "one\ntwo\n");
    sy.sync(barrier).await.expect("sync");
    v.rename("notes/a.md", "notes/moved/a.md");
    sy.sync(barrier).await.expect("sync");
    v.remove("notes/b.md");
    sy.sync(barrier).await.expect("sync");
    let mut stream = sy
        .subscribe(SubscribeRequest {
            from_cursor: 0,
            from_now: false,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 5 {
        let mut e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        let root = format!("{}/", v.root.display());
        e.path = e.path.replace(&root, "");
        e.old_path = e.old_path.replace(&root, "");
        assert_eq!(e.timestamp.len(), 26, "{}", e.timestamp);
        e.timestamp = "<local time>".into();
        e.content_hash.truncate(12);
        events.push(e);
    }
    insta::assert_debug_snapshot!(events);
    drop(engine);
}

/// Regression: concurrent TrackChange calls once held every pooled
/// connection while waiting for a second one, starving the workers for 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_track_changes_do_not_starve_the_engine() {
    let (v, engine) = started(&[]);
    for i in 0..20 {
        v.write(&format!("notes/c{i}.md"), format!("{i}\n"));
    }
    let url = engine.api_url(&v);
    let mut sy = SyncClient::new(channel(url.clone()).await);
    sy.sync(SyncRequest { timeout_ms: 10_000 })
        .await
        .expect("sync");
    let started_at = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..20 {
        let url = url.clone();
        let path = v.abs(&format!("notes/c{i}.md"));
        calls.push(tokio::spawn(async move {
            let mut ct = ContentTrackerClient::new(channel(url).await);
            let mut req = tonic::Request::new(TrackRequest {
                file_path: path,
                ..TrackRequest::default()
            });
            req.set_timeout(Duration::from_secs(10));
            ct.track_change(req).await.map(|r| r.into_inner())
        }));
    }
    for call in calls {
        let answer = call.await.expect("task").expect("answered in time");
        assert!(answer.success && answer.version_id > 0, "{answer:?}");
    }
    assert!(
        started_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started_at.elapsed()
    );
    drop(engine);
}
