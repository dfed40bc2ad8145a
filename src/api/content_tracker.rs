//! `obby.contenttracker.ContentTracker` on top of the queue.
//!
//! `TrackChange` enqueues the file (coalescing with anything pending) and
//! answers once no row for it is outstanding, with the committed version, hash
//! and size; a second call gets the same answer (unchanged content writes no
//! version). `TrackBatch` answers once per request, in request order (the old
//! service did, and clients zip requests with answers): the files are queued
//! together and processed in parallel, and each answer is sent as soon as it
//! and every answer before it are known; a path named twice is answered twice.
//! `GetContentHash` and `GenerateDiff` compute without storing, and read a
//! file only through the handle ([`EngineHandle::digest`],
//! [`EngineHandle::read_text`]: beneath the root, no symlinks). The queue is
//! the engine's: this service enqueues through [`EngineHandle::track`] and
//! learns the outcome from [`EngineHandle::tracked`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::feed::{Commits, Waited};
use super::proto::contenttracker::content_tracker_server::ContentTracker;
use super::proto::contenttracker::{
    BatchRequest, DiffRequest, DiffResponse, HashRequest, HashResponse, TrackProgress,
    TrackRequest, TrackResponse,
};
use super::{MAX_BATCH_FILES, blocking, inside_root, status_from, writable};
use crate::engine::{EngineHandle, TrackOutcome};

/// How long a `TrackChange` waits for its commit when the client sets no
/// deadline.
pub const TRACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The service.
#[derive(Clone)]
pub struct ContentTrackerService {
    handle: EngineHandle,
    commits: Commits,
}

impl ContentTrackerService {
    /// A service on `handle`.
    pub fn new(handle: EngineHandle, commits: Commits) -> Self {
        ContentTrackerService { handle, commits }
    }
}

/// What one tracked file ended as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tracked {
    success: bool,
    error: String,
    content_hash: String,
    file_size: i64,
    version_id: i64,
}

impl Tracked {
    fn failed(error: impl Into<String>) -> Self {
        Tracked {
            success: false,
            error: error.into(),
            ..Tracked::default()
        }
    }
}

/// One `TrackBatch` request, in its place in the answer stream.
enum Entry {
    /// Refused before queueing (outside the root, a folder, ...).
    Refused(TrackProgress),
    /// Queued; answered once its path's rows are finished.
    Path(String),
}

/// Resolves a request's path against the root (and its `project_root`).
fn resolve(handle: &EngineHandle, req: &TrackRequest) -> Result<PathBuf, Status> {
    let root = handle.root();
    let base = if req.project_root.trim().is_empty() {
        None
    } else {
        Some(inside_root(root, &req.project_root, None, "project_root")?)
    };
    let path = inside_root(root, &req.file_path, base.as_deref(), "file_path")?;
    if path.is_dir() {
        return Err(Status::invalid_argument(format!(
            "{} is a folder, not a file",
            path.display()
        )));
    }
    Ok(path)
}

fn utf8(path: &Path) -> Result<String, Status> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Status::invalid_argument(format!("{} is not valid UTF-8", path.display())))
}

/// Enqueues `paths` in one transaction and returns, per path, the id of its
/// pending row (the floor for finding how its processing ended).
fn enqueue_all(handle: &EngineHandle, paths: &[String]) -> Result<HashMap<String, i64>, Status> {
    handle.track(paths).map_err(status_from)
}

/// For each path whose rows are all finished, how it ended.
fn finished(
    handle: &EngineHandle,
    floors: &HashMap<String, i64>,
) -> Result<Vec<(String, Tracked)>, Status> {
    let outcomes = handle.tracked(floors).map_err(status_from)?;
    Ok(outcomes
        .into_iter()
        .map(|(path, outcome)| {
            let tracked = match outcome {
                TrackOutcome::Failed(error) => {
                    Tracked::failed(error.unwrap_or_else(|| "processing failed".into()))
                }
                TrackOutcome::Untracked => Tracked::failed(format!(
                    "{path} is not tracked: .obbywatch does not select it, .obbyignore excludes it, or it does not exist"
                )),
                // The file is gone and its deletion is committed: what a
                // client that reports a delete asks for. No version, no hash.
                TrackOutcome::Deleted => Tracked {
                    success: true,
                    ..Tracked::default()
                },
                TrackOutcome::Recorded {
                    content_hash,
                    size,
                    version_id,
                } => Tracked {
                    success: true,
                    error: String::new(),
                    content_hash,
                    file_size: size,
                    version_id,
                },
            };
            (path, tracked)
        })
        .collect())
}

/// The client's deadline (grpc-timeout), or [`TRACK_TIMEOUT`].
fn deadline_of<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(TRACK_TIMEOUT);
    Instant::now() + timeout
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl ContentTracker for ContentTrackerService {
    async fn track_change(
        &self,
        request: Request<TrackRequest>,
    ) -> Result<Response<TrackResponse>, Status> {
        writable(&self.handle, "ContentTracker.TrackChange")?;
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        let path = utf8(&resolve(&self.handle, &req)?)?;
        let handle = self.handle.clone();
        let paths = vec![path.clone()];
        let floors = blocking(move || enqueue_all(&handle, &paths)).await?;
        let mut commits = self.commits.clone();
        loop {
            let handle = self.handle.clone();
            let f = floors.clone();
            if let Some((_, t)) = blocking(move || finished(&handle, &f))
                .await?
                .into_iter()
                .next()
            {
                return Ok(Response::new(TrackResponse {
                    success: t.success,
                    error: t.error,
                    content_hash: t.content_hash,
                    file_size: t.file_size,
                    version_id: t.version_id,
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "{path} is queued but not processed yet (see `obby-sync status`)"
                )));
            }
            if commits.wait(left.min(Duration::from_millis(200))).await == Waited::Stopping {
                return Err(Status::unavailable(
                    "obby-sync is shutting down; the change stays queued",
                ));
            }
        }
    }

    type TrackBatchStream =
        Pin<Box<dyn Stream<Item = Result<TrackProgress, Status>> + Send + 'static>>;

    async fn track_batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<Self::TrackBatchStream>, Status> {
        writable(&self.handle, "ContentTracker.TrackBatch")?;
        let deadline = deadline_of(&request);
        let req = request.into_inner();
        if req.requests.len() > MAX_BATCH_FILES {
            return Err(Status::invalid_argument(format!(
                "a batch may name at most {MAX_BATCH_FILES} files, this one names {}",
                req.requests.len()
            )));
        }
        // One answer per request, in request order: an entry is either
        // refused at once or waits for its path's rows.
        let mut entries = Vec::with_capacity(req.requests.len());
        let mut paths = Vec::new();
        for r in &req.requests {
            match resolve(&self.handle, r).and_then(|p| utf8(&p)) {
                Ok(p) => {
                    paths.push(p.clone());
                    entries.push(Entry::Path(p));
                }
                Err(status) => entries.push(Entry::Refused(TrackProgress {
                    file_path: r.file_path.clone(),
                    success: false,
                    error: status.message().to_owned(),
                    ..TrackProgress::default()
                })),
            }
        }
        paths.sort();
        paths.dedup();
        let handle = self.handle.clone();
        let mut floors = if paths.is_empty() {
            HashMap::new()
        } else {
            let p = paths.clone();
            blocking(move || enqueue_all(&handle, &p)).await?
        };
        let (tx, rx) = tokio::sync::mpsc::channel(super::feed::STREAM_BUFFER);
        let handle = self.handle.clone();
        let mut commits = self.commits.clone();
        tokio::spawn(async move {
            // Answers computed so far, by path (any order); sent in order.
            let mut done: HashMap<String, Tracked> = HashMap::new();
            let mut entries = entries.into_iter().peekable();
            loop {
                // Send every answer whose turn has come.
                while let Some(entry) = entries.peek() {
                    let progress = match entry {
                        Entry::Refused(p) => p.clone(),
                        Entry::Path(path) => match done.get(path) {
                            Some(t) => TrackProgress {
                                file_path: path.clone(),
                                success: t.success,
                                error: t.error.clone(),
                                content_hash: t.content_hash.clone(),
                                version_id: t.version_id,
                            },
                            None => break,
                        },
                    };
                    entries.next();
                    if tx.send(Ok(progress)).await.is_err() {
                        return;
                    }
                }
                if entries.peek().is_none() {
                    return;
                }
                if !floors.is_empty() {
                    let h = handle.clone();
                    let f = floors.clone();
                    let finished_now = match blocking(move || finished(&h, &f)).await {
                        Ok(finished_now) => finished_now,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    };
                    let progressed = !finished_now.is_empty();
                    for (path, t) in finished_now {
                        floors.remove(&path);
                        done.insert(path, t);
                    }
                    if progressed {
                        continue;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(format!(
                            "{} files are queued but not processed yet",
                            floors.len()
                        ))))
                        .await;
                    return;
                }
                if commits.wait(left.min(Duration::from_millis(200))).await == Waited::Stopping {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "obby-sync is shutting down; the changes stay queued",
                        )))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_content_hash(
        &self,
        request: Request<HashRequest>,
    ) -> Result<Response<HashResponse>, Status> {
        writable(&self.handle, "ContentTracker.GetContentHash")?;
        let req = request.into_inner();
        let path = inside_root(self.handle.root(), &req.file_path, None, "file_path")?;
        let handle = self.handle.clone();
        let digest = blocking(move || Ok(handle.digest(&path))).await?;
        Ok(Response::new(match digest {
            Ok(d) => HashResponse {
                success: true,
                error: String::new(),
                content_hash: d.hash,
                file_size: i64::try_from(d.size).unwrap_or(i64::MAX),
            },
            Err(e) => HashResponse {
                success: false,
                error: e.to_string(),
                ..HashResponse::default()
            },
        }))
    }

    async fn generate_diff(
        &self,
        request: Request<DiffRequest>,
    ) -> Result<Response<DiffResponse>, Status> {
        let req = request.into_inner();
        let by_path = req.old_content.is_empty()
            && req.new_content.is_empty()
            && !(req.old_file_path.is_empty() && req.new_file_path.is_empty());
        let (old, new, old_label, new_label) = if by_path {
            writable(&self.handle, "ContentTracker.GenerateDiff of files")?;
            let root = self.handle.root();
            let old_path = inside_root(root, &req.old_file_path, None, "old_file_path")?;
            let new_path = inside_root(root, &req.new_file_path, None, "new_file_path")?;
            let handle = self.handle.clone();
            let read = move |p: PathBuf| handle.read_text(&p).map_err(|e| e.to_string());
            let texts = blocking(move || Ok((read(old_path), read(new_path)))).await?;
            match texts {
                (Ok(o), Ok(n)) => (o, n, req.old_file_path, req.new_file_path),
                (Err(e), _) | (_, Err(e)) => {
                    return Ok(Response::new(DiffResponse {
                        success: false,
                        error: e,
                        ..DiffResponse::default()
                    }));
                }
            }
        } else {
            let label = |p: &str, d: &str| {
                if p.is_empty() {
                    d.to_owned()
                } else {
                    p.to_owned()
                }
            };
            let (ol, nl) = (
                label(&req.old_file_path, "a"),
                label(&req.new_file_path, "b"),
            );
            (req.old_content, req.new_content, ol, nl)
        };
        // The handle normalizes line endings as stored text is (CRLF and
        // lone CR become LF); the files' texts already are.
        let handle = self.handle.clone();
        let d = blocking(move || Ok(handle.diff(old, new, &old_label, &new_label))).await?;
        Ok(Response::new(DiffResponse {
            success: true,
            error: String::new(),
            diff_content: d.text,
            lines_added: i32::try_from(d.lines_added).unwrap_or(i32::MAX),
            lines_removed: i32::try_from(d.lines_removed).unwrap_or(i32::MAX),
        }))
    }
}
