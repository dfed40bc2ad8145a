//! The schema: numbered migrations, and the five tables shared with Obby's
//! Python backend conformed to their declared shape on every open.
//!
//! `obby.db` may have been created by obby-sync (any build), or by the backend
//! from its own `schema.sql` (CONTRACT.md section 5), or half adopted by an
//! older build. [`migrate`] brings each of them to the same place, inside one
//! `BEGIN IMMEDIATE` transaction with foreign keys off:
//!
//! 1. **Conform the shared tables** to `schema/shared_tables.sql`, checked
//!    against the file itself, never trusted from `user_version`: a missing
//!    table is created, a missing column added (`ALTER TABLE ADD COLUMN`), a
//!    column only older obby-sync builds wrote dropped, and a table whose
//!    NOT NULL, primary-key or UNIQUE constraints differ is rebuilt — renamed
//!    aside, created anew, every row copied with its id, its indexes and
//!    triggers recreated, the old table dropped. Foreign keys are off and
//!    `legacy_alter_table` on meanwhile, so no `ON DELETE CASCADE` fires (the
//!    backend's `semantic_entries` reference versions) and no other table's
//!    references are rewritten. Columns the shared file does not know (another
//!    program's) are kept.
//! 2. **Run the numbered migrations** above `PRAGMA user_version`.
//!
//! Reads and writes only the schema (and the rows a rebuild copies); never
//! deletes a row.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::EngineError;

/// The migrations compiled into the binary: (version, SQL). Append only.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../schema/0001_init.sql")),
    (2, include_str!("../../schema/0002_backend.sql")),
    (3, include_str!("../../schema/0003_claims.sql")),
    (4, include_str!("../../schema/0004_racy.sql")),
    (5, include_str!("../../schema/0005_lean.sql")),
    (6, include_str!("../../schema/0006_search.sql")),
    (7, include_str!("../../schema/0007_search_current.sql")),
    (8, include_str!("../../schema/0008_counts.sql")),
    (9, include_str!("../../schema/0009_search_once.sql")),
];

/// The declared shape of the shared tables.
const SHARED_TABLES_SQL: &str = include_str!("../../schema/shared_tables.sql");

/// The tables obby-sync shares with the backend, in the order they are
/// conformed (a table before those that reference it).
pub const SHARED_TABLES: [&str; 5] = [
    "file_versions",
    "content_diffs",
    "file_changes",
    "events",
    "file_states",
];

/// Columns older obby-sync builds added to the shared tables and no longer
/// write: the engine's own state lives in `sync_files` now.
const OBSOLETE_COLUMNS: &[(&str, &str)] =
    &[("file_states", "mtime_ns"), ("file_states", "version_id")];

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// Brings the database to the newest schema (see the module docs). `adopt`
/// says the file was made by another program; it is only logged.
///
/// # Errors
/// [`EngineError::SchemaTooNew`] for a file written by a newer obby-sync; any
/// SQLite failure as [`EngineError::Db`] (nothing is changed then).
pub fn migrate(conn: &Connection, path: &Path, adopt: bool) -> Result<(), EngineError> {
    let err = |source| EngineError::from_sqlite(path, source);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let known = latest_version();
    if found > known {
        return Err(EngineError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    let canonical = canonical_shapes().map_err(err)?;
    if found == known && conforms(conn, &canonical).map_err(err)? {
        return Ok(());
    }
    if found > 0 && found < known {
        // Some migrations work through every note (9 moves the newest
        // versions between the search indexes: about a second per 10,000
        // notes); say why the start takes a moment.
        tracing::info!(db = %path.display(), from = found, to = known, "upgrading the database schema");
    }
    // foreign_keys and legacy_alter_table cannot change inside a transaction.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .map_err(err)?;
    conn.pragma_update(None, "legacy_alter_table", "ON")
        .map_err(err)?;
    let result = (|| {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let rebuilt = conform(&tx, &canonical)?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
        }
        tx.pragma_update(None, "application_id", super::db::APPLICATION_ID)?;
        let dangling: i64 =
            tx.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok::<_, rusqlite::Error>((rebuilt, dangling))
    })();
    let restore = conn
        .pragma_update(None, "legacy_alter_table", "OFF")
        .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"));
    let (rebuilt, dangling) = result.map_err(err)?;
    restore.map_err(err)?;
    if !rebuilt.is_empty() {
        tracing::info!(db = %path.display(), tables = %rebuilt.join(", "), "rebuilt tables to the shared shape, every row kept");
    }
    if dangling > 0 {
        // Rows the file already held that point at nothing (the backend's own
        // data, say): reported, never deleted.
        tracing::warn!(db = %path.display(), rows = dangling, "rows reference missing rows (found as they were; kept)");
    }
    if adopt && found == 0 {
        tracing::info!(db = %path.display(), "adopted an existing Obby database");
    }
    Ok(())
}

/// A column as `PRAGMA table_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    decl: String,
    notnull: bool,
    default: Option<String>,
    pk: i64,
}

/// What [`conforms`] compares: columns, and the column sets of UNIQUE
/// constraints (primary key excluded).
#[derive(Debug, Clone)]
struct Shape {
    table: &'static str,
    create_sql: String,
    columns: Vec<Column>,
    unique: BTreeSet<Vec<String>>,
}

/// The shared tables as `shared_tables.sql` declares them, read off an
/// in-memory database.
fn canonical_shapes() -> rusqlite::Result<Vec<Shape>> {
    let mem = Connection::open_in_memory()?;
    mem.execute_batch(SHARED_TABLES_SQL)?;
    SHARED_TABLES
        .iter()
        .map(|&table| {
            let create_sql: String = mem.query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )?;
            Ok(Shape {
                table,
                create_sql,
                columns: columns(&mem, table)?,
                unique: unique_sets(&mem, table, &["u", "pk"])?,
            })
        })
        .collect()
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Column>> {
    conn.prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")?
        .query_map([table], |r| {
            Ok(Column {
                name: r.get(0)?,
                decl: r.get(1)?,
                notnull: r.get(2)?,
                default: r.get(3)?,
                pk: r.get(4)?,
            })
        })?
        .collect()
}

/// Column lists of the table's unique indexes whose origin is one of
/// `origins` (`u`: a UNIQUE constraint, `c`: CREATE UNIQUE INDEX, `pk`),
/// except the integer primary key's.
fn unique_sets(
    conn: &Connection,
    table: &str,
    origins: &[&str],
) -> rusqlite::Result<BTreeSet<Vec<String>>> {
    let indexes: Vec<(String, String)> = conn
        .prepare("SELECT name, origin FROM pragma_index_list(?1) WHERE \"unique\" = 1")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut sets = BTreeSet::new();
    for (name, origin) in indexes {
        if !origins.contains(&origin.as_str()) {
            continue;
        }
        let cols: Vec<String> = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
            .query_map([&name], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        sets.insert(cols);
    }
    Ok(sets)
}

/// What a table needs to match its declared shape.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// Missing columns that `ALTER TABLE ADD COLUMN` can add.
    add: Vec<Column>,
    /// Columns of older obby-sync builds to drop.
    drop: Vec<String>,
    /// Unique indexes made by CREATE UNIQUE INDEX that forbid what the shape
    /// allows (file_versions' (file_path, content_hash)).
    drop_indexes: Vec<String>,
    /// The constraints differ: rebuild the table.
    rebuild: bool,
    /// The table does not exist.
    missing: bool,
}

impl Plan {
    fn is_noop(&self) -> bool {
        *self == Plan::default()
    }
}

fn plan(conn: &Connection, shape: &Shape) -> rusqlite::Result<Plan> {
    let found = columns(conn, shape.table)?;
    if found.is_empty() {
        return Ok(Plan {
            missing: true,
            ..Plan::default()
        });
    }
    let mut plan = Plan::default();
    for want in &shape.columns {
        match found.iter().find(|c| c.name == want.name) {
            Some(have) => {
                if have.notnull != want.notnull || (have.pk > 0) != (want.pk > 0) {
                    plan.rebuild = true;
                }
            }
            None if can_add(want) => plan.add.push(want.clone()),
            None => plan.rebuild = true,
        }
    }
    for (table, column) in OBSOLETE_COLUMNS {
        if *table == shape.table && found.iter().any(|c| c.name == *column) {
            plan.drop.push((*column).to_owned());
        }
    }
    // UNIQUE constraints must be exactly the declared ones; a unique index
    // created separately is the other program's business unless it forbids
    // what the shape allows.
    if unique_sets(conn, shape.table, &["u", "pk"])? != shape.unique {
        plan.rebuild = true;
    }
    let forbidden = forbidden_unique(shape.table);
    for (name, cols) in created_unique_indexes(conn, shape.table)? {
        if forbidden.as_ref().is_some_and(|f| *f == cols) {
            plan.drop_indexes.push(name);
        }
    }
    Ok(plan)
}

/// The unique column set the shape removes on purpose.
fn forbidden_unique(table: &str) -> Option<Vec<String>> {
    (table == "file_versions").then(|| vec!["file_path".to_owned(), "content_hash".to_owned()])
}

fn created_unique_indexes(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND origin = 'c'")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .into_iter()
        .map(|name| {
            let cols = conn
                .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
                .query_map([&name], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok((name, cols))
        })
        .collect()
}

/// `ALTER TABLE ADD COLUMN` takes a column that may be NULL (or has a
/// constant default), is no key, and has no default of the current time.
fn can_add(col: &Column) -> bool {
    let constant_default = col
        .default
        .as_deref()
        .is_none_or(|d| !d.to_ascii_uppercase().starts_with("CURRENT_"));
    col.pk == 0 && constant_default && (!col.notnull || col.default.is_some())
}

/// True when every shared table already has its declared shape.
fn conforms(conn: &Connection, canonical: &[Shape]) -> rusqlite::Result<bool> {
    for shape in canonical {
        if !plan(conn, shape)?.is_noop() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Conforms every shared table; returns the names of those rebuilt.
fn conform(tx: &Connection, canonical: &[Shape]) -> rusqlite::Result<Vec<String>> {
    let mut rebuilt = Vec::new();
    for shape in canonical {
        let plan = plan(tx, shape)?;
        if plan.missing {
            tx.execute_batch(&shape.create_sql)?;
            continue;
        }
        for name in &plan.drop_indexes {
            tx.execute_batch(&format!("DROP INDEX {}", quote(name)))?;
        }
        if plan.rebuild {
            rebuild(tx, shape)?;
            rebuilt.push(shape.table.to_owned());
            continue;
        }
        for col in &plan.add {
            let default = col
                .default
                .as_deref()
                .map(|d| format!(" DEFAULT {d}"))
                .unwrap_or_default();
            let notnull = if col.notnull { " NOT NULL" } else { "" };
            tx.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {} {}{notnull}{default}",
                shape.table,
                quote(&col.name),
                col.decl
            ))?;
        }
        for col in &plan.drop {
            drop_column(tx, shape.table, col)?;
        }
    }
    Ok(rebuilt)
}

/// Drops a column, and first whatever index or view names it (SQLite refuses
/// otherwise); views are recreated by the migrations that own them.
fn drop_column(tx: &Connection, table: &str, column: &str) -> rusqlite::Result<()> {
    let dependents: Vec<(String, String)> = tx
        .prepare(
            "SELECT type, name FROM sqlite_master
             WHERE sql LIKE '%' || ?2 || '%' AND type IN ('index', 'view')
               AND (tbl_name = ?1 OR type = 'view')",
        )?
        .query_map([table, column], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (kind, name) in dependents {
        tx.execute_batch(&format!("DROP {} {}", kind.to_uppercase(), quote(&name)))?;
    }
    tx.execute_batch(&format!(
        "ALTER TABLE {table} DROP COLUMN {}",
        quote(column)
    ))
}

/// SQLite's table-rebuild procedure, for `shape.table`: every row and id kept,
/// the table's own indexes and triggers recreated (except a unique index the
/// shape forbids), foreign columns kept, obsolete engine columns dropped.
fn rebuild(tx: &Connection, shape: &Shape) -> rusqlite::Result<()> {
    let table = shape.table;
    let aside = format!("_obby_rebuild_{table}");
    let found = columns(tx, table)?;
    let attached: Vec<String> = tx
        .prepare(
            "SELECT sql FROM sqlite_master
             WHERE tbl_name = ?1 AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        )?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let seq: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .ok();
    tx.execute_batch(&format!("ALTER TABLE {table} RENAME TO {aside}"))?;
    // The renamed table's indexes keep their names: drop them now so the new
    // table can have them back.
    let index_names: Vec<String> = tx
        .prepare("SELECT name FROM sqlite_master WHERE tbl_name = ?1 AND type = 'index' AND sql IS NOT NULL")?
        .query_map([&aside], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in index_names {
        tx.execute_batch(&format!("DROP INDEX {}", quote(&name)))?;
    }
    tx.execute_batch(&shape.create_sql)?;

    let obsolete: HashSet<&str> = OBSOLETE_COLUMNS
        .iter()
        .filter(|(t, _)| *t == table)
        .map(|(_, c)| *c)
        .collect();
    let mut targets = Vec::new();
    let mut sources = Vec::new();
    for col in &found {
        if obsolete.contains(col.name.as_str()) {
            continue;
        }
        let declared = shape.columns.iter().find(|c| c.name == col.name);
        if declared.is_none() {
            // Another program's column: keep it, with its data.
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {} {}",
                quote(&col.name),
                col.decl
            ))?;
        }
        let name = quote(&col.name);
        let source = match declared {
            // A NOT NULL column that was nullable before: fill the gap with
            // its default (0 lines for a binary file's state, say).
            Some(d) if d.notnull && !col.notnull => {
                let fill = d.default.clone().unwrap_or_else(|| "''".to_owned());
                format!("COALESCE({name}, {fill})")
            }
            // A UNIQUE change id that an older build repeated: the first row
            // keeps it, the others get their own below.
            _ if table == "file_changes" && col.name == "content_hash" => {
                "CASE WHEN ROW_NUMBER() OVER (PARTITION BY content_hash ORDER BY id) > 1
                      THEN NULL ELSE content_hash END"
                    .to_owned()
            }
            _ => name.clone(),
        };
        targets.push(name);
        sources.push(source);
    }
    tx.execute_batch(&format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {aside} ORDER BY rowid",
        targets.join(", "),
        sources.join(", ")
    ))?;
    if table == "file_changes" {
        fill_change_ids(tx)?;
    }
    tx.execute_batch(&format!("DROP TABLE {aside}"))?;
    if let Some(seq) = seq {
        tx.execute(
            "UPDATE sqlite_sequence SET seq = MAX(seq, ?2) WHERE name = ?1",
            rusqlite::params![table, seq],
        )?;
    }
    let forbidden = forbidden_unique(table);
    for sql in attached {
        match tx.execute_batch(&sql) {
            Ok(()) => {}
            // Already there (the shape declares it) or naming a column that is
            // gone: the shape's own indexes are made by the migrations.
            Err(e) => tracing::debug!(error = %e, sql, "not recreated after the rebuild"),
        }
    }
    if forbidden.is_some() {
        for (name, _) in created_unique_indexes(tx, table)?
            .into_iter()
            .filter(|(_, cols)| Some(cols) == forbidden.as_ref())
        {
            tx.execute_batch(&format!("DROP INDEX {}", quote(&name)))?;
        }
    }
    Ok(())
}

/// Gives every `file_changes` row without a change id one of its own.
fn fill_change_ids(tx: &Connection) -> rusqlite::Result<()> {
    let ids: Vec<(i64, String)> = tx
        .prepare(
            "SELECT id, file_path, change_type, old_content_hash, new_content_hash,
                    COALESCE(timestamp, '')
             FROM file_changes WHERE content_hash IS NULL",
        )?
        .query_map([], |r| {
            let id: i64 = r.get(0)?;
            let stamp = format!("{}#{id}", r.get::<_, String>(5)?);
            let old: Option<String> = r.get(3)?;
            let new: Option<String> = r.get(4)?;
            let tag = super::hash::change_tag(
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                old.as_deref(),
                new.as_deref(),
                &stamp,
            );
            let change = super::hash::change_id(&stamp, &tag);
            Ok((id, change))
        })?
        .collect::<Result<_, _>>()?;
    let mut update = tx.prepare("UPDATE file_changes SET content_hash = ?2 WHERE id = ?1")?;
    for (id, change) in ids {
        update.execute(rusqlite::params![id, change])?;
    }
    Ok(())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_shape_conforms_to_itself() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(SHARED_TABLES_SQL)
            .expect("shared tables");
        let canonical = canonical_shapes().expect("shapes");
        assert!(conforms(&conn, &canonical).expect("check"));
    }

    #[test]
    fn created_at_cannot_be_added_but_is_deleted_can() {
        let canonical = canonical_shapes().expect("shapes");
        let col = |t: &str, c: &str| {
            canonical
                .iter()
                .find(|s| s.table == t)
                .and_then(|s| s.columns.iter().find(|x| x.name == c))
                .cloned()
                .expect("declared")
        };
        assert!(!can_add(&col("file_versions", "created_at")));
        assert!(can_add(&col("file_states", "is_deleted")));
        assert!(can_add(&col("file_versions", "size")));
        assert!(!can_add(&col("file_states", "id")));
    }
}
