//! The Query service (`obby.query.QueryService`) against the real server on
//! 127.0.0.1, the search index behind it (ranking, snippets, prefix, all
//! versions, malformed queries), the index's consistency after a kill -9
//! mid-scan, the resumable backfill of a backend-made database with
//! history, the newest-only index after edits, deletes, moves, a return and
//! the backend's own writes, both indexes across a rebuild of
//! `file_versions` at schema 7, topics from the backend's tables, and
//! `search` / `stats` on the command line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use obby_sync::api::proto::query::query_service_client::QueryServiceClient;
use obby_sync::api::proto::query::{
    DiffQuery, FileQuery, SearchQuery, SinceQuery, StatsQuery, TimeQuery, TopicQuery,
};

use crate::fixture::{Vault, wait_for};

/// The backend's `schema.sql`, as the tests know it.
const BACKEND_SCHEMA: &str = include_str!("../fixtures/backend_schema.sql");

const FLAGS: &[&str] = &["--debounce-ms", "50", "--rescan-interval", "0"];

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    )
    .expect("fits")
}

async fn client(url: String) -> QueryServiceClient<Channel> {
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    QueryServiceClient::new(channel)
}

/// The history every RPC test reads, made by scans (deterministic): an
/// edited note, a moved one, a deleted one, and filler notes so that
/// bm25's word rarity means something.
fn history() -> (Vault, i64) {
    let v = Vault::new();
    let started = now();
    let scan = |v: &Vault| {
        let s = v.scan(&["--settle-ms", "0", "--workers", "1"]);
        assert_eq!(s["failed"], 0, "{s}");
    };
    v.write(
        "notes/work-notes/meeting.md",
        "# Meeting\nBudget review with the finance team.\n",
    );
    v.write(
        "notes/work-notes/plan.md",
        "Budget plan: budget, budget and more budget.\n",
    );
    v.write(
        "notes/home/garden.md",
        "Tomatoes and basil in the garden.\n",
    );
    v.write("notes/rust.md", "Rust ownership and borrowing.\n");
    v.write("notes/old.md", "An obsolete budget draft.\n");
    for i in 0..20 {
        v.write(
            &format!("notes/filler/f{i:02}.md"),
            format!("Lorem ipsum dolor sit amet {i}.\n"),
        );
    }
    scan(&v);
    v.write(
        "notes/work-notes/meeting.md",
        "# Meeting\nBudget approved by the finance team.\nNext: the roadmap.\n",
    );
    v.rename("notes/rust.md", "notes/work-notes/rust.md");
    v.remove("notes/old.md");
    scan(&v);
    (v, started)
}

/// A timestamp on the wire: checked to be this test's and redacted.
fn ts(t: i64, started: i64) -> Value {
    assert!(
        (started - 2..=now() + 2).contains(&t),
        "timestamp {t} is not from this test (started {started})"
    );
    json!("<ts>")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_answers_from_the_database_as_the_contract_says() {
    let (v, started) = history();
    let engine = v.start(FLAGS);
    let mut q = client(engine.query_url(&v)).await;
    let root = v.root.to_str().expect("utf-8").to_owned();
    let rel = |p: &str| p.replace(&root, "<root>");
    // The idle engine unindexes the newest-only index's stale entries;
    // until then bm25's statistics count them, so the ranks below are
    // those of an idle engine.
    assert!(
        wait_for(Duration::from_secs(30), || {
            v.count("SELECT COUNT(*) FROM search_stale") == 0
        }),
        "the idle engine purged the stale entries"
    );

    let diffs: Vec<_> = q
        .get_recent_diffs(DiffQuery { limit: 0 })
        .await
        .expect("recent diffs")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream");
    // Newest first, ids unique.
    let ids: Vec<i64> = diffs.iter().map(|d| d.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(
        ids.len() as i64,
        v.count("SELECT COUNT(*) FROM content_diffs")
    );
    let recent: Vec<Value> = diffs
        .iter()
        .filter(|d| !d.file_path.contains("/filler/"))
        .map(|d| {
            json!({
                "file_path": rel(&d.file_path),
                "change_type": d.change_type,
                "diff_content": rel(&d.diff_content),
                "lines": [d.lines_added, d.lines_removed],
                "timestamp": ts(d.timestamp, started),
                "content_hash": &d.content_hash[..8],
                "size": d.size,
            })
        })
        .collect();
    let two = q
        .get_recent_diffs(DiffQuery { limit: 2 })
        .await
        .expect("limited")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream");
    assert_eq!(two.iter().map(|d| d.id).collect::<Vec<_>>(), ids[..2]);

    let since_start = q
        .get_diffs_since(SinceQuery {
            timestamp: started - 1,
            limit: 10_000,
        })
        .await
        .expect("since")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream");
    assert_eq!(since_start.len(), ids.len());
    let future = q
        .get_diffs_since(SinceQuery {
            timestamp: now() + 3_600,
            limit: 0,
        })
        .await
        .expect("since")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream");
    assert!(future.is_empty(), "{future:?}");

    let versions: Vec<Value> = q
        .get_file_versions(FileQuery {
            file_path: "notes/work-notes/meeting.md".into(),
            limit: 0,
        })
        .await
        .expect("versions")
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("stream")
        .iter()
        .map(|f| {
            json!({
                "file_path": rel(&f.file_path),
                "content_hash": &f.content_hash[..8],
                "size": f.size,
                "timestamp": ts(f.timestamp, started),
            })
        })
        .collect();

    let search = |query: &str, all_versions: bool, prefix: bool| SearchQuery {
        query: query.into(),
        limit: 0,
        all_versions,
        prefix,
    };
    let mut hits = Vec::new();
    for (query, all, prefix) in [
        ("budget", false, false),
        ("budget", true, false),
        ("gard", false, false),
        ("gard", false, true),
        ("ownership", true, false),
        ("\"finance team\" approved", false, false),
        ("budget OR NEAR(x) content:y", false, false),
    ] {
        let found: Vec<Value> = q
            .search_content(search(query, all, prefix))
            .await
            .unwrap_or_else(|e| panic!("search {query:?}: {e}"))
            .into_inner()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("stream")
            .iter()
            .map(|h| {
                json!({
                    "file_path": rel(&h.file_path),
                    "highlighted": rel(&h.highlighted),
                    "content_chars": h.content.chars().count(),
                    "rank": format!("{:.3}", h.rank),
                    "timestamp": ts(h.timestamp, started),
                    "version_is_stored": v.count(&format!(
                        "SELECT COUNT(*) FROM file_versions WHERE id = {} AND content = '{}'",
                        h.version_id,
                        h.content.replace('\'', "''")
                    )) == 1,
                })
            })
            .collect();
        hits.push(json!({"query": query, "all_versions": all, "prefix": prefix, "hits": found}));
    }

    let mut topics = Vec::new();
    for topic in ["garden", "finance", "WORK", "nothing-like-this"] {
        let mut found = q
            .get_topic_files(TopicQuery {
                topic: topic.into(),
                limit: 0,
            })
            .await
            .expect("topic")
            .into_inner()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("stream");
        // Path matches come newest first, by whole seconds: sorted here so
        // the snapshot does not depend on when a second ticked.
        found.sort_by(|a, b| a.file_path.cmp(&b.file_path));
        let files: Vec<Value> = found
            .iter()
            .map(|f| {
                json!({"file_path": rel(&f.file_path), "size": f.size,
                       "last_modified": ts(f.last_modified, started)})
            })
            .collect();
        topics.push(json!({"topic": topic, "files": files}));
    }

    let analysis = q
        .get_time_analysis(TimeQuery {
            start_timestamp: 0,
            end_timestamp: 0,
        })
        .await
        .expect("analysis")
        .into_inner();
    let stats = q
        .get_activity_stats(StatsQuery {
            start_timestamp: started - 1,
            end_timestamp: now() + 1,
        })
        .await
        .expect("stats")
        .into_inner();
    let before = q
        .get_activity_stats(StatsQuery {
            start_timestamp: 1,
            end_timestamp: started - 10,
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        (
            before.files_changed,
            before.total_changes,
            before.lines_added
        ),
        (0, 0, 0),
        "{before:?}"
    );
    assert_eq!(
        stats.total_changes,
        v.count("SELECT COUNT(*) FROM file_changes")
    );

    insta::assert_json_snapshot!(json!({
        "GetRecentDiffs (filler left out)": recent,
        "GetFileVersions notes/work-notes/meeting.md": versions,
        "SearchContent": hits,
        "GetTopicFiles": topics,
        "GetTimeAnalysis": {
            "total_files_changed": analysis.total_files_changed,
            "total_lines_added": analysis.total_lines_added,
            "total_lines_removed": analysis.total_lines_removed,
            "top_topics": analysis.top_topics,
            "top_keywords": analysis.top_keywords,
        },
        "GetActivityStats": {
            "files_changed": stats.files_changed,
            "total_changes": stats.total_changes,
            "lines_added": stats.lines_added,
            "lines_removed": stats.lines_removed,
            "avg_changes_per_file": stats.avg_changes_per_file,
        },
    }));
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_invalid_argument_with_the_reason() {
    let (v, _) = history();
    let engine = v.start(FLAGS);
    let mut q = client(engine.query_url(&v)).await;
    for (query, says) in [
        ("", "empty"),
        ("   ", "empty"),
        ("!!! ---", "no letters or digits"),
        ("\"unclosed phrase", "unbalanced double quote"),
        ("a\0b", "NUL"),
    ] {
        let err = q
            .search_content(SearchQuery {
                query: query.into(),
                ..SearchQuery::default()
            })
            .await
            .expect_err(query);
        assert_eq!(err.code(), Code::InvalidArgument, "{query:?}: {err:?}");
        assert!(err.message().contains(says), "{query:?}: {}", err.message());
    }
    let long = q
        .search_content(SearchQuery {
            query: "word ".repeat(300),
            ..SearchQuery::default()
        })
        .await
        .expect_err("long");
    assert_eq!(long.code(), Code::InvalidArgument);
    let negative = q
        .get_recent_diffs(DiffQuery { limit: -1 })
        .await
        .expect_err("negative limit");
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("limit"), "{negative:?}");
    let reversed = q
        .get_time_analysis(TimeQuery {
            start_timestamp: 2_000,
            end_timestamp: 1_000,
        })
        .await
        .expect_err("reversed");
    assert_eq!(reversed.code(), Code::InvalidArgument);
    let empty_topic = q
        .get_topic_files(TopicQuery {
            topic: " ".into(),
            limit: 0,
        })
        .await
        .expect_err("empty topic");
    assert_eq!(empty_topic.code(), Code::InvalidArgument);
    let outside = q
        .get_file_versions(FileQuery {
            file_path: "/etc/passwd".into(),
            limit: 0,
        })
        .await
        .expect_err("outside");
    assert_eq!(outside.code(), Code::PermissionDenied);
    // The service still answers.
    let ok = q
        .search_content(SearchQuery {
            query: "budget".into(),
            ..SearchQuery::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_protects_the_query_service_and_no_query_turns_it_off() {
    let (v, _) = history();
    let engine = v.start_with_env(FLAGS, &[("OBBY_TOKEN", "s3cret")]);
    let mut q = client(engine.query_url(&v)).await;
    let refused = q
        .get_activity_stats(StatsQuery::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(StatsQuery::default());
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("header"));
    let stats = q.get_activity_stats(req).await.expect("with token");
    assert!(stats.into_inner().total_changes > 0);
    drop(engine);

    let engine = v.start(&[FLAGS, &["--no-query"]].concat());
    assert!(v.meta("api_tracker_addr").is_some());
    assert_eq!(v.meta("api_query_addr"), None, "no query port recorded");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_and_keywords_come_from_the_backends_semantic_tables() {
    let (v, _) = history();
    // What the backend's semantic pipeline writes: one entry about the
    // garden (its path relative to the root), one about the meeting
    // (absolute).
    {
        let conn = v.conn();
        let entry = |path: &str, summary: &str, topics: &[&str], keywords: &[&str]| {
            conn.execute(
                "INSERT INTO semantic_entries (timestamp, date, time, type, summary, impact,
                     file_path, searchable_text)
                 VALUES (datetime('now', 'localtime'), date('now'), time('now'), 'change', ?1,
                     'minor', ?2, ?1)",
                [summary, path],
            )
            .expect("entry");
            let id = conn.last_insert_rowid();
            for t in topics {
                conn.execute(
                    "INSERT INTO semantic_topics (entry_id, topic) VALUES (?1, ?2)",
                    rusqlite::params![id, t],
                )
                .expect("topic");
            }
            for k in keywords {
                conn.execute(
                    "INSERT INTO semantic_keywords (entry_id, keyword) VALUES (?1, ?2)",
                    rusqlite::params![id, k],
                )
                .expect("keyword");
            }
        };
        entry(
            "notes/home/garden.md",
            "Planted tomatoes",
            &["Gardening"],
            &["tomatoes"],
        );
        entry(
            &v.abs("notes/work-notes/meeting.md"),
            "Budget approved",
            &["Finance", "Planning"],
            &["budget"],
        );
        // About a deleted note: never returned.
        entry(
            &v.abs("notes/old.md"),
            "Old draft",
            &["Finance"],
            &["draft"],
        );
    }
    let engine = v.start(FLAGS);
    let mut q = client(engine.query_url(&v)).await;
    let files = |topic: &'static str| {
        let mut q = q.clone();
        async move {
            q.get_topic_files(TopicQuery {
                topic: topic.into(),
                limit: 0,
            })
            .await
            .expect("topic")
            .into_inner()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("stream")
            .into_iter()
            .map(|f| f.file_path)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        files("gardening").await,
        vec![v.abs("notes/home/garden.md")]
    );
    assert_eq!(
        files("FINANCE").await,
        vec![v.abs("notes/work-notes/meeting.md")]
    );
    // A keyword is a topic too.
    assert_eq!(
        files("Budget").await,
        vec![v.abs("notes/work-notes/meeting.md")]
    );
    // Not in the backend's tables: the notes' own paths, then text.
    assert_eq!(files("basil").await, vec![v.abs("notes/home/garden.md")]);
    let analysis = q
        .get_time_analysis(TimeQuery::default())
        .await
        .expect("analysis")
        .into_inner();
    // The meeting changed twice, the garden once; the deleted draft once.
    assert_eq!(
        analysis.top_topics,
        vec!["Finance", "Planning", "Gardening"],
        "{analysis:?}"
    );
    assert_eq!(
        analysis.top_keywords,
        vec!["budget", "draft", "tomatoes"],
        "{analysis:?}"
    );
    drop(engine);
}

/// The first column of every row a query returns.
fn query_ids(conn: &rusqlite::Connection, sql: &str) -> Vec<i64> {
    conn.prepare(sql)
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids")
}

/// The version ids an index holds (its `_docsize` rows).
fn indexed_ids(conn: &rusqlite::Connection, table: &str) -> Vec<i64> {
    query_ids(conn, &format!("SELECT id FROM {table}_docsize ORDER BY id"))
}

/// Entries in the two indexes together.
fn index_rows(v: &Vault) -> i64 {
    let conn = v.conn();
    (indexed_ids(&conn, "file_versions_fts").len() + indexed_ids(&conn, "file_current_fts").len())
        as i64
}

/// How the versions are split between the indexes (schema 9): the recent
/// index holds exactly `search_current`'s and `search_stale`'s versions,
/// the history index every other version but those in the backfill's
/// range, and FTS5's own check passes on both.
fn index_check(v: &Vault) -> Result<(), String> {
    let conn = v.conn();
    let ids = |sql: &str| query_ids(&conn, sql);
    let recent = ids("SELECT version_id FROM search_current
                      UNION SELECT version_id FROM search_stale ORDER BY 1");
    let history = ids("SELECT fv.id FROM file_versions fv
         WHERE fv.id NOT IN (SELECT version_id FROM search_current UNION SELECT version_id FROM search_stale)
           AND fv.id NOT BETWEEN
               COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
           AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0)
         ORDER BY 1");
    let held = indexed_ids(&conn, "file_current_fts");
    if held != recent {
        return Err(format!(
            "the recent index holds {held:?}, not the current and stale versions {recent:?}"
        ));
    }
    let held = indexed_ids(&conn, "file_versions_fts");
    if held != history {
        return Err(format!(
            "the history index holds {held:?}, not the other versions {history:?}"
        ));
    }
    for table in ["file_versions_fts", "file_current_fts"] {
        conn.execute(
            &format!("INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 0)"),
            [],
        )
        .map_err(|e| format!("{table}: {e}"))?;
    }
    Ok(())
}

#[test]
fn the_index_holds_exactly_the_versions_after_a_kill_9_mid_scan() {
    let v = Vault::new();
    const FILES: i64 = 4_000;
    for i in 0..FILES {
        v.write(
            &format!("notes/d{:02}/n{i:05}.md", i % 50),
            format!("note {i} about topic{} and more words\n", i % 97),
        );
    }
    let mut killed_midway = false;
    for _ in 0..3 {
        let mut child = v
            .command(&["scan", "--json", "--settle-ms", "0", "--batch-size", "64"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn scan");
        let started = wait_for(Duration::from_secs(60), || {
            v.db.exists()
                && rusqlite::Connection::open_with_flags(
                    &v.db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .ok()
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM file_versions", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .ok()
                })
                .is_some_and(|n| n > 0)
        });
        assert!(started, "the scan wrote no version");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let versions = v.count("SELECT COUNT(*) FROM file_versions");
        assert_eq!(index_rows(&v), versions, "index rows == version rows");
        index_check(&v).expect("each version in one index");
        if versions < FILES {
            killed_midway = true;
            break;
        }
        std::fs::remove_file(&v.db).expect("start over");
    }
    assert!(killed_midway, "every scan finished before the kill");
    let summary = v.scan(&["--settle-ms", "0"]);
    assert_eq!(summary["failed"], 0);
    assert_eq!(v.count("SELECT COUNT(*) FROM file_versions"), FILES);
    assert_eq!(index_rows(&v), FILES);
    index_check(&v).expect("each version in one index");
    // And each holds the right words: every note of one topic, found.
    let out = v
        .command(&[
            "search",
            "--all-versions",
            "--json",
            "--limit",
            "1000",
            "topic5",
        ])
        .output()
        .expect("search");
    let hits: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        hits.as_array().map(Vec::len),
        Some((0..FILES).filter(|i| i % 97 == 5).count()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database the backend made, with `versions` versions of history it
/// wrote before obby-sync ever ran (notes that are gone from disk).
fn backend_history(v: &Vault, paths: usize, per_path: usize) {
    let conn = rusqlite::Connection::open(&v.db).expect("create backend db");
    conn.execute_batch(BACKEND_SCHEMA).expect("backend schema");
    let tx = conn.unchecked_transaction().expect("tx");
    let filler = "Some more text of the note, repeated to give it a size. ".repeat(20);
    for p in 0..paths {
        for n in 0..per_path {
            let content = format!("history{p} draft{n} {filler}\n");
            tx.execute(
                "INSERT INTO file_versions (file_path, content_hash, content, line_count, timestamp,
                     change_description)
                 VALUES (?1, ?2, ?3, 1, datetime('now', 'localtime', ?4), 'File modified')",
                rusqlite::params![
                    v.abs(&format!("notes/gone/h{p:03}.md")),
                    crate::traps::sha256_hex(content.as_bytes()),
                    content,
                    format!("-{} minutes", (per_path - n) * 10),
                ],
            )
            .expect("backend version");
        }
    }
    tx.commit().expect("commit");
}

#[test]
fn the_backfill_of_a_backend_database_resumes_after_kill_9_and_completes() {
    let v = Vault::new();
    backend_history(&v, 100, 20);
    let history = 2_000_i64;
    v.write("notes/live.md", "written while the backfill runs\n");
    // Small batches, so the kill lands midway.
    let engine = v.start_with_env(FLAGS, &[("OBBY_SEARCH_BACKFILL_ROWS", "5")]);
    let cursor = |v: &Vault| {
        v.meta("search_backfill_next")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(v.meta("search_backfill_end").as_deref(), Some("2000"));
    assert!(
        wait_for(Duration::from_secs(30), || cursor(&v) > 200),
        "the backfill does not move"
    );
    // The engine keeps recording meanwhile.
    v.write("notes/during.md", "a change during the backfill\n");
    assert!(wait_for(Duration::from_secs(20), || v.count(
        "SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%during.md'"
    ) == 1));
    engine.kill9();
    let next = cursor(&v);
    assert!(
        next <= history,
        "the backfill finished before the kill ({next})"
    );
    // Indexed: the backend's versions below the cursor, and every version
    // written since the migration.
    // (index_check knows the backfill's range: versions in it that the
    // recent index does not hold are in neither index.)
    index_check(&v).expect("the partial index is sound");
    let status: Value = serde_json::from_slice(
        &v.command(&["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("status --json");
    // Pending: the backend's versions from the cursor on, but for the
    // newest of each path, which the recent index holds (schema 9).
    let pending = v.count(&format!(
        "SELECT COUNT(*) FROM file_versions fv WHERE id BETWEEN {next} AND {history}
           AND NOT EXISTS (SELECT 1 FROM search_current c WHERE c.version_id = fv.id)"
    ));
    assert!(pending > 0 && pending < history - (next - 1), "{pending}");
    assert_eq!(status["search_index"]["pending"], pending);

    // The next scan resumes where the killed run stopped and completes.
    let summary = v.scan(&["--settle-ms", "0"]);
    assert_eq!(summary["search_indexed"], pending, "{summary}");
    let versions = v.count("SELECT COUNT(*) FROM file_versions");
    assert_eq!(index_rows(&v), versions);
    index_check(&v).expect("each version in one index");
    let status: Value = serde_json::from_slice(
        &v.command(&["status", "--json"])
            .output()
            .expect("status")
            .stdout,
    )
    .expect("status --json");
    assert_eq!(status["search_index"]["pending"], 0);
    assert_eq!(status["search_index"]["indexed"], versions);
    // The backend's history is searchable.
    let out = v
        .command(&["search", "--all-versions", "--json", "history7", "draft3"])
        .output()
        .expect("search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{hits}");
    assert_eq!(hits[0]["file_path"], v.abs("notes/gone/h007.md"));
}

/// The index holds absolute paths: a word of the root's own path (here
/// `vault`, the root's folder) was in every note's path and found every
/// note. It now searches the text only; a word of the path below the root
/// still finds the note by its path.
#[test]
fn a_word_of_the_roots_own_path_does_not_find_every_note() {
    let v = Vault::new();
    assert!(v.root.ends_with("vault"), "{}", v.root.display());
    v.write("notes/shopping.md", "groceries: milk\n");
    v.write("notes/todo.md", "call the dentist\n");
    v.write("notes/safe.md", "the vault door is stuck\n");
    v.scan(&[]);
    let paths = |word: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec!["search", word, "--json"];
        args.extend_from_slice(extra);
        let out = v.command(&args).output().expect("search");
        if !out.status.success() {
            return Vec::new();
        }
        let hits: Value = serde_json::from_slice(&out.stdout).expect("json");
        let mut paths: Vec<String> = hits
            .as_array()
            .expect("array")
            .iter()
            .map(|h| h["file_path"].as_str().expect("path").to_owned())
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(paths("vault", &[]), [v.abs("notes/safe.md")]);
    assert_eq!(paths("vau*", &[]), [v.abs("notes/safe.md")]);
    assert_eq!(
        paths("vault", &["--all-versions"]),
        [v.abs("notes/safe.md")]
    );
    assert_eq!(paths("shopping", &[]), [v.abs("notes/shopping.md")]);
    // `notes` is below the root: every note's path has it.
    assert_eq!(paths("notes", &[]).len(), 3);
}

#[test]
fn cli_search_and_stats_answer_without_an_engine_and_explain_bad_input() {
    let (v, _) = history();
    let run = |args: &[&str]| v.command(args).output().expect("run obby-sync");
    let out = run(&["search", "budget", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits: Value = serde_json::from_slice(&out.stdout).expect("json");
    let paths: Vec<&str> = hits
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["file_path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        [
            v.abs("notes/work-notes/plan.md"),
            v.abs("notes/work-notes/meeting.md")
        ]
    );
    let all = run(&[
        "search",
        "budget",
        "--all-versions",
        "--json",
        "--limit",
        "2",
    ]);
    let all: Value = serde_json::from_slice(&all.stdout).expect("json");
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let text = run(&["search", "gard", "--prefix"]);
    let text = String::from_utf8(text.stdout).expect("utf-8");
    assert!(text.contains("**garden**"), "{text}");
    // `gard*` is the same prefix search, word by word; `gard` alone is a
    // word of its own that no note holds.
    let starred = run(&["search", "gard*"]);
    assert_eq!(
        String::from_utf8(starred.stdout).expect("utf-8"),
        text,
        "gard* is gard --prefix"
    );
    let exact = run(&["search", "gard"]);
    assert!(exact.status.success());
    assert!(
        String::from_utf8_lossy(&exact.stderr).contains("no match"),
        "{exact:?}"
    );

    for (args, says) in [
        (&["search", "!!!"][..], "no letters or digits"),
        (&["search", "\"open"], "unbalanced double quote"),
        (&["search", "x", "--limit", "0"], "--limit"),
        (&["stats", "--since", "last tuesday"], "is not a time"),
        (
            &["stats", "--since", "2026-12-01", "--until", "2026-11-01"],
            "before",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }

    let stats = run(&["stats", "--json"]);
    assert!(stats.status.success());
    let stats: Value = serde_json::from_slice(&stats.stdout).expect("json");
    assert_eq!(
        stats["activity"]["total_changes"],
        v.count("SELECT COUNT(*) FROM file_changes")
    );
    assert_eq!(stats["analysis"]["topics_from"], "notes");
    let text = run(&["stats", "--since", "1d"]);
    let text = String::from_utf8(text.stdout).expect("utf-8");
    assert!(text.contains("top topics    notes/filler"), "{text}");

    let nowhere = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(crate::fixture::bin())
        .args(["search", "x", "--db"])
        .arg(nowhere.path().join("none.db"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database here yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The recent index (`file_current_fts`) holds exactly the newest version
/// of each path `sync_files` does not mark deleted and the stale versions,
/// the history index every other version ([`index_check`]); newest-only and
/// every-version searches find what a plain reading of `file_versions`
/// finds; and the idle work moves every stale version to the history index.
fn check_current_index(v: &Vault, step: &str) {
    let conn = v.conn();
    let rows = |sql: &str| -> Vec<(String, i64)> {
        conn.prepare(sql)
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let want = rows(
        "SELECT fv.file_path, MAX(fv.id) FROM file_versions fv
         WHERE NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = fv.file_path AND s.deleted <> 0)
         GROUP BY fv.file_path ORDER BY 1",
    );
    let named = rows("SELECT file_path, version_id FROM search_current ORDER BY 1");
    assert_eq!(
        named, want,
        "{step}: search_current names the newest live versions"
    );
    let ids = |sql: &str| query_ids(&conn, sql);
    let stale = ids("SELECT version_id FROM search_stale ORDER BY 1");
    for s in &stale {
        assert!(
            !want.iter().any(|(_, id)| id == s),
            "{step}: a stale entry {s} is not in the set"
        );
    }
    index_check(v).unwrap_or_else(|e| panic!("{step}: {e}"));
    // What the searches must find: the versions whose path or text holds
    // the word, read from file_versions and split into words here.
    let versions: Vec<(i64, String, String)> = conn
        .prepare("SELECT id, file_path, COALESCE(content, '') FROM file_versions")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("versions");
    let holding = |word: &str, newest_only: bool| -> Vec<i64> {
        let mut found: Vec<i64> = versions
            .iter()
            .filter(|(id, _, _)| !newest_only || want.iter().any(|(_, w)| w == id))
            .filter(|(_, path, text)| {
                format!("{path} {text}")
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w.eq_ignore_ascii_case(word))
            })
            .map(|(id, _, _)| *id)
            .collect();
        found.sort_unstable();
        found
    };
    let searched = |word: &str, all_versions: bool| -> Vec<i64> {
        let opts = obby_sync::engine::search::SearchOptions {
            all_versions,
            prefix: false,
            limit: 10_000,
        };
        let mut found: Vec<i64> = obby_sync::engine::search::search(&conn, &v.root, word, &opts)
            .expect("search")
            .iter()
            .map(|h| h.version_id)
            .collect();
        found.sort_unstable();
        found
    };
    let check_searches = |when: &str| {
        for word in ["alpha", "beta", "gamma", "notes", "backend"] {
            assert_eq!(
                searched(word, false),
                holding(word, true),
                "{step}{when}: newest-only hits of {word:?}"
            );
            assert_eq!(
                searched(word, true),
                holding(word, false),
                "{step}{when}: every-version hits of {word:?}"
            );
        }
    };
    // Every-version scores are those of one index of every version: FTS5's
    // own bm25 over a reference table holding them all.
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.reference;
         CREATE VIRTUAL TABLE temp.reference USING fts5(file_path, content,
             tokenize = 'unicode61 remove_diacritics 2');
         INSERT INTO temp.reference (rowid, file_path, content)
             SELECT id, file_path, content FROM file_versions;",
    )
    .expect("reference index");
    let check_scores = |when: &str| {
        for (query, prefix, expr) in [
            ("alpha", false, "\"alpha\""),
            ("notes beta", false, "\"notes\" \"beta\""),
            ("\"note 0\"", false, "\"note 0\""),
            ("gam", true, "\"gam\"*"),
        ] {
            let opts = obby_sync::engine::search::SearchOptions {
                all_versions: true,
                prefix,
                limit: 10_000,
            };
            let mut ours: Vec<(i64, f64)> =
                obby_sync::engine::search::search(&conn, &v.root, query, &opts)
                    .expect("search")
                    .iter()
                    .map(|h| (h.version_id, h.rank))
                    .collect();
            ours.sort_by_key(|(id, _)| *id);
            let reference: Vec<(i64, f64)> = conn
                .prepare(
                    "SELECT rowid, -bm25(reference, 2.0, 1.0) FROM reference
                     WHERE reference MATCH ?1 ORDER BY rowid",
                )
                .expect("prepare")
                .query_map([expr], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("reference scores");
            assert_eq!(
                ours.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                reference.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                "{step}{when}: every-version hits of {query:?}"
            );
            for ((id, a), (_, b)) in ours.iter().zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{step}{when}: {query:?}, version {id}: score {a}, one index's bm25 {b}"
                );
            }
        }
    };
    check_searches("");
    check_scores("");
    if !stale.is_empty() {
        // The idle work moves the stale versions to the history index:
        // then the recent index holds exactly the set.
        while obby_sync::engine::search::merge_step(&conn, 64).expect("idle step") {}
        assert_eq!(
            ids("SELECT COUNT(*) FROM search_stale"),
            vec![0],
            "{step}: nothing stale after the idle work"
        );
        let mut set: Vec<i64> = want.iter().map(|(_, id)| *id).collect();
        set.sort_unstable();
        assert_eq!(
            indexed_ids(&conn, "file_current_fts"),
            set,
            "{step}: after the idle work the recent index holds exactly the set"
        );
        index_check(v).unwrap_or_else(|e| panic!("{step}, after the idle work: {e}"));
        check_searches(", after the idle work");
        check_scores(", after the idle work");
    }
}

#[test]
fn the_newest_only_index_follows_edits_deletes_moves_returns_and_backend_writes() {
    let v = Vault::new();
    for i in 0..20 {
        let word = ["alpha", "beta", "gamma"][i % 3];
        v.write(&format!("notes/n{i:02}.md"), format!("note {i} {word}\n"));
    }
    v.scan(&["--settle-ms", "0"]);
    check_current_index(&v, "initial scan");

    // Edits (a word moves from one note to another), a delete, a move.
    v.write("notes/n00.md", "note 0 now beta\n");
    v.write("notes/n01.md", "note 1 now gamma and alpha\n");
    v.remove("notes/n02.md");
    v.rename("notes/n03.md", "notes/moved/n03.md");
    v.scan(&["--settle-ms", "0"]);
    check_current_index(&v, "edits, delete, move");

    // The deleted note comes back with the same text: no new version, the
    // path is live again with its newest version.
    v.write("notes/n02.md", "note 2 gamma\n");
    v.scan(&["--settle-ms", "0"]);
    check_current_index(&v, "a deleted note back with the same text");

    // Another program's writes to file_versions: a new version, a deleted
    // newest version (its predecessor takes its place), a rewritten one.
    let conn = v.conn();
    let path = v.abs("notes/n04.md");
    conn.execute(
        "INSERT INTO file_versions (file_path, content_hash, content, size, timestamp)
         VALUES (?1, ?2, 'backend text alpha gamma', 24, strftime('%Y-%m-%d %H:%M:%f000', 'now', 'localtime'))",
        [path.clone(), "ab".repeat(32)],
    )
    .expect("backend insert");
    check_current_index(&v, "a version the backend inserted");
    conn.execute(
        "DELETE FROM file_versions WHERE id = (SELECT MAX(id) FROM file_versions WHERE file_path = ?1)",
        [&path],
    )
    .expect("backend delete");
    check_current_index(&v, "the newest version deleted");
    conn.execute(
        "UPDATE file_versions SET content = 'rewritten beta' WHERE id = (SELECT MAX(id) FROM file_versions WHERE file_path = ?1)",
        [v.abs("notes/n05.md")],
    )
    .expect("backend update");
    check_current_index(&v, "the newest version rewritten");
    conn.execute(
        "UPDATE file_versions SET file_path = ?2 WHERE id = (SELECT MAX(id) FROM file_versions WHERE file_path = ?1)",
        [v.abs("notes/n06.md"), v.abs("notes/n07.md")],
    )
    .expect("backend path update");
    check_current_index(&v, "a version moved to another path");
    drop(conn);

    // The engine goes on from there.
    v.write("notes/n07.md", "note 7 beta again\n");
    v.scan(&["--settle-ms", "0"]);
    check_current_index(&v, "a scan after the backend's writes");
}

#[test]
fn a_rebuild_of_file_versions_keeps_both_indexes_right() {
    let v = Vault::new();
    for i in 0..12 {
        let word = ["alpha", "beta", "gamma"][i % 3];
        v.write(&format!("notes/r{i:02}.md"), format!("note {i} {word}\n"));
    }
    v.scan(&["--settle-ms", "0"]);
    v.write("notes/r00.md", "note 0 now gamma\n");
    v.remove("notes/r01.md");
    v.scan(&["--settle-ms", "0"]);
    check_current_index(&v, "before the rebuild");

    // Another program gives file_versions a constraint the shared shape
    // does not have (the backend's UNIQUE(file_path, content_hash)), by
    // SQLite's rebuild procedure: every row and id kept, its triggers
    // (the search indexes' among them) recreated. The next open conforms
    // the table again, by the same procedure.
    {
        let conn = v.conn();
        let (create, triggers): (String, Vec<String>) = {
            let create: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'file_versions'",
                    [],
                    |r| r.get(0),
                )
                .expect("table sql");
            let triggers = conn
                .prepare(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'file_versions'",
                )
                .expect("prepare")
                .query_map([], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("triggers");
            (create, triggers)
        };
        assert!(
            triggers.iter().any(|t| t.contains("file_current_fts"))
                && triggers.iter().any(|t| t.contains("file_versions_fts ")),
            "both indexes' triggers are on file_versions: {triggers:?}"
        );
        let end = create.rfind(')').expect("closing parenthesis");
        let unique = format!(
            "{}, UNIQUE(file_path, content_hash))",
            &create[..end].replace("CREATE TABLE file_versions", "CREATE TABLE fv_new")
        );
        conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA legacy_alter_table = ON; BEGIN;")
            .expect("begin");
        conn.execute_batch(&unique).expect("create the new shape");
        conn.execute_batch(
            "INSERT INTO fv_new SELECT * FROM file_versions;
             DROP TABLE file_versions;
             ALTER TABLE fv_new RENAME TO file_versions;
             CREATE INDEX IF NOT EXISTS idx_file_versions_path ON file_versions(file_path);",
        )
        .expect("copy the rows");
        for t in &triggers {
            conn.execute_batch(t).expect("recreate a trigger");
        }
        conn.execute_batch("COMMIT; PRAGMA legacy_alter_table = OFF;")
            .expect("commit");
    }
    check_current_index(&v, "after the other program's rebuild");

    // The engine's open rebuilds it back; then it keeps indexing.
    v.write("notes/r02.md", "note 2 now alpha and beta\n");
    v.write("notes/r12.md", "note 12 beta\n");
    v.scan(&["--settle-ms", "0"]);
    let conn = v.conn();
    let unique: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'file_versions' AND sql LIKE '%UNIQUE%'",
            [],
            |r| r.get(0),
        )
        .expect("shape");
    assert_eq!(
        unique, 0,
        "the engine conformed file_versions to the shared shape"
    );
    let triggers: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'file_versions'
               AND name LIKE 'file_versions_search%'",
            [],
            |r| r.get(0),
        )
        .expect("triggers");
    assert_eq!(
        triggers, 4,
        "the indexes' four triggers (two on insert, delete, update) survived the rebuild"
    );
    drop(conn);
    assert_eq!(
        index_rows(&v),
        v.count("SELECT COUNT(*) FROM file_versions"),
        "the two indexes hold every version"
    );
    index_check(&v).expect("each version in one index");
    check_current_index(&v, "after the engine's rebuild and a scan");
}
