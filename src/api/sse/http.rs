//! The hub's HTTP side (axum): `GET /sse?topics=a,b`, `GET /health`, and
//! the web UI's `GET /api/files/updates/stream`.
//!
//! `/sse` answers `text/event-stream`: first `event: connected` with the
//! client id as data, then every message of the client's topics as `event:
//! <event>` with `data: {"event","topic","data"}` (JSON; for a file change
//! `data` is itself a JSON text, [`super::ChangeData`]), and `event: ping`
//! with an RFC 3339 time every 30 s. A file change carries `id: <cursor>`,
//! and so does `connected` (the cursor the stream starts after), so a
//! browser's `EventSource` resumes by itself: a request with `Last-Event-ID`
//! first gets every change after it from the database. A `Last-Event-ID`
//! this database cannot serve (pruned, or another database's) starts from
//! the newest change after an `event: reset` saying why. A client that falls
//! too far behind on published messages gets `event: dropped` and is
//! disconnected.
//!
//! `/api/files/updates/stream` sends what Obby's backend sends there, only
//! `data:` lines in its JSON form (Python's `json.dumps`): first
//! `{"type": "connected", "clientId", "message"}`, then `{"type",
//! "filePath", "timestamp"}` per change (`filePath` relative to the root,
//! `timestamp` the change's time in UTC ISO 8601 with `Z`), `{"type":
//! "keepalive"}` after 5 s of silence. A move is sent as `deleted` of the
//! old path, then `created` of the new one. Unlike the backend's, these
//! messages carry `id:` lines too (the payloads are the same), so the web
//! UI's `EventSource` resumes without a gap after a reconnect (an id it
//! cannot serve just starts after the newest change).
//!
//! When the hub cannot open a client (a database or pool error), both
//! streams still answer `200 text/event-stream`: one event that says why
//! (`event: unavailable` with `{"reason"}` on `/sse`, `{"type": "error",
//! "message"}` on the web UI's), a `retry:` of [`UNAVAILABLE_RETRY`], then
//! the end of the stream. An `EventSource` takes any other status as final
//! and never tries again (a page would stay dead until reloaded); at the end
//! of a 200 stream it reconnects by itself, with the same `Last-Event-ID`.
//! A bad token (401) or `Last-Event-ID` (400) is final, as it should be.
//!
//! Every response allows any origin (`Access-Control-Allow-Origin: *`), and
//! a CORS preflight (`OPTIONS`) allows `GET` with `Authorization`,
//! `Last-Event-ID`, `X-Obby-Token` and `Cache-Control`.
//! With a token, every endpoint but `/health` needs it, as `Authorization:
//! Bearer <token>` (the scheme's name in any case) or, since `EventSource` cannot set headers, `?token=`;
//! compared in constant time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use bytes::{Bytes, BytesMut};
use chrono::TimeZone as _;
use futures_util::FutureExt as _;
use futures_util::stream::{self, StreamExt as _};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

use super::{
    ChangeData, Client, FILE_CHANGES, Hub, Item, Keepalive, PING_EVERY, Resume, Topics,
    WEB_KEEPALIVE,
};
use crate::api::feed::{ChangeRow, Encoding};
use crate::api::{ApiError, bearer, token_matches};

/// The web UI's first message's text (the backend's).
const WEB_CONNECTED: &str = "Connected to file updates";

/// How soon an `EventSource` tries again after the hub could not open its
/// client (the `retry:` field): Chromium's own default, said so that every
/// browser waits the same.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(3);

#[derive(Clone)]
struct AppState {
    hub: Hub,
    token: Option<Arc<[u8; 32]>>,
}

/// Serves the HTTP side on `listener` until `stop` turns true.
///
/// # Errors
/// [`ApiError::SseHttp`] when the server fails.
pub(crate) async fn serve(
    hub: Hub,
    token: Option<Arc<[u8; 32]>>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ApiError> {
    // Each event is written at once, not held for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an SSE connection");
        }
    });
    axum::serve(listener, router(hub, token))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(ApiError::SseHttp)
}

fn router(hub: Hub, token: Option<Arc<[u8; 32]>>) -> Router {
    Router::new()
        .route("/sse", get(sse).options(preflight))
        .route("/health", get(health).options(preflight))
        .route(
            "/api/files/updates/stream",
            get(web_updates).options(preflight),
        )
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(AppState { hub, token })
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A CORS preflight: a page on another origin may `GET` with the headers
/// a client sends (the token, `Last-Event-ID`). No token is asked for: a
/// browser sends none in a preflight.
async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, OPTIONS"),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, last-event-id, x-obby-token, cache-control",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response()
}

/// True when no token is set or the request carries it (header or query).
fn authorized(state: &AppState, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    let plain = headers.get("x-obby-token").map(HeaderValue::as_bytes);
    let param = query.get("token").map(String::as_bytes);
    // All are checked, so the time does not say which one was tried.
    let a = token_matches(token, bearer);
    let b = token_matches(token, plain);
    let c = token_matches(token, param);
    a | b | c
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "this obby-sync needs a token: send `Authorization: Bearer <token>` or `?token=<token>`",
    )
}

/// The `Last-Event-ID` header as a cursor; `None` when it is not one.
fn resume_of(headers: &HeaderMap) -> Option<Resume> {
    let Some(value) = headers.get("last-event-id") else {
        return Some(Resume::Now);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() {
        return Some(Resume::Now);
    }
    match text.parse::<i64>() {
        Ok(c) if c >= 0 => Some(Resume::After(c)),
        _ => None,
    }
}

fn bad_last_event_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "Last-Event-ID must be a cursor (a number) this hub sent",
    )
}

/// Opens a client; a cursor the database cannot serve starts from now, with
/// the reason returned.
///
/// # Errors
/// Why no client could be opened (a database or pool error), for
/// [`unavailable`].
async fn open(
    hub: &Hub,
    topics: Topics,
    resume: Resume,
    keepalive: Keepalive,
) -> Result<(Client, Option<String>), String> {
    match hub.open(topics.clone(), resume, keepalive).await {
        Ok(client) => Ok((client, None)),
        Err(status)
            if resume != Resume::Now
                && matches!(status.code(), Code::OutOfRange | Code::InvalidArgument) =>
        {
            let client = hub
                .open(topics, Resume::Now, keepalive)
                .await
                .map_err(|s| s.message().to_owned())?;
            Ok((client, Some(status.message().to_owned())))
        }
        Err(status) => Err(status.message().to_owned()),
    }
}

/// A stream of `event` alone, with a `retry:`: what a client gets when the
/// hub cannot open it, so that an `EventSource` comes back by itself (a
/// status other than 200 would close it for good).
fn unavailable(event: Event) -> Response {
    let event = event.retry(UNAVAILABLE_RETRY);
    Sse::new(stream::iter([Ok::<_, Infallible>(event)])).into_response()
}

/// A field value axum accepts (no line breaks).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[derive(Serialize)]
struct Envelope<'a> {
    event: &'a str,
    topic: &'a str,
    data: &'a str,
}

fn envelope(event: &str, topic: &str, data: &str) -> String {
    // Serializing plain strings into a String cannot fail.
    serde_json::to_string(&Envelope { event, topic, data }).unwrap_or_default()
}

async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&state, &headers, &query) {
        return unauthorized();
    }
    let topics = Topics::parse(query.get("topics").into_iter().flat_map(|t| t.split(',')));
    let Some(resume) = resume_of(&headers) else {
        return bad_last_event_id();
    };
    let (client, reset) = match open(&state.hub, topics, resume, Keepalive::Every(PING_EVERY)).await
    {
        Ok(opened) => opened,
        Err(reason) => {
            let data = serde_json::json!({ "reason": reason });
            return unavailable(Event::default().event("unavailable").data(data.to_string()));
        }
    };
    let mut first = Event::default().event("connected").data(&client.id);
    if let Some(start) = client.start {
        first = first.id(start.to_string());
    }
    let mut head = vec![first];
    if let Some(reason) = reset {
        let data = serde_json::json!({ "reason": reason, "cursor": client.start });
        head.push(Event::default().event("reset").data(data.to_string()));
    }
    let encoding = SseFrames {
        root: state.hub.root().to_path_buf(),
    };
    let items = client
        .into_items()
        .map(move |item| sse_bytes(&encoding, item));
    event_stream(stream::iter([render(head)]).chain(items))
}

/// The `/sse` bytes of one item: a batch's changes are the shared frames
/// (no copy), cut where this client's rows start.
fn sse_bytes(encoding: &SseFrames, item: Item) -> Bytes {
    match item {
        Item::Changes(slice) => slice.encoded(encoding).from_row(slice.start()),
        Item::Matched(slice, matched) => render(
            matched
                .iter()
                .map(|(i, topic)| change_event(&encoding.root, &slice.rows()[*i], topic))
                .collect(),
        ),
        Item::Published(m) => m.frame(|m| {
            let event = Event::default().data(envelope(&m.event, &m.topic, &m.data));
            let event = if m.event.is_empty() {
                event
            } else {
                event.event(one_line(&m.event))
            };
            render(vec![event])
        }),
        Item::Ping => {
            render(vec![Event::default().event("ping").data(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )])
        }
        Item::Closing(status) => {
            render(vec![Event::default().event("dropped").data(
                serde_json::json!({ "reason": status.message() }).to_string(),
            )])
        }
    }
}

/// One `/sse` event of a change under `topic`.
fn change_event(root: &Path, row: &ChangeRow, topic: &str) -> Event {
    let data = ChangeData::of(root, row).to_json();
    Event::default()
        .event(one_line(&row.change_type))
        .id(row.cursor.to_string())
        .data(envelope(&row.change_type, topic, &data))
}

/// SSE events of a batch's rows, back to back, and where each row's end:
/// made once per batch and shared by every client of one kind of stream.
pub struct Frames {
    bytes: Bytes,
    ends: Vec<usize>,
}

impl Frames {
    fn of(rows: &[ChangeRow], events: impl Fn(&ChangeRow) -> Vec<Event>) -> Frames {
        let mut bytes = BytesMut::new();
        let mut ends = Vec::with_capacity(rows.len());
        for row in rows {
            bytes.extend_from_slice(&render(events(row)));
            ends.push(bytes.len());
        }
        Frames {
            bytes: bytes.freeze(),
            ends,
        }
    }

    /// The frames of the rows from `start` on, sharing the bytes.
    pub fn from_row(&self, start: usize) -> Bytes {
        let from = match start.checked_sub(1) {
            Some(before) => self.ends.get(before).copied().unwrap_or(self.bytes.len()),
            None => 0,
        };
        self.bytes.slice(from..)
    }
}

/// `/sse`'s frames of a batch under `file-changes`.
struct SseFrames {
    root: std::path::PathBuf,
}

impl Encoding for SseFrames {
    type Out = Frames;

    fn encode(&self, rows: &[ChangeRow]) -> Frames {
        Frames::of(rows, |row| {
            vec![change_event(&self.root, row, FILE_CHANGES)]
        })
    }
}

/// The web UI stream's frames of a batch.
struct WebFrames {
    root: std::path::PathBuf,
}

impl Encoding for WebFrames {
    type Out = Frames;

    fn encode(&self, rows: &[ChangeRow]) -> Frames {
        Frames::of(rows, |row| web_change(&self.root, row))
    }
}

/// The SSE framing of `events` (axum's: its `Event` splits data at line
/// breaks). axum hands an event's bytes only to a response body; the body of
/// a stream that is always ready yields them all at its first poll, so the
/// future below is complete at once.
fn render(events: Vec<Event>) -> Bytes {
    let body = Sse::new(stream::iter(events).map(Ok::<_, Infallible>))
        .into_response()
        .into_body();
    match axum::body::to_bytes(body, usize::MAX).now_or_never() {
        Some(Ok(bytes)) => bytes,
        // Neither happens for a ready stream of events (see above).
        Some(Err(e)) => {
            tracing::error!(error = %e, "an SSE event could not be rendered");
            Bytes::new()
        }
        None => {
            tracing::error!("an SSE event was not rendered at once");
            Bytes::new()
        }
    }
}

/// A `text/event-stream` response of `frames`, with the headers axum's
/// [`Sse`] sets.
fn event_stream<S>(frames: S) -> Response
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames.map(Ok::<_, Infallible>)),
    )
        .into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    axum::Json(serde_json::json!({
        "status": "healthy",
        "timestamp": now,
        "clients": state.hub.clients(),
    }))
    .into_response()
}

#[derive(Serialize)]
struct WebConnected<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct WebUpdate<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(rename = "filePath")]
    file_path: &'a str,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct WebOther<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

async fn web_updates(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&state, &headers, &query) {
        return unauthorized();
    }
    let Some(resume) = resume_of(&headers) else {
        return bad_last_event_id();
    };
    let (client, _reset) = match open(
        &state.hub,
        Topics::all_changes(),
        resume,
        Keepalive::AfterSilence(WEB_KEEPALIVE),
    )
    .await
    {
        Ok(opened) => opened,
        Err(reason) => {
            return unavailable(Event::default().data(python_json(&WebOther {
                kind: "error",
                message: Some(&reason),
            })));
        }
    };
    let mut first = Event::default().data(python_json(&WebConnected {
        kind: "connected",
        client_id: &client.id,
        message: WEB_CONNECTED,
    }));
    if let Some(start) = client.start {
        first = first.id(start.to_string());
    }
    let encoding = WebFrames {
        root: state.hub.root().to_path_buf(),
    };
    let items = client
        .into_items()
        .map(move |item| web_bytes(&encoding, item));
    event_stream(stream::iter([render(vec![first])]).chain(items))
}

/// The web UI stream's bytes of one item (a batch's changes shared).
fn web_bytes(encoding: &WebFrames, item: Item) -> Bytes {
    match item {
        Item::Changes(slice) => slice.encoded(encoding).from_row(slice.start()),
        Item::Matched(slice, matched) => render(
            matched
                .iter()
                .flat_map(|(i, _)| web_change(&encoding.root, &slice.rows()[*i]))
                .collect(),
        ),
        Item::Published(_) => Bytes::new(),
        Item::Ping => render(vec![Event::default().data(python_json(&WebOther {
            kind: "keepalive",
            message: None,
        }))]),
        Item::Closing(status) => render(vec![Event::default().data(python_json(&WebOther {
            kind: "error",
            message: Some(status.message()),
        }))]),
    }
}

/// The web UI's events of one change (two for a move).
fn web_change(root: &Path, row: &ChangeRow) -> Vec<Event> {
    let timestamp = utc_iso(&row.timestamp);
    let rel = super::relative(root, &row.path);
    let update = |kind: &str, path: &str| {
        Event::default().data(python_json(&WebUpdate {
            kind,
            file_path: path,
            timestamp: &timestamp,
        }))
    };
    let id = row.cursor.to_string();
    match (row.change_type.as_str(), row.old_path.as_deref()) {
        ("moved", Some(old)) => vec![
            // Only the second carries the id: a reconnect between
            // the two sends both again.
            update("deleted", &super::relative(root, old)),
            update("created", &rel).id(id),
        ],
        ("moved", None) => vec![update("created", &rel).id(id)],
        (kind, _) => vec![update(kind, &rel).id(id)],
    }
}

/// A stored local time (`YYYY-MM-DD HH:MM:SS.ffffff`) as the backend's
/// `datetime.utcnow().isoformat() + 'Z'`; now when the text is not a time.
pub fn utc_iso(local: &str) -> String {
    let utc = chrono::NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .and_then(|naive| chrono::Local.from_local_datetime(&naive).earliest())
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc))
        .naive_utc();
    // Python's isoformat leaves out a zero fraction.
    if utc.and_utc().timestamp_subsec_micros() == 0 {
        format!("{}Z", utc.format("%Y-%m-%dT%H:%M:%S"))
    } else {
        format!("{}Z", utc.format("%Y-%m-%dT%H:%M:%S%.6f"))
    }
}

/// JSON as Python's `json.dumps` writes it: `", "` and `": "` separators,
/// non-ASCII as `\uXXXX`.
pub fn python_json<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing plain structs of strings into memory cannot fail.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        // json.dumps({"type": "modified", "filePath": "notes/é 😀.md", "timestamp": "t"})
        let got = python_json(&WebUpdate {
            kind: "modified",
            file_path: "notes/é 😀.md",
            timestamp: "t",
        });
        assert_eq!(
            got,
            r#"{"type": "modified", "filePath": "notes/\u00e9 \ud83d\ude00.md", "timestamp": "t"}"#
        );
    }

    #[test]
    fn shared_frames_are_cut_where_a_clients_rows_start() {
        let row = |cursor: i64| ChangeRow {
            cursor,
            path: format!("/v/notes/{cursor}.md"),
            change_type: "modified".into(),
            old_path: None,
            version_id: Some(cursor),
            diff_id: Some(cursor),
            lines_added: Some(2),
            lines_removed: Some(1),
            timestamp: "2026-12-02 06:00:00.000000".into(),
            content_hash: None,
        };
        let rows: Vec<ChangeRow> = (7..=9).map(row).collect();
        let encoding = SseFrames { root: "/v".into() };
        let frames = encoding.encode(&rows);
        let text = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf-8");
        let all = text(frames.from_row(0));
        // Each row's frame is what the single-event rendering gives.
        let one =
            |r: &ChangeRow| text(render(vec![change_event(Path::new("/v"), r, FILE_CHANGES)]));
        assert_eq!(all, rows.iter().map(one).collect::<String>());
        assert!(all.starts_with("event: modified\nid: 7\ndata: "), "{all}");
        assert!(all.contains(r#"\"relative_path\":\"notes/8.md\""#), "{all}");
        let tail = text(frames.from_row(2));
        assert_eq!(tail, one(&rows[2]));
        assert!(frames.from_row(3).is_empty());
    }

    #[test]
    fn utc_iso_is_the_backends_isoformat() {
        let s = utc_iso("2026-03-01 12:00:00.250000");
        assert!(s.ends_with(".250000Z") && s.len() == 27, "{s}");
        let whole = utc_iso("2026-03-01 12:00:00.000000");
        assert!(whole.ends_with(":00Z") && whole.len() == 20, "{whole}");
    }
}
