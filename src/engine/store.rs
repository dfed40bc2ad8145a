//! The single writer: a batch of worker outcomes in, Obby rows and queue
//! acknowledgements out, in one `BEGIN IMMEDIATE` transaction.
//!
//! For each claimed row, in claim order, the store first checks that every
//! path the worker based its outcome on still has the same `sync_files` row
//! and the same newest version (a compare-and-set; on a mismatch the row goes
//! back to pending and is computed again), then writes `file_versions`, `content_diffs`, `file_changes`, `events`, the
//! engine's `sync_files` and the backend's `file_states`, and marks the queue
//! row done, all in the same transaction as the rest of the batch (with the
//! row counts' watermark, [`super::counts::catch_up`]). So a crash
//! leaves either all of a row's effects or none, and the row pending or
//! claimed: processing it again finds the same state and writes the same rows
//! once. A row the database refuses (the backend's constraints and triggers)
//! fails alone: the batch is written again with that row `failed`. Failed attempts are
//! recorded here too ([`super::queue::mark_attempt_failed`]). The store owns
//! the write connection; nothing else in obby-sync writes these tables.
//!
//! Written in the backend's conventions: every DATETIME as local text, a gone
//! file's `file_states` row with a NULL hash and 0 lines and bytes (and
//! `is_deleted = 1`), 0 lines for a binary file's state, and a unique change
//! id in `file_changes.content_hash` ([`super::hash::change_id`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};

use super::clock::{StoreClock, format_mtime_ns, now_ms};
use super::counts;
use super::diff::UnifiedDiff;
use super::error::ItemError;
use super::hash::change_id;
use super::progress::{BatchStats, Progress};
use super::queue::{self, ChangeKind, QueueId, QueuePolicy, QueueRow};
use super::worker::{Outcome, Record, Snapshot, load_state, newest_version};

/// One processed row: the claimed row and what its worker decided.
#[derive(Debug)]
pub struct Computed {
    /// The claimed queue row.
    pub row: QueueRow,
    /// The worker's outcome or its error.
    pub result: Result<Outcome, ItemError>,
}

/// The next batch to claim in the transaction that commits this one.
#[derive(Debug, Clone, Copy)]
pub struct NextClaim {
    /// At most this many rows.
    pub limit: usize,
    /// Files adding up to at most this many bytes (one larger file alone).
    pub max_bytes: u64,
}

/// The single writer of the Obby tables.
pub struct Store {
    conn: Connection,
    clock: StoreClock,
    policy: QueuePolicy,
    progress: Arc<Progress>,
    /// The text of each multi-row statement, built once.
    sql: SqlTexts,
}

impl Store {
    /// Wraps the write connection. The clock starts after the newest stamp
    /// already stored, so order survives a restart.
    ///
    /// # Errors
    /// Any SQLite error reading that stamp.
    pub fn new(
        conn: Connection,
        policy: QueuePolicy,
        progress: Arc<Progress>,
    ) -> rusqlite::Result<Store> {
        let newest: Option<String> = conn
            .query_row("SELECT MAX(timestamp) FROM file_changes", [], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(Store {
            clock: StoreClock::starting_after(newest.as_deref()),
            conn,
            policy,
            progress,
            sql: SqlTexts::default(),
        })
    }

    /// The write connection, for the queue's own short transactions.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Commits one batch and, with `next`, claims the next one in the same
    /// transaction (one write transaction per batch, not two). A row the
    /// database refuses (a constraint or trigger of a table the backend
    /// made, say) fails alone: the transaction is rolled back and the batch
    /// written again with that row `failed` with SQLite's words, so the rest
    /// of the batch commits. (Optimistic: a savepoint per row would cost a
    /// copy of every page each row touches.) Returns what was written and
    /// the rows claimed.
    ///
    /// # Errors
    /// Any SQLite error that is not about one row (busy, disk full, I/O); the
    /// whole batch is rolled back and its rows stay claimed (they return to
    /// pending at the next start).
    pub fn commit(
        &mut self,
        batch: &[Computed],
        next: Option<NextClaim>,
    ) -> rusqlite::Result<(BatchStats, Vec<QueueRow>)> {
        let mut rejected = HashMap::new();
        let mut row_by_row = false;
        loop {
            match self.try_commit(batch, next, &rejected, row_by_row)? {
                Ok(stats) => return Ok(stats),
                Err(Refused::Row(id, error)) => {
                    tracing::debug!(row = id.0, %error, "the database refused a row; writing the batch again without it");
                    rejected.insert(id, error);
                }
                Err(Refused::Unknown(error)) => {
                    tracing::debug!(%error, "the database refused a row of a multi-row insert; writing the batch again row by row");
                    row_by_row = true;
                }
            }
        }
    }

    /// One attempt at [`Store::commit`]: `Ok(Err(_))` when the database
    /// refused a row not yet in `rejected` (nothing is written then). With
    /// `row_by_row`, the deferred rows are written after each queue row, so
    /// a refusal names its row.
    fn try_commit(
        &mut self,
        batch: &[Computed],
        next: Option<NextClaim>,
        rejected: &HashMap<QueueId, String>,
        row_by_row: bool,
    ) -> rusqlite::Result<Result<(BatchStats, Vec<QueueRow>), Refused>> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let locked = std::time::Instant::now();
        let mut stats = BatchStats::default();
        let mut last_change = None;
        let mut deferred = Deferred::new(&tx, row_by_row, &mut self.sql)?;
        let mut done = Vec::with_capacity(batch.len());
        for item in batch {
            if let Some(message) = rejected.get(&item.row.id) {
                let error = ItemError::Rejected {
                    path: item.row.path.clone(),
                    message: message.clone(),
                };
                fail(&tx, &self.policy, &item.row, &error, &mut stats)?;
                continue;
            }
            match &item.result {
                Err(ItemError::Unsettled { wait, .. }) => {
                    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    queue::defer(&tx, &item.row, now_ms().saturating_add(wait_ms.max(1)))?;
                    stats.retried += 1;
                }
                Err(error) => fail(&tx, &self.policy, &item.row, error, &mut stats)?,
                Ok(outcome) => {
                    if !still_current(&tx, outcome, &mut deferred)? {
                        tracing::debug!(path = %item.row.path, "state moved underneath, recomputing");
                        queue::release(&tx, item.row.id, now_ms(), None)?;
                        stats.retried += 1;
                        continue;
                    }
                    match apply(&tx, &mut self.clock, outcome, &mut deferred, &mut stats) {
                        Ok(change_id) => {
                            if change_id.is_some() {
                                last_change = change_id;
                            }
                            done.push((item.row.id, item.row.path.as_str(), change_id));
                            stats.rows += 1;
                        }
                        // Dropping `tx` rolls the attempt back.
                        Err(e) if is_row_error(&e) => {
                            return Ok(Err(Refused::Row(item.row.id, e.to_string())));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        match deferred.flush(&tx) {
            Ok(()) => {}
            Err(e) if is_row_error(&e) => return Ok(Err(Refused::Unknown(e.to_string()))),
            Err(e) => return Err(e),
        }
        queue::mark_done(&tx, &done)?;
        // The batch's rows are still in the cache: counting them now keeps
        // the range `status` counts above the watermark to what others
        // inserted since.
        counts::catch_up(&tx)?;
        let claimed = match next {
            Some(next) => queue::claim_in(&tx, next.limit, next.max_bytes)?,
            None => Vec::new(),
        };
        tx.commit()?;
        self.progress.record_write(locked.elapsed());
        self.progress.record(&stats, last_change);
        Ok(Ok((stats, claimed)))
    }
}

/// Records a failed attempt of `row` (failed for good at its last attempt).
fn fail(
    tx: &Connection,
    policy: &QueuePolicy,
    row: &QueueRow,
    error: &ItemError,
    stats: &mut BatchStats,
) -> rusqlite::Result<()> {
    if queue::mark_attempt_failed(tx, row, error, policy)? {
        tracing::warn!(path = %row.path, %error, "giving up on this change");
        stats.failed += 1;
        stats.rows += 1;
    } else {
        tracing::debug!(path = %row.path, %error, "will retry");
        stats.retried += 1;
    }
    Ok(())
}

/// True when an error belongs to the row being written (the database refused
/// it: a constraint, a trigger's `RAISE`, a value it cannot hold) rather than
/// to the database as a whole (busy, full, I/O), which fails the batch.
fn is_row_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => true,
        Some(_) => false,
        // Conversions rusqlite makes itself: a value of this row.
        None => !matches!(e, rusqlite::Error::SqliteFailure(..)),
    }
}

/// True when every path the outcome was computed from still has the same
/// `sync_files` row and the same newest version.
fn still_current(
    conn: &Connection,
    outcome: &Outcome,
    deferred: &mut Deferred<'_, '_>,
) -> rusqlite::Result<bool> {
    // A path this batch already wrote (rare: claimed rows have distinct
    // paths) is read back from the table, so its queued rows go first.
    if outcome.seen.iter().any(|seen| deferred.holds(&seen.path)) {
        deferred.flush(conn)?;
    }
    for seen in &outcome.seen {
        if load_state(conn, &seen.path)? != seen.state {
            return Ok(false);
        }
        let newest = match deferred.newest(&seen.path) {
            Some(id) => Some(id),
            None => newest_version(conn, &seen.path)?.map(|n| n.id),
        };
        if newest != seen.newest {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes an outcome's rows; returns the id of the last `file_changes` row.
fn apply<'a>(
    tx: &Connection,
    clock: &mut StoreClock,
    outcome: &'a Outcome,
    deferred: &mut Deferred<'a, '_>,
    stats: &mut BatchStats,
) -> rusqlite::Result<Option<i64>> {
    let mut last = None;
    for record in &outcome.records {
        last = Some(write_record(tx, clock, record, deferred, stats)?);
    }
    if let Some(touch) = &outcome.touch
        && touch.read_only
    {
        if deferred.holds(&touch.path) {
            deferred.flush(tx)?;
        }
        tx.prepare_cached("UPDATE sync_files SET read_ns = ?2 WHERE path = ?1")?
            .execute(params![touch.path, touch.snap.read_ns])?;
    } else if let Some(touch) = &outcome.touch {
        let now = clock.stamp();
        deferred.state(
            tx,
            &touch.path,
            Some(&touch.snap),
            touch.version_id,
            None,
            now,
        )?;
    }
    Ok(last)
}

fn description(record: &Record) -> String {
    let base = match (record.kind, &record.old_path) {
        (ChangeKind::Moved, Some(old)) => {
            let changed = record
                .new
                .as_ref()
                .zip(record.prev.as_ref())
                .is_some_and(|(n, p)| p.content_hash.as_deref() != Some(n.digest.hash.as_str()));
            if changed {
                format!("Moved from {old} and modified")
            } else {
                format!("Moved from {old}")
            }
        }
        (ChangeKind::Created, _) => "File created".to_owned(),
        (ChangeKind::Deleted, _) => "File deleted".to_owned(),
        _ => "File modified".to_owned(),
    };
    match &record.new {
        Some(snap) if snap.oversized => format!("{base} (over the size limit: hash only)"),
        Some(snap) if !snap.digest.is_text => format!("{base} (binary: no text stored)"),
        _ => base,
    }
}

fn write_record<'a>(
    tx: &Connection,
    clock: &mut StoreClock,
    record: &'a Record,
    deferred: &mut Deferred<'a, '_>,
    stats: &mut BatchStats,
) -> rusqlite::Result<i64> {
    let now = clock.stamp();
    let prev = record.prev.as_ref();
    let prev_hash = prev.and_then(|p| p.content_hash.as_deref());
    let Some(snap) = &record.new else {
        // A deletion: no version, no diff.
        deferred.state(
            tx,
            &record.path,
            None,
            prev.and_then(|p| p.version_id),
            prev_hash,
            now.clone(),
        )?;
        let change_id = deferred.change(tx, record, None, None, now.clone())?;
        deferred.event(tx, record, prev.map_or(0, |p| p.size), now)?;
        stats.changes += 1;
        return Ok(change_id);
    };
    let digest = &snap.digest;
    let size = i64::try_from(digest.size).unwrap_or(i64::MAX);
    let version_id = deferred.version(tx, record, snap, size, now.clone())?;
    stats.versions += 1;
    let diff_id = match &record.diff {
        Some(diff) => {
            let id = deferred.diff(tx, record, diff, version_id, now.clone())?;
            stats.diffs += 1;
            Some(id)
        }
        None => None,
    };
    deferred.state(
        tx,
        &record.path,
        Some(snap),
        Some(version_id),
        None,
        now.clone(),
    )?;
    if let (ChangeKind::Moved, Some(old)) = (record.kind, &record.old_path) {
        deferred.state(
            tx,
            old,
            None,
            prev.and_then(|p| p.version_id),
            prev_hash,
            now.clone(),
        )?;
    }
    let change_id = deferred.change(tx, record, Some(version_id), diff_id, now.clone())?;
    deferred.event(tx, record, size, now)?;
    stats.changes += 1;
    Ok(change_id)
}

/// Why an attempt wrote nothing.
enum Refused {
    /// The database refused this queue row's rows.
    Row(QueueId, String),
    /// It refused one of the rows of a multi-row insert: which one is found
    /// by writing the batch again row by row.
    Unknown(String),
}

/// Rows per multi-row `INSERT` (a `file_changes` row binds 10 values).
const ROWS_PER_INSERT: usize = 64;

/// Rows per multi-row `INSERT` into `file_versions`. Each statement that
/// inserts versions opens a statement savepoint, and FTS5 writes its
/// pending terms out as a new segment at every savepoint (the search
/// triggers index each version): 64-row statements made 16 small segments
/// per 1,024-row batch, and every 64 segments a merge on the writer's path
/// (18% of an edit round's writer instructions, 2,000 notes). 256 rows make
/// one segment per default batch (4 at `--batch-size 1024`) and no merge in
/// a 10,000-note scan, for ~1.6 MiB of text bound per statement. The whole
/// batch in one statement raised the scan's peak RSS by ~20 MB (and its
/// odd-sized statements were compiled anew each batch); 128 rows saved
/// ~5 MB of it but made the 10,000-note scan ~10% slower (a merge every 64
/// statements).
const VERSION_ROWS_PER_INSERT: usize = 256;

/// Every row of a batch but the queue's, written at the end of the batch in
/// multi-row statements: versions, diffs, changes, events, then the states
/// (`sync_files`, `file_states`, upserts). `file_versions` and `events`
/// carry the backend's guard triggers, and SQLite gives every statement on a
/// table with a trigger a statement journal, a copy of each page the
/// statement touches: one statement for 64 rows copies a page once instead
/// of 64 times; on the other tables one statement instead of 64 saves the
/// per-statement work.
///
/// Version, diff and change ids are assigned here, as `AUTOINCREMENT` would
/// assign them (one past the larger of `sqlite_sequence` and the highest id;
/// the transaction holds the write lock, so nobody else takes one
/// meanwhile), so the rows that name them are queued at once. A diff is
/// written after the versions it references, so its foreign keys are
/// checked against rows that exist. Rows keep their order within a table,
/// and a path written twice in a batch is upserted twice in that order, so
/// the last state wins as it would row by row. Row by row (`immediate`),
/// each row is written as it is queued, so a refusal names its queue row.
struct Deferred<'a, 's> {
    immediate: bool,
    sql: &'s mut SqlTexts,
    next_version_id: i64,
    next_diff_id: i64,
    next_change_id: i64,
    versions: Vec<VersionRow<'a>>,
    diffs: Vec<DiffRow<'a>>,
    changes: Vec<ChangeRow<'a>>,
    events: Vec<EventRow<'a>>,
    states: Vec<StateRow<'a>>,
    /// The newest version of each path written in this batch.
    newest: HashMap<&'a str, i64>,
    /// Paths with a state row queued and not yet written.
    pending_states: HashSet<&'a str>,
}

struct VersionRow<'a> {
    id: i64,
    path: &'a str,
    digest: &'a super::hash::Digest,
    size: i64,
    stamp: String,
    description: String,
}

struct DiffRow<'a> {
    id: i64,
    path: &'a str,
    old_version_id: Option<i64>,
    new_version_id: i64,
    kind: &'static str,
    diff: &'a UnifiedDiff,
    stamp: String,
}

struct ChangeRow<'a> {
    id: i64,
    path: &'a str,
    kind: &'static str,
    old_hash: Option<&'a str>,
    new_hash: Option<&'a str>,
    change_id: String,
    stamp: String,
    old_path: Option<&'a str>,
    version_id: Option<i64>,
    diff_id: Option<i64>,
}

struct EventRow<'a> {
    kind: &'static str,
    path: &'a str,
    stamp: String,
    size: i64,
    old_path: Option<&'a str>,
}

/// A path's state, for `sync_files` and `file_states` alike. A gone file
/// (`deleted`) has no size, mtime or read time, and keeps the engine's last
/// hash and version where the row gives none.
struct StateRow<'a> {
    path: &'a str,
    size: Option<i64>,
    mtime_ns: Option<i64>,
    read_ns: Option<i64>,
    hash: Option<&'a str>,
    version_id: Option<i64>,
    deleted: bool,
    /// `file_states`' view: a gone file has a NULL hash, 0 lines, 0 bytes.
    state_hash: Option<&'a str>,
    last_modified: String,
    line_count: i64,
    file_size: i64,
    stamp: String,
}

/// One past the highest id an `AUTOINCREMENT` table has ever handed out.
fn next_id(tx: &Connection, table: &str) -> rusqlite::Result<i64> {
    let last: i64 = tx
        .prepare_cached(&format!(
            "SELECT MAX(
                 COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0),
                 COALESCE((SELECT MAX(id) FROM {table}), 0))"
        ))?
        .query_row([], |r| r.get(0))?;
    Ok(last.saturating_add(1))
}

impl<'a, 's> Deferred<'a, 's> {
    fn new(
        tx: &Connection,
        immediate: bool,
        sql: &'s mut SqlTexts,
    ) -> rusqlite::Result<Deferred<'a, 's>> {
        Ok(Deferred {
            immediate,
            sql,
            next_version_id: next_id(tx, "file_versions")?,
            next_diff_id: next_id(tx, "content_diffs")?,
            next_change_id: next_id(tx, "file_changes")?,
            versions: Vec::new(),
            diffs: Vec::new(),
            changes: Vec::new(),
            events: Vec::new(),
            states: Vec::new(),
            newest: HashMap::new(),
            pending_states: HashSet::new(),
        })
    }

    /// The newest version of `path` written in this batch, if any.
    fn newest(&self, path: &str) -> Option<i64> {
        self.newest.get(path).copied()
    }

    /// True when a state row of `path` is queued and not yet written.
    fn holds(&self, path: &str) -> bool {
        self.pending_states.contains(path)
    }

    /// Queues a version of `record.path`; returns its id.
    fn version(
        &mut self,
        tx: &Connection,
        record: &'a Record,
        snap: &'a Snapshot,
        size: i64,
        stamp: String,
    ) -> rusqlite::Result<i64> {
        let id = self.next_version_id;
        self.next_version_id += 1;
        self.versions.push(VersionRow {
            id,
            path: &record.path,
            digest: &snap.digest,
            size,
            stamp,
            description: description(record),
        });
        self.newest.insert(&record.path, id);
        self.flush_if_immediate(tx)?;
        Ok(id)
    }

    /// Queues the diff that leads to version `new_version_id`; returns its id.
    fn diff(
        &mut self,
        tx: &Connection,
        record: &'a Record,
        diff: &'a UnifiedDiff,
        new_version_id: i64,
        stamp: String,
    ) -> rusqlite::Result<i64> {
        let id = self.next_diff_id;
        self.next_diff_id += 1;
        self.diffs.push(DiffRow {
            id,
            path: &record.path,
            old_version_id: record.prev.as_ref().and_then(|p| p.version_id),
            new_version_id,
            kind: record.kind.as_str(),
            diff,
            stamp,
        });
        self.flush_if_immediate(tx)?;
        Ok(id)
    }

    /// Queues the `file_changes` row of `record`; returns its id.
    fn change(
        &mut self,
        tx: &Connection,
        record: &'a Record,
        version_id: Option<i64>,
        diff_id: Option<i64>,
        stamp: String,
    ) -> rusqlite::Result<i64> {
        let id = self.next_change_id;
        self.next_change_id += 1;
        self.changes.push(ChangeRow {
            id,
            path: &record.path,
            kind: record.kind.as_str(),
            old_hash: record.prev.as_ref().and_then(|p| p.content_hash.as_deref()),
            new_hash: record.new.as_ref().map(|n| n.digest.hash.as_str()),
            change_id: change_id(&stamp, &record.tag),
            stamp,
            old_path: record.old_path.as_deref(),
            version_id,
            diff_id,
        });
        self.flush_if_immediate(tx)?;
        Ok(id)
    }

    fn event(
        &mut self,
        tx: &Connection,
        record: &'a Record,
        size: i64,
        stamp: String,
    ) -> rusqlite::Result<()> {
        self.events.push(EventRow {
            kind: record.kind.as_str(),
            path: &record.path,
            stamp,
            size,
            old_path: record.old_path.as_deref(),
        });
        self.flush_if_immediate(tx)
    }

    /// Queues a path's state: in `sync_files` (the engine's truth) and in
    /// `file_states` (the backend's view, in its conventions: a gone file
    /// has a NULL hash, no lines and no bytes; a binary file 0 lines).
    /// `snap` is `None` for a file that is gone; the engine keeps its last
    /// hash (`gone_hash`) and version. An upsert either way: a gone path may
    /// have no row yet (its only version was another program's), and must
    /// have one after, or the same deletion would be found again.
    fn state(
        &mut self,
        tx: &Connection,
        path: &'a str,
        snap: Option<&'a Snapshot>,
        version_id: Option<i64>,
        gone_hash: Option<&'a str>,
        stamp: String,
    ) -> rusqlite::Result<()> {
        let row = match snap {
            Some(snap) => {
                let digest = &snap.digest;
                let size = i64::try_from(digest.size).unwrap_or(i64::MAX);
                StateRow {
                    path,
                    size: Some(size),
                    mtime_ns: Some(snap.mtime_ns),
                    read_ns: Some(snap.read_ns),
                    hash: Some(&digest.hash),
                    version_id,
                    deleted: false,
                    state_hash: Some(&digest.hash),
                    last_modified: format_mtime_ns(snap.mtime_ns),
                    line_count: digest.line_count.unwrap_or(0),
                    file_size: size,
                    stamp,
                }
            }
            None => StateRow {
                path,
                size: None,
                mtime_ns: None,
                read_ns: None,
                hash: gone_hash,
                version_id,
                deleted: true,
                state_hash: None,
                last_modified: stamp.clone(),
                line_count: 0,
                file_size: 0,
                stamp,
            },
        };
        self.states.push(row);
        self.pending_states.insert(path);
        self.flush_if_immediate(tx)
    }

    fn flush_if_immediate(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        if self.immediate {
            self.flush(tx)
        } else {
            Ok(())
        }
    }

    /// Writes what is queued: versions, diffs, changes, events, states.
    /// Rows keep their order, so ids follow the order of the changes.
    fn flush(&mut self, tx: &Connection) -> rusqlite::Result<()> {
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO file_versions
                 (id, file_path, content_hash, content, line_count, size, timestamp,
                  change_description, created_at) VALUES ",
                tuple: "($1, $2, $3, $4, $5, $6, $7, $8, $7)",
                tail: "",
                per_statement: VERSION_ROWS_PER_INSERT,
            },
            &self.versions,
            |v| {
                vec![
                    &v.id,
                    &v.path,
                    &v.digest.hash,
                    &v.digest.text,
                    &v.digest.line_count,
                    &v.size,
                    &v.stamp,
                    &v.description,
                ]
            },
        )?;
        self.versions.clear();
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO content_diffs
                 (id, file_path, old_version_id, new_version_id, change_type, diff_content,
                  lines_added, lines_removed, timestamp, created_at) VALUES ",
                tuple: "($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                tail: "",
                per_statement: ROWS_PER_INSERT,
            },
            &self.diffs,
            |d| {
                vec![
                    &d.id,
                    &d.path,
                    &d.old_version_id,
                    &d.new_version_id,
                    &d.kind,
                    &d.diff.text,
                    &d.diff.lines_added,
                    &d.diff.lines_removed,
                    &d.stamp,
                ]
            },
        )?;
        self.diffs.clear();
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO file_changes
                 (id, file_path, change_type, old_content_hash, new_content_hash, content_hash,
                  timestamp, old_path, version_id, diff_id, created_at) VALUES ",
                tuple: "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $7)",
                tail: "",
                per_statement: ROWS_PER_INSERT,
            },
            &self.changes,
            |c| {
                vec![
                    &c.id,
                    &c.path,
                    &c.kind,
                    &c.old_hash,
                    &c.new_hash,
                    &c.change_id,
                    &c.stamp,
                    &c.old_path,
                    &c.version_id,
                    &c.diff_id,
                ]
            },
        )?;
        self.changes.clear();
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO events (type, path, timestamp, size, processed, created_at, old_path)
             VALUES ",
                tuple: "($1, $2, $3, $4, 0, $3, $5)",
                tail: "",
                per_statement: ROWS_PER_INSERT,
            },
            &self.events,
            |e| vec![&e.kind, &e.path, &e.stamp, &e.size, &e.old_path],
        )?;
        self.events.clear();
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO sync_files
                 (path, size, mtime_ns, content_hash, version_id, deleted, read_ns) VALUES ",
                tuple: "($1, $2, $3, $4, $5, $6, $7)",
                tail: " ON CONFLICT (path) DO UPDATE SET
                 size = excluded.size, mtime_ns = excluded.mtime_ns, deleted = excluded.deleted,
                 content_hash = CASE WHEN excluded.deleted
                     THEN COALESCE(excluded.content_hash, sync_files.content_hash)
                     ELSE excluded.content_hash END,
                 version_id = CASE WHEN excluded.deleted
                     THEN COALESCE(excluded.version_id, sync_files.version_id)
                     ELSE excluded.version_id END,
                 read_ns = CASE WHEN excluded.deleted
                     THEN sync_files.read_ns ELSE excluded.read_ns END",
                per_statement: ROWS_PER_INSERT,
            },
            &self.states,
            |r| {
                vec![
                    &r.path,
                    &r.size,
                    &r.mtime_ns,
                    &r.hash,
                    &r.version_id,
                    &r.deleted,
                    &r.read_ns,
                ]
            },
        )?;
        self.sql.insert_rows(
            tx,
            &Shape {
                head: "INSERT INTO file_states
                 (file_path, content_hash, last_modified, line_count, file_size, updated_at,
                  is_deleted) VALUES ",
                tuple: "($1, $2, $3, $4, $5, $6, $7)",
                tail: " ON CONFLICT (file_path) DO UPDATE SET
                 content_hash = excluded.content_hash, last_modified = excluded.last_modified,
                 line_count = excluded.line_count, file_size = excluded.file_size,
                 updated_at = excluded.updated_at, is_deleted = excluded.is_deleted",
                per_statement: ROWS_PER_INSERT,
            },
            &self.states,
            |r| {
                vec![
                    &r.path,
                    &r.state_hash,
                    &r.last_modified,
                    &r.line_count,
                    &r.file_size,
                    &r.stamp,
                    &r.deleted,
                ]
            },
        )?;
        self.states.clear();
        self.pending_states.clear();
        Ok(())
    }
}

/// A multi-row insert: `head`, then `tuple` once per row (`$1` to `$10`
/// for the row's own parameters), then `tail` (an upsert clause), with at
/// most `per_statement` rows a statement.
#[derive(Clone, Copy)]
struct Shape {
    head: &'static str,
    tuple: &'static str,
    tail: &'static str,
    per_statement: usize,
}

/// The text of the multi-row statements, built once per shape (head, rows)
/// instead of once per statement.
#[derive(Default)]
struct SqlTexts {
    texts: HashMap<(&'static str, usize), String>,
}

impl SqlTexts {
    /// Inserts `rows` in multi-row statements of `shape`, with `values`
    /// giving each row's parameters (`$1` to `$10` in its tuple, in that
    /// order). The full-sized statement is kept in the
    /// statement cache, the odd-sized last one of a batch is not, so it
    /// does not push the others out.
    fn insert_rows<T>(
        &mut self,
        tx: &Connection,
        shape: &Shape,
        rows: &[T],
        values: impl for<'r> Fn(&'r T) -> Vec<&'r dyn ToSql>,
    ) -> rusqlite::Result<()> {
        let Shape {
            head,
            tuple,
            tail,
            per_statement,
        } = *shape;
        for chunk in rows.chunks(per_statement.max(1)) {
            let params: Vec<&dyn ToSql> = chunk.iter().flat_map(&values).collect();
            let width = params.len() / chunk.len().max(1);
            let sql = self
                .texts
                .entry((head, chunk.len()))
                .or_insert_with(|| multi_row_insert(head, tuple, tail, width, chunk.len()));
            if chunk.len() == per_statement {
                tx.prepare_cached(sql)?.execute(&params[..])?;
            } else {
                tx.prepare(sql)?.execute(&params[..])?;
            }
        }
        Ok(())
    }
}

/// `head` followed by `rows` copies of `tuple`, in which `$1` to `$10`
/// stand for the row's own parameters (`?1` to `?width` in the first row,
/// then on), then `tail`.
fn multi_row_insert(head: &str, tuple: &str, tail: &str, width: usize, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + rows * (tuple.len() + 16) + tail.len());
    sql.push_str(head);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let mut rest = tuple;
        while let Some(at) = rest.find('$') {
            sql.push_str(&rest[..at]);
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            match rest[at + 1..at + 1 + digits].parse::<usize>() {
                Ok(k) => {
                    // Writing to a String cannot fail.
                    let _ = write!(sql, "?{}", row * width + k);
                }
                Err(_) => sql.push('$'),
            }
            rest = &rest[at + 1 + digits..];
        }
        sql.push_str(rest);
    }
    sql.push_str(tail);
    sql
}
