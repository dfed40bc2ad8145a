//! The gRPC api: Obby's two old services (`obby.filewatcher.FileWatcher`,
//! `obby.contenttracker.ContentTracker`) and obby-sync's own
//! `obby.sync.v1.Sync`, plus standard health and reflection; and, on a port
//! of its own, the seed's `obby.query.QueryService` (`api/query.rs`).
//!
//! The database carries the data; the api only signals progress, answers
//! questions and steers the engine through an [`EngineHandle`]. It depends on
//! the engine, never the reverse, and never blocks the runtime: every query
//! runs in `spawn_blocking` on a pooled connection. Every path a client sends
//! is resolved (`..`, symlinks) and refused with `PERMISSION_DENIED` when it
//! leaves the root, and a file is only ever opened through the handle's
//! `read_text` and `digest` (beneath the root, no symlinks, regular files
//! only, never blocking); malformed input is `INVALID_ARGUMENT`. The api
//! names nothing of the engine but [`EngineHandle`] and the plain types
//! `engine/mod.rs` re-exports. Requests, connections and content calls are bounded
//! as [`limits`] says. With a token set, every call but health needs it
//! (`authorization: Bearer <token>` or `x-obby-token`), compared in constant
//! time; [`serve`] refuses to bind anything but loopback without a token
//! unless [`ApiConfig::insecure_listen`] says so.
//!
//! The SSE hub ([`sse`], issue 12) runs beside them on ports of its own,
//! under the same token and loopback rules.

mod content_tracker;
mod feed;
mod file_watcher;
pub mod limits;
// Query service (issue 12)
mod query;
// SSE hub (issue 12)
pub mod sse;
mod sync;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

use crate::engine::{EngineError, EngineHandle, PathError};

pub use feed::Commits;

/// Generated protobuf and gRPC code.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod proto {
    /// `obby.filewatcher`: the old file watcher service.
    pub mod filewatcher {
        tonic::include_proto!("obby.filewatcher");
    }
    /// `obby.contenttracker`: the old content tracker service.
    pub mod contenttracker {
        tonic::include_proto!("obby.contenttracker");
    }
    /// `obby.sync.v1`: obby-sync's own service.
    pub mod sync {
        tonic::include_proto!("obby.sync.v1");
    }
    /// `obby.sse`: the seed's SSE hub (issue 12).
    pub mod sse {
        tonic::include_proto!("obby.sse");
    }
    /// `obby.query`: the seed's Query service.
    pub mod query {
        tonic::include_proto!("obby.query");
    }
    /// The encoded descriptors of them all, for reflection.
    pub const DESCRIPTOR: &[u8] = tonic::include_file_descriptor_set!("obby_descriptor");
}

/// How long a stopping api waits for connections to close.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Most files one `TrackBatch` may name.
pub const MAX_BATCH_FILES: usize = 10_000;

/// Errors that stop the api.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback address without a token, and no `insecure_listen`.
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could steer \
         obby-sync and read notes; set OBBY_TOKEN or --token-file, listen on 127.0.0.1, or \
         pass --insecure-listen if the network is trusted"
    )]
    Insecure {
        /// The address.
        addr: SocketAddr,
    },
    /// The server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The SSE hub's HTTP server failed (issue 12).
    #[error("SSE hub HTTP server: {0}")]
    SseHttp(#[source] std::io::Error),
    /// The engine side failed (recording the bound addresses).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where and how the api listens.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The FileWatcher port's address (all services are served on both).
    pub watcher: SocketAddr,
    /// The ContentTracker port's address.
    pub tracker: SocketAddr,
    /// The Query service's address (`obby.query.QueryService`, on a port of
    /// its own); None without it.
    pub query: Option<SocketAddr>,
    /// The shared secret clients must send, if any.
    pub token: Option<String>,
    /// Allows a non-loopback address without a token (a trusted network).
    pub insecure_listen: bool,
    /// Content calls (`GenerateDiff`, `GetContentHash`) served at once; see
    /// [`limits`].
    pub max_content_calls: usize,
    // --- SSE hub (issue 12) ---
    /// The SSE hub's gRPC and HTTP addresses; `None` runs without it.
    pub sse: Option<sse::SseAddrs>,
    // --- end SSE hub ---
}

impl ApiConfig {
    /// Loopback addresses with the default limits and no token.
    pub fn local(watcher_port: u16, tracker_port: u16) -> Self {
        let lo = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        ApiConfig {
            watcher: SocketAddr::new(lo, watcher_port),
            tracker: SocketAddr::new(lo, tracker_port),
            query: None,
            token: None,
            insecure_listen: false,
            max_content_calls: limits::DEFAULT_MAX_CONTENT_CALLS,
            // SSE hub (issue 12): off, so tests need not pick its ports.
            sse: None,
        }
    }

    /// Refuses a non-loopback address without a token unless
    /// `insecure_listen` is set; warns when it is.
    ///
    /// # Errors
    /// [`ApiError::Insecure`] for the first such address.
    pub fn check(&self) -> Result<(), ApiError> {
        let hub = self.sse.iter().flat_map(|s| [s.grpc, s.http]); // SSE hub (issue 12)
        let query = self.query.into_iter();
        for addr in [self.watcher, self.tracker]
            .into_iter()
            .chain(hub)
            .chain(query)
        {
            if addr.ip().is_loopback() {
                continue;
            }
            match (&self.token, self.insecure_listen) {
                (Some(_), _) => {}
                (None, true) => tracing::warn!(
                    %addr,
                    "the api listens beyond this machine without a token (--insecure-listen)"
                ),
                (None, false) => return Err(ApiError::Insecure { addr }),
            }
        }
        Ok(())
    }
}

/// Maps an engine error to a gRPC status: the one place this is decided.
pub(crate) fn status_from(e: EngineError) -> Status {
    match e {
        EngineError::Pool(_) => Status::unavailable(e.to_string()),
        EngineError::Pattern { .. } | EngineError::ApiPattern { .. } => {
            Status::invalid_argument(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

/// The path guard of every service: [`crate::engine::inside_root`], with a
/// path outside the root refused as `PERMISSION_DENIED` and a malformed one
/// (empty, overlong, a NUL) as `INVALID_ARGUMENT`.
pub(crate) fn inside_root(
    root: &Path,
    raw: &str,
    base: Option<&Path>,
    what: &str,
) -> Result<PathBuf, Status> {
    crate::engine::inside_root(root, raw, base, what).map_err(|e| match e {
        PathError::Outside { .. } => Status::permission_denied(e.to_string()),
        PathError::Empty { .. } | PathError::TooLong { .. } | PathError::Nul { .. } => {
            Status::invalid_argument(e.to_string())
        }
    })
}

/// Refuses `rpc` on a read-only replica (`obby-sync serve`) with
/// `FAILED_PRECONDITION`: it would write the database, steer a watcher, or
/// read the notes folder, none of which a replica has. Every service checks
/// this first in such a call.
pub(crate) fn writable(handle: &EngineHandle, rpc: &str) -> Result<(), Status> {
    if handle.read_only() {
        return Err(Status::failed_precondition(format!(
            "{rpc} is refused: this obby-sync serves a read-only copy of {} (obby-sync serve); \
             call the obby-sync run that records the notes",
            handle.db_path().display()
        )));
    }
    Ok(())
}

/// Runs a blocking closure (a database query) off the runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
}

/// Checks the token of every call but health.
#[derive(Clone)]
struct Auth {
    /// SHA-256 of the token: what a sent token's hash is compared with.
    token: Option<Arc<[u8; 32]>>,
}

/// SHA-256 of a token: comparing hashes in constant time reveals neither
/// the token's bytes nor its length through timing.
fn token_hash(token: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token).into()
}

/// The credentials of an `Authorization` value of the `Bearer` scheme,
/// whose name is case-insensitive (RFC 9110, section 11.1).
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii_start())
}

/// True when `sent` is the token whose hash is `expected`, in constant time.
fn token_matches(expected: &[u8; 32], sent: Option<&[u8]>) -> bool {
    use subtle::ConstantTimeEq as _;
    sent.is_some_and(|sent| bool::from(token_hash(sent).ct_eq(expected)))
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let meta = request.metadata();
        let bearer = meta.get("authorization").and_then(|v| bearer(v.as_bytes()));
        let plain = meta.get("x-obby-token").map(|v| v.as_bytes());
        // Both are checked, so the time does not say which header was tried.
        let by_bearer = token_matches(token, bearer);
        let by_plain = token_matches(token, plain);
        if by_bearer | by_plain {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "this obby-sync needs a token: send `authorization: Bearer <token>` metadata",
            ))
        }
    }
}

/// The connections `listener` accepts, each with `TCP_NODELAY` (tonic sets
/// it only on listeners it binds itself): without it a small reply, a
/// stream's next few messages, waits for the peer's delayed ACK (40 ms).
pub(crate) fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        conn.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an api connection");
            }
        })
    })
}

/// Records bound addresses in `sync_meta`, in order (useful with port 0);
/// a read-only replica (`obby-sync serve`) records nothing.
///
/// # Errors
/// [`ApiError::Engine`] when the database cannot be written.
pub(crate) async fn record_addrs(
    handle: &EngineHandle,
    addrs: Vec<(&'static str, String)>,
) -> Result<(), ApiError> {
    if handle.read_only() {
        return Ok(());
    }
    let h = handle.clone();
    blocking(move || h.set_meta(&addrs).map_err(status_from))
        .await
        .map_err(|s| {
            ApiError::Engine(EngineError::Watch {
                root: handle.root().to_path_buf(),
                message: s.message().to_owned(),
            })
        })
}

/// Binds both ports (and the Query service's, when configured), records the
/// bound addresses in `sync_meta` (`api_watcher_addr`, `api_tracker_addr`,
/// `api_query_addr`; useful with port 0), and serves until `shutdown`
/// completes.
///
/// # Errors
/// [`ApiError::Insecure`] as [`ApiConfig::check`] says; [`ApiError::Bind`]
/// when a port is taken; transport errors.
pub async fn serve(
    handle: EngineHandle,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    config.check()?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })
    };
    let watcher_listener = bind(config.watcher).await?;
    let tracker_listener = bind(config.tracker).await?;
    let watcher_addr = watcher_listener
        .local_addr()
        .map_err(|source| ApiError::Bind {
            addr: config.watcher,
            source,
        })?;
    let tracker_addr = tracker_listener
        .local_addr()
        .map_err(|source| ApiError::Bind {
            addr: config.tracker,
            source,
        })?;
    // Query service (issue 12): its own port.
    let query_listener = match config.query {
        Some(addr) => {
            let listener = bind(addr).await?;
            let bound = listener
                .local_addr()
                .map_err(|source| ApiError::Bind { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    let query_addr = query_listener.as_ref().map(|(_, a)| a.to_string());
    // The query address goes before the tracker's, which tells tests the
    // api is up.
    let mut addrs: Vec<(&'static str, String)> = Vec::new();
    if let Some(addr) = query_addr {
        addrs.push(("api_query_addr", addr));
    }
    addrs.push(("api_watcher_addr", watcher_addr.to_string()));
    addrs.push(("api_tracker_addr", tracker_addr.to_string()));
    record_addrs(&handle, addrs).await?;
    tracing::info!(%watcher_addr, %tracker_addr, "gRPC api listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let commits = Commits::start(handle.clone(), stop_rx.clone());
    let hub = feed::Hub::start(handle.clone(), commits.clone());
    let auth = Auth {
        token: config
            .token
            .as_deref()
            .map(|t| Arc::new(token_hash(t.as_bytes()))),
    };
    // --- SSE hub (issue 12) ---
    let sse_servers = match config.sse {
        Some(addrs) => {
            sse::start(
                handle.clone(),
                addrs,
                auth.token.clone(),
                hub.clone(),
                commits.clone(),
                stop_rx.clone(),
            )
            .await?
        }
        None => Vec::new(),
    };
    // --- end SSE hub ---

    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Reflection lists the services these ports serve, not every one the
    // descriptors hold (the Query service and the hub have ports of their own).
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::DESCRIPTOR)
        .with_service_name(proto::filewatcher::file_watcher_server::SERVICE_NAME)
        .with_service_name(proto::contenttracker::content_tracker_server::SERVICE_NAME)
        .with_service_name(proto::sync::sync_server::SERVICE_NAME)
        .build_v1()?;
    let fw = proto::filewatcher::file_watcher_server::FileWatcherServer::new(
        file_watcher::FileWatcherService::new(handle.clone(), commits.clone(), hub.clone()),
    )
    .max_decoding_message_size(limits::DEFAULT_REQUEST_BYTES);
    let ct = limits::ContentGate::new(
        content_tracker::ContentTrackerService::new(handle.clone(), commits.clone()),
        config.max_content_calls,
    );
    let sy = proto::sync::sync_server::SyncServer::new(sync::SyncService::new(
        handle.clone(),
        commits.clone(),
        hub,
    ))
    .max_decoding_message_size(limits::DEFAULT_REQUEST_BYTES);
    health_reporter.set_serving::<proto::filewatcher::file_watcher_server::FileWatcherServer<file_watcher::FileWatcherService>>().await;
    health_reporter
        .set_serving::<proto::contenttracker::content_tracker_server::ContentTrackerServer<
            content_tracker::ContentTrackerService,
        >>()
        .await;
    health_reporter
        .set_serving::<proto::sync::sync_server::SyncServer<sync::SyncService>>()
        .await;

    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits::MAX_CALLS_PER_CONNECTION)
        .max_concurrent_streams(Some(limits::MAX_STREAMS_PER_CONNECTION))
        .add_service(health)
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(fw, auth.clone()))
        .add_service(InterceptedService::new(ct, auth.clone()))
        .add_service(InterceptedService::new(sy, auth.clone()));
    // Query service (issue 12).
    let query_server = query_listener.map(|(listener, addr)| {
        tracing::info!(%addr, "gRPC query service listening");
        tokio::spawn(query::serve(
            handle.clone(),
            listener,
            auth,
            stop_rx.clone(),
        ))
    });
    let second = router.clone();
    let mut stop_a = stop_rx.clone();
    let mut stop_b = stop_rx;
    let a = tokio::spawn(router.serve_with_incoming_shutdown(
        incoming(watcher_listener),
        async move {
            let _ = stop_a.wait_for(|s| *s).await;
        },
    ));
    let b = tokio::spawn(second.serve_with_incoming_shutdown(
        incoming(tracker_listener),
        async move {
            let _ = stop_b.wait_for(|s| *s).await;
        },
    ));
    shutdown.await;
    // Waiters (TrackChange, Subscribe, Sync) see this and end their calls.
    let _ = stop_tx.send(true);
    for server in [Some(a), Some(b), query_server].into_iter().flatten() {
        let abort = server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task ended abnormally"),
            Err(_) => {
                // A client that keeps its connection open must not keep the
                // process alive.
                tracing::warn!("clients still connected after the grace period; closing");
                abort.abort();
            }
        }
    }
    // --- SSE hub (issue 12) ---
    for server in sse_servers {
        let abort = server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => tracing::warn!(error = %e, "SSE hub task ended abnormally"),
            Err(_) => {
                tracing::warn!("SSE clients still connected after the grace period; closing");
                abort.abort();
            }
        }
    }
    // --- end SSE hub ---
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let expected = token_hash(b"s3cret");
        assert!(token_matches(&expected, Some(b"s3cret")));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b""] {
            assert!(!token_matches(&expected, Some(wrong)), "{wrong:?}");
        }
        assert!(!token_matches(&expected, None));
    }

    #[test]
    fn beyond_loopback_needs_a_token_or_insecure_listen() {
        let mut cfg = ApiConfig::local(0, 0);
        assert!(cfg.check().is_ok());
        cfg.tracker = "0.0.0.0:0".parse().expect("addr");
        assert!(matches!(cfg.check(), Err(ApiError::Insecure { .. })));
        cfg.insecure_listen = true;
        assert!(cfg.check().is_ok());
        cfg.insecure_listen = false;
        cfg.token = Some("t".into());
        assert!(cfg.check().is_ok());
        // The Query service's port follows the same rule.
        let mut cfg = ApiConfig::local(0, 0);
        cfg.query = Some("0.0.0.0:0".parse().expect("addr"));
        assert!(matches!(cfg.check(), Err(ApiError::Insecure { .. })));
    }

    #[test]
    fn the_path_guard_refuses_escapes_as_permission_denied_and_bad_paths_as_invalid() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(dir.path()).expect("canon");
        let code = |raw: &str| {
            inside_root(&root, raw, None, "file_path")
                .expect_err(raw)
                .code()
        };
        assert_eq!(code("../outside.md"), tonic::Code::PermissionDenied);
        assert_eq!(code("/etc/passwd"), tonic::Code::PermissionDenied);
        assert_eq!(code(""), tonic::Code::InvalidArgument);
        assert_eq!(code("a\0b"), tonic::Code::InvalidArgument);
        assert_eq!(
            inside_root(&root, "a.md", None, "file_path").expect("inside"),
            root.join("a.md")
        );
    }
}
