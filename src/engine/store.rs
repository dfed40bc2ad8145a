//! The single writer: a batch of worker outcomes in, Obby rows and queue
//! acknowledgements out, in one `BEGIN IMMEDIATE` transaction.
//!
//! For each claimed row, in claim order, the store first checks that every
//! `file_states` row the worker based its outcome on is unchanged (a
//! compare-and-set; on a mismatch the row goes back to pending and is computed
//! again), then writes `file_versions`, `content_diffs`, `file_changes`,
//! `file_states` and `events`, and marks the queue row done, all in the same
//! transaction as the rest of the batch. So a crash leaves either all of a
//! row's effects or none, and the row pending or claimed: processing it again
//! finds the same state and writes the same rows once. Failed attempts are
//! recorded here too ([`super::queue::mark_attempt_failed`]). The store owns
//! the write connection; nothing else writes the Obby tables.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::clock::{StoreClock, format_mtime_ns, now_ms};
use super::error::ItemError;
use super::progress::Progress;
use super::queue::{self, ChangeKind, QueuePolicy, QueueRow};
use super::worker::{FileState, Outcome, Record, load_state};

/// One processed row: the claimed row and what its worker decided.
#[derive(Debug)]
pub struct Computed {
    /// The claimed queue row.
    pub row: QueueRow,
    /// The worker's outcome or its error.
    pub result: Result<Outcome, ItemError>,
}

/// Counts of what one batch wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Queue rows finished (done or failed).
    pub rows: u64,
    /// `file_versions` rows written.
    pub versions: u64,
    /// `content_diffs` rows written.
    pub diffs: u64,
    /// `file_changes` rows written.
    pub changes: u64,
    /// Rows that are now `failed`.
    pub failed: u64,
    /// Rows put back for another attempt (error or stale state).
    pub retried: u64,
}

/// The single writer of the Obby tables.
pub struct Store {
    conn: Connection,
    clock: StoreClock,
    policy: QueuePolicy,
    progress: Arc<Progress>,
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
        })
    }

    /// The write connection, for the queue's own short transactions.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Commits one batch.
    ///
    /// # Errors
    /// Any SQLite error; the whole batch is rolled back and its rows stay
    /// claimed (they return to pending at the next start or lease expiry).
    pub fn commit(&mut self, batch: &[Computed]) -> rusqlite::Result<BatchStats> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let locked = std::time::Instant::now();
        let mut stats = BatchStats::default();
        let mut last_change = None;
        for item in batch {
            match &item.result {
                Err(ItemError::Unsettled { wait, .. }) => {
                    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                    queue::defer(&tx, &item.row, now_ms().saturating_add(wait_ms.max(1)))?;
                    stats.retried += 1;
                }
                Err(error) => {
                    if queue::mark_attempt_failed(&tx, &item.row, error, &self.policy)? {
                        tracing::warn!(path = %item.row.path, %error, "giving up on this change");
                        stats.failed += 1;
                        stats.rows += 1;
                    } else {
                        tracing::debug!(path = %item.row.path, %error, "will retry");
                        stats.retried += 1;
                    }
                }
                Ok(outcome) => {
                    if !still_current(&tx, outcome)? {
                        tracing::debug!(path = %item.row.path, "state moved underneath, recomputing");
                        queue::release(&tx, item.row.id, now_ms(), None)?;
                        stats.retried += 1;
                        continue;
                    }
                    let change_id = apply(&tx, &mut self.clock, outcome, &mut stats)?;
                    if change_id.is_some() {
                        last_change = change_id;
                    }
                    queue::mark_done(&tx, &item.row, change_id)?;
                    stats.rows += 1;
                }
            }
        }
        tx.commit()?;
        self.progress.record_write(locked.elapsed());
        self.progress.record(&stats, last_change);
        Ok(stats)
    }
}

/// True when every state the outcome was computed from is still in place.
fn still_current(conn: &Connection, outcome: &Outcome) -> rusqlite::Result<bool> {
    for (path, expected) in outcome.expectations() {
        let now = load_state(conn, path)?;
        let same = match (expected, &now) {
            (None, None) => true,
            (None, Some(s)) => s.is_deleted,
            (Some(e), Some(s)) => same_state(e, s),
            (Some(_), None) => false,
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_state(a: &FileState, b: &FileState) -> bool {
    a.version_id == b.version_id && a.content_hash == b.content_hash && a.is_deleted == b.is_deleted
}

/// Writes an outcome's rows; returns the id of the last `file_changes` row.
fn apply(
    tx: &Connection,
    clock: &mut StoreClock,
    outcome: &Outcome,
    stats: &mut BatchStats,
) -> rusqlite::Result<Option<i64>> {
    match outcome {
        Outcome::Nothing => Ok(None),
        Outcome::Touch {
            path,
            size,
            mtime_ns,
            ..
        } => {
            tx.prepare_cached(
                "UPDATE file_states SET file_size = ?2, mtime_ns = ?3, last_modified = ?4
                 WHERE file_path = ?1",
            )?
            .execute(params![path, size, mtime_ns, format_mtime_ns(*mtime_ns)])?;
            Ok(None)
        }
        Outcome::Write(records) => {
            let mut last = None;
            for record in records {
                last = Some(write_record(tx, clock, record, stats)?);
            }
            Ok(last)
        }
    }
}

fn description(record: &Record) -> String {
    let base = match (record.kind, &record.old_path) {
        (ChangeKind::Moved, Some(old)) => {
            let changed = record
                .new
                .as_ref()
                .zip(record.prev.as_ref())
                .is_some_and(|(n, p)| n.digest.hash != p.content_hash);
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

fn write_record(
    tx: &Connection,
    clock: &mut StoreClock,
    record: &Record,
    stats: &mut BatchStats,
) -> rusqlite::Result<i64> {
    let now = clock.stamp();
    let prev = record.prev.as_ref();
    let Some(snap) = &record.new else {
        // A deletion: no version, no diff; the state keeps its last hash.
        let prev_hash = prev.map(|p| p.content_hash.as_str());
        tx.prepare_cached(
            "UPDATE file_states SET is_deleted = 1, updated_at = ?2 WHERE file_path = ?1",
        )?
        .execute(params![record.path, now])?;
        let change_id = insert_change(tx, record, prev_hash, None, None, None, &now)?;
        insert_event(tx, record, prev.map_or(0, |p| p.size), &now)?;
        stats.changes += 1;
        return Ok(change_id);
    };
    let digest = &snap.digest;
    let size = i64::try_from(digest.size).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO file_versions
             (file_path, content_hash, content, line_count, size, timestamp, change_description)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        record.path,
        digest.hash,
        digest.text,
        digest.line_count,
        size,
        now,
        description(record)
    ])?;
    let version_id = tx.last_insert_rowid();
    stats.versions += 1;
    let diff_id = match &record.diff {
        Some(diff) => {
            tx.prepare_cached(
                "INSERT INTO content_diffs
                     (file_path, old_version_id, new_version_id, change_type, diff_content,
                      lines_added, lines_removed, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                record.path,
                prev.and_then(|p| p.version_id),
                version_id,
                record.kind.as_str(),
                diff.text,
                diff.lines_added,
                diff.lines_removed,
                now
            ])?;
            stats.diffs += 1;
            Some(tx.last_insert_rowid())
        }
        None => None,
    };
    tx.prepare_cached(
        "INSERT INTO file_states
             (file_path, content_hash, last_modified, line_count, file_size, updated_at,
              is_deleted, mtime_ns, version_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)
         ON CONFLICT (file_path) DO UPDATE SET
             content_hash = excluded.content_hash, last_modified = excluded.last_modified,
             line_count = excluded.line_count, file_size = excluded.file_size,
             updated_at = excluded.updated_at, is_deleted = 0,
             mtime_ns = excluded.mtime_ns, version_id = excluded.version_id",
    )?
    .execute(params![
        record.path,
        digest.hash,
        format_mtime_ns(snap.mtime_ns),
        digest.line_count,
        size,
        now,
        snap.mtime_ns,
        version_id
    ])?;
    if let (ChangeKind::Moved, Some(old)) = (record.kind, &record.old_path) {
        tx.prepare_cached(
            "UPDATE file_states SET is_deleted = 1, updated_at = ?2 WHERE file_path = ?1",
        )?
        .execute(params![old, now])?;
    }
    let old_hash = prev.map(|p| p.content_hash.as_str());
    let change_id = insert_change(
        tx,
        record,
        old_hash,
        Some(&digest.hash),
        Some(version_id),
        diff_id,
        &now,
    )?;
    insert_event(tx, record, size, &now)?;
    stats.changes += 1;
    Ok(change_id)
}

fn insert_change(
    tx: &Connection,
    record: &Record,
    old_hash: Option<&str>,
    new_hash: Option<&str>,
    version_id: Option<i64>,
    diff_id: Option<i64>,
    now: &str,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO file_changes
             (file_path, change_type, old_content_hash, new_content_hash, content_hash,
              timestamp, old_path, version_id, diff_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        record.path,
        record.kind.as_str(),
        old_hash,
        new_hash,
        new_hash.or(old_hash),
        now,
        record.old_path,
        version_id,
        diff_id
    ])?;
    Ok(tx.last_insert_rowid())
}

fn insert_event(tx: &Connection, record: &Record, size: i64, now: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO events (type, path, timestamp, size, processed, created_at, old_path)
         VALUES (?1, ?2, ?3, ?4, 0, ?3, ?5)",
    )?
    .execute(params![
        record.kind.as_str(),
        record.path,
        now,
        size,
        record.old_path
    ])?;
    Ok(())
}
