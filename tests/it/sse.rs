//! The SSE hub against the real binary on 127.0.0.1 (ephemeral ports): a
//! raw HTTP/1.1 reader of the event streams (chunked bodies decoded here),
//! `Publish` and `RegisterClient` over gRPC, resume with `Last-Event-ID`
//! across an engine restart, the web UI's stream, the token, slow clients.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::Channel;

use obby_sync::api::proto::sse::sse_service_client::SseServiceClient;
use obby_sync::api::proto::sse::{ClientRequest, PublishRequest};
use obby_sync::api::proto::sync::SyncRequest;
use obby_sync::api::proto::sync::sync_client::SyncClient;

use crate::fixture::{Running, Vault, query, wait_for};

const FLAGS: &[&str] = &["--debounce-ms", "50", "--rescan-interval", "0"];

/// One server-sent event as a browser would dispatch it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
struct SseEvent {
    event: Option<String>,
    id: Option<String>,
    data: String,
}

/// A raw HTTP/1.1 client reading one event stream.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    /// Decoded body bytes not yet parsed into lines.
    pending: Vec<u8>,
    eof: bool,
}

impl Stream {
    async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Stream {
        Self::request("GET", addr, path, headers).await
    }

    async fn request(method: &str, addr: &str, path: &str, headers: &[(&str, &str)]) -> Stream {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.expect("send request");
        let mut reader = BufReader::new(tcp);
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header line");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        Stream {
            reader,
            status,
            headers,
            chunked,
            pending: Vec::new(),
            eof: false,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body into `pending`; false at its end.
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        if self.chunked {
            let mut size = String::new();
            if self.reader.read_line(&mut size).await.unwrap_or(0) == 0 {
                self.eof = true;
                return false;
            }
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                self.eof = true;
                return false;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).await.expect("chunk");
            chunk.truncate(n);
            self.pending.extend_from_slice(&chunk);
        } else {
            let mut buf = [0; 8192];
            let n = self.reader.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                self.eof = true;
                return false;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        true
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(
                    String::from_utf8_lossy(&line[..i])
                        .trim_end_matches('\r')
                        .to_owned(),
                );
            }
            if !self.fill().await {
                // A last line without its end (a JSON body, say).
                if self.pending.is_empty() {
                    return None;
                }
                let rest = std::mem::take(&mut self.pending);
                return Some(String::from_utf8_lossy(&rest).into_owned());
            }
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    async fn next_event(&mut self) -> Option<SseEvent> {
        let mut e = SseEvent::default();
        let mut data: Vec<String> = Vec::new();
        let mut any = false;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if any {
                    e.data = data.join("\n");
                    return Some(e);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            any = true;
            match field {
                "event" => e.event = Some(value),
                "id" => e.id = Some(value),
                "data" => data.push(value),
                _ => {}
            }
        }
    }

    /// The next event within 15 s.
    async fn next(&mut self) -> SseEvent {
        tokio::time::timeout(Duration::from_secs(15), self.next_event())
            .await
            .expect("an event in time")
            .expect("the stream is open")
    }

    /// The next event that is not a keep-alive.
    async fn next_message(&mut self) -> SseEvent {
        loop {
            let e = self.next().await;
            if e.event.as_deref() != Some("ping") && !e.data.contains("\"keepalive\"") {
                return e;
            }
        }
    }
}

fn started(extra: &[&str]) -> (Vault, Running) {
    let v = Vault::new();
    v.write("notes/a.md", "alpha\n");
    let mut flags = FLAGS.to_vec();
    flags.extend_from_slice(extra);
    let running = start(&v, &flags);
    assert!(wait_for(Duration::from_secs(10), || v
        .count("SELECT COUNT(*) FROM file_versions")
        == 1));
    (v, running)
}

fn start(v: &Vault, flags: &[&str]) -> Running {
    let running = v.start(flags);
    assert!(
        wait_for(Duration::from_secs(10), || v
            .meta("api_sse_http_addr")
            .is_some()
            && v.meta("api_sse_grpc_addr").is_some()),
        "the hub's addresses are recorded"
    );
    running
}

fn http_addr(v: &Vault) -> String {
    v.meta("api_sse_http_addr").expect("hub address")
}

async fn channel(url: String) -> Channel {
    Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

async fn hub_client(v: &Vault) -> SseServiceClient<Channel> {
    let addr = v.meta("api_sse_grpc_addr").expect("hub gRPC address");
    SseServiceClient::new(channel(format!("http://{addr}")).await)
}

async fn barrier(v: &Vault, engine: &Running) {
    let mut sy = SyncClient::new(channel(engine.api_url(v)).await);
    sy.sync(SyncRequest { timeout_ms: 20_000 })
        .await
        .expect("sync barrier");
}

fn cursors(v: &Vault) -> Vec<i64> {
    query(&v.conn(), "SELECT id FROM file_changes ORDER BY id", |r| {
        r.get(0)
    })
}

/// An `/sse` event as a snapshot shows it: `data` parsed (the `data`
/// inside it, a JSON text on the wire, parsed too and shown under
/// `data (JSON text)`), the root, client ids and times made stable.
#[derive(Debug, serde::Serialize)]
struct Redacted {
    event: Option<String>,
    id: Option<String>,
    data: serde_json::Value,
}

fn redact(v: &Vault, e: SseEvent) -> Redacted {
    fn walk(v: &mut serde_json::Value, root: &str) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(text)) = m.get("data")
                    && let Ok(inner) = serde_json::from_str::<serde_json::Value>(text)
                {
                    m.remove("data");
                    m.insert("data (JSON text)".into(), inner);
                }
                for (k, val) in m.iter_mut() {
                    match k.as_str() {
                        "timestamp" => *val = "<local>".into(),
                        _ => walk(val, root),
                    }
                }
            }
            serde_json::Value::String(s) => *s = s.replace(root, "<root>/"),
            _ => {}
        }
    }
    let root = format!("{}/", v.root.display());
    let mut data: serde_json::Value = serde_json::from_str(&e.data).expect("json data");
    walk(&mut data, &root);
    Redacted {
        event: e.event,
        id: e.id,
        data,
    }
}

/// A web UI event with its time made stable; the data stays the text sent.
fn redact_web(e: SseEvent) -> SseEvent {
    let d: serde_json::Value = serde_json::from_str(&e.data).expect("json");
    let ts = d["timestamp"].as_str().expect("timestamp").to_owned();
    SseEvent {
        data: e.data.replace(&ts, "<utc>"),
        ..e
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_sends_connected_then_every_file_change_with_its_cursor() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let mut s = Stream::open(&addr, "/sse?topics=file-changes", &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("access-control-allow-origin"), Some("*"));
    let connected = s.next().await;
    assert_eq!(connected.event.as_deref(), Some("connected"));
    assert!(connected.data.starts_with("client-"), "{connected:?}");
    let start: i64 = connected
        .id
        .as_deref()
        .expect("id")
        .parse()
        .expect("cursor");
    assert_eq!(
        start,
        *cursors(&v).last().expect("a change"),
        "starts after the newest change"
    );
    v.write("notes/b.md", "one\n");
    barrier(&v, &engine).await;
    v.write("notes/b.md", "one\ntwo\n");
    barrier(&v, &engine).await;
    v.rename("notes/a.md", "notes/moved/a.md");
    barrier(&v, &engine).await;
    v.remove("notes/b.md");
    barrier(&v, &engine).await;
    let mut events = Vec::new();
    while events.len() < 4 {
        events.push(s.next_message().await);
    }
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e.id.as_deref().expect("id").parse().expect("cursor"))
        .collect();
    assert_eq!(
        ids,
        cursors(&v)[1..],
        "every change once, in order, id = cursor"
    );
    let events: Vec<Redacted> = events.into_iter().map(|e| redact(&v, e)).collect();
    insta::assert_yaml_snapshot!(events);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn last_event_id_resumes_across_an_engine_restart_without_gap_or_duplicate() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let mut s = Stream::open(&addr, "/sse?topics=file-changes", &[]).await;
    let connected = s.next().await;
    let mut seen: Vec<i64> = vec![];
    for i in 0..6 {
        v.write(&format!("notes/r{i}.md"), format!("{i}\n"));
    }
    while seen.len() < 3 {
        let e = s.next_message().await;
        seen.push(e.id.expect("id").parse().expect("cursor"));
    }
    drop(s); // disconnect mid-stream
    barrier(&v, &engine).await;
    assert_eq!(engine.stop().code(), Some(0));
    // While the engine is down: new, changed and removed notes.
    for i in 6..10 {
        v.write(&format!("notes/r{i}.md"), format!("{i}\n"));
    }
    v.write("notes/r0.md", "changed while down\n");
    v.remove("notes/r1.md");
    let engine = start(&v, FLAGS);
    let addr = http_addr(&v);
    let last = seen.last().expect("seen").to_string();
    let mut s = Stream::open(
        &addr,
        "/sse?topics=file-changes",
        &[("Last-Event-ID", &last)],
    )
    .await;
    let again = s.next().await;
    assert_eq!(again.event.as_deref(), Some("connected"));
    assert_eq!(
        again.id.as_deref(),
        Some(last.as_str()),
        "starts after the cursor sent"
    );
    // Live ones after the catch-up.
    v.write("notes/live.md", "live\n");
    barrier(&v, &engine).await;
    let first: i64 = connected.id.expect("id").parse().expect("cursor");
    let want: Vec<i64> = cursors(&v).into_iter().filter(|&c| c > first).collect();
    assert!(want.len() >= 13, "{want:?}");
    while seen.len() < want.len() {
        let e = s.next_message().await;
        seen.push(e.id.expect("id").parse().expect("cursor"));
    }
    assert_eq!(
        seen, want,
        "every change after the first connection once, in order, across the restart"
    );
    // A client that never saw a change resumes from the connected id.
    let mut fresh = Stream::open(&addr, "/sse?topics=file-changes", &[]).await;
    let hello = fresh.next().await;
    let hello_id = hello.id.clone().expect("id");
    drop(fresh);
    v.write("notes/after.md", "x\n");
    barrier(&v, &engine).await;
    let mut back = Stream::open(
        &addr,
        "/sse?topics=file-changes",
        &[("Last-Event-ID", &hello_id)],
    )
    .await;
    back.next().await;
    let e = back.next_message().await;
    assert_eq!(e.id, cursors(&v).last().map(ToString::to_string));
    assert!(e.data.contains("notes/after.md"), "{e:?}");
    // A cursor from another database starts from now, and says so.
    let mut other = Stream::open(
        &addr,
        "/sse?topics=file-changes",
        &[("Last-Event-ID", "999999")],
    )
    .await;
    other.next().await;
    let reset = other.next().await;
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert!(reset.data.contains("newer than any change"), "{reset:?}");
    let bad = Stream::open(&addr, "/sse", &[("Last-Event-ID", "x")]).await;
    assert_eq!(bad.status, 400);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_reaches_sse_and_register_client_and_health_counts_clients() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let mut hub = hub_client(&v).await;
    let mut s = Stream::open(&addr, "/sse?topics=news,file-changes:notes/sub", &[]).await;
    assert_eq!(s.next().await.event.as_deref(), Some("connected"));
    let mut grpc = hub
        .register_client(ClientRequest {
            topics: vec!["news".into(), "file-changes".into()],
            after_cursor: None,
        })
        .await
        .expect("register")
        .into_inner();
    let first = grpc.next().await.expect("open").expect("ok");
    assert_eq!(first.event, "connected");
    assert_eq!(first.id, *cursors(&v).last().expect("cursor"));
    let health = || async {
        let mut h = Stream::open(&addr, "/health", &[("Connection", "close")]).await;
        let mut body = String::new();
        while let Some(line) = h.line().await {
            body.push_str(&line);
        }
        (
            h.status,
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        )
    };
    let (status, h) = health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["clients"], 2);
    assert!(h["timestamp"].as_u64().expect("unix") > 1_700_000_000);
    let published = hub
        .publish(PublishRequest {
            event: "update".into(),
            topic: "news".into(),
            data: "{\"n\":1}".into(),
        })
        .await
        .expect("publish")
        .into_inner();
    assert!(published.success);
    assert_eq!(published.clients, 2);
    let got = s.next_message().await;
    assert_eq!(got.event.as_deref(), Some("update"));
    assert_eq!(got.id, None, "published messages have no cursor");
    let data: serde_json::Value = serde_json::from_str(&got.data).expect("json");
    assert_eq!(
        data,
        serde_json::json!({"event": "update", "topic": "news", "data": "{\"n\":1}"})
    );
    let m = grpc.next().await.expect("open").expect("ok");
    assert_eq!(
        (m.event.as_str(), m.topic.as_str(), m.data.as_str(), m.id),
        ("update", "news", "{\"n\":1}", 0)
    );
    let nobody = hub
        .publish(PublishRequest {
            event: "x".into(),
            topic: "elsewhere".into(),
            data: String::new(),
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(nobody.clients, 0);
    let reserved = hub
        .publish(PublishRequest {
            event: "modified".into(),
            topic: "file-changes".into(),
            data: String::new(),
        })
        .await
        .expect_err("reserved");
    assert_eq!(reserved.code(), Code::InvalidArgument);
    // A change outside notes/sub reaches the gRPC client only; one inside, both.
    v.write("notes/top.md", "t\n");
    barrier(&v, &engine).await;
    v.write("notes/sub/in.md", "i\n");
    barrier(&v, &engine).await;
    let g1 = grpc.next().await.expect("open").expect("ok");
    let g2 = grpc.next().await.expect("open").expect("ok");
    let h1 = s.next_message().await;
    assert_eq!(h1.event.as_deref(), Some("created"));
    assert!(
        h1.data.contains("\"topic\":\"file-changes:notes/sub\""),
        "{h1:?}"
    );
    assert!(h1.data.contains("notes/sub/in.md"), "{h1:?}");
    assert_eq!(h1.id, Some(g2.id.to_string()));
    let root = format!("{}/", v.root.display());
    let messages: Vec<_> = [g1, g2]
        .into_iter()
        .map(|mut m| {
            assert!(m.id > 0);
            m.id = 0;
            let mut d: serde_json::Value = serde_json::from_str(&m.data).expect("json");
            d["cursor"] = 0.into();
            d["version_id"] = 0.into();
            assert_eq!(d["timestamp"].as_str().map(str::len), Some(26));
            d["timestamp"] = "<local>".into();
            m.data = d.to_string().replace(&root, "<root>/");
            m
        })
        .collect();
    insta::assert_debug_snapshot!(messages);
    // RegisterClient resumes from a cursor too.
    let all = cursors(&v);
    let mut resumed = hub
        .register_client(ClientRequest {
            topics: vec!["file-changes".into()],
            after_cursor: Some(all[0]),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(
        resumed.next().await.expect("open").expect("ok").event,
        "connected"
    );
    let mut ids = Vec::new();
    while ids.len() < all.len() - 1 {
        ids.push(resumed.next().await.expect("open").expect("ok").id);
    }
    assert_eq!(ids, all[1..]);
    let future = hub
        .register_client(ClientRequest {
            topics: vec![],
            after_cursor: Some(1_000_000),
        })
        .await
        .expect_err("future cursor");
    assert_eq!(future.code(), Code::OutOfRange);
    drop(s);
    drop(grpc);
    drop(resumed);
    let mut none_left = false;
    for _ in 0..100 {
        if health().await.1["clients"] == 0 {
            none_left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(none_left, "clients that went away are no longer counted");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_stream_sends_the_backends_payloads() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let mut s = Stream::open(&addr, "/api/files/updates/stream", &[]).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("access-control-allow-origin"), Some("*"));
    let first = s.next().await;
    assert_eq!(first.event, None, "only data lines");
    assert!(
        first
            .data
            .starts_with(r#"{"type": "connected", "clientId": "client-"#)
            && first
                .data
                .ends_with(r#"", "message": "Connected to file updates"}"#),
        "{first:?}"
    );
    v.write("notes/b.md", "one\n");
    barrier(&v, &engine).await;
    v.write("notes/b.md", "one\ntwo\n");
    barrier(&v, &engine).await;
    v.rename("notes/b.md", "notes/c.md");
    barrier(&v, &engine).await;
    v.remove("notes/c.md");
    barrier(&v, &engine).await;
    let mut events = Vec::new();
    while events.len() < 5 {
        let e = s.next_message().await;
        assert_eq!(e.event, None);
        let d: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        let ts = d["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && (ts.len() == 27 || ts.len() == 20),
            "{ts}"
        );
        events.push(redact_web(e));
    }
    insta::assert_yaml_snapshot!(events);
    // The stream's timestamp is the change's, in UTC.
    let local: String = v
        .conn()
        .query_row(
            "SELECT timestamp FROM file_changes ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(
        obby_sync::api::sse::http::utc_iso(&local).len(),
        27,
        "{local}"
    );
    // Silence: a keep-alive after 5 s.
    let started = std::time::Instant::now();
    let keepalive = s.next().await;
    assert_eq!(keepalive.data, r#"{"type": "keepalive"}"#);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_pings_every_30_seconds() {
    let (v, engine) = started(&[]);
    let mut s = Stream::open(&http_addr(&v), "/sse?topics=quiet", &[]).await;
    let connected = s.next().await;
    assert_eq!(connected.id, None, "no file changes asked for: no cursor");
    let ping = tokio::time::timeout(Duration::from_secs(40), s.next_event())
        .await
        .expect("a ping in time")
        .expect("open");
    assert_eq!(ping.event.as_deref(), Some("ping"));
    chrono::DateTime::parse_from_rfc3339(&ping.data).expect("an RFC 3339 time");
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_protects_the_hub_but_health() {
    let (v, engine) = started(&["--token", "s3cret"]);
    let addr = http_addr(&v);
    assert_eq!(Stream::open(&addr, "/health", &[]).await.status, 200);
    for path in ["/sse", "/api/files/updates/stream", "/sse?token=nope"] {
        let s = Stream::open(&addr, path, &[]).await;
        assert_eq!(s.status, 401, "{path}");
        assert_eq!(s.header("access-control-allow-origin"), Some("*"));
    }
    let wrong = Stream::open(&addr, "/sse", &[("Authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    let mut by_query = Stream::open(&addr, "/sse?topics=a&token=s3cret", &[]).await;
    assert_eq!(by_query.status, 200);
    assert_eq!(by_query.next().await.event.as_deref(), Some("connected"));
    let by_header = Stream::open(
        &addr,
        "/api/files/updates/stream",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(by_header.status, 200);
    // The scheme's name is case-insensitive (RFC 9110).
    // (On a topic of its own: the Publish below counts topic `a`'s clients.)
    let lower = Stream::open(
        &addr,
        "/sse?topics=b",
        &[("Authorization", "bearer s3cret")],
    )
    .await;
    assert_eq!(lower.status, 200);
    // A page on another origin that sends the token in a header first asks
    // with a CORS preflight, which carries no token.
    for path in ["/sse", "/api/files/updates/stream"] {
        let pre = Stream::request(
            "OPTIONS",
            &addr,
            path,
            &[
                ("Origin", "http://elsewhere.test"),
                ("Access-Control-Request-Method", "GET"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,last-event-id",
                ),
            ],
        )
        .await;
        assert_eq!(pre.status, 204, "{path}");
        assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
        let allowed = pre
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_owned();
        for h in ["authorization", "last-event-id"] {
            assert!(allowed.contains(h), "{path}: {allowed}");
        }
    }
    let mut hub = hub_client(&v).await;
    let req = PublishRequest {
        event: "e".into(),
        topic: "a".into(),
        data: "d".into(),
    };
    assert_eq!(
        hub.publish(req.clone()).await.expect_err("no token").code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(req);
    req.metadata_mut()
        .insert("authorization", "BEARER s3cret".parse().expect("header"));
    assert_eq!(
        hub.publish(req)
            .await
            .expect("with token")
            .into_inner()
            .clients,
        1
    );
    drop(engine);
}

/// A client that stops reading must neither hold the engine nor grow the
/// engine's memory: published messages beyond the ring disconnect it with a
/// last `dropped` message, and file changes are read again from the
/// database, all of them, once it reads again.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_bounded_and_loses_no_file_change() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let mut stuck_changes = Stream::open(&addr, "/sse?topics=file-changes", &[]).await;
    let start: i64 = stuck_changes
        .next()
        .await
        .id
        .expect("id")
        .parse()
        .expect("cursor");
    let mut stuck = Stream::open(&addr, "/sse?topics=flood", &[]).await;
    stuck.next().await;
    let mut hub = hub_client(&v).await;
    let before = engine.rss_kib();
    let chunk = "x".repeat(60 * 1024);
    // 3,000 × 60 KiB = 180 MiB published while neither client reads. (Once
    // the flooded client's task sees it is behind by the whole ring, its last
    // message is queued and it no longer counts.)
    let mut counted = Vec::new();
    for _ in 0..3_000 {
        let r = hub
            .publish(PublishRequest {
                event: "flood".into(),
                topic: "flood".into(),
                data: chunk.clone(),
            })
            .await
            .expect("publish answers while a client is stuck")
            .into_inner();
        assert!(r.success);
        counted.push(r.clients);
    }
    assert_eq!(counted[0], 1);
    for i in 0..300 {
        v.write(&format!("notes/f{i}.md"), format!("{i}\n"));
    }
    barrier(&v, &engine).await;
    let grown_mib = engine.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 120,
        "memory grew by {grown_mib} MiB with a stuck client"
    );
    // The flooded client gets what fit, then a last message saying why.
    let mut dropped = None;
    let mut n = 0;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(15), stuck.next_event())
        .await
        .expect("in time")
    {
        if e.event.as_deref() == Some("dropped") {
            dropped = Some(e);
        } else {
            n += 1;
        }
    }
    let dropped = dropped.expect("a dropped message before the end");
    assert!(
        dropped.data.contains("fell") && dropped.data.contains("behind"),
        "{dropped:?}"
    );
    assert!(n < 3_000, "{n} of 3000 flood messages");
    // The other one gets every change, in order.
    let want: Vec<i64> = cursors(&v).into_iter().filter(|&c| c > start).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let e = stuck_changes.next_message().await;
        got.push(e.id.expect("id").parse::<i64>().expect("cursor"));
    }
    assert_eq!(got, want);
    drop(engine);
}

/// What one fan-out client saw: the cursors of its change events, in order.
async fn read_cursors(mut s: Stream, n: usize) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(60), s.next_event())
            .await
            .expect("every change in time")
            .expect("the stream stays open");
        if let Some(id) = e.id {
            seen.push(id.parse().expect("cursor"));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_joining_during_a_flood_from_any_cursor_each_get_every_later_change_once() {
    // Batches are encoded once and shared; each client cuts them where its
    // own cursor is. Clients join while the engine commits, some from a
    // cursor in the past (a catch-up from the database that overlaps the
    // live batches), some from now, some under a folder topic.
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    for i in 0..100 {
        v.write(&format!("notes/early{i}.md"), format!("{i}\n"));
    }
    barrier(&v, &engine).await;
    let early = cursors(&v);
    let root = v.root.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..600 {
            let folder = if i % 3 == 0 { "notes/sub" } else { "notes" };
            std::fs::create_dir_all(root.join(folder)).expect("mkdir");
            std::fs::write(root.join(format!("{folder}/late{i}.md")), format!("{i}\n"))
                .expect("write");
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    // (the client's first cursor, its stream, its folder topic)
    let mut clients = Vec::new();
    for k in 0..60usize {
        let from = early[(k * 7) % early.len()];
        let last = from.to_string();
        let (path, folder) = if k % 5 == 4 {
            ("/sse?topics=file-changes:notes/sub", true)
        } else {
            ("/sse?topics=file-changes", false)
        };
        let mut s = Stream::open(&addr, path, &[("Last-Event-ID", &last)]).await;
        let connected = s.next().await;
        assert_eq!(connected.event.as_deref(), Some("connected"));
        clients.push((from, s, folder));
    }
    writer.join().expect("writer");
    barrier(&v, &engine).await;
    let all: Vec<(i64, String)> = query(
        &v.conn(),
        "SELECT id, file_path FROM file_changes ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    let sub = format!("{}/notes/sub/", v.root.display());
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(from, s, folder)| {
            let want: Vec<i64> = all
                .iter()
                .filter(|(c, p)| *c > from && (!folder || p.starts_with(&sub)))
                .map(|(c, _)| *c)
                .collect();
            tokio::spawn(async move {
                let got = read_cursors(s, want.len()).await;
                (got, want)
            })
        })
        .collect();
    for task in tasks {
        let (got, want) = task.await.expect("client task");
        assert_eq!(
            got, want,
            "every change after the client's cursor, once, in order"
        );
    }
    drop(engine);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_threads_run_below_the_engines_priority_unless_told_not_to() {
    let (v, engine) = started(&[]);
    // The main thread keeps the priority the engine was started with.
    let main = engine.thread_nice("obby-sync");
    assert_eq!(main.len(), 1, "{main:?}");
    let api = engine.thread_nice("obby-api");
    assert!(
        api.len() >= 2,
        "the api's threads are named obby-api: {api:?}"
    );
    // Blocking threads too, which inherit their creator's niceness: 10 is
    // added once, not per generation.
    let below = (main[0] + 10).min(19);
    assert!(api.iter().all(|&n| n == below), "{api:?} vs {main:?}");
    drop(engine);
    let engine = start(&v, &[FLAGS, &["--nice", "0"]].concat());
    let plain = engine.thread_nice("obby-api");
    assert!(
        !plain.is_empty() && plain.iter().all(|&n| n == main[0]),
        "{plain:?}"
    );
    drop(engine);
}

/// Every field of a stream up to its end, as `(field, value)` lines.
async fn fields_to_the_end(s: &mut Stream) -> Vec<(String, String)> {
    let read = async {
        let mut fields = Vec::new();
        while let Some(line) = s.line().await {
            if let Some((field, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                fields.push((field.to_owned(), value.to_owned()));
            }
        }
        fields
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the stream ends by itself")
}

/// An `EventSource` takes any status but 200 as final and never reconnects:
/// a hub that cannot open a client (here: its table is gone for a moment)
/// answers a 200 stream of one event with `retry:` that ends, so that a
/// browser comes back by itself once the database can serve it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_cannot_open_a_client_answers_a_stream_a_browser_retries() {
    let (v, engine) = started(&[]);
    let addr = http_addr(&v);
    let last = cursors(&v).last().expect("a change").to_string();
    v.conn()
        .execute_batch("ALTER TABLE file_changes RENAME TO file_changes_away")
        .expect("hide the table");
    let retry = obby_sync::api::sse::http::UNAVAILABLE_RETRY
        .as_millis()
        .to_string();
    for (path, resume) in [
        ("/sse?topics=file-changes", Some(last.as_str())),
        ("/sse?topics=file-changes", None),
        ("/api/files/updates/stream", None),
    ] {
        let headers: Vec<(&str, &str)> =
            resume.map(|id| ("Last-Event-ID", id)).into_iter().collect();
        let mut s = Stream::open(&addr, path, &headers).await;
        assert_eq!(s.status, 200, "{path}: a status an EventSource retries");
        assert_eq!(s.header("content-type"), Some("text/event-stream"));
        assert_eq!(s.header("access-control-allow-origin"), Some("*"));
        let fields = fields_to_the_end(&mut s).await;
        let get = |name: &str| {
            fields
                .iter()
                .find(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("retry"), Some(retry.clone()), "{path}: {fields:?}");
        assert_eq!(get("id"), None, "the browser keeps its Last-Event-ID");
        let data: serde_json::Value =
            serde_json::from_str(&get("data").expect("data")).expect("json");
        if path.starts_with("/sse") {
            assert_eq!(get("event").as_deref(), Some("unavailable"), "{fields:?}");
            assert!(
                data["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("file_changes")),
                "{data}"
            );
        } else {
            assert_eq!(
                get("event"),
                None,
                "the web UI's stream has data lines only"
            );
            assert_eq!(data["type"], "error", "{data}");
        }
    }
    v.conn()
        .execute_batch("ALTER TABLE file_changes_away RENAME TO file_changes")
        .expect("bring the table back");
    let mut s = Stream::open(
        &addr,
        "/sse?topics=file-changes",
        &[("Last-Event-ID", &last)],
    )
    .await;
    let connected = s.next().await;
    assert_eq!(connected.event.as_deref(), Some("connected"));
    assert_eq!(connected.id, Some(last), "resumes where the browser was");
    v.write("notes/back.md", "back\n");
    let e = s.next_message().await;
    assert!(e.data.contains("notes/back.md"), "{e:?}");
    drop(engine);
}
