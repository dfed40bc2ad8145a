//! `obby.filewatcher.FileWatcher` on top of the watcher and the queue.
//!
//! The watch set is `.obbywatch` / `.obbyignore` plus the patterns added here,
//! which are kept in `obby.db` (`sync_meta` keys `api_watch_patterns` and
//! `api_ignore_patterns`) so a restart keeps them. A watch path must lie
//! inside the project root. `StopWatching` pauses live recording until
//! `StartWatching` (or a restart); resuming rescans, so nothing is missed.
//! `StreamEvents` sends each change once it is committed.

use std::pin::Pin;
use std::time::Duration;

use chrono::{Local, NaiveDateTime, TimeZone as _};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::feed::{ChangeRow, Commits, Hub, newest_cursor, stream_changes};
use super::proto::filewatcher::file_watcher_server::FileWatcher;
use super::proto::filewatcher::{
    EventRequest, FileEvent, PatternResponse, PatternUpdate, StopRequest, StopResponse,
    WatchRequest, WatchResponse,
};
use super::{blocking, inside_root, status_from, writable};
use crate::engine::{ApiPatterns, EngineHandle, TIMESTAMP_FORMAT};

/// Largest debounce a client may ask for.
pub const MAX_DEBOUNCE_MS: i32 = 60_000;

/// The service.
#[derive(Clone)]
pub struct FileWatcherService {
    handle: EngineHandle,
    commits: Commits,
    hub: Hub,
}

impl FileWatcherService {
    /// A service on `handle`.
    pub fn new(handle: EngineHandle, commits: Commits, hub: Hub) -> Self {
        FileWatcherService {
            handle,
            commits,
            hub,
        }
    }

    /// Validates, stores and applies new api patterns.
    /// A bad pattern is `INVALID_ARGUMENT` ([`status_from`]).
    async fn save_patterns(&self, patterns: ApiPatterns) -> Result<(), Status> {
        let handle = self.handle.clone();
        blocking(move || handle.set_api_patterns(&patterns).map_err(status_from)).await
    }

    async fn stored_patterns(&self) -> Result<ApiPatterns, Status> {
        let handle = self.handle.clone();
        blocking(move || handle.api_patterns().map_err(status_from)).await
    }

    /// A client pattern, checked to stay in the root: an absolute file-system
    /// path is accepted only inside the root (and made relative to it).
    fn pattern(&self, raw: &str) -> Result<String, Status> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Status::invalid_argument("a pattern is empty"));
        }
        let root = self.handle.root();
        let negated = raw.starts_with('!');
        let body = raw.trim_start_matches('!');
        if let Ok(rel) = std::path::Path::new(body).strip_prefix(root) {
            let dir = body.ends_with('/');
            let rel = rel.to_string_lossy();
            return Ok(format!(
                "{}/{rel}{}",
                if negated { "!" } else { "" },
                if dir { "/" } else { "" }
            ));
        }
        if body.starts_with('/') && std::path::Path::new(body).exists() {
            return Err(Status::permission_denied(format!(
                "pattern {raw:?} names a path outside the root {}",
                root.display()
            )));
        }
        Ok(raw.to_owned())
    }
}

fn unix_seconds(timestamp: &str) -> i64 {
    NaiveDateTime::parse_from_str(timestamp, TIMESTAMP_FORMAT)
        .ok()
        .and_then(|naive| Local.from_local_datetime(&naive).earliest())
        .map_or(0, |t| t.timestamp())
}

#[tonic::async_trait]
impl FileWatcher for FileWatcherService {
    async fn start_watching(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<WatchResponse>, Status> {
        writable(&self.handle, "FileWatcher.StartWatching")?;
        let req = request.into_inner();
        if req.debounce_ms < 0 || req.debounce_ms > MAX_DEBOUNCE_MS {
            return Err(Status::invalid_argument(format!(
                "debounce_ms must be between 0 (keep) and {MAX_DEBOUNCE_MS}"
            )));
        }
        let root = self.handle.root().to_path_buf();
        let mut patterns = self.stored_patterns().await?;
        for raw in &req.watch_paths {
            let path = inside_root(&root, raw, None, "watch path")?;
            if !path.exists() {
                return Err(Status::invalid_argument(format!(
                    "watch path {raw:?} does not exist"
                )));
            }
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let pattern = match (rel.is_empty(), path.is_dir()) {
                (true, _) => "*".to_owned(),
                (false, true) => format!("/{rel}/"),
                (false, false) => format!("/{rel}"),
            };
            if !patterns.watch.contains(&pattern) {
                patterns.watch.push(pattern);
            }
        }
        for raw in &req.ignore_patterns {
            let pattern = self.pattern(raw)?;
            if !patterns.ignore.contains(&pattern) {
                patterns.ignore.push(pattern);
            }
        }
        self.save_patterns(patterns).await?;
        if req.debounce_ms > 0 {
            let ms = u64::try_from(req.debounce_ms).unwrap_or(0);
            self.handle.set_debounce(Duration::from_millis(ms));
        }
        let running = self.handle.resume();
        Ok(Response::new(WatchResponse {
            success: running,
            error: if running {
                String::new()
            } else {
                "the watcher is not running".into()
            },
        }))
    }

    async fn stop_watching(
        &self,
        _request: Request<StopRequest>,
    ) -> Result<Response<StopResponse>, Status> {
        writable(&self.handle, "FileWatcher.StopWatching")?;
        let running = self.handle.pause();
        Ok(Response::new(StopResponse {
            success: running,
            error: if running {
                String::new()
            } else {
                "the watcher is not running".into()
            },
        }))
    }

    type StreamEventsStream =
        Pin<Box<dyn Stream<Item = Result<FileEvent, Status>> + Send + 'static>>;

    async fn stream_events(
        &self,
        _request: Request<EventRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let handle = self.handle.clone();
        let from = blocking(move || {
            let conn = handle.conn().map_err(status_from)?;
            newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))
        })
        .await?;
        let stream = stream_changes(
            self.handle.clone(),
            &self.hub,
            self.commits.clone(),
            from,
            |row: &ChangeRow| FileEvent {
                path: row.path.clone(),
                event_type: if row.change_type == "moved" {
                    "renamed".into()
                } else {
                    row.change_type.clone()
                },
                timestamp: unix_seconds(&row.timestamp),
                old_path: row.old_path.clone().unwrap_or_default(),
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_patterns(
        &self,
        request: Request<PatternUpdate>,
    ) -> Result<Response<PatternResponse>, Status> {
        writable(&self.handle, "FileWatcher.UpdatePatterns")?;
        let req = request.into_inner();
        let watch = req
            .watch_patterns
            .iter()
            .map(|p| self.pattern(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ignore = req
            .ignore_patterns
            .iter()
            .map(|p| self.pattern(p))
            .collect::<Result<Vec<_>, _>>()?;
        self.save_patterns(ApiPatterns { watch, ignore }).await?;
        Ok(Response::new(PatternResponse {
            success: true,
            error: String::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_text_timestamps_become_unix_seconds() {
        let t = chrono::Local::now();
        let text = crate::engine::format_local(t);
        assert_eq!(super::unix_seconds(&text), t.timestamp());
        assert_eq!(super::unix_seconds("not a time"), 0);
    }
}
