//! The change feed: committed `file_changes` rows by cursor, and a signal
//! that wakes waiters after each committed batch.
//!
//! The cursor is `file_changes.id`: it only grows and survives restarts. One
//! [`Hub`] task reads each committed batch of changes once and broadcasts it
//! (an `Arc`, never copied) to every live stream. A stream's [`Follower`]
//! subscribes to the hub first, then catches up from the database from its
//! cursor, then takes broadcast rows past its cursor: a client that
//! reconnects with its last cursor misses nothing and sees nothing twice.
//! Each [`Batch`] is encoded once per kind of stream (an SSE frame, a proto
//! message: [`Encoding`]) and the result shared by every stream of that
//! kind, so a thousand clients cost one encoding and a thousand sends. A
//! follower has no task of its own and moves only when its stream is
//! polled, so a slow client only delays itself: when it falls behind the
//! broadcast it catches up from the database again; the engine never waits
//! for it.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt as _};
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::{broadcast, watch};
use tonic::Status;

use super::{blocking, status_from};
use crate::engine::{EngineHandle, ProgressSnapshot};

/// Changes read per database page.
const PAGE: i64 = 500;

/// Messages buffered per stream before its task waits for the client.
pub const STREAM_BUFFER: usize = 256;

/// Batches the hub's broadcast keeps for streams that lag behind (each at
/// most [`PAGE`] rows, with their encodings); a stream further behind reads
/// the database instead.
const HUB_BATCHES: usize = 128;

/// Wakes api waiters after each committed batch; ends with the api.
#[derive(Clone)]
pub struct Commits {
    progress: watch::Receiver<ProgressSnapshot>,
    stop: watch::Receiver<bool>,
}

/// Why [`Commits::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A batch was committed.
    Commit,
    /// The timeout passed first.
    Timeout,
    /// The api is shutting down.
    Stopping,
}

impl Commits {
    /// Starts watching the engine's counters: the engine calls back after
    /// each commit, so nothing polls.
    pub fn start(handle: EngineHandle, stop: watch::Receiver<bool>) -> Commits {
        let (tx, rx) = watch::channel(handle.progress());
        handle.on_commit(Box::new(move |snapshot| {
            // Fails only once every receiver is gone (the api stopped).
            let _ = tx.send(*snapshot);
        }));
        Commits { progress: rx, stop }
    }

    /// Completes once the api is shutting down.
    pub async fn until_stopping(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }

    /// True once the api is shutting down.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the next commit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Waited {
        if self.stopping() {
            return Waited::Stopping;
        }
        tokio::select! {
            changed = self.progress.changed() => {
                if changed.is_ok() { Waited::Commit } else { Waited::Stopping }
            }
            _ = self.stop.wait_for(|s| *s) => Waited::Stopping,
            _ = tokio::time::sleep(timeout) => Waited::Timeout,
        }
    }
}

/// One committed change, as the feed carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRow {
    /// `file_changes.id`.
    pub cursor: i64,
    /// The file.
    pub path: String,
    /// created, modified, deleted, moved.
    pub change_type: String,
    /// A move's source.
    pub old_path: Option<String>,
    /// The version written, if any.
    pub version_id: Option<i64>,
    /// The diff written, if any.
    pub diff_id: Option<i64>,
    /// The diff's `+` lines.
    pub lines_added: Option<i64>,
    /// The diff's `-` lines.
    pub lines_removed: Option<i64>,
    /// Local time text.
    pub timestamp: String,
    /// The new hash (the last one for a deletion).
    pub content_hash: Option<String>,
}

/// Reads up to `limit` changes after `cursor`.
///
/// # Errors
/// Any SQLite error.
pub fn read_changes(
    conn: &Connection,
    cursor: i64,
    limit: i64,
) -> rusqlite::Result<Vec<ChangeRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT fc.id, fc.file_path, fc.change_type, fc.old_path, fc.version_id, fc.diff_id,
                cd.lines_added, cd.lines_removed, fc.timestamp,
                COALESCE(fc.new_content_hash, fc.old_content_hash)
         FROM file_changes fc LEFT JOIN content_diffs cd ON cd.id = fc.diff_id
         WHERE fc.id > ?1 ORDER BY fc.id LIMIT ?2",
    )?;
    stmt.query_map(params![cursor, limit], |r| {
        Ok(ChangeRow {
            cursor: r.get(0)?,
            path: r.get(1)?,
            change_type: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            old_path: r.get(3)?,
            version_id: r.get(4)?,
            diff_id: r.get(5)?,
            lines_added: r.get(6)?,
            lines_removed: r.get(7)?,
            timestamp: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
            content_hash: r.get(9)?,
        })
    })?
    .collect()
}

/// The newest cursor ever handed out (0 before the first change).
///
/// # Errors
/// Any SQLite error.
pub fn newest_cursor(conn: &Connection) -> rusqlite::Result<i64> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'file_changes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let max: Option<i64> = conn.query_row("SELECT MAX(id) FROM file_changes", [], |r| r.get(0))?;
    Ok(seq.unwrap_or(0).max(max.unwrap_or(0)))
}

/// Checks that a client's cursor (the request's `field`) can be served
/// from the database. Cursor 0 asks for every change kept, however many
/// were pruned.
///
/// # Errors
/// `INVALID_ARGUMENT` for a negative cursor; `OUT_OF_RANGE` for one older
/// than the oldest change kept (but 0), or newer than any this database
/// handed out.
pub fn check_cursor(conn: &Connection, cursor: i64, field: &str) -> Result<(), Status> {
    if cursor < 0 {
        return Err(Status::invalid_argument(format!(
            "{field} must not be negative"
        )));
    }
    let sql = |e: rusqlite::Error| Status::internal(e.to_string());
    let newest = newest_cursor(conn).map_err(sql)?;
    if cursor > newest {
        return Err(Status::out_of_range(format!(
            "cursor {cursor} is newer than any change in this database (newest {newest}): \
             it belongs to another database; re-read the state and subscribe from_now"
        )));
    }
    let oldest: Option<i64> = conn
        .query_row("SELECT MIN(id) FROM file_changes", [], |r| r.get(0))
        .map_err(sql)?;
    let oldest = oldest.unwrap_or(newest + 1);
    if cursor > 0 && cursor + 1 < oldest {
        return Err(Status::out_of_range(format!(
            "changes after cursor {cursor} are no longer kept (the oldest kept is {oldest}): \
             re-read the state, then subscribe from cursor {}",
            oldest - 1
        )));
    }
    Ok(())
}

/// One page of changes after `cursor`, read off the runtime.
async fn read_page(handle: EngineHandle, cursor: i64) -> Result<Vec<ChangeRow>, Status> {
    blocking(move || {
        let conn = handle.conn().map_err(status_from)?;
        read_changes(&conn, cursor, PAGE).map_err(|e| Status::internal(e.to_string()))
    })
    .await
}

/// A way of encoding changes for one kind of stream (an SSE frame, a proto
/// message). A [`Batch`] keeps each encoding it was asked for, keyed by the
/// encoding's type, so every encoding type must give the same output for
/// the same rows whatever its value.
pub trait Encoding: 'static {
    /// What a batch's rows encode to.
    type Out: Send + Sync + 'static;

    /// Encodes `rows`, in order.
    fn encode(&self, rows: &[ChangeRow]) -> Self::Out;
}

/// One encoding's output, shared.
type Cached = Arc<dyn Any + Send + Sync>;

/// Committed changes in cursor order, as one read of the feed returned
/// them, with the encodings streams asked for: each is made once, by the
/// first stream that asks, and shared by every other one.
pub struct Batch {
    rows: Vec<ChangeRow>,
    encoded: Mutex<Vec<(TypeId, Cached)>>,
}

impl Batch {
    fn new(rows: Vec<ChangeRow>) -> Batch {
        Batch {
            rows,
            encoded: Mutex::new(Vec::new()),
        }
    }

    /// The batch's rows encoded by `encoding`, made on first use.
    fn encoded<E: Encoding>(&self, encoding: &E) -> Arc<E::Out> {
        let key = TypeId::of::<E>();
        let mut cache = self.encoded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(out) = cache
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.clone().downcast::<E::Out>().ok())
        {
            return out;
        }
        // Encoded under the lock: the other streams that want this batch
        // now would only make the same bytes again.
        let out = Arc::new(encoding.encode(&self.rows));
        cache.push((key, out.clone()));
        out
    }
}

/// The changes of a [`Batch`] that one stream has not seen yet: its rows
/// from `start` on.
pub struct Slice {
    batch: Arc<Batch>,
    start: usize,
}

impl Slice {
    /// The rows to send, in cursor order (never empty).
    pub fn rows(&self) -> &[ChangeRow] {
        &self.batch.rows[self.start..]
    }

    /// Where [`Slice::rows`] starts in the whole batch.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The *whole batch* encoded by `encoding` (shared with every stream
    /// that asked for the same encoding); the caller skips what comes
    /// before [`Slice::start`].
    pub fn encoded<E: Encoding>(&self, encoding: &E) -> Arc<E::Out> {
        self.batch.encoded(encoding)
    }
}

/// An encoding of one item per row, for streams that send a message per
/// change (gRPC).
pub struct PerRow<F>(pub F);

impl<T, F> Encoding for PerRow<F>
where
    T: Send + Sync + 'static,
    F: Fn(&ChangeRow) -> T + 'static,
{
    type Out = Vec<T>;

    fn encode(&self, rows: &[ChangeRow]) -> Vec<T> {
        rows.iter().map(&self.0).collect()
    }
}

/// Reads each committed batch of changes once and broadcasts it.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Batch>>,
}

impl Hub {
    /// Starts the hub task: after each commit it reads the new changes (only
    /// while someone listens; otherwise it just moves its cursor).
    pub fn start(handle: EngineHandle, mut commits: Commits) -> Hub {
        let (tx, _) = broadcast::channel(HUB_BATCHES);
        let hub = Hub { tx: tx.clone() };
        tokio::spawn(async move {
            let h = handle.clone();
            let Ok(mut cursor) = blocking(move || {
                let conn = h.conn().map_err(status_from)?;
                newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))
            })
            .await
            else {
                return;
            };
            loop {
                if commits.wait(Duration::from_secs(1)).await == Waited::Stopping {
                    return;
                }
                loop {
                    let h = handle.clone();
                    if tx.receiver_count() == 0 {
                        // Nobody listens: only move the cursor.
                        if let Ok(c) = blocking(move || {
                            let conn = h.conn().map_err(status_from)?;
                            newest_cursor(&conn).map_err(|e| Status::internal(e.to_string()))
                        })
                        .await
                        {
                            cursor = c;
                        }
                        break;
                    }
                    let rows = match read_page(h, cursor).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed read failed");
                            break;
                        }
                    };
                    let full = rows.len() as i64 == PAGE;
                    if let Some(last) = rows.last() {
                        cursor = last.cursor;
                        // Send errors only mean nobody listens right now.
                        let _ = tx.send(Arc::new(Batch::new(rows)));
                    }
                    if !full {
                        break;
                    }
                }
            }
        });
        hub
    }
}

/// One stream's place in the feed: every change after its cursor, first
/// from the database, then from the hub's broadcast, again from the
/// database whenever it fell behind the broadcast. It has no task of its
/// own: it moves only when its stream is polled, so a slow client holds
/// nothing but its cursor.
pub struct Follower {
    handle: EngineHandle,
    live: broadcast::Receiver<Arc<Batch>>,
    commits: Commits,
    cursor: i64,
    /// Reading from the database until a short page says it caught up.
    behind: bool,
}

impl Follower {
    /// Follows the feed after `after`. Subscribed to the broadcast before
    /// anything is read, so no batch falls between the catch-up and the
    /// live changes.
    pub fn new(handle: EngineHandle, hub: &Hub, commits: Commits, after: i64) -> Follower {
        Follower {
            live: hub.tx.subscribe(),
            handle,
            commits,
            cursor: after,
            behind: true,
        }
    }

    /// The next changes past the cursor; `None` once the api stops, an
    /// error when the database could not be read (the stream should end).
    ///
    /// Cancel safe: the cursor moves only when a slice is returned.
    pub async fn next(&mut self) -> Option<Result<Slice, Status>> {
        loop {
            if self.behind {
                if self.commits.stopping() {
                    return None;
                }
                let rows = match read_page(self.handle.clone(), self.cursor).await {
                    Ok(rows) => rows,
                    Err(status) => return Some(Err(status)),
                };
                self.behind = rows.len() as i64 == PAGE;
                if let Some(last) = rows.last() {
                    self.cursor = last.cursor;
                    let batch = Arc::new(Batch::new(rows));
                    return Some(Ok(Slice { batch, start: 0 }));
                }
                continue;
            }
            tokio::select! {
                batch = self.live.recv() => match batch {
                    Ok(batch) => {
                        let start = batch.rows.partition_point(|r| r.cursor <= self.cursor);
                        if let Some(last) = batch.rows.get(start..).and_then(<[_]>::last) {
                            self.cursor = last.cursor;
                            return Some(Ok(Slice { batch, start }));
                        }
                    }
                    // Fell behind the broadcast: the database has it all.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                // Shutting down: end the stream cleanly (status OK).
                () = self.commits.until_stopping() => return None,
            }
        }
    }
}

/// Streams every change after `after`, then live ones, one message per
/// change made by `map` once per batch for every stream of that `map`'s
/// type, until the client goes away or the api stops. A database error is
/// the stream's last item.
pub fn stream_changes<T, F>(
    handle: EngineHandle,
    hub: &Hub,
    commits: Commits,
    after: i64,
    map: F,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&ChangeRow) -> T + Send + Sync + 'static,
{
    let follower = Follower::new(handle, hub, commits, after);
    let encoding = Arc::new(PerRow(map));
    stream::unfold(Some(follower), |state| async move {
        let mut follower = state?;
        match follower.next().await? {
            Ok(slice) => Some((Ok(slice), Some(follower))),
            Err(status) => Some((Err(status), None)),
        }
    })
    .flat_map(move |item| {
        let items: Vec<Result<T, Status>> = match item {
            Ok(slice) => slice.encoded(&*encoding)[slice.start()..]
                .iter()
                .cloned()
                .map(Ok)
                .collect(),
            Err(status) => vec![Err(status)],
        };
        stream::iter(items)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn row(cursor: i64) -> ChangeRow {
        ChangeRow {
            cursor,
            path: format!("/v/{cursor}.md"),
            change_type: "created".into(),
            old_path: None,
            version_id: Some(cursor),
            diff_id: None,
            lines_added: Some(1),
            lines_removed: Some(0),
            timestamp: "2026-12-02 06:00:00.000000".into(),
            content_hash: None,
        }
    }

    struct Cursors(Arc<AtomicUsize>);

    impl Encoding for Cursors {
        type Out = Vec<i64>;

        fn encode(&self, rows: &[ChangeRow]) -> Vec<i64> {
            self.0.fetch_add(1, Ordering::Relaxed);
            rows.iter().map(|r| r.cursor).collect()
        }
    }

    struct Paths;

    impl Encoding for Paths {
        type Out = Vec<String>;

        fn encode(&self, rows: &[ChangeRow]) -> Vec<String> {
            rows.iter().map(|r| r.path.clone()).collect()
        }
    }

    #[test]
    fn a_batch_is_encoded_once_per_kind_of_stream_and_shared() {
        let calls = Arc::new(AtomicUsize::new(0));
        let batch = Arc::new(Batch::new((1..=5).map(row).collect()));
        let slices: Vec<Slice> = (0..100)
            .map(|i| Slice {
                batch: batch.clone(),
                start: i % 5,
            })
            .collect();
        let first = slices[0].encoded(&Cursors(calls.clone()));
        for s in &slices {
            let out = s.encoded(&Cursors(calls.clone()));
            assert!(
                Arc::ptr_eq(&first, &out),
                "every stream shares one encoding"
            );
            assert_eq!(
                out[s.start()..].first(),
                s.rows().first().map(|r| &r.cursor)
            );
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // Another kind of stream gets its own encoding of the same rows.
        assert_eq!(slices[3].encoded(&Paths)[slices[3].start()], "/v/4.md");
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
