//! Row counts of the big tables without walking them (`schema/0008_counts.sql`).
//!
//! `status` and GetStatus show how many versions, diffs, changes and done
//! queue rows exist; a `COUNT(*)` of each walks an index of every row, 147 ms
//! at 1,000,000 versions. `sync_counts` keeps, per history table, `n` = the
//! rows with `id <= through_id`, so a count is `n` plus a primary-key range
//! count of the rows above `through_id`; deletes at or below it are counted
//! off by triggers, whoever deletes. Ids are `AUTOINCREMENT` (the schema
//! conforms the shared tables to it), so no row ever arrives below the
//! watermark. The store moves the watermark in every batch's transaction,
//! while that batch's rows are still in the page cache, so the range a count
//! walks holds only what other programs (the backend) inserted since: a
//! range of the table itself, whose leaves carry the versions' text, is
//! cheap only while it is short. The done queue rows are counted outright
//! by `queue.rs`, that table's only writer, in the transactions that make
//! rows done or delete them ([`add_queue_done`], [`remove_queue_done`]).
//!
//! Reads `sync_counts` and the counted tables; writes `sync_counts` only
//! when the store and the queue call it (and through its delete triggers).
//! A database without the table (schema < 8, opened read-only) is counted
//! with `COUNT(*)`, as before.

use rusqlite::{Connection, OptionalExtension as _};

/// The append-only history tables counted through a watermark.
pub const HISTORY_TABLES: [&str; 3] = ["file_versions", "content_diffs", "file_changes"];

/// Rows of `table`, one of [`HISTORY_TABLES`].
///
/// # Errors
/// Any SQLite error.
pub fn history_rows(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    debug_assert!(HISTORY_TABLES.contains(&table), "{table} is not counted");
    let kept: Option<(i64, i64)> = if has_counts(conn)? {
        conn.prepare_cached("SELECT n, through_id FROM sync_counts WHERE name = ?1")?
            .query_row([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    } else {
        None
    };
    match kept {
        Some((n, through)) => {
            let above: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM {table} WHERE id > ?1"))?
                .query_row([through], |r| r.get(0))?;
            Ok(n + above)
        }
        None => conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)),
    }
}

/// `event_queue` rows whose status is `done`.
///
/// # Errors
/// Any SQLite error.
pub fn queue_done(conn: &Connection) -> rusqlite::Result<i64> {
    let kept = if has_counts(conn)? {
        conn.prepare_cached("SELECT n FROM sync_counts WHERE name = 'queue_done'")?
            .query_row([], |r| r.get(0))
            .optional()?
    } else {
        None
    };
    match kept {
        Some(n) => Ok(n),
        None => conn.query_row(
            "SELECT COUNT(*) FROM event_queue WHERE status = 'done'",
            [],
            |r| r.get(0),
        ),
    }
}

/// Counts `n` more `done` queue rows; the queue calls it in the transaction
/// of the statement that made them done.
///
/// # Errors
/// Any SQLite error.
pub fn add_queue_done(conn: &Connection, n: usize) -> rusqlite::Result<()> {
    shift_queue_done(conn, i64::try_from(n).unwrap_or(i64::MAX))
}

/// Counts off `n` `done` queue rows the queue deleted.
///
/// # Errors
/// Any SQLite error.
pub fn remove_queue_done(conn: &Connection, n: usize) -> rusqlite::Result<()> {
    shift_queue_done(conn, -i64::try_from(n).unwrap_or(i64::MAX))
}

fn shift_queue_done(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.prepare_cached("UPDATE sync_counts SET n = n + ?1 WHERE name = 'queue_done'")?
            .execute([delta])?;
    }
    Ok(())
}

/// Moves every history table's watermark to its newest row, so later counts
/// walk only what comes after. One short statement per table, in the
/// caller's write transaction, on a migrated database (the writer's: the
/// table exists, so this per-batch path does not look for it).
///
/// # Errors
/// Any SQLite error.
pub fn catch_up(conn: &Connection) -> rusqlite::Result<()> {
    for table in HISTORY_TABLES {
        conn.prepare_cached(&format!(
            "UPDATE sync_counts SET
                 n = n + (SELECT COUNT(*) FROM {table} WHERE id > sync_counts.through_id),
                 through_id = MAX(through_id, (SELECT COALESCE(MAX(id), 0) FROM {table}))
             WHERE name = ?1"
        ))?
        .execute([table])?;
    }
    Ok(())
}

fn has_counts(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sync_counts')",
    )?
    .query_row([], |r| r.get(0))
}
