//! The api's resource limits, in one place.
//!
//! Per connection: at most [`MAX_CALLS_PER_CONNECTION`] calls are served at
//! once (more wait for a slot, in order) and at most
//! [`MAX_STREAMS_PER_CONNECTION`] HTTP/2 streams may be open (the client is
//! told in its SETTINGS and waits). Requests are limited to tonic's default
//! of [`DEFAULT_REQUEST_BYTES`], except `GenerateDiff`, the one call that
//! carries content, which may send [`MAX_CONTENT_REQUEST_BYTES`].
//!
//! The content calls (`GenerateDiff`, `GetContentHash`) hold whole texts in
//! memory, so at most `max_content_calls` of them run at once across all
//! connections ([`DEFAULT_MAX_CONTENT_CALLS`], `--max-content-calls`). A call
//! over the cap waits for a slot at most [`CONTENT_QUEUE_WAIT`], then is
//! refused with `RESOURCE_EXHAUSTED`; the slot is taken before the request
//! body is read, so waiting calls hold no request in memory.
//! [`ContentGate`] does both for the ContentTracker service; it never looks
//! at the messages.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use super::content_tracker::ContentTrackerService;
use super::proto::contenttracker::content_tracker_server::ContentTrackerServer;

/// Calls served at once on one connection; more wait for a slot.
pub const MAX_CALLS_PER_CONNECTION: usize = 32;

/// HTTP/2 streams one connection may hold open (long-lived streams such as
/// `Subscribe` count here, not in [`MAX_CALLS_PER_CONNECTION`]).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Largest request of every call but `GenerateDiff`: tonic's default.
pub const DEFAULT_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Largest `GenerateDiff` request (two whole notes fit; a flood does not).
pub const MAX_CONTENT_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Content calls (`GenerateDiff`, `GetContentHash`) run at once, by default.
pub const DEFAULT_MAX_CONTENT_CALLS: usize = 4;

/// Longest a content call waits for a slot before `RESOURCE_EXHAUSTED`.
pub const CONTENT_QUEUE_WAIT: Duration = Duration::from_secs(3);

/// The ContentTracker service behind its limits: `GenerateDiff` decoded with
/// the content limit, the other methods with the default one, and the
/// content calls capped.
#[derive(Clone)]
pub struct ContentGate {
    /// Serves `GenerateDiff` (requests up to [`MAX_CONTENT_REQUEST_BYTES`]).
    content: ContentTrackerServer<ContentTrackerService>,
    /// Serves the other methods (requests up to [`DEFAULT_REQUEST_BYTES`]).
    plain: ContentTrackerServer<ContentTrackerService>,
    /// Slots for content calls, shared by every connection.
    slots: Arc<Semaphore>,
}

impl ContentGate {
    /// Wraps `service`, allowing `max_content_calls` content calls at once.
    pub fn new(service: ContentTrackerService, max_content_calls: usize) -> Self {
        ContentGate {
            content: ContentTrackerServer::new(service.clone())
                .max_decoding_message_size(MAX_CONTENT_REQUEST_BYTES),
            plain: ContentTrackerServer::new(service)
                .max_decoding_message_size(DEFAULT_REQUEST_BYTES),
            slots: Arc::new(Semaphore::new(max_content_calls.max(1))),
        }
    }
}

impl NamedService for ContentGate {
    const NAME: &'static str = <ContentTrackerServer<ContentTrackerService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for ContentGate {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both inner servers are always ready (tonic's generated services).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let content = matches!(method, "GenerateDiff" | "GetContentHash");
        let mut inner = if method == "GenerateDiff" {
            self.content.clone()
        } else {
            self.plain.clone()
        };
        let slots = self.slots.clone();
        Box::pin(async move {
            let _slot = if content {
                match tokio::time::timeout(CONTENT_QUEUE_WAIT, slots.acquire_owned()).await {
                    Ok(Ok(slot)) => Some(slot),
                    // Timed out, or (never: the semaphore is not closed) closed.
                    _ => {
                        return Ok(Status::resource_exhausted(format!(
                            "too many content calls (GenerateDiff, GetContentHash) at once; \
                             none freed within {} s, retry later",
                            CONTENT_QUEUE_WAIT.as_secs()
                        ))
                        .into_http());
                    }
                }
            } else {
                None
            };
            inner.call(request).await
        })
    }
}
