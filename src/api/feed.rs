//! The change feed: committed `file_changes` rows by cursor, and a signal
//! that wakes waiters after each committed batch.
//!
//! The cursor is `file_changes.id`: it only grows and survives restarts. One
//! [`Hub`] task reads each committed batch of changes once and broadcasts it
//! to every live stream. A stream subscribes to the hub first, then catches up
//! from the database from its cursor, then forwards broadcast rows past its
//! cursor: a client that reconnects with its last cursor misses nothing and
//! sees nothing twice. A slow client only delays its own task: its buffer is
//! bounded, and when it falls behind the broadcast it catches up from the
//! database again; the engine never waits for it.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{blocking, status_from};
use crate::engine::{EngineHandle, ProgressSnapshot};

/// Changes read per database page.
const PAGE: i64 = 500;

/// Messages buffered per stream before its task waits for the client.
pub const STREAM_BUFFER: usize = 256;

/// Committed batches the hub keeps for streams that lag behind.
const HUB_BATCHES: usize = 1_024;

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

/// Checks that a client's cursor can be served from the database.
///
/// # Errors
/// `INVALID_ARGUMENT` for a negative cursor; `OUT_OF_RANGE` for one older
/// than the oldest change kept, or newer than any this database handed out.
pub fn check_cursor(conn: &Connection, cursor: i64) -> Result<(), Status> {
    if cursor < 0 {
        return Err(Status::invalid_argument("from_cursor must not be negative"));
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
    if cursor + 1 < oldest {
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

/// Reads each committed batch of changes once and broadcasts it.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Vec<ChangeRow>>>,
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
                        let _ = tx.send(Arc::new(rows));
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

/// Sends `rows` past `cursor` to the client; false when it went away.
async fn forward<T, F>(
    tx: &mpsc::Sender<Result<T, Status>>,
    rows: &[ChangeRow],
    cursor: &mut i64,
    map: &F,
) -> bool
where
    F: Fn(ChangeRow) -> T,
{
    let start = *cursor;
    for row in rows.iter().filter(|r| r.cursor > start) {
        *cursor = row.cursor;
        if tx.send(Ok(map(row.clone()))).await.is_err() {
            return false;
        }
    }
    true
}

/// Reads from the database from `cursor` until it is caught up; false when
/// the client went away or the read failed (the error is sent).
async fn catch_up<T, F>(
    handle: &EngineHandle,
    tx: &mpsc::Sender<Result<T, Status>>,
    cursor: &mut i64,
    map: &F,
) -> bool
where
    F: Fn(ChangeRow) -> T,
{
    loop {
        let rows = match read_page(handle.clone(), *cursor).await {
            Ok(rows) => rows,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return false;
            }
        };
        let full = rows.len() as i64 == PAGE;
        if !forward(tx, &rows, cursor, map).await {
            return false;
        }
        if !full {
            return true;
        }
    }
}

/// Streams every change after `after`, then live ones, mapped by `map`,
/// until the client goes away or the api stops.
pub fn stream_changes<T, F>(
    handle: EngineHandle,
    hub: &Hub,
    mut commits: Commits,
    after: i64,
    map: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: Fn(ChangeRow) -> T + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    // Subscribe before catching up, so no batch falls between the two.
    let mut live = hub.tx.subscribe();
    tokio::spawn(async move {
        let mut cursor = after;
        if !catch_up(&handle, &tx, &mut cursor, &map).await {
            return;
        }
        loop {
            tokio::select! {
                batch = live.recv() => match batch {
                    Ok(rows) => {
                        if !forward(&tx, &rows, &mut cursor, &map).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Fell behind the broadcast: the database has it all.
                        if !catch_up(&handle, &tx, &mut cursor, &map).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
                // Shutting down: end the stream cleanly (status OK).
                _ = commits.until_stopping() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}
