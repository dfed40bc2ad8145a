//! `obby.sync.v1.Sync`: status, the resumable change feed, a barrier, rescans.
//!
//! `Sync` is a barrier in two steps: the watcher answers once every change
//! made before the call is in the queue, then the call waits until every row
//! queued by then is processed. Both steps wait on the runtime (the watcher
//! answers on a tokio channel, commits wake the second step), so a waiting
//! `Sync` holds no blocking-pool thread; only its short queries use one.

use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::feed::{ChangeRow, Commits, Hub, Waited, check_cursor, newest_cursor, stream_changes};
use super::proto::sync::sync_server::Sync;
use super::proto::sync::{
    ChangeEvent, FailedChange, GetStatusRequest, QueueDepth, RescanRequest, RescanResponse,
    StatusResponse, SubscribeRequest, SyncRequest, SyncResponse, WatchRoot,
};
use super::{blocking, inside_root, status_from, writable};
use crate::engine::EngineHandle;

/// A `Sync` call's timeout when the client gives none.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The service.
#[derive(Clone)]
pub struct SyncService {
    handle: EngineHandle,
    commits: Commits,
    hub: Hub,
}

impl SyncService {
    /// A service on `handle`.
    pub fn new(handle: EngineHandle, commits: Commits, hub: Hub) -> Self {
        SyncService {
            handle,
            commits,
            hub,
        }
    }
}

fn change_event(row: &ChangeRow) -> ChangeEvent {
    ChangeEvent {
        cursor: row.cursor,
        path: row.path.clone(),
        change_type: row.change_type.clone(),
        old_path: row.old_path.clone().unwrap_or_default(),
        version_id: row.version_id.unwrap_or(0),
        diff_id: row.diff_id.unwrap_or(0),
        lines_added: row.lines_added.unwrap_or(0),
        lines_removed: row.lines_removed.unwrap_or(0),
        timestamp: row.timestamp.clone(),
        content_hash: row.content_hash.clone().unwrap_or_default(),
    }
}

fn status(handle: &EngineHandle) -> Result<StatusResponse, Status> {
    let s = handle.status(20).map_err(status_from)?;
    let conn = handle.conn().map_err(status_from)?;
    let cursor = newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))?;
    let (name, detail) = match s.backend.split_once(' ') {
        Some((name, detail)) => (
            name.to_owned(),
            detail.trim_matches(|c| c == '(' || c == ')').to_owned(),
        ),
        None => (s.backend.clone(), String::new()),
    };
    Ok(StatusResponse {
        queue: Some(QueueDepth {
            pending: s.queue.pending,
            claimed: s.queue.claimed,
            done: s.queue.done,
            failed: s.queue.failed,
        }),
        versions: s.versions,
        diffs: s.diffs,
        changes: s.changes,
        files_tracked: s.files_tracked,
        files_deleted: s.files_deleted,
        roots: vec![WatchRoot {
            path: handle.root().display().to_string(),
            backend: name,
            detail,
        }],
        last_error: s
            .failures
            .last()
            .and_then(|f| f.last_error.clone())
            .unwrap_or_default(),
        uptime_seconds: i64::try_from(s.uptime.as_secs()).unwrap_or(i64::MAX),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        cursor,
        longest_write_ms: s.longest_write_ms,
        failures: s
            .failures
            .into_iter()
            .map(|f| FailedChange {
                path: f.path,
                attempts: f.attempts,
                error: f.last_error.unwrap_or_default(),
            })
            .collect(),
    })
}

#[tonic::async_trait]
impl Sync for SyncService {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let handle = self.handle.clone();
        Ok(Response::new(blocking(move || status(&handle)).await?))
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<ChangeEvent, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let handle = self.handle.clone();
        let from = blocking(move || {
            let conn = handle.conn().map_err(status_from)?;
            if req.from_now {
                newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))
            } else {
                check_cursor(&conn, req.from_cursor, "from_cursor").map(|()| req.from_cursor)
            }
        })
        .await?;
        let stream = stream_changes(
            self.handle.clone(),
            &self.hub,
            self.commits.clone(),
            from,
            change_event,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        writable(&self.handle, "Sync.Sync")?;
        let req = request.into_inner();
        if req.timeout_ms < 0 {
            return Err(Status::invalid_argument("timeout_ms must not be negative"));
        }
        let timeout = if req.timeout_ms == 0 {
            DEFAULT_SYNC_TIMEOUT
        } else {
            Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0))
        };
        let deadline = Instant::now() + timeout;
        // 1. Everything made before this call has reached the queue.
        let Some(reply_rx) = self.handle.barrier() else {
            return Err(Status::failed_precondition("the watcher is not running"));
        };
        match tokio::time::timeout_at(deadline.into(), reply_rx).await {
            Ok(Ok(())) => {}
            // The watcher dropped the request: it stopped (the engine is
            // shutting down, or its watcher failed).
            Ok(Err(_)) => {
                return Err(Status::unavailable(
                    "the watcher stopped before reaching the barrier",
                ));
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "the watcher did not reach the barrier in time",
                ));
            }
        }
        // 2. Every row queued so far is processed.
        let handle = self.handle.clone();
        let horizon = blocking(move || handle.queue_horizon().map_err(status_from)).await?;
        let mut commits = self.commits.clone();
        loop {
            let handle = self.handle.clone();
            let (outstanding, cursor) = blocking(move || {
                let n = handle.outstanding_through(horizon).map_err(status_from)?;
                let conn = handle.conn().map_err(status_from)?;
                let cursor = newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))?;
                Ok((n, cursor))
            })
            .await?;
            if outstanding == 0 {
                return Ok(Response::new(SyncResponse { cursor }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "{outstanding} queued changes are not processed yet"
                )));
            }
            if commits.wait(left.min(Duration::from_millis(100))).await == Waited::Stopping {
                return Err(Status::unavailable("obby-sync is shutting down"));
            }
        }
    }

    async fn rescan(
        &self,
        request: Request<RescanRequest>,
    ) -> Result<Response<RescanResponse>, Status> {
        writable(&self.handle, "Sync.Rescan")?;
        let req = request.into_inner();
        let root = self.handle.root().to_path_buf();
        let scope = if req.path.trim().is_empty() {
            root.clone()
        } else {
            inside_root(&root, &req.path, None, "path")?
        };
        let accepted = self.handle.rescan(scope);
        Ok(Response::new(RescanResponse { accepted }))
    }
}
