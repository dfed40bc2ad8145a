//! The SSE hub (the seed's phase 4): `obby.sse.SSEService` over gRPC and
//! server-sent events over HTTP ([`http`]), on ports of their own.
//!
//! Two kinds of message reach a client. **Published** messages come from
//! `Publish` and are live only: they are kept nowhere, so a client that is
//! not connected (or falls behind) does not get them. **File changes** are
//! the engine's committed `file_changes` rows, read through the api's change
//! feed (`api::feed`) exactly as `Subscribe` reads them: a client
//! subscribes to the feed, catches up from the database after its cursor,
//! then forwards live rows past it, so with the cursor of the last change it
//! saw (SSE `Last-Event-ID`, gRPC `after_cursor`) a client that reconnects,
//! even to a restarted engine, misses none and sees none twice.
//!
//! Topics: `file-changes` (every change), `file-changes:<folder>` (changes
//! of files under a folder relative to the root, or moved from or to one),
//! any other name for published messages; no topic at all means every
//! topic. A change goes to a client once, labelled `file-changes` when the
//! client asked for that (or for everything), else with the first of its
//! folder topics that matches. The change topics are the engine's: `Publish`
//! refuses them.
//!
//! Memory is bounded per client and no client slows the engine: a client
//! has no task of its own; its items are made only as fast as its transport
//! takes them. A batch of changes is encoded once for every client of one
//! kind (`/sse` under `file-changes`, the web UI stream, `RegisterClient`)
//! and the bytes shared; only folder topics are encoded per client. A
//! client that reads slowly is simply not polled; meanwhile file changes
//! pile up in the shared feed only, and are read again from the database
//! once it is behind; published messages are held in a shared ring of
//! [`PUBLISHED_BUFFER`], and a client that falls further behind than that is
//! sent a last message saying so and disconnected (it reconnects with its
//! cursor and resumes the file changes). Reads the database (`file_changes`,
//! `content_diffs`) through the reader pool; writes only the bound addresses
//! to `sync_meta`.

pub mod http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::feed::{
    self, ChangeRow, Commits, Encoding, Follower, Slice, check_cursor, newest_cursor,
};
use super::proto::sse::sse_service_server::{SseService, SseServiceServer};
use super::proto::sse::{ClientRequest, PublishRequest, PublishResponse, SseMessage};
use super::{ApiError, Auth, blocking, limits, status_from};
use crate::engine::EngineHandle;

/// The gRPC port's default (the seed's).
pub const DEFAULT_GRPC_PORT: u16 = 50054;

/// The HTTP port's default (the seed's).
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// The topic of every committed file change; `file-changes:<folder>` narrows
/// it to a folder.
pub const FILE_CHANGES: &str = "file-changes";

/// Published messages kept for clients that lag; a client further behind is
/// disconnected.
pub const PUBLISHED_BUFFER: usize = 512;

/// Largest `data` a `Publish` may carry: with [`PUBLISHED_BUFFER`] it bounds
/// what the ring holds (32 MiB).
pub const MAX_PUBLISH_BYTES: usize = 64 * 1024;

/// `/sse` sends `event: ping` this often.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// The web UI's stream sends `{"type":"keepalive"}` after this much silence.
pub const WEB_KEEPALIVE: Duration = Duration::from_secs(5);

/// Where the hub listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseAddrs {
    /// `obby.sse.SSEService` (and health, reflection).
    pub grpc: SocketAddr,
    /// `/sse`, `/health`, `/api/files/updates/stream`.
    pub http: SocketAddr,
}

/// What a client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// No topic named: everything.
    everything: bool,
    /// Published topics, by exact name.
    published: Vec<String>,
    /// `file-changes`: every change.
    all_changes: bool,
    /// `file-changes:<folder>`: (the topic as named, the folder).
    folders: Vec<(String, String)>,
}

impl Topics {
    /// Parses topic names; blank names are skipped, and none means every
    /// topic.
    pub fn parse<I, S>(names: I) -> Topics
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut t = Topics::default();
        for name in names {
            let name = name.as_ref().trim();
            if name.is_empty() {
                continue;
            }
            if name == FILE_CHANGES {
                t.all_changes = true;
            } else if let Some(folder) = name
                .strip_prefix(FILE_CHANGES)
                .and_then(|r| r.strip_prefix(':'))
            {
                let folder = folder.trim_matches('/');
                if folder.is_empty() {
                    t.all_changes = true;
                } else {
                    t.folders.push((name.to_owned(), folder.to_owned()));
                }
            } else if !t.published.iter().any(|p| p == name) {
                t.published.push(name.to_owned());
            }
        }
        t.everything = !t.all_changes && t.folders.is_empty() && t.published.is_empty();
        t
    }

    /// Only file changes, every one (the web UI's stream).
    pub fn all_changes() -> Topics {
        Topics {
            all_changes: true,
            ..Topics::default()
        }
    }

    /// True for a topic of the engine's (refused by `Publish`).
    pub fn reserved(topic: &str) -> bool {
        topic == FILE_CHANGES
            || topic
                .strip_prefix(FILE_CHANGES)
                .is_some_and(|r| r.starts_with(':'))
    }

    /// True when published messages of `topic` are wanted.
    pub fn wants_published(&self, topic: &str) -> bool {
        self.everything || self.published.iter().any(|p| p == topic)
    }

    fn wants_any_published(&self) -> bool {
        self.everything || !self.published.is_empty()
    }

    /// True when some file changes are wanted.
    pub fn wants_changes(&self) -> bool {
        self.everything || self.all_changes || !self.folders.is_empty()
    }

    /// True when every change is wanted (under `file-changes`).
    pub fn every_change(&self) -> bool {
        self.everything || self.all_changes
    }

    /// The topic a change of `rel` (moved from `old_rel`) is sent under, if
    /// any.
    pub fn change_topic(&self, rel: &str, old_rel: Option<&str>) -> Option<&str> {
        if self.every_change() {
            return Some(FILE_CHANGES);
        }
        let under = |path: &str, folder: &str| {
            path.strip_prefix(folder)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        };
        self.folders
            .iter()
            .find(|(_, folder)| under(rel, folder) || old_rel.is_some_and(|o| under(o, folder)))
            .map(|(topic, _)| topic.as_str())
    }
}

/// A message from `Publish`.
#[derive(Debug)]
pub struct Published {
    /// The event name.
    pub event: String,
    /// The topic.
    pub topic: String,
    /// The data, as sent.
    pub data: String,
    /// Its `/sse` frame, made by the first client that sends it.
    frame: OnceLock<Bytes>,
}

impl Published {
    /// A message to publish.
    pub fn new(event: String, topic: String, data: String) -> Published {
        Published {
            event,
            topic,
            data,
            frame: OnceLock::new(),
        }
    }

    /// Its frame, made by `render` once for every client.
    pub fn frame(&self, render: impl FnOnce(&Published) -> Bytes) -> Bytes {
        self.frame.get_or_init(|| render(self)).clone()
    }
}

/// What a client's stream yields.
pub enum Item {
    /// Committed changes, every one under `file-changes`.
    Changes(Slice),
    /// Committed changes under the client's folder topics: the rows of the
    /// slice that matched (their index in `Slice::rows`), each with the
    /// topic it matched.
    Matched(Slice, Vec<(usize, String)>),
    /// A published message.
    Published(Arc<Published>),
    /// Time for a keep-alive.
    Ping,
    /// The last item: the client is disconnected for this reason.
    Closing(Status),
}

/// When a client's stream yields keep-alives.
#[derive(Debug, Clone, Copy)]
pub enum Keepalive {
    /// Never (gRPC has its own).
    Never,
    /// At this interval, whatever else is sent.
    Every(Duration),
    /// After this much silence.
    AfterSilence(Duration),
}

/// Where a client's file changes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// After the newest committed change.
    Now,
    /// After this cursor (checked against the database).
    After(i64),
}

/// An open client: its id, where its changes start, its items.
pub struct Client {
    /// Shown to the client in its first message.
    pub id: String,
    /// The cursor its file changes start after (`None` when it wants none).
    pub start: Option<i64>,
    items: Items,
}

impl Client {
    /// Its items, ending when the api stops (or after [`Item::Closing`]);
    /// the client leaves the registry when the stream is dropped.
    pub fn into_items(self) -> impl Stream<Item = Item> + Send + 'static {
        stream::unfold(self.items, |mut items| async move {
            let item = items.next().await?;
            Some((item, items))
        })
    }
}

/// The hub: published messages, the registry of clients, the change feed.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    handle: EngineHandle,
    feed: feed::Hub,
    commits: Commits,
    published: broadcast::Sender<Arc<Published>>,
    /// Connected clients' topics, by a number of this process.
    clients: Mutex<HashMap<u64, Arc<Topics>>>,
    next: AtomicU64,
}

/// Removes a client from the registry when its task ends.
struct ClientGuard {
    inner: Arc<Inner>,
    n: u64,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.n);
    }
}

/// A client id in the backend's shape (`client-<unix time>`), made unique by
/// a counter.
fn client_id(n: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("client-{}.{:06}-{n}", now.as_secs(), now.subsec_micros())
}

impl Hub {
    /// A hub on the api's change feed.
    pub fn new(handle: EngineHandle, feed: feed::Hub, commits: Commits) -> Hub {
        let (published, _) = broadcast::channel(PUBLISHED_BUFFER);
        Hub {
            inner: Arc::new(Inner {
                handle,
                feed,
                commits,
                published,
                clients: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            }),
        }
    }

    /// The engine's root (paths are shown relative to it).
    pub fn root(&self) -> &Path {
        self.inner.handle.root()
    }

    /// Clients connected now (every transport).
    pub fn clients(&self) -> usize {
        self.inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sends a published message to the clients that want its topic; returns
    /// how many do.
    pub fn publish(&self, message: Published) -> usize {
        let n = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|t| t.wants_published(&message.topic))
            .count();
        // An error only means no receiver exists right now.
        let _ = self.inner.published.send(Arc::new(message));
        n
    }

    /// Opens a client: registers it, resolves where its changes start and
    /// starts its task.
    ///
    /// # Errors
    /// `OUT_OF_RANGE` (or `INVALID_ARGUMENT`) for a cursor the database
    /// cannot serve, as `Subscribe` says; database errors.
    pub async fn open(
        &self,
        topics: Topics,
        resume: Resume,
        keepalive: Keepalive,
    ) -> Result<Client, Status> {
        let start = if topics.wants_changes() {
            let handle = self.inner.handle.clone();
            Some(
                blocking(move || {
                    let conn = handle.conn().map_err(status_from)?;
                    match resume {
                        Resume::Now => {
                            newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))
                        }
                        Resume::After(c) => check_cursor(&conn, c, "after_cursor").map(|()| c),
                    }
                })
                .await?,
            )
        } else {
            None
        };
        // Subscribed before the client is counted, so no message a Publish
        // counted it for is missed.
        let published = topics
            .wants_any_published()
            .then(|| self.inner.published.subscribe());
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let topics = Arc::new(topics);
        self.inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(n, topics.clone());
        let guard = ClientGuard {
            inner: self.inner.clone(),
            n,
        };
        let changes = start.map(|after| {
            Follower::new(
                self.inner.handle.clone(),
                &self.inner.feed,
                self.inner.commits.clone(),
                after,
            )
        });
        let period = match keepalive {
            Keepalive::Never => Duration::from_secs(365 * 24 * 3600),
            Keepalive::Every(d) | Keepalive::AfterSilence(d) => d,
        };
        let items = Items {
            root: self.root().to_path_buf(),
            topics,
            changes,
            published,
            keepalive,
            period,
            ping: Box::pin(tokio::time::sleep(period)),
            commits: self.inner.commits.clone(),
            done: false,
            _guard: guard,
        };
        Ok(Client {
            id: client_id(n),
            start,
            items,
        })
    }
}

/// One client's items: its file changes (a [`Follower`] of the change
/// feed, no task of its own), its published messages and its keep-alives,
/// made only as fast as its transport takes them.
struct Items {
    root: std::path::PathBuf,
    topics: Arc<Topics>,
    changes: Option<Follower>,
    published: Option<broadcast::Receiver<Arc<Published>>>,
    keepalive: Keepalive,
    period: Duration,
    ping: Pin<Box<tokio::time::Sleep>>,
    commits: Commits,
    /// [`Item::Closing`] was yielded.
    done: bool,
    /// Removes the client from the registry when the stream is dropped.
    _guard: ClientGuard,
}

/// The next changes of an optional follower; never, without one.
async fn next_change(f: &mut Option<Follower>) -> Option<Result<Slice, Status>> {
    match f {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

/// The next published message; never, without a receiver.
async fn next_published(
    r: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, broadcast::error::RecvError> {
    match r {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

impl Items {
    async fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        loop {
            let item = tokio::select! {
                slice = next_change(&mut self.changes) => match slice {
                    Some(Ok(slice)) => match self.matching(slice) {
                        Some(item) => item,
                        None => continue,
                    },
                    Some(Err(status)) => Item::Closing(status),
                    // The feed ended: the api is stopping.
                    None => return None,
                },
                message = next_published(&mut self.published) => match message {
                    Ok(m) if self.topics.wants_published(&m.topic) => Item::Published(m),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Item::Closing(Status::resource_exhausted(format!(
                        "this client fell {n} published messages behind and is disconnected; \
                         published messages are live only, file changes resume from the last id seen"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = &mut self.ping => Item::Ping,
                () = self.commits.until_stopping() => return None,
            };
            self.done = matches!(item, Item::Closing(_));
            if matches!(item, Item::Ping) || matches!(self.keepalive, Keepalive::AfterSilence(_)) {
                let next = tokio::time::Instant::from_std(Instant::now() + self.period);
                self.ping.as_mut().reset(next);
            }
            return Some(item);
        }
    }

    /// The slice as this client's item: every change, or those under its
    /// folder topics (`None` when no row matched).
    fn matching(&self, slice: Slice) -> Option<Item> {
        if self.topics.every_change() {
            return Some(Item::Changes(slice));
        }
        let matched: Vec<(usize, String)> = slice
            .rows()
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let rel = relative(&self.root, &row.path);
                let old = row.old_path.as_deref().map(|o| relative(&self.root, o));
                let topic = self.topics.change_topic(&rel, old.as_deref())?;
                Some((i, topic.to_owned()))
            })
            .collect();
        (!matched.is_empty()).then_some(Item::Matched(slice, matched))
    }
}

/// `path` relative to `root`; the path itself when it is not beneath the
/// root (a row another program wrote). A backslash is part of a Linux
/// file name, never a separator.
pub fn relative(root: &Path, path: &str) -> String {
    match Path::new(path).strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_owned(),
    }
}

/// The `data` of a file change message (a JSON text).
#[derive(Debug, Serialize)]
pub struct ChangeData<'a> {
    /// `file_changes.id`: the message's SSE id.
    pub cursor: i64,
    /// Absolute path.
    pub path: &'a str,
    /// Relative to the root.
    pub relative_path: String,
    /// created, modified, deleted, moved.
    pub change_type: &'a str,
    /// A move's source, absolute.
    pub old_path: Option<&'a str>,
    /// A move's source, relative.
    pub old_relative_path: Option<String>,
    /// The version written (none for a deletion).
    pub version_id: Option<i64>,
    /// The diff's `+` lines (0 without a diff).
    pub lines_added: i64,
    /// The diff's `-` lines.
    pub lines_removed: i64,
    /// Local time, `YYYY-MM-DD HH:MM:SS.ffffff`, as stored.
    pub timestamp: &'a str,
}

impl<'a> ChangeData<'a> {
    /// The data of `row`.
    pub fn of(root: &Path, row: &'a ChangeRow) -> ChangeData<'a> {
        ChangeData {
            cursor: row.cursor,
            path: &row.path,
            relative_path: relative(root, &row.path),
            change_type: &row.change_type,
            old_path: row.old_path.as_deref(),
            old_relative_path: row.old_path.as_deref().map(|o| relative(root, o)),
            version_id: row.version_id,
            lines_added: row.lines_added.unwrap_or(0),
            lines_removed: row.lines_removed.unwrap_or(0),
            timestamp: &row.timestamp,
        }
    }

    /// As JSON text.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `obby.sse.SSEService`.
#[derive(Clone)]
pub struct GrpcService {
    hub: Hub,
}

#[tonic::async_trait]
impl SseService for GrpcService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let req = request.into_inner();
        check_publish(&req)?;
        let clients = self
            .hub
            .publish(Published::new(req.event, req.topic, req.data));
        Ok(Response::new(PublishResponse {
            success: true,
            clients: i32::try_from(clients).unwrap_or(i32::MAX),
        }))
    }

    type RegisterClientStream =
        Pin<Box<dyn Stream<Item = Result<SseMessage, Status>> + Send + 'static>>;

    async fn register_client(
        &self,
        request: Request<ClientRequest>,
    ) -> Result<Response<Self::RegisterClientStream>, Status> {
        let req = request.into_inner();
        let resume = match req.after_cursor {
            Some(c) => Resume::After(c),
            None => Resume::Now,
        };
        let client = self
            .hub
            .open(Topics::parse(&req.topics), resume, Keepalive::Never)
            .await?;
        let connected = SseMessage {
            event: "connected".into(),
            topic: String::new(),
            data: client.id.clone(),
            id: client.start.unwrap_or(0),
        };
        let encoding = GrpcChanges {
            root: self.hub.root().to_path_buf(),
        };
        let items = client.into_items().flat_map(move |item| {
            let messages: Vec<Result<SseMessage, Status>> = match item {
                Item::Changes(slice) => slice.encoded(&encoding)[slice.start()..]
                    .iter()
                    .cloned()
                    .map(Ok)
                    .collect(),
                Item::Matched(slice, matched) => matched
                    .iter()
                    .map(|(i, topic)| Ok(change_message(&encoding.root, &slice.rows()[*i], topic)))
                    .collect(),
                Item::Published(m) => vec![Ok(SseMessage {
                    event: m.event.clone(),
                    topic: m.topic.clone(),
                    data: m.data.clone(),
                    id: 0,
                })],
                Item::Ping => Vec::new(),
                Item::Closing(status) => vec![Err(status)],
            };
            stream::iter(messages)
        });
        Ok(Response::new(Box::pin(
            stream::once(async { Ok(connected) }).chain(items),
        )))
    }
}

/// `RegisterClient`'s message of a change under `topic`.
fn change_message(root: &Path, row: &ChangeRow, topic: &str) -> SseMessage {
    SseMessage {
        event: row.change_type.clone(),
        topic: topic.to_owned(),
        data: ChangeData::of(root, row).to_json(),
        id: row.cursor,
    }
}

/// `RegisterClient`'s messages of a batch under `file-changes`, made once
/// per batch for every gRPC client.
struct GrpcChanges {
    root: std::path::PathBuf,
}

impl Encoding for GrpcChanges {
    type Out = Vec<SseMessage>;

    fn encode(&self, rows: &[ChangeRow]) -> Vec<SseMessage> {
        rows.iter()
            .map(|row| change_message(&self.root, row, FILE_CHANGES))
            .collect()
    }
}

/// Refuses what `Publish` must not send.
fn check_publish(req: &PublishRequest) -> Result<(), Status> {
    if Topics::reserved(&req.topic) {
        return Err(Status::invalid_argument(format!(
            "topic {:?} is the engine's own (committed file changes); publish under another name",
            req.topic
        )));
    }
    if req.topic.trim().is_empty() {
        return Err(Status::invalid_argument("topic must not be empty"));
    }
    if req.event.contains(['\n', '\r']) || req.topic.contains(['\n', '\r']) {
        return Err(Status::invalid_argument(
            "event and topic must not contain line breaks (they are SSE field values)",
        ));
    }
    if req.data.len() > MAX_PUBLISH_BYTES {
        return Err(Status::out_of_range(format!(
            "data is {} bytes; at most {MAX_PUBLISH_BYTES} may be published",
            req.data.len()
        )));
    }
    Ok(())
}

/// Binds both ports, records them in `sync_meta` (`api_sse_grpc_addr`,
/// `api_sse_http_addr`) and serves until `stop` turns true. Returns the two
/// server tasks.
///
/// # Errors
/// [`ApiError::Bind`] when a port is taken; recording the addresses.
pub(crate) async fn start(
    handle: EngineHandle,
    addrs: SseAddrs,
    token: Option<Arc<[u8; 32]>>,
    feed: feed::Hub,
    commits: Commits,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<Result<(), ApiError>>>, ApiError> {
    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok::<_, ApiError>((listener, bound))
    };
    let (grpc_listener, grpc_addr) = bind(addrs.grpc).await?;
    let (http_listener, http_addr) = bind(addrs.http).await?;
    super::record_addrs(
        &handle,
        vec![
            ("api_sse_grpc_addr", grpc_addr.to_string()),
            ("api_sse_http_addr", http_addr.to_string()),
        ],
    )
    .await?;
    tracing::info!(%grpc_addr, %http_addr, "SSE hub listening");
    let hub = Hub::new(handle, feed, commits);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SseServiceServer<GrpcService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::DESCRIPTOR)
        .with_service_name(super::proto::sse::sse_service_server::SERVICE_NAME)
        .build_v1()?;
    let auth = Auth {
        token: token.clone(),
    };
    let service = SseServiceServer::new(GrpcService { hub: hub.clone() })
        // A little over the largest data, for the other two fields.
        .max_decoding_message_size(MAX_PUBLISH_BYTES + 16 * 1024);
    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits::MAX_CALLS_PER_CONNECTION)
        .max_concurrent_streams(Some(limits::MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(service, auth));
    let mut stop_grpc = stop.clone();
    let grpc = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(super::incoming(grpc_listener), async move {
                let _ = stop_grpc.wait_for(|s| *s).await;
            })
            .await
            .map_err(ApiError::from)
    });
    let http = tokio::spawn(http::serve(hub, token, http_listener, stop));
    Ok(vec![grpc, http])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_select_published_names_and_change_folders() {
        let t = Topics::parse(["news", " file-changes:notes/ ", ""]);
        assert!(t.wants_published("news"));
        assert!(!t.wants_published("other"));
        assert!(t.wants_changes());
        assert_eq!(
            t.change_topic("notes/a.md", None),
            Some("file-changes:notes/")
        );
        assert_eq!(t.change_topic("notes", None), Some("file-changes:notes/"));
        assert_eq!(t.change_topic("notesx/a.md", None), None);
        assert_eq!(
            t.change_topic("elsewhere/a.md", Some("notes/a.md")),
            Some("file-changes:notes/"),
            "a move out of the folder is shown to its watchers"
        );
        let all = Topics::parse(Vec::<String>::new());
        assert!(all.wants_published("anything") && all.wants_changes());
        assert_eq!(all.change_topic("x.md", None), Some(FILE_CHANGES));
        let only = Topics::parse(["news"]);
        assert!(!only.wants_changes());
        let both = Topics::parse(["file-changes:notes", "file-changes"]);
        assert_eq!(both.change_topic("notes/a.md", None), Some(FILE_CHANGES));
    }

    #[test]
    fn the_change_topics_are_reserved() {
        for t in ["file-changes", "file-changes:notes", "file-changes:"] {
            assert!(Topics::reserved(t), "{t}");
        }
        for t in ["file-changesx", "files", "news"] {
            assert!(!Topics::reserved(t), "{t}");
        }
        let req = |topic: &str, event: &str, data: usize| PublishRequest {
            event: event.into(),
            topic: topic.into(),
            data: "x".repeat(data),
        };
        assert!(check_publish(&req("news", "update", 10)).is_ok());
        assert_eq!(
            check_publish(&req("file-changes", "x", 1))
                .expect_err("reserved")
                .code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            check_publish(&req("news", "a\nb", 1))
                .expect_err("newline")
                .code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            check_publish(&req("news", "x", MAX_PUBLISH_BYTES + 1))
                .expect_err("large")
                .code(),
            tonic::Code::OutOfRange
        );
    }

    #[test]
    fn the_hub_beyond_loopback_needs_a_token_too() {
        let mut cfg = super::super::ApiConfig::local(0, 0);
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        cfg.sse = Some(SseAddrs { grpc: lo, http: lo });
        assert!(cfg.check().is_ok());
        cfg.sse = Some(SseAddrs {
            grpc: lo,
            http: any,
        });
        assert!(matches!(cfg.check(), Err(ApiError::Insecure { addr }) if addr == any));
        cfg.token = Some("t".into());
        assert!(cfg.check().is_ok());
    }

    #[test]
    fn relative_paths_keep_names_as_they_are_and_foreign_paths_whole() {
        let root = Path::new("/v");
        assert_eq!(relative(root, "/v/notes/a.md"), "notes/a.md");
        assert_eq!(relative(root, "/elsewhere/a.md"), "/elsewhere/a.md");
        // One file in notes/, named `sub\evil.md`: not in a folder `sub`.
        assert_eq!(
            relative(root, "/v/notes/sub\\evil.md"),
            "notes/sub\\evil.md"
        );
    }
}
