//! The `event_queue` state machine: enqueue, claim, complete, retry, fail.
//!
//! A row goes `pending -> claimed -> done`; a failed attempt goes back to
//! `pending` with a backoff and, after [`QueuePolicy::max_attempts`] (or at once
//! for a permanent error), to `failed` with its `last_error` kept. Pending rows
//! coalesce per path (a partial unique index), so a burst of events for one file
//! is one row. A claim takes at most one row per path (counting a move's
//! `old_path`), and never a path that is already claimed, so a path's changes
//! are applied in order. A claim has no lease: the engine's exclusive lock on
//! `obby.db.lock` proves no other engine runs, so claimed rows belong to this
//! process until it dies, and [`requeue_claimed`] returns a dead one's rows at
//! start-up (its attempt counted; a row whose last attempt it was, `failed`).
//! A `failed` path is tried again when its file changes. A claim stats the
//! files it takes, to bound a batch's bytes. Every write here is
//! one short `BEGIN IMMEDIATE` transaction, or runs inside the caller's.
//! Reads and writes only `event_queue`, and is its only owner: no other
//! module writes SQL against it; the api reaches it only through
//! `EngineHandle` (whose `track` is [`enqueue_with_ids`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::clock::now_ms;
use super::counts;
use super::error::ItemError;

/// Rows scanned per claim, as a multiple of the batch size, to skip rows whose
/// path is busy.
const CLAIM_SCAN_FACTOR: usize = 2;

/// The longest a failed row waits before its next attempt.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What kind of change an event reports. For the worker it is a hint only: it
/// stats and hashes the file and decides for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A file appeared.
    Created,
    /// A file's content (or only its metadata) changed.
    Modified,
    /// A file disappeared.
    Deleted,
    /// A file was renamed; the row carries `old_path`.
    Moved,
}

impl ChangeKind {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Moved => "moved",
        }
    }

    /// Parses the stored text; unknown text reads as `modified` (a hint only).
    pub fn parse(s: &str) -> ChangeKind {
        match s {
            "created" => ChangeKind::Created,
            "deleted" => ChangeKind::Deleted,
            "moved" => ChangeKind::Moved,
            _ => ChangeKind::Modified,
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of an `event_queue` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub i64);

/// An event to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Absolute path of the file.
    pub path: String,
    /// What the producer saw.
    pub kind: ChangeKind,
    /// For a move: where the file was before.
    pub old_path: Option<String>,
}

/// A claimed row, as the workers get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// Row id.
    pub id: QueueId,
    /// Absolute path of the file.
    pub path: String,
    /// The producer's hint.
    pub kind: ChangeKind,
    /// For a move: where the file was before.
    pub old_path: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// When the row was first enqueued (unix ms).
    pub enqueued_ms: i64,
    /// Times it was put back because its file was still being written.
    pub deferrals: i64,
}

/// Retry rules for failed rows.
#[derive(Debug, Clone, Copy)]
pub struct QueuePolicy {
    /// Attempts before a row is `failed`.
    pub max_attempts: i64,
    /// Wait before the second attempt; doubles each time, up to [`MAX_BACKOFF`].
    pub backoff: Duration,
}

/// Row counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Waiting to be claimed (including rows in backoff).
    pub pending: i64,
    /// Being processed.
    pub claimed: i64,
    /// Finished (until pruned).
    pub done: i64,
    /// Gave up; see `last_error`.
    pub failed: i64,
}

impl QueueCounts {
    /// Rows that still need work.
    pub fn outstanding(&self) -> i64 {
        self.pending + self.claimed
    }
}

/// A failed row, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedRow {
    /// Row id.
    pub id: i64,
    /// The file.
    pub path: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error's message.
    pub last_error: Option<String>,
}

fn immediate(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

/// Enqueues events in one transaction, coalescing with pending rows of the
/// same path. Returns the number of events written.
///
/// # Errors
/// Any SQLite error; nothing is written then.
pub fn enqueue(conn: &Connection, events: &[NewEvent], source: &str) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    enqueue_in(&tx, events, source)?;
    tx.commit()?;
    Ok(events.len())
}

/// [`enqueue`], returning the id of each event's pending row just after it
/// (coalesced rows keep theirs): the floor from which [`path_progress`]
/// tells how the path's processing ended. The api's `TrackChange`.
///
/// # Errors
/// Any SQLite error; nothing is written then.
pub fn enqueue_with_ids(
    conn: &Connection,
    events: &[NewEvent],
    source: &str,
) -> rusqlite::Result<HashMap<String, i64>> {
    let tx = immediate(conn)?;
    enqueue_in(&tx, events, source)?;
    let mut ids = HashMap::new();
    {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM event_queue WHERE status = 'pending' AND path = ?1")?;
        for e in events {
            let id: i64 = stmt.query_row([&e.path], |r| r.get(0))?;
            ids.insert(e.path.clone(), id);
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// Where the rows of one path stand, from a row id on ([`path_progress`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProgress {
    /// A row of the path is pending or claimed.
    Outstanding,
    /// None is, and the newest row from the floor on failed, with this error.
    Failed(Option<String>),
    /// None is, and the newest row from the floor on did not fail (or was
    /// pruned): the outcome is in `sync_files`.
    Finished,
}

/// How the rows of `path` from row `floor` on stand.
///
/// # Errors
/// Any SQLite error.
pub fn path_progress(conn: &Connection, path: &str, floor: i64) -> rusqlite::Result<PathProgress> {
    let busy: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM event_queue WHERE status = 'pending' AND path = ?1)
                 OR EXISTS (SELECT 1 FROM event_queue WHERE status = 'claimed' AND path = ?1)",
        )?
        .query_row([path], |r| r.get(0))?;
    if busy {
        return Ok(PathProgress::Outstanding);
    }
    let last: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT status, last_error FROM event_queue WHERE id >= ?2 AND path = ?1
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![path, floor], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match last {
        Some((status, error)) if status == "failed" => PathProgress::Failed(error),
        _ => PathProgress::Finished,
    })
}

/// The newest row id (0 for an empty queue): the horizon of a barrier.
///
/// # Errors
/// Any SQLite error.
pub fn newest_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM event_queue", [], |r| {
        r.get(0)
    })
}

/// Rows up to id `horizon` that are still pending or claimed.
///
/// # Errors
/// Any SQLite error.
pub fn outstanding_through(conn: &Connection, horizon: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed') AND id <= ?1",
        [horizon],
        |r| r.get(0),
    )
}

/// [`enqueue`] inside the caller's transaction.
///
/// # Errors
/// Any SQLite error.
pub fn enqueue_in(conn: &Connection, events: &[NewEvent], source: &str) -> rusqlite::Result<()> {
    let now = now_ms();
    // Coalescing rules: a move stays a move (its old path is the only thing the
    // worker cannot find out by itself); a new event makes the row available
    // now and resets its attempts, since the file changed. A difference a
    // walk found (reconcile, rescan) keeps them: it is found again at every
    // start and poll until recorded, so it would reset a row that kills the
    // engine before its attempts run out.
    //
    // One statement for all the rows, in order (a path twice in `events`
    // coalesces as two statements would): the rows travel as one JSON array.
    if events.is_empty() {
        return Ok(());
    }
    let rows = serde_json::Value::Array(
        events
            .iter()
            .map(|e| {
                let kind = if e.old_path.is_some() {
                    ChangeKind::Moved
                } else {
                    e.kind
                };
                serde_json::json!([e.path, kind.as_str(), e.old_path])
            })
            .collect(),
    )
    .to_string();
    conn.prepare_cached(
        "INSERT INTO event_queue (path, kind, old_path, status, source, enqueued_ms, available_ms)
         SELECT json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
                json_extract(e.value, '$[2]'), 'pending', ?2, ?3, ?3
         FROM json_each(?1) AS e WHERE true
         ON CONFLICT (path) WHERE status = 'pending' DO UPDATE SET
             old_path = COALESCE(excluded.old_path, event_queue.old_path),
             kind = CASE WHEN COALESCE(excluded.old_path, event_queue.old_path) IS NOT NULL
                         THEN 'moved' ELSE excluded.kind END,
             available_ms = excluded.available_ms,
             attempts = CASE WHEN excluded.source IN ('reconcile', 'rescan')
                             THEN event_queue.attempts ELSE 0 END",
    )?
    .execute(params![rows, source, now])?;
    Ok(())
}

/// Claims up to `limit` pending rows that are due, at most one per path and
/// none whose path is already claimed, in id order, whose files add up to
/// at most `max_bytes`, so what a batch holds in memory is bounded by bytes
/// as well as rows. A file over half of `max_bytes` is claimed alone, with
/// nothing else in flight, and so is a row marked by [`requeue_claimed`]. Also returns how long the
/// write lock was held (from the moment it was granted).
///
/// # Errors
/// Any SQLite error; nothing is claimed then.
pub fn claim(
    conn: &Connection,
    limit: usize,
    max_bytes: u64,
) -> rusqlite::Result<(Vec<QueueRow>, Duration)> {
    let tx = immediate(conn)?;
    let locked = std::time::Instant::now();
    let claimed = claim_in(&tx, limit, max_bytes)?;
    tx.commit()?;
    Ok((claimed, locked.elapsed()))
}

/// [`claim`] inside a write transaction the caller holds (the store claims
/// the next batch in the transaction that commits the last one).
///
/// # Errors
/// Any SQLite error.
pub fn claim_in(tx: &Connection, limit: usize, max_bytes: u64) -> rusqlite::Result<Vec<QueueRow>> {
    let now = now_ms();
    let mut bytes: u64 = 0;
    let mut alone = None;
    let mut busy: HashSet<String> = HashSet::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT path, old_path, alone FROM event_queue WHERE status = 'claimed'",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if r.get::<_, bool>(2)? {
                // A row that runs alone is in flight.
                return Ok(Vec::new());
            }
            busy.insert(r.get(0)?);
            if let Some(old) = r.get::<_, Option<String>>(1)? {
                busy.insert(old);
            }
        }
    }
    let mut claimed = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, path, kind, old_path, attempts, enqueued_ms, alone, deferrals
             FROM event_queue
             WHERE status = 'pending' AND available_ms <= ?1
             ORDER BY id LIMIT ?2",
        )?;
        let scan = i64::try_from(limit * CLAIM_SCAN_FACTOR + busy.len()).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![now, scan])?;
        while let Some(r) = rows.next()? {
            if claimed.len() >= limit {
                break;
            }
            let row = QueueRow {
                id: QueueId(r.get(0)?),
                path: r.get(1)?,
                kind: ChangeKind::parse(&r.get::<_, String>(2)?),
                old_path: r.get(3)?,
                attempts: r.get::<_, i64>(4)? + 1,
                enqueued_ms: r.get(5)?,
                deferrals: r.get(7)?,
            };
            let clash =
                busy.contains(&row.path) || row.old_path.as_ref().is_some_and(|o| busy.contains(o));
            if clash {
                continue;
            }
            // The file's size now, as the worker will hold it (its text and
            // diff) until the batch commits; a file gone or unreadable here
            // costs nothing.
            let size = std::fs::symlink_metadata(&row.path).map_or(0, |m| m.len());
            // A row that runs alone (one in flight when an engine died, which
            // may be what killed it, or a file over half a batch's bytes) is
            // claimed with nothing else in flight and nothing beside it: a
            // crash blames no other row, and two huge files are never held
            // at once. The rows after it wait.
            if r.get::<_, bool>(6)? || size > max_bytes / 2 {
                if claimed.is_empty() && busy.is_empty() {
                    alone = Some(row.id);
                    claimed.push(row);
                }
                break;
            }
            if !claimed.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            busy.insert(row.path.clone());
            if let Some(old) = &row.old_path {
                busy.insert(old.clone());
            }
            claimed.push(row);
        }
    }
    if !claimed.is_empty() {
        let ids = serde_json::Value::Array(
            claimed
                .iter()
                .map(|row| serde_json::Value::from(row.id.0))
                .collect(),
        )
        .to_string();
        tx.prepare_cached(
            "UPDATE event_queue SET status = 'claimed', attempts = attempts + 1
             WHERE id IN (SELECT value FROM json_each(?1))",
        )?
        .execute([ids])?;
    }
    if let Some(id) = alone {
        tx.prepare_cached("UPDATE event_queue SET alone = 1 WHERE id = ?1")?
            .execute([id.0])?;
    }
    Ok(claimed)
}

/// A claimed row whose outcome is stored: its id, path and the
/// `file_changes` row it wrote last, if any.
pub type Done<'a> = (QueueId, &'a str, Option<i64>);

/// Marks claimed rows done, inside the transaction that stored their
/// outcomes, and retires earlier `failed` rows of the same paths (a later
/// success supersedes them): two statements for the whole batch.
///
/// # Errors
/// Any SQLite error.
pub fn mark_done(conn: &Connection, done: &[Done<'_>]) -> rusqlite::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let rows = serde_json::Value::Array(
        done.iter()
            .map(|(id, _, change)| serde_json::json!([id.0, change]))
            .collect(),
    )
    .to_string();
    let paths = serde_json::Value::Array(
        done.iter()
            .map(|(_, path, _)| serde_json::Value::from(*path))
            .collect(),
    )
    .to_string();
    let acked = conn
        .prepare_cached(
            "UPDATE event_queue SET status = 'done', done_ms = ?1,
                 change_id = json_extract(d.value, '$[1]')
             FROM json_each(?2) AS d
             WHERE event_queue.id = json_extract(d.value, '$[0]')",
        )?
        .execute(params![now, rows])?;
    let retried = conn
        .prepare_cached(
            "UPDATE event_queue SET status = 'done', done_ms = ?1
             WHERE status = 'failed' AND path IN (SELECT value FROM json_each(?2))",
        )?
        .execute(params![now, paths])?;
    counts::add_queue_done(conn, acked + retried)
}

/// Records a failed attempt: back to pending after a backoff, or `failed`
/// when the error is permanent or the attempts are used up. Returns true
/// when the row is now `failed`.
///
/// # Errors
/// Any SQLite error.
pub fn mark_attempt_failed(
    conn: &Connection,
    row: &QueueRow,
    error: &ItemError,
    policy: &QueuePolicy,
) -> rusqlite::Result<bool> {
    let message = error.to_string();
    if error.is_permanent() || row.attempts >= policy.max_attempts {
        conn.prepare_cached(
            "UPDATE event_queue SET status = 'failed', last_error = ?2, done_ms = ?3
             WHERE id = ?1",
        )?
        .execute(params![row.id.0, message, now_ms()])?;
        return Ok(true);
    }
    let doublings = u32::try_from(row.attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let wait = policy
        .backoff
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    let available = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    release(conn, row.id, available, Some(&message))?;
    Ok(false)
}

/// Puts a claimed row back to pending without counting the attempt, counting
/// a deferral instead: its file was still being written, so it is looked at
/// again at `available_ms`.
///
/// # Errors
/// Any SQLite error.
pub fn defer(conn: &Connection, row: &QueueRow, available_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE event_queue SET attempts = MAX(attempts - 1, 0), deferrals = deferrals + 1
         WHERE id = ?1",
    )?
    .execute([row.id.0])?;
    release(conn, row.id, available_ms, None)
}

/// Puts a claimed row back to pending, due at `available_ms`. When a newer
/// pending row for the same path exists, this row's move information is
/// folded into it and this row is retired as done instead.
///
/// # Errors
/// Any SQLite error.
pub fn release(
    conn: &Connection,
    id: QueueId,
    available_ms: i64,
    last_error: Option<&str>,
) -> rusqlite::Result<()> {
    let folded = conn
        .prepare_cached(
            "UPDATE event_queue AS p SET
                 old_path = COALESCE(p.old_path, c.old_path),
                 kind = CASE WHEN COALESCE(p.old_path, c.old_path) IS NOT NULL
                             THEN 'moved' ELSE p.kind END
             FROM (SELECT path, old_path FROM event_queue WHERE id = ?1) AS c
             WHERE p.status = 'pending' AND p.path = c.path AND p.id <> ?1",
        )?
        .execute(params![id.0])?;
    if folded > 0 {
        let retired = conn
            .prepare_cached(
                "UPDATE event_queue SET status = 'done', done_ms = ?2,
                     last_error = 'superseded by a newer event'
                 WHERE id = ?1",
            )?
            .execute(params![id.0, now_ms()])?;
        counts::add_queue_done(conn, retired)?;
    } else {
        conn.prepare_cached(
            "UPDATE event_queue SET status = 'pending', available_ms = ?2,
                 last_error = COALESCE(?3, last_error)
             WHERE id = ?1",
        )?
        .execute(params![id.0, available_ms, last_error])?;
    }
    Ok(())
}

/// Returns claimed rows whose work was dropped (the engine stopping while
/// they were still being computed) to pending, the claim's attempt given
/// back: a stop is no failure. Returns how many were claimed.
///
/// # Errors
/// Any SQLite error; nothing is changed then.
pub fn unclaim(conn: &Connection, ids: &[QueueId]) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    let now = now_ms();
    let mut released = 0;
    for &id in ids {
        let claimed = tx
            .prepare_cached(
                "UPDATE event_queue SET attempts = MAX(attempts - 1, 0)
                 WHERE id = ?1 AND status = 'claimed'",
            )?
            .execute([id.0])?;
        if claimed > 0 {
            release(&tx, id, now, None)?;
            released += 1;
        }
    }
    tx.commit()?;
    Ok(released)
}

/// What the start-up finds of a stopped engine's claimed rows.
pub const STOPPED_WHILE_PROCESSING: &str = "the engine stopped while processing this row";

/// At start-up, when the engine lock proves their owner is dead: returns
/// every `claimed` row to pending, its attempt counted (the claim counted
/// it) and marked to run alone, or, when that attempt was its last, makes it
/// `failed` with [`STOPPED_WHILE_PROCESSING`], so a row that kills the
/// engine (a crash in a library, the kernel's OOM killer) cannot do so at
/// every start. Such a row is then claimed alone ([`claim_in`]): the rows
/// that were in flight beside the culprit get their attempts back as
/// successes, and the culprit alone uses its attempts up. Returns (rows
/// returned to pending, rows failed).
///
/// # Errors
/// Any SQLite error; nothing is changed then.
pub fn requeue_claimed(
    conn: &Connection,
    policy: &QueuePolicy,
) -> rusqlite::Result<(usize, usize)> {
    let now = now_ms();
    let tx = immediate(conn)?;
    let rows: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, attempts FROM event_queue WHERE status = 'claimed' ORDER BY id",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut failed = 0;
    for (id, attempts) in &rows {
        if *attempts >= policy.max_attempts {
            tx.prepare_cached(
                "UPDATE event_queue SET status = 'failed', last_error = ?2, done_ms = ?3
                 WHERE id = ?1",
            )?
            .execute(params![id, STOPPED_WHILE_PROCESSING, now])?;
            failed += 1;
        } else {
            tx.prepare_cached("UPDATE event_queue SET alone = 1 WHERE id = ?1")?
                .execute([id])?;
            release(&tx, QueueId(*id), now, None)?;
        }
    }
    tx.commit()?;
    Ok((rows.len() - failed, failed))
}

/// The paths of `failed` rows (no later row of theirs succeeded), each with
/// when it failed (unix ms), for reconciliation: a failed file is tried
/// again when it changes, not at every start.
///
/// # Errors
/// Any SQLite error.
pub fn failed_paths(conn: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    conn.prepare_cached(
        "SELECT path, MAX(COALESCE(done_ms, 0)) FROM event_queue WHERE status = 'failed'
         GROUP BY path",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Deletes the `done` rows finished before `before_ms` that come, in id
/// order, before the first done row finished since. Returns how many.
///
/// Done rows finish roughly in id order, so that prefix is nearly all of
/// them, and the work is the rows deleted: a filter on `done_ms` alone read
/// every done row kept (a million on a busy vault's day: a billion
/// instructions at every drained queue). A row that finished late holds the
/// rows after it until it is old too: nothing younger than `before_ms` is
/// ever deleted.
///
/// # Errors
/// Any SQLite error.
pub fn prune_done(conn: &Connection, before_ms: i64) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    let n = tx
        .prepare_cached(
            "DELETE FROM event_queue
             WHERE status = 'done' AND done_ms < ?1
               AND id < COALESCE(
                   (SELECT id FROM event_queue
                     WHERE status = 'done' AND done_ms >= ?1 ORDER BY id LIMIT 1),
                   9223372036854775807)",
        )?
        .execute([before_ms])?;
    counts::remove_queue_done(&tx, n)?;
    tx.commit()?;
    Ok(n)
}

/// Row counts per status.
///
/// # Errors
/// Any SQLite error.
pub fn counts(conn: &Connection) -> rusqlite::Result<QueueCounts> {
    // The three small statuses through `event_queue_by_status`; the done
    // rows (a day of them, a million on a busy vault) from `sync_counts`.
    let mut stmt = conn.prepare_cached("SELECT COUNT(*) FROM event_queue WHERE status = ?1")?;
    let mut count = |status: &str| stmt.query_row([status], |r| r.get::<_, i64>(0));
    Ok(QueueCounts {
        pending: count("pending")?,
        claimed: count("claimed")?,
        failed: count("failed")?,
        done: super::counts::queue_done(conn)?,
    })
}

/// True while any row is pending or claimed.
///
/// # Errors
/// Any SQLite error.
pub fn has_outstanding(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM event_queue WHERE status = 'pending')
             OR EXISTS (SELECT 1 FROM event_queue WHERE status = 'claimed')",
    )?
    .query_row([], |r| r.get(0))
}

/// The earliest time a pending row becomes due, if any row is pending.
///
/// # Errors
/// Any SQLite error.
pub fn next_due_ms(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(available_ms) FROM event_queue WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))
        .optional()
        .map(Option::flatten)
}

/// Up to `limit` failed rows, oldest first.
///
/// # Errors
/// Any SQLite error.
pub fn failures(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<FailedRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, path, attempts, last_error FROM event_queue
         WHERE status = 'failed' ORDER BY id LIMIT ?1",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    stmt.query_map([limit], |r| {
        Ok(FailedRow {
            id: r.get(0)?,
            path: r.get(1)?,
            attempts: r.get(2)?,
            last_error: r.get(3)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated in-memory database with done rows finished at `done_ms`,
    /// in id order.
    fn done_rows(done_ms: &[i64]) -> Connection {
        let conn = Connection::open_in_memory().expect("memory db");
        super::super::schema::migrate(&conn, std::path::Path::new(":memory:"), false)
            .expect("migrate");
        for i in 0..done_ms.len() {
            conn.execute(
                "INSERT INTO event_queue (path, kind, status, source, enqueued_ms, available_ms)
                 VALUES (?1, 'modified', 'pending', 'test', 0, 0)",
                [format!("n{i}.md")],
            )
            .expect("row");
        }
        for (i, ms) in done_ms.iter().enumerate() {
            let id = i64::try_from(i).expect("small") + 1;
            conn.execute(
                "UPDATE event_queue SET status = 'done', done_ms = ?2 WHERE id = ?1",
                [id, *ms],
            )
            .expect("done");
        }
        counts::add_queue_done(&conn, done_ms.len()).expect("count");
        conn
    }

    fn left(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT id FROM event_queue ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("ids")
    }

    #[test]
    fn pruning_deletes_the_old_prefix_and_never_a_younger_row() {
        // Ids 1-3 old, 4 young (it finished late), 5 old, 6 young.
        let conn = done_rows(&[10, 20, 30, 500, 40, 600]);
        assert_eq!(prune_done(&conn, 100).expect("prune"), 3);
        assert_eq!(left(&conn), [4, 5, 6]);
        assert_eq!(counts::queue_done(&conn).expect("count"), 3);
        // Once the late row is old too, the rows after it go with it.
        assert_eq!(prune_done(&conn, 550).expect("prune"), 2);
        assert_eq!(left(&conn), [6]);
        assert_eq!(counts::queue_done(&conn).expect("count"), 1);
        // Every row old: all go.
        assert_eq!(prune_done(&conn, 1_000).expect("prune"), 1);
        assert!(left(&conn).is_empty());
        assert_eq!(counts::queue_done(&conn).expect("count"), 0);
    }

    #[test]
    fn unclaim_gives_rows_back_with_their_attempt() {
        let conn = done_rows(&[]);
        for path in ["/r/a.md", "/r/b.md"] {
            enqueue(
                &conn,
                &[NewEvent {
                    path: path.into(),
                    kind: ChangeKind::Modified,
                    old_path: None,
                }],
                "test",
            )
            .expect("enqueue");
        }
        let (claimed, _) = claim(&conn, 10, u64::MAX).expect("claim");
        assert_eq!(claimed.len(), 2);
        let ids: Vec<QueueId> = claimed.iter().map(|r| r.id).collect();
        assert_eq!(unclaim(&conn, &ids).expect("unclaim"), 2);
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT status, attempts FROM event_queue ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, [("pending".to_owned(), 0), ("pending".to_owned(), 0)]);
        // Rows no longer claimed are left alone.
        assert_eq!(unclaim(&conn, &ids).expect("again"), 0);
    }
}
