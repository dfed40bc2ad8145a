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
//! Memory is bounded per client and no client slows the engine: each
//! client's task forwards into a channel of [`CLIENT_BUFFER`] items. A client
//! that reads slowly makes its task wait; meanwhile file changes pile up in
//! the shared feed only, and are read again from the database once it is
//! behind; published messages are held in a shared ring of
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::feed::{self, ChangeRow, Commits, check_cursor, newest_cursor, stream_changes};
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

/// Items buffered per client before its task waits for the client.
pub const CLIENT_BUFFER: usize = 256;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event name.
    pub event: String,
    /// The topic.
    pub topic: String,
    /// The data, as sent.
    pub data: String,
}

/// What a client's task hands its transport.
#[derive(Debug)]
pub enum Item {
    /// A committed change, under the client's matching topic.
    Change {
        /// The change.
        row: Box<ChangeRow>,
        /// The topic it matched.
        topic: String,
    },
    /// A published message.
    Published(Arc<Published>),
    /// Time for a keep-alive.
    Ping,
    /// The last item: the client is disconnected for this reason.
    Closing(Status),
}

/// When a client's task asks for keep-alives.
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
    /// Its items, ending when the client is dropped or the api stops.
    pub items: mpsc::Receiver<Item>,
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
                        Resume::After(c) => check_cursor(&conn, c).map(|()| c),
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
            stream_changes(
                self.inner.handle.clone(),
                &self.inner.feed,
                self.inner.commits.clone(),
                after,
                |row| row,
            )
        });
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let task = ClientTask {
            root: self.root().to_path_buf(),
            topics,
            changes,
            published,
            keepalive,
            commits: self.inner.commits.clone(),
            tx,
        };
        tokio::spawn(task.run(guard));
        Ok(Client {
            id: client_id(n),
            start,
            items: rx,
        })
    }
}

/// One client's forwarding loop.
struct ClientTask {
    root: std::path::PathBuf,
    topics: Arc<Topics>,
    changes: Option<ReceiverStream<Result<ChangeRow, Status>>>,
    published: Option<broadcast::Receiver<Arc<Published>>>,
    keepalive: Keepalive,
    commits: Commits,
    tx: mpsc::Sender<Item>,
}

/// The next item of an optional stream; never, without one.
async fn next_change(
    s: &mut Option<ReceiverStream<Result<ChangeRow, Status>>>,
) -> Option<Result<ChangeRow, Status>> {
    match s {
        Some(s) => s.next().await,
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

impl ClientTask {
    async fn run(mut self, _guard: ClientGuard) {
        let far = Duration::from_secs(365 * 24 * 3600);
        let period = match self.keepalive {
            Keepalive::Never => far,
            Keepalive::Every(d) | Keepalive::AfterSilence(d) => d,
        };
        let ping = tokio::time::sleep(period);
        tokio::pin!(ping);
        loop {
            let item = tokio::select! {
                row = next_change(&mut self.changes) => match row {
                    Some(Ok(row)) => {
                        let topic = if self.topics.every_change() {
                            // No folder to match: no relative path to make.
                            Some(FILE_CHANGES)
                        } else {
                            let rel = relative(&self.root, &row.path);
                            let old = row.old_path.as_deref().map(|o| relative(&self.root, o));
                            self.topics.change_topic(&rel, old.as_deref())
                        };
                        match topic {
                            Some(topic) => Item::Change { topic: topic.to_owned(), row: Box::new(row) },
                            None => continue,
                        }
                    }
                    Some(Err(status)) => Item::Closing(status),
                    // The feed ended: the api is stopping.
                    None => return,
                },
                message = next_published(&mut self.published) => match message {
                    Ok(m) if self.topics.wants_published(&m.topic) => Item::Published(m),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => Item::Closing(Status::resource_exhausted(format!(
                        "this client fell {n} published messages behind and is disconnected; \
                         published messages are live only, file changes resume from the last id seen"
                    ))),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = &mut ping => Item::Ping,
                () = self.tx.closed() => return,
                () = self.commits.until_stopping() => return,
            };
            let last = matches!(item, Item::Closing(_));
            let ping_sent = matches!(item, Item::Ping);
            if self.tx.send(item).await.is_err() || last {
                return;
            }
            if ping_sent || matches!(self.keepalive, Keepalive::AfterSilence(_)) {
                ping.as_mut()
                    .reset(tokio::time::Instant::from_std(Instant::now() + period));
            }
        }
    }
}

/// `path` relative to `root` with forward slashes; the path itself when it
/// is not beneath the root (a row another program wrote).
pub fn relative(root: &Path, path: &str) -> String {
    match Path::new(path).strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().replace('\\', "/"),
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
    /// Relative to the root, forward slashes.
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
        let clients = self.hub.publish(Published {
            event: req.event,
            topic: req.topic,
            data: req.data,
        });
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
        let root = self.hub.root().to_path_buf();
        let items = ReceiverStream::new(client.items).filter_map(move |item| match item {
            Item::Change { row, topic } => Some(Ok(SseMessage {
                event: row.change_type.clone(),
                topic,
                data: ChangeData::of(&root, &row).to_json(),
                id: row.cursor,
            })),
            Item::Published(m) => Some(Ok(SseMessage {
                event: m.event.clone(),
                topic: m.topic.clone(),
                data: m.data.clone(),
                id: 0,
            })),
            Item::Ping => None,
            Item::Closing(status) => Some(Err(status)),
        });
        Ok(Response::new(Box::pin(
            tokio_stream::once(Ok(connected)).chain(items),
        )))
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
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async move {
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
    fn relative_paths_use_forward_slashes_and_keep_foreign_paths() {
        let root = Path::new("/v");
        assert_eq!(relative(root, "/v/notes/a.md"), "notes/a.md");
        assert_eq!(relative(root, "/elsewhere/a.md"), "/elsewhere/a.md");
    }
}
