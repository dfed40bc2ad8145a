//! Full-text search over every version of every note.
//!
//! Two external-content FTS5 tables over `file_versions` (`file_path` and
//! `content`; the text is stored once, in `file_versions`) split the
//! versions between them (`schema/0009_search_once.sql`):
//! `file_current_fts`, the recent index ([`CURRENT_TABLE`]), holds the
//! newest version of each path `sync_files` does not mark deleted
//! (`search_current` names them) and the versions `search_stale` lists
//! (that left that set and are not moved yet); `file_versions_fts`, the
//! history index ([`ALL_TABLE`]), holds every other version. Triggers on
//! `file_versions` and `sync_files` keep both in the transaction that
//! changes those tables, whoever changes them (the store or the Python
//! backend): a new version is tokenized once, into the recent index; the
//! version it supersedes is listed in `search_stale`, and the idle work
//! below moves it to the history index ([`move_stale`]) instead of the
//! writer tokenizing it again. This module never writes `file_versions`.
//!
//! Versions older than schema 6 are indexed by a resumable backfill
//! ([`backfill_step`], [`backfill`], [`BackfillGuard`]) into the history
//! index (but for those the recent index holds): batches of at most
//! [`BACKFILL_BATCH_ROWS`] rows or [`BACKFILL_BATCH_BYTES`] of text, each one
//! short `BEGIN IMMEDIATE` transaction that indexes the batch and moves the
//! cursor (`sync_meta` `search_backfill_next`, up to `search_backfill_end`)
//! together, so a kill -9 loses nothing and indexes nothing twice. Only the
//! process holding the engine lock runs it (`run` on a thread of its own,
//! `scan` after its queue drains). Until it is done, versions in its range
//! that neither index holds are not found.
//!
//! Stale versions are found by every-version searches in the recent index
//! until they move, and left out of newest-only ones; bm25's statistics of
//! the recent index count them meanwhile. Under `scan` alone they stay until
//! the next `run` is idle.
//!
//! FTS5 writes the pending entries of an index out as a new segment at
//! each statement savepoint and commit that follows a change to it (the
//! store inserts versions 256 to a statement, so one segment per batch of
//! the default 256 rows, four at `--batch-size 1024`), and merges only when
//! 64 pile up on a level, so the writer does little merge work; under
//! `run`, the backfill's thread then merges them while the engine is idle
//! ([`merge_when_idle`]: short `'merge'` steps once no commit happened for
//! [`MERGE_IDLE`]), so queries read few segments.
//!
//! [`search`] takes a person's words, never raw FTS5 syntax: each word (or
//! `"quoted phrase"`) is quoted for FTS5 and all must match; malformed input
//! is a [`QueryError`]. Hits are ranked by bm25 (the path weighs
//! [`PATH_WEIGHT`], the text 1), with a snippet whose matches are wrapped in
//! `<mark>`…`</mark>` and whose text is HTML-escaped. By default only the
//! newest version of each file that is not deleted is searched: the recent
//! index less `search_stale` (so bm25 scores ~one match per file, with the
//! recent index's statistics: the newest versions', and the stale ones'
//! until they move); with [`SearchOptions::all_versions`],
//! every version: each index ranks its share with `obby_bm25` (rank.rs),
//! bm25 with the two indexes' statistics added together, so every version
//! scores as in one index of every version, and the two lists are merged
//! by score. The ranking queries read nothing
//! but the indexes before their LIMIT; the snippets and rows of the hits
//! returned are read afterwards. On a read-only copy of an older build's
//! file (schema 6 to 8, which indexed every version in `file_versions_fts`)
//! searches read the indexes as that build wrote them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::EngineError;
use super::{db, rank};

/// `sync_meta` key: the lowest version id not indexed yet.
pub const NEXT_KEY: &str = "search_backfill_next";
/// `sync_meta` key: the highest version id the backfill has to index.
pub const END_KEY: &str = "search_backfill_end";

/// Most versions indexed in one backfill transaction.
pub const BACKFILL_BATCH_ROWS: usize = 256;
/// Most bytes of text indexed in one backfill transaction (4 MiB): keeps
/// each write short whatever the notes' sizes.
pub const BACKFILL_BATCH_BYTES: i64 = 4 * 1024 * 1024;
/// Pause between two backfill batches under `run`, so the engine's own
/// writes get the write lock in between.
pub const BACKFILL_PAUSE: Duration = Duration::from_millis(20);
/// Environment variable that overrides [`BACKFILL_BATCH_ROWS`] (tests use a
/// small batch to stop a backfill midway).
pub const BACKFILL_ROWS_VAR: &str = "OBBY_SEARCH_BACKFILL_ROWS";

/// Pages of FTS5 merge work per step when the engine is idle (the
/// `'merge'` command's budget, negated so every level is merged, toward one
/// segment per index): about 4 MiB written per step with 16 KiB pages, one
/// short write transaction.
pub const MERGE_PAGES: i64 = 256;
/// How long no other connection must have committed before merge work
/// starts: merges run only while the engine is idle.
pub const MERGE_IDLE: Duration = Duration::from_secs(1);
/// How often the idle-work thread looks for the engine's commits (two
/// wakeups a second of an idle engine).
pub const MERGE_POLL: Duration = Duration::from_millis(500);

/// Stale versions moved from the recent index to the history index per
/// idle step (two tokenizations of each).
pub const MOVE_ROWS: usize = 256;
/// Most bytes of text moved per idle step (4 MiB; a larger version is not
/// moved): a step, and a stop that waits for it, stays short.
pub const MOVE_BYTES: i64 = 4 * 1024 * 1024;

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most words and phrases in one query.
pub const MAX_QUERY_TERMS: usize = 32;
// Every-version search scores each term through `obby_bm25`, which holds
// at most rank::MAX_PHRASES.
const _: () = assert!(MAX_QUERY_TERMS <= rank::MAX_PHRASES);
/// bm25 weight of a path match (the text weighs 1): a note named after the
/// words is a strong hit.
pub const PATH_WEIGHT: f64 = 2.0;
/// Tokens in a snippet.
pub const SNIPPET_TOKENS: i32 = 24;

/// The history index: every version the recent index does not hold
/// (schema 9; every version, in schemas 6 to 8).
pub const ALL_TABLE: &str = "file_versions_fts";
/// The recent index: the newest version of each path that is not deleted,
/// which newest-only searches use, and the stale versions waiting to move
/// to the history index.
pub const CURRENT_TABLE: &str = "file_current_fts";

/// Markers the snippet is built with before HTML escaping (private-use
/// characters, which notes do not contain in practice).
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A query that cannot be searched for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Nothing but white space.
    #[error("the query is empty: give one or more words to search for")]
    Empty,
    /// Only punctuation or symbols, which the index does not hold.
    #[error("the query {0:?} has no letters or digits to search for")]
    NoWords(String),
    /// A `"` without its closing one.
    #[error("the query has an unbalanced double quote: close the phrase with a second \"")]
    Unbalanced,
    /// Over [`MAX_QUERY_BYTES`].
    #[error("the query is longer than {MAX_QUERY_BYTES} bytes")]
    TooLong,
    /// Over [`MAX_QUERY_TERMS`].
    #[error("the query has more than {MAX_QUERY_TERMS} words and phrases")]
    TooManyTerms,
    /// A NUL character.
    #[error("the query contains a NUL character")]
    Nul,
}

/// What a search can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query itself (the caller's fault).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The database has no index (an older schema that no engine migrated).
    #[error(
        "this database has no search index yet: run `obby-sync scan` or `obby-sync run` once to create it"
    )]
    NoIndex,
    /// The database.
    #[error("search: {0}")]
    Db(#[from] rusqlite::Error),
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    /// Every version of every file, not only the newest of each file that
    /// still exists.
    pub all_versions: bool,
    /// The last word of each term matches as a prefix (`meet` finds `meeting`).
    pub prefix: bool,
    /// Most hits returned.
    pub limit: usize,
}

/// One hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// The version's id.
    pub version_id: i64,
    /// Its absolute path.
    pub file_path: String,
    /// Its whole text (None for a binary or oversized file, found by path).
    pub content: Option<String>,
    /// A snippet of the best matching column, HTML-escaped, matches in
    /// `<mark>`…`</mark>`.
    pub highlighted: String,
    /// bm25 score negated: larger is better.
    pub rank: f64,
    /// The version's stored timestamp (local-time text).
    pub timestamp: Option<String>,
}

/// Turns a person's query into an FTS5 expression: words split on white
/// space, `"…"` kept as phrases, each quoted (inner quotes doubled) so no
/// FTS5 operator or column filter can be smuggled in; all terms must match.
/// With `prefix`, each term's last word matches as a prefix; a bare word
/// that ends in `*` right after a letter or digit (`meet*`) matches as a
/// prefix either way. Terms without a letter or digit are dropped (the
/// index holds none).
///
/// # Errors
/// A [`QueryError`] for an empty, overlong, unbalanced or wordless query.
pub fn fts_query(input: &str, prefix: bool) -> Result<String, QueryError> {
    Ok(fts_terms(input, prefix)?.join(" "))
}

/// [`fts_query`]'s terms, each a quoted FTS5 phrase: FTS5 numbers the
/// query's phrases in this order.
fn fts_terms(input: &str, prefix: bool) -> Result<Vec<String>, QueryError> {
    if input.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    if input.contains('\0') {
        return Err(QueryError::Nul);
    }
    if input.trim().is_empty() {
        return Err(QueryError::Empty);
    }
    // Each term with whether it matches as a prefix.
    let mut terms: Vec<(&str, bool)> = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let term = if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').ok_or(QueryError::Unbalanced)?;
            let phrase = &after[..end];
            rest = &after[end + 1..];
            (phrase, prefix)
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            let stem = word.trim_end_matches('*');
            if stem.len() < word.len() && stem.chars().last().is_some_and(char::is_alphanumeric) {
                (stem, true)
            } else {
                (word, prefix)
            }
        };
        if term.0.chars().any(char::is_alphanumeric) {
            terms.push(term);
        }
    }
    if terms.is_empty() {
        return Err(QueryError::NoWords(input.trim().to_owned()));
    }
    if terms.len() > MAX_QUERY_TERMS {
        return Err(QueryError::TooManyTerms);
    }
    Ok(terms
        .iter()
        .map(|&(t, prefix)| {
            let star = if prefix { "*" } else { "" };
            format!("\"{}\"{star}", t.replace('"', "\"\""))
        })
        .collect())
}

/// The terms, those that match a word of the root's own path (`/home`,
/// the user's name, the vault's folder; the root the engine recorded in
/// `sync_meta`, else `root`) limited to the text: the index
/// holds absolute paths, so such a word is in every note's path and would
/// find every note. Which terms match is asked of FTS5 itself, with the
/// indexes' tokenizer, on a one-row table of the connection's `temp`
/// schema (allowed on a read-only connection too).
fn outside_root(
    conn: &Connection,
    root: &Path,
    terms: Vec<String>,
) -> rusqlite::Result<Vec<String>> {
    // The root the engine recorded, else the caller's.
    let recorded = db::meta_get(conn, db::ROOT_KEY)?;
    let Some(root) = recorded
        .as_deref()
        .or_else(|| root.to_str())
        .filter(|r| !r.is_empty() && *r != "/")
    else {
        return Ok(terms);
    };
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.{ROOT_PROBE} USING fts5(path, tokenize = '{TOKENIZER}')"
    ))?;
    let held: Option<String> = conn
        .query_row(&format!("SELECT path FROM temp.{ROOT_PROBE}"), [], |r| {
            r.get(0)
        })
        .optional()?;
    if held.as_deref() != Some(root) {
        conn.execute(&format!("DELETE FROM temp.{ROOT_PROBE}"), [])?;
        conn.execute(
            &format!("INSERT INTO temp.{ROOT_PROBE} (path) VALUES (?1)"),
            [root],
        )?;
    }
    let mut probe = conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM temp.{ROOT_PROBE} WHERE {ROOT_PROBE} MATCH ?1)"
    ))?;
    terms
        .into_iter()
        .map(|term| {
            let in_root: bool = probe.query_row([&term], |r| r.get(0))?;
            Ok(if in_root {
                format!("content : {term}")
            } else {
                term
            })
        })
        .collect()
}

/// The `temp` table [`outside_root`] asks.
const ROOT_PROBE: &str = "obby_root_probe";
/// The search indexes' tokenizer (schema 6).
const TOKENIZER: &str = "unicode61 remove_diacritics 2";

/// True when the database has the search index (schema 6 or later).
///
/// # Errors
/// Any SQLite error.
pub fn has_index(conn: &Connection) -> rusqlite::Result<bool> {
    has_table(conn, ALL_TABLE)
}

/// True when the schema holds a table (or virtual table) `name`.
fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// The ranking query of one index: every match scored by bm25 (the path
/// weighs [`PATH_WEIGHT`]), best first, ties newest first; nothing else
/// is read before the LIMIT.
fn ranked_sql(table: &str) -> String {
    format!(
        "SELECT rowid, bm25({table}, {PATH_WEIGHT}, 1.0) AS score
         FROM {table} WHERE {table} MATCH ?1
         ORDER BY score, rowid DESC
         LIMIT ?2"
    )
}

/// How a database's versions are spread over the two indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Schema 9 and later: every version in exactly one of them (the
    /// recent index holds `search_current`'s and `search_stale`'s versions,
    /// the history index every other, but for the backfill's range).
    Split,
    /// Schema 7 and 8 (a read-only copy of an older build's file): the
    /// history index holds every version, the recent one the newest-only
    /// set and the stale entries.
    Both,
    /// Schema 6 (the same): only the index of every version.
    AllOnly,
}

fn layout(conn: &Connection) -> rusqlite::Result<Layout> {
    Ok(if has_table(conn, "search_promote")? {
        Layout::Split
    } else if has_table(conn, CURRENT_TABLE)? {
        Layout::Both
    } else {
        Layout::AllOnly
    })
}

/// Searches the indexes.
///
/// # Errors
/// [`SearchError::Query`] for a malformed query, [`SearchError::NoIndex`]
/// on a database without the index, [`SearchError::Db`] otherwise.
pub fn search(
    conn: &Connection,
    root: &Path,
    input: &str,
    opts: &SearchOptions,
) -> Result<Vec<Hit>, SearchError> {
    let terms = fts_terms(input, opts.prefix)?;
    if !has_index(conn)? {
        return Err(SearchError::NoIndex);
    }
    let terms = outside_root(conn, root, terms)?;
    let expr = terms.join(" ");
    let limit = i64::try_from(opts.limit).unwrap_or(i64::MAX);
    // Phase 1: the best ids by score, without snippets (a common word can
    // match many versions; snippets are made only for those returned), and
    // without a join before the LIMIT: only bm25 runs per match.
    let sources: Vec<(&str, String)> = match (layout(conn)?, opts.all_versions) {
        // Every version: both indexes, each holding its share, scored with
        // the statistics of both together (rank.rs), so each version gets
        // the score one index of every version would give it.
        (Layout::Split, true) => {
            let score = joint_bm25(conn, &terms)?;
            [CURRENT_TABLE, ALL_TABLE]
                .into_iter()
                .map(|table| {
                    (
                        table,
                        format!(
                            "SELECT rowid, {} AS score
                             FROM {table} WHERE {table} MATCH ?1
                             ORDER BY score, rowid DESC
                             LIMIT ?2",
                            score.replace("{table}", table)
                        ),
                    )
                })
                .collect()
        }
        (Layout::Both | Layout::AllOnly, true) => vec![(ALL_TABLE, ranked_sql(ALL_TABLE))],
        // The newest live versions: the recent index less the entries that
        // left the set and wait to be moved (none once the engine was idle).
        (Layout::Split | Layout::Both, false) => vec![(
            CURRENT_TABLE,
            format!(
                "SELECT rowid, bm25({CURRENT_TABLE}, {PATH_WEIGHT}, 1.0) AS score
                 FROM {CURRENT_TABLE} WHERE {CURRENT_TABLE} MATCH ?1
                   AND rowid NOT IN (SELECT version_id FROM search_stale)
                 ORDER BY score, rowid DESC
                 LIMIT ?2"
            ),
        )],
        // A schema 6 file opened read-only (a replica of an older build):
        // every version's index, filtered to the newest of each live path.
        (Layout::AllOnly, false) => vec![(
            ALL_TABLE,
            format!(
                "SELECT f.rowid, bm25({ALL_TABLE}, {PATH_WEIGHT}, 1.0) AS score
                 FROM {ALL_TABLE} f JOIN file_versions fv ON fv.id = f.rowid
                 WHERE {ALL_TABLE} MATCH ?1
                   AND fv.id = (SELECT MAX(n.id) FROM file_versions n WHERE n.file_path = fv.file_path)
                   AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = fv.file_path AND s.deleted <> 0)
                 ORDER BY score, f.rowid DESC
                 LIMIT ?2"
            ),
        )],
    };
    // (score, id, source): the indexes' best lists merged by score, ties
    // newest first (an every-version search scores both with their joint
    // statistics, so the two lists' scores compare).
    let mut ranked: Vec<(f64, i64, usize)> = Vec::new();
    for (source, (_, sql)) in sources.iter().enumerate() {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![expr, limit], |r| Ok((r.get(1)?, r.get(0)?, source)))?;
        for row in rows {
            ranked.push(row?);
        }
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    ranked.truncate(opts.limit);
    // Phase 2: the hits' snippets, one statement per index: one pass over
    // the matches within the hits' id range, snippet() only for the hits
    // (the unary `+` keeps the id list a filter, not 100 lookups that would
    // each set the query up again: for a prefix, merging every matching
    // term).
    let mut snippets: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    rank::register(conn)?;
    let (inst, few, linear) = (
        rank::INST_COUNT_FUNCTION,
        rank::SNIPPET_FTS5_MAX_INST,
        rank::SNIPPET_FUNCTION,
    );
    for (source, (table, _)) in sources.iter().enumerate() {
        let ids: Vec<i64> = ranked
            .iter()
            .filter(|(_, _, s)| *s == source)
            .map(|(_, id, _)| *id)
            .collect();
        let (Some(low), Some(high)) = (ids.iter().min(), ids.iter().max()) else {
            continue;
        };
        let list = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        // FTS5's snippet() is quadratic in a row's matches (rank.rs):
        // a row of many takes the linear one.
        let mut stmt = conn.prepare(&format!(
            "SELECT rowid,
                    CASE WHEN {inst}({table}) <= {few}
                    THEN snippet({table}, -1, '{OPEN}', '{CLOSE}', '…', {SNIPPET_TOKENS})
                    ELSE {linear}({table}, '{OPEN}', '{CLOSE}', '…', {SNIPPET_TOKENS}) END
             FROM {table}
             WHERE {table} MATCH ?1 AND rowid BETWEEN ?2 AND ?3
               AND +rowid IN (SELECT value FROM json_each(?4))"
        ))?;
        let rows = stmt.query_map(params![expr, low, high, list], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        for row in rows {
            let (id, snippet) = row?;
            snippets.insert(id, snippet);
        }
    }
    let mut row =
        conn.prepare("SELECT file_path, content, timestamp FROM file_versions WHERE id = ?1")?;
    let mut hits = Vec::with_capacity(ranked.len());
    for (score, id, _) in ranked {
        let marked = snippets.get(&id);
        let Some((file_path, content, timestamp)) = row
            .query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .optional()?
        else {
            // Deleted between the two phases (by another program).
            continue;
        };
        hits.push(Hit {
            version_id: id,
            file_path,
            content,
            highlighted: marked.map(|m| markup(m)).unwrap_or_default(),
            rank: -score,
            timestamp,
        });
    }
    Ok(hits)
}

/// The score expression of an every-version search over the split
/// indexes: `obby_bm25` (rank.rs) with the row count, average length and
/// each phrase's document frequency of both indexes together, `{table}`
/// standing for the index it runs on. Registers the function on `conn`.
fn joint_bm25(conn: &Connection, terms: &[String]) -> rusqlite::Result<String> {
    rank::register(conn)?;
    let corpus = rank::Corpus::of(conn, CURRENT_TABLE)?.plus(rank::Corpus::of(conn, ALL_TABLE)?);
    // Debug prints an f64 so that it reads back as the same number.
    let idfs: Vec<String> = matching_versions(conn, terms)?
        .into_iter()
        .map(|hits| format!("{:?}", rank::idf(corpus.rows, hits)))
        .collect();
    Ok(format!(
        "{}({{table}}, {:?}, {PATH_WEIGHT:?}, 1.0, {})",
        rank::FUNCTION,
        corpus.avgdl(),
        idfs.join(", ")
    ))
}

/// How many versions match each FTS5 expression, over every index's
/// share: the document frequencies of words in all of history, in the
/// order given.
///
/// # Errors
/// Any SQLite error (a malformed expression among them).
pub fn matching_versions(conn: &Connection, exprs: &[String]) -> rusqlite::Result<Vec<i64>> {
    let tables: &[&str] = match layout(conn)? {
        Layout::Split => &[ALL_TABLE, CURRENT_TABLE],
        Layout::Both | Layout::AllOnly => &[ALL_TABLE],
    };
    exprs
        .iter()
        .map(|expr| {
            let mut hits = 0;
            for table in tables {
                hits += conn
                    .prepare_cached(&format!(
                        "SELECT COUNT(*) FROM {table} WHERE {table} MATCH ?1"
                    ))?
                    .query_row([expr], |r| r.get::<_, i64>(0))?;
            }
            Ok(hits)
        })
        .collect()
}

/// HTML-escapes a snippet and turns its markers into `<mark>` tags.
fn markup(marked: &str) -> String {
    let mut out = String::with_capacity(marked.len() + 16);
    for c in marked.chars() {
        match c {
            OPEN => out.push_str("<mark>"),
            CLOSE => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How far the index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexProgress {
    /// Versions in the index.
    pub indexed: i64,
    /// Versions the backfill has still to index.
    pub pending: i64,
}

impl IndexProgress {
    /// True when every version is indexed.
    pub fn complete(&self) -> bool {
        self.pending == 0
    }
}

/// The backfill's range still to index, `(next, end)`; empty when done.
fn range(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let get = |key: &str, default: i64| -> rusqlite::Result<i64> {
        Ok(db::meta_get(conn, key)?
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default))
    };
    Ok((get(NEXT_KEY, 1)?, get(END_KEY, 0)?))
}

/// How far the index is built (None when the database has no index).
///
/// # Errors
/// Any SQLite error.
pub fn progress(conn: &Connection) -> rusqlite::Result<Option<IndexProgress>> {
    if !has_index(conn)? {
        return Ok(None);
    }
    let (next, end) = range(conn)?;
    let pending: i64 = conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM file_versions fv WHERE id BETWEEN ?1 AND ?2{}",
            if layout(conn)? == Layout::Split {
                NOT_RECENT
            } else {
                ""
            }
        ),
        [next, end],
        |r| r.get(0),
    )?;
    let total = super::counts::history_rows(conn, "file_versions")?;
    Ok(Some(IndexProgress {
        indexed: total - pending,
        pending,
    }))
}

/// Rows per backfill batch: [`BACKFILL_BATCH_ROWS`] or the environment's.
pub fn batch_rows() -> usize {
    std::env::var(BACKFILL_ROWS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(BACKFILL_BATCH_ROWS)
}

/// Indexes the next batch of not yet indexed versions (at most `max_rows`,
/// and no more than [`BACKFILL_BATCH_BYTES`] of text unless one row is
/// larger) and moves the cursor, in one `BEGIN IMMEDIATE` transaction.
/// Versions in the batch that the recent index holds are passed over.
/// Returns the number of versions indexed; None when the backfill is done.
///
/// # Errors
/// Any SQLite error (nothing is changed then).
pub fn backfill_step(conn: &Connection, max_rows: usize) -> rusqlite::Result<Option<usize>> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let (next, end) = range(&tx)?;
    if next > end {
        return Ok(None);
    }
    let mut last = None;
    let mut bytes = 0_i64;
    let mut rows = 0_usize;
    {
        let mut sizes = tx.prepare(
            "SELECT id, COALESCE(size, length(content), 0) FROM file_versions
             WHERE id BETWEEN ?1 AND ?2 ORDER BY id LIMIT ?3",
        )?;
        let mut found = sizes.query(params![
            next,
            end,
            i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX)
        ])?;
        while let Some(r) = found.next()? {
            let (id, size): (i64, i64) = (r.get(0)?, r.get(1)?);
            if rows > 0 && bytes + size > BACKFILL_BATCH_BYTES {
                break;
            }
            bytes += size;
            rows += 1;
            last = Some(id);
        }
    }
    // No row left in the range: the backfill is done.
    let upto = last.unwrap_or(end);
    // Versions the recent index holds (schema 9) are not the history
    // index's.
    let indexed = tx.execute(
        &format!(
            "INSERT INTO file_versions_fts (rowid, file_path, content)
             SELECT id, file_path, content FROM file_versions fv WHERE id BETWEEN ?1 AND ?2{}",
            if layout(&tx)? == Layout::Split {
                NOT_RECENT
            } else {
                ""
            }
        ),
        [next, upto],
    )?;
    db::meta_set(&tx, NEXT_KEY, &(upto + 1).to_string())?;
    tx.commit()?;
    Ok((rows > 0).then_some(indexed))
}

/// Runs [`backfill_step`] until the backfill is done or `stop` is set,
/// pausing `pause` between batches and calling `on_step` after each. A busy
/// database is waited out ([`db::retry_busy`]). Returns the versions indexed.
///
/// # Errors
/// The first SQLite error that is not "busy".
pub fn backfill(
    conn: &Connection,
    stop: &AtomicBool,
    pause: Duration,
    on_step: &mut dyn FnMut(&IndexProgress),
) -> rusqlite::Result<u64> {
    if !has_index(conn)? {
        return Ok(0);
    }
    let rows = batch_rows();
    let mut total = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(n) = db::retry_busy(stop, || backfill_step(conn, rows))? else {
            break;
        };
        total += n as u64;
        if let Some(p) = progress(conn)? {
            on_step(&p);
            if p.complete() {
                break;
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Ok(total)
}

/// A filter of `file_versions fv` rows: those the recent index does not
/// hold (schema 9).
const NOT_RECENT: &str = "
    AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id)
    AND NOT EXISTS (SELECT 1 FROM search_current c WHERE c.file_path = fv.file_path AND c.version_id = fv.id)";

/// Moves at most `max_rows` (and [`MOVE_BYTES`] of text; a larger version
/// stays) of the versions `search_stale` lists (that
/// left the newest-only set: `schema/0009_search_once.sql` leaves them in
/// the recent index so the writer tokenizes each new version once) to the
/// history index, in the caller's transaction: unindexed from
/// [`CURRENT_TABLE`], indexed in [`ALL_TABLE`], dropped from the list.
/// Versions in the backfill's range wait for it to pass them (it leaves
/// listed versions alone, so they would otherwise be indexed twice).
/// Returns how many it moved. A listed id whose row is gone (never, by the
/// triggers) is only dropped from the list.
///
/// # Errors
/// Any SQLite error.
pub fn move_stale(conn: &Connection, max_rows: usize) -> rusqlite::Result<usize> {
    if layout(conn)? != Layout::Split {
        return Ok(0);
    }
    let (next, end) = range(conn)?;
    // At most MOVE_BYTES of text per step, so a step (which holds the write
    // lock) and a stop waiting for it stay short. A version larger than
    // that stays where it is, listed: newest-only searches leave it out,
    // every-version searches find it in the recent index, and the writer
    // is never held up for seconds while a huge note is tokenized twice.
    // (`octet_length` reads the record header, not the text.)
    let listed: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT s.version_id, COALESCE(octet_length(fv.content), 0) AS size
             FROM search_stale s LEFT JOIN file_versions fv ON fv.id = s.version_id
             WHERE s.version_id NOT BETWEEN ?1 AND ?2 AND size <= ?4
             ORDER BY s.version_id LIMIT ?3",
        )?
        .query_map(
            params![
                next,
                end,
                i64::try_from(max_rows).unwrap_or(i64::MAX),
                MOVE_BYTES
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut bytes = 0_i64;
    let ids: Vec<i64> = listed
        .into_iter()
        .take_while(|&(_, size)| {
            bytes = bytes.saturating_add(size);
            bytes <= MOVE_BYTES
        })
        .map(|(id, _)| id)
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let list = format!(
        "[{}]",
        ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    );
    conn.execute(
        &format!(
            "INSERT INTO {CURRENT_TABLE} ({CURRENT_TABLE}, rowid, file_path, content)
             SELECT 'delete', fv.id, fv.file_path, fv.content
             FROM file_versions fv WHERE fv.id IN (SELECT value FROM json_each(?1))"
        ),
        [&list],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO {ALL_TABLE} (rowid, file_path, content)
             SELECT fv.id, fv.file_path, fv.content
             FROM file_versions fv WHERE fv.id IN (SELECT value FROM json_each(?1))"
        ),
        [&list],
    )?;
    conn.execute(
        "DELETE FROM search_stale WHERE version_id IN (SELECT value FROM json_each(?1))",
        [&list],
    )?;
    Ok(ids.len())
}

/// One step of idle work: [`move_stale`] of [`MOVE_ROWS`] versions while
/// any can move, else merge work on each index ([`ALL_TABLE`], [`CURRENT_TABLE`]
/// when the schema has it): FTS5's `'merge'` command with a budget of
/// `pages` pages, every level eligible, in one `BEGIN IMMEDIATE`
/// transaction. Returns true when it moved or merged anything (FTS5 counts
/// at least two changes for a merge that did work); false once nothing can
/// move and each index is one segment.
///
/// # Errors
/// Any SQLite error (nothing is changed then).
pub fn merge_step(conn: &Connection, pages: i64) -> rusqlite::Result<bool> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    if move_stale(&tx, MOVE_ROWS)? > 0 {
        tx.commit()?;
        return Ok(true);
    }
    let mut merged = false;
    for table in [ALL_TABLE, CURRENT_TABLE] {
        if !has_table(&tx, table)? {
            continue;
        }
        let before = tx.total_changes();
        tx.execute(
            &format!("INSERT INTO {table} ({table}, rank) VALUES ('merge', ?1)"),
            [-pages.max(1)],
        )?;
        merged |= tx.total_changes() >= before + 2;
    }
    tx.commit()?;
    Ok(merged)
}

/// Merges the indexes' segments while the database is idle, until `stop`:
/// every [`MERGE_POLL`] it reads `PRAGMA data_version` (which moves when
/// another connection commits); once nothing was committed for
/// [`MERGE_IDLE`], it runs [`merge_step`]s, checking for commits between
/// them, until a step merges nothing; then it waits for the next commit.
/// Returns the steps that merged something.
///
/// Every write adds segments to an index (the settings of schema 6 and 7
/// merge only when 64 pile up on a level), and every query reads every
/// segment: merging when idle keeps queries fast without costing the writer.
///
/// # Errors
/// The first SQLite error that is not "busy".
pub fn merge_when_idle(conn: &Connection, stop: &AtomicBool) -> rusqlite::Result<u64> {
    let data_version = || conn.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0));
    let mut seen = data_version()?;
    let mut quiet_since = std::time::Instant::now();
    let mut merged_all = false;
    let mut steps = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let now = data_version()?;
        if now != seen {
            seen = now;
            quiet_since = std::time::Instant::now();
            merged_all = false;
        } else if !merged_all && quiet_since.elapsed() >= MERGE_IDLE {
            if db::retry_busy(stop, || merge_step(conn, MERGE_PAGES))? {
                steps += 1;
                // Straight to the next step unless the engine committed.
                continue;
            }
            merged_all = true;
            if steps > 0 {
                tracing::debug!(steps, "search indexes merged");
                // The merges' pages and buffers are not needed until the
                // next spell of work.
                super::memory::shrink(conn);
                super::memory::give_back();
            }
        }
        // Woken early by the guard's drop (a spurious wake only polls).
        std::thread::park_timeout(MERGE_POLL);
    }
    Ok(steps)
}

/// The backfill, then merges when idle ([`merge_when_idle`]), on a thread
/// of its own with its own write connection, for `run`. Stops (between two
/// batches or steps) and joins when dropped.
#[derive(Debug)]
pub struct BackfillGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackfillGuard {
    /// Starts the thread when the database has the index: the backfill when
    /// something is pending, then [`merge_when_idle`]; logs the progress and
    /// any error (a failed backfill or merge resumes at the next start).
    ///
    /// # Errors
    /// [`db::open_writer`]'s errors; [`EngineError::Io`] when the thread
    /// cannot start.
    pub fn start(
        db_path: &Path,
        checkpoints: db::CheckpointMode,
    ) -> Result<BackfillGuard, EngineError> {
        let stop = Arc::new(AtomicBool::new(false));
        // As the engine's own connections: no checkpoint on close unless `auto`.
        let conn = db::open_writer_with(db_path, checkpoints)?;
        let sql = |source| EngineError::from_sqlite(db_path, source);
        if !has_index(&conn).map_err(sql)? {
            return Ok(BackfillGuard { stop, thread: None });
        }
        let pending = progress(&conn).map_err(sql)?.filter(|p| !p.complete());
        if let Some(first) = pending {
            tracing::info!(
                indexed = first.indexed,
                pending = first.pending,
                "building the search index of existing versions in the background"
            );
        }
        let flag = stop.clone();
        let path: PathBuf = db_path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("obby-search-backfill".into())
            .spawn(move || {
                if pending.is_some() {
                    let mut last_log = std::time::Instant::now();
                    let result = backfill(&conn, &flag, BACKFILL_PAUSE, &mut |p| {
                        if last_log.elapsed() >= Duration::from_secs(5) {
                            last_log = std::time::Instant::now();
                            tracing::info!(
                                indexed = p.indexed,
                                pending = p.pending,
                                "search index backfill"
                            );
                        }
                    });
                    match result {
                        Ok(n) if !flag.load(Ordering::Relaxed) => {
                            tracing::info!(versions = n, "search index complete");
                        }
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(
                                db = %path.display(),
                                error = %e,
                                "search index backfill stopped; it resumes at the next start"
                            );
                            return;
                        }
                    }
                }
                if let Err(e) = merge_when_idle(&conn, &flag) {
                    tracing::warn!(
                        db = %path.display(),
                        error = %e,
                        "search index merging stopped; it resumes at the next start"
                    );
                }
            })
            .map_err(|source| EngineError::Io {
                path: db_path.to_path_buf(),
                source,
            })?;
        Ok(BackfillGuard {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BackfillGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_and_cannot_be_fts_syntax() {
        assert_eq!(
            fts_query("meeting notes", false).as_deref(),
            Ok("\"meeting\" \"notes\"")
        );
        assert_eq!(
            fts_query("meet not", true).as_deref(),
            Ok("\"meet\"* \"not\"*")
        );
        // A bare word ending in `*` after a letter or digit is a prefix on
        // its own; a star anywhere else is just part of the word.
        assert_eq!(
            fts_query("meet* notes **bold** * a*b 3**", false).as_deref(),
            Ok("\"meet\"* \"notes\" \"**bold\"* \"a*b\" \"3\"*")
        );
        assert_eq!(
            fts_query("\"exact phrase\" other", false).as_deref(),
            Ok("\"exact phrase\" \"other\"")
        );
        // Operators and column filters are just words.
        assert_eq!(
            fts_query("a OR content:b NEAR(c)", false).as_deref(),
            Ok("\"a\" \"OR\" \"content:b\" \"NEAR(c)\"")
        );
        assert_eq!(
            fts_query("it's a\"b", false),
            Err(QueryError::Unbalanced),
            "a quote inside a word opens a phrase"
        );
        assert_eq!(fts_query("  ", false), Err(QueryError::Empty));
        assert_eq!(
            fts_query("!!! --", false),
            Err(QueryError::NoWords("!!! --".into()))
        );
        assert_eq!(fts_query("\"open", false), Err(QueryError::Unbalanced));
        assert_eq!(fts_query("a\0b", false), Err(QueryError::Nul));
        assert_eq!(
            fts_query(&"x".repeat(MAX_QUERY_BYTES + 1), false),
            Err(QueryError::TooLong)
        );
        assert_eq!(
            fts_query(&"w ".repeat(MAX_QUERY_TERMS + 1), false),
            Err(QueryError::TooManyTerms)
        );
    }

    #[test]
    fn snippets_are_escaped_and_marked() {
        assert_eq!(
            markup(&format!("a <b> & {OPEN}word{CLOSE} \"q\"")),
            "a &lt;b&gt; &amp; <mark>word</mark> &quot;q&quot;"
        );
    }

    #[test]
    fn every_quoted_query_is_valid_fts5() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("CREATE VIRTUAL TABLE t USING fts5(a)")
            .expect("fts5");
        for q in [
            "plain",
            "a\"\"b\"",
            "\"\"\"",
            "x* ^y -z +w (v) {u} [t]",
            "x** *x* \"y*\" z*\"w\"",
            "col:val AND OR NOT",
        ] {
            for prefix in [false, true] {
                if let Ok(expr) = fts_query(q, prefix) {
                    conn.query_row("SELECT COUNT(*) FROM t WHERE t MATCH ?1", [&expr], |r| {
                        r.get::<_, i64>(0)
                    })
                    .unwrap_or_else(|e| panic!("{q:?} -> {expr:?}: {e}"));
                }
            }
        }
    }
}
