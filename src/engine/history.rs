//! The history read back for people and clients: the queries behind the
//! Query service (`obby.query.QueryService`) and `obby-sync stats`.
//!
//! Input: a read connection to `obby.db` (pooled or opened read-only);
//! output: plain rows with unix-second timestamps. Reads `content_diffs`,
//! `file_versions`, `file_changes`, `file_states`, `sync_files`, and the
//! backend's `semantic_entries` / `semantic_topics` / `semantic_keywords`
//! when they exist; never writes.
//!
//! Stored timestamps are local-time text (see [`super::clock`]); a unix
//! second on the wire is turned into that text to compare ([`from_unix`]),
//! and a stored stamp back into unix seconds ([`to_unix`]). Topics and
//! keywords come from the backend's semantic tables when they name the
//! files concerned, otherwise from the notes themselves: folders as topics,
//! the words added in the period (weighted by how rare they are across the
//! history) as keywords.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{Local, NaiveDateTime, TimeZone as _};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::clock::TIMESTAMP_FORMAT;
use super::counts;
use super::search::{self, SearchError, SearchOptions};

/// Rows returned when a request gives no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most rows one request may ask for.
pub const MAX_LIMIT: usize = 10_000;
/// Topics and keywords in a time analysis.
pub const TOP_N: usize = 10;
/// Most diff text read to find the keywords of a period when the backend
/// has none (newest diffs first): 16 MiB.
pub const MAX_ANALYSIS_DIFF_BYTES: i64 = 16 * 1024 * 1024;
/// Candidate keywords (by count) whose rarity is looked up in the index.
const KEYWORD_CANDIDATES: usize = 100;
/// Versions the history needs before a word's rarity rules it out.
const MIN_VERSIONS_FOR_RARITY: i64 = 4;
/// Shortest word counted as a keyword.
const MIN_KEYWORD_CHARS: usize = 3;

/// Bounds no stored stamp falls outside of: every stamp is text starting
/// with a digit.
const NO_START: &str = "";
const NO_END: &str = "~";

/// What a history query fails with.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The request itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A search inside the query.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The database.
    #[error("query: {0}")]
    Db(#[from] rusqlite::Error),
}

/// The row limit of a request: 0 means [`DEFAULT_LIMIT`], more than
/// [`MAX_LIMIT`] is capped.
///
/// # Errors
/// [`HistoryError::Invalid`] for a negative limit.
pub fn limit(requested: i64) -> Result<usize, HistoryError> {
    match requested {
        0 => Ok(DEFAULT_LIMIT),
        n if n < 0 => Err(HistoryError::Invalid(format!(
            "limit must not be negative (got {n}); 0 means {DEFAULT_LIMIT}"
        ))),
        n => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
    }
}

/// A stored stamp (local time, `YYYY-MM-DD HH:MM:SS[.ffffff]`, a `T` also
/// accepted) as unix seconds; None when it is not one.
pub fn to_unix(stamp: &str) -> Option<i64> {
    let s = stamp.trim();
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"]
        .iter()
        .find_map(|f| {
            NaiveDateTime::parse_from_str(s, f).ok().or_else(|| {
                chrono::NaiveDate::parse_from_str(s, f)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
        })?;
    // In a fall-back hour the earlier moment; in a spring-forward gap the
    // wall time read as UTC offset by the local offset of the day.
    match Local.from_local_datetime(&naive).earliest() {
        Some(t) => Some(t.timestamp()),
        None => {
            Some(naive.and_utc().timestamp() - i64::from(Local::now().offset().local_minus_utc()))
        }
    }
}

/// Unix seconds as stored local-time text ([`TIMESTAMP_FORMAT`]).
///
/// # Errors
/// [`HistoryError::Invalid`] for a time chrono cannot represent.
pub fn from_unix(secs: i64) -> Result<String, HistoryError> {
    let t = chrono::DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| HistoryError::Invalid(format!("timestamp {secs} is out of range")))?;
    Ok(t.with_timezone(&Local).format(TIMESTAMP_FORMAT).to_string())
}

/// A period as stored-text bounds: `start <= timestamp < end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    start: String,
    end: String,
}

impl Period {
    /// The period from `start` through `end` (unix seconds, the end second
    /// included); 0 leaves that side open.
    ///
    /// # Errors
    /// [`HistoryError::Invalid`] when a bound is negative or the end is
    /// before the start.
    pub fn new(start: i64, end: i64) -> Result<Period, HistoryError> {
        if start < 0 || end < 0 {
            return Err(HistoryError::Invalid(
                "timestamps are unix seconds and must not be negative (0 leaves a side open)"
                    .into(),
            ));
        }
        if end != 0 && end < start {
            return Err(HistoryError::Invalid(format!(
                "end_timestamp {end} is before start_timestamp {start}"
            )));
        }
        Ok(Period {
            start: if start == 0 {
                NO_START.to_owned()
            } else {
                from_unix(start)?
            },
            end: if end == 0 {
                NO_END.to_owned()
            } else {
                // The end second included: the text bound is the next one.
                from_unix(end.saturating_add(1)).map_err(|_| {
                    HistoryError::Invalid(format!("timestamp {end} is out of range"))
                })?
            },
        })
    }

    /// Every time there is.
    pub fn all() -> Period {
        Period {
            start: NO_START.to_owned(),
            end: NO_END.to_owned(),
        }
    }
}

/// One `content_diffs` row, with its new version's hash and size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffRow {
    /// The diff's id.
    pub id: i64,
    /// Absolute path.
    pub file_path: String,
    /// `created`, `modified`, `deleted` or `moved`.
    pub change_type: String,
    /// The unified diff ("" where none is stored).
    pub diff_content: String,
    /// `+` lines.
    pub lines_added: i64,
    /// `-` lines.
    pub lines_removed: i64,
    /// Unix seconds (0 when the stamp cannot be read).
    pub timestamp: i64,
    /// The new version's content hash ("" without one).
    pub content_hash: String,
    /// The new version's size in bytes.
    pub size: i64,
}

const DIFF_SELECT: &str = "SELECT cd.id, cd.file_path, COALESCE(cd.change_type, ''),
        COALESCE(cd.diff_content, ''), COALESCE(cd.lines_added, 0),
        COALESCE(cd.lines_removed, 0), COALESCE(cd.timestamp, ''),
        COALESCE(fv.content_hash, ''),
        COALESCE(fv.size, length(CAST(fv.content AS BLOB)), 0)
     FROM content_diffs cd LEFT JOIN file_versions fv ON fv.id = cd.new_version_id";

fn diff_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DiffRow> {
    Ok(DiffRow {
        id: r.get(0)?,
        file_path: r.get(1)?,
        change_type: r.get(2)?,
        diff_content: r.get(3)?,
        lines_added: r.get(4)?,
        lines_removed: r.get(5)?,
        timestamp: to_unix(&r.get::<_, String>(6)?).unwrap_or(0),
        content_hash: r.get(7)?,
        size: r.get(8)?,
    })
}

pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The newest diffs, newest first.
///
/// # Errors
/// Any SQLite error.
pub fn recent_diffs(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<DiffRow>> {
    conn.prepare(&format!(
        "{DIFF_SELECT} ORDER BY cd.timestamp DESC, cd.id DESC LIMIT ?1"
    ))?
    .query_map([sql_limit(limit)], diff_row)?
    .collect()
}

/// Diffs stamped at or after `since` (unix seconds), newest first (as the
/// backend's own `WHERE cd.timestamp > ? ORDER BY cd.timestamp DESC`).
///
/// # Errors
/// [`HistoryError::Invalid`] for a negative time; any SQLite error.
pub fn diffs_since(
    conn: &Connection,
    since: i64,
    limit: usize,
) -> Result<Vec<DiffRow>, HistoryError> {
    let period = Period::new(since, 0)?;
    Ok(conn
        .prepare(&format!(
            "{DIFF_SELECT} WHERE cd.timestamp >= ?1 ORDER BY cd.timestamp DESC, cd.id DESC LIMIT ?2"
        ))?
        .query_map(params![period.start, sql_limit(limit)], diff_row)?
        .collect::<Result<_, _>>()?)
}

/// One version, without its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionRow {
    /// The version's id.
    pub id: i64,
    /// Absolute path.
    pub file_path: String,
    /// SHA-256 of the normalized text.
    pub content_hash: String,
    /// Bytes.
    pub size: i64,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Row counts of the history, for `status` and `GetStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counts {
    /// Paths tracked and present.
    pub files_tracked: i64,
    /// Paths whose deletion is recorded.
    pub files_deleted: i64,
    /// `file_versions` rows.
    pub versions: i64,
    /// `content_diffs` rows.
    pub diffs: i64,
    /// `file_changes` rows.
    pub changes: i64,
}

/// The history's row counts.
///
/// # Errors
/// Any SQLite error.
pub fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    let count = |q: &str| conn.query_row(q, [], |r| r.get::<_, i64>(0));
    Ok(Counts {
        files_tracked: count("SELECT COUNT(*) FROM sync_files WHERE deleted = 0")?,
        files_deleted: count("SELECT COUNT(*) FROM sync_files WHERE deleted <> 0")?,
        versions: counts::history_rows(conn, "file_versions")?,
        diffs: counts::history_rows(conn, "content_diffs")?,
        changes: counts::history_rows(conn, "file_changes")?,
    })
}

/// A path's versions, newest first.
///
/// # Errors
/// Any SQLite error.
pub fn file_versions(
    conn: &Connection,
    path: &str,
    limit: usize,
) -> rusqlite::Result<Vec<VersionRow>> {
    conn.prepare(
        "SELECT id, file_path, content_hash,
                COALESCE(size, length(CAST(content AS BLOB)), 0), COALESCE(timestamp, '')
         FROM file_versions WHERE file_path = ?1
         ORDER BY timestamp DESC, id DESC LIMIT ?2",
    )?
    .query_map(params![path, sql_limit(limit)], |r| {
        Ok(VersionRow {
            id: r.get(0)?,
            file_path: r.get(1)?,
            content_hash: r.get(2)?,
            size: r.get(3)?,
            timestamp: to_unix(&r.get::<_, String>(4)?).unwrap_or(0),
        })
    })?
    .collect()
}

/// A file that exists, as `GetTopicFiles` returns it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRow {
    /// Absolute path.
    pub file_path: String,
    /// Its mtime, unix seconds.
    pub last_modified: i64,
    /// Bytes.
    pub size: i64,
}

/// Where topics or keywords came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The backend's semantic tables.
    Semantic,
    /// The notes' paths and text.
    Notes,
}

/// A file that is not deleted, with its mtime and size: the engine's own
/// `sync_files` row, else the backend's `file_states`, else the newest version.
fn live_file(conn: &Connection, path: &str) -> rusqlite::Result<Option<FileRow>> {
    let own: Option<(Option<i64>, Option<i64>, i64)> = conn
        .prepare_cached("SELECT mtime_ns, size, deleted FROM sync_files WHERE path = ?1")?
        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let state: Option<(Option<String>, Option<String>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT content_hash, last_modified, file_size FROM file_states WHERE file_path = ?1",
        )?
        .query_row([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    match (own, state) {
        (Some((_, _, deleted)), _) if deleted != 0 => Ok(None),
        (Some((Some(mtime_ns), size, _)), state) => Ok(Some(FileRow {
            file_path: path.to_owned(),
            last_modified: mtime_ns.div_euclid(1_000_000_000),
            size: size.or(state.and_then(|s| s.2)).unwrap_or(0),
        })),
        (_, Some((None, _, _))) => Ok(None),
        (_, Some((Some(_), modified, size))) => Ok(Some(FileRow {
            file_path: path.to_owned(),
            last_modified: modified.as_deref().and_then(to_unix).unwrap_or(0),
            size: size.unwrap_or(0),
        })),
        (_, None) => conn
            .prepare_cached(
                "SELECT COALESCE(timestamp, ''), COALESCE(size, length(CAST(content AS BLOB)), 0)
                 FROM file_versions WHERE file_path = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([path], |r| {
                Ok(FileRow {
                    file_path: path.to_owned(),
                    last_modified: to_unix(&r.get::<_, String>(0)?).unwrap_or(0),
                    size: r.get(1)?,
                })
            })
            .optional(),
    }
}

/// True when the backend's three semantic tables are there.
fn has_semantic_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) = 3 FROM sqlite_master WHERE type = 'table'
           AND name IN ('semantic_entries', 'semantic_topics', 'semantic_keywords')",
        [],
        |r| r.get(0),
    )
}

/// A semantic entry's `file_path` as an absolute path: the backend may
/// store it relative to the project root.
fn absolute(root: &Path, stored: &str) -> String {
    if Path::new(stored).is_absolute() {
        stored.to_owned()
    } else {
        root.join(stored).display().to_string()
    }
}

/// A path relative to the root, for matching and display.
fn relative<'a>(root: &Path, path: &'a str) -> &'a str {
    root.to_str()
        .and_then(|r| path.strip_prefix(r))
        .map_or(path, |p| p.trim_start_matches('/'))
}

/// Files about `topic`: those whose semantic entries carry it as a topic or
/// keyword (case-insensitive; most entries first), else those whose path
/// relative to the root contains it, then those whose newest text matches
/// it (by rank). Deleted files are left out.
///
/// # Errors
/// [`HistoryError::Invalid`] for an empty topic; database errors.
pub fn topic_files(
    conn: &Connection,
    root: &Path,
    topic: &str,
    limit: usize,
) -> Result<(Vec<FileRow>, Source), HistoryError> {
    let topic = topic.trim();
    if topic.is_empty() {
        return Err(HistoryError::Invalid("topic is empty".into()));
    }
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    if has_semantic_tables(conn)? {
        let stored: Vec<String> = conn
            .prepare(
                "SELECT se.file_path FROM semantic_entries se
                 WHERE se.id IN (SELECT entry_id FROM semantic_topics WHERE lower(topic) = lower(?1))
                    OR se.id IN (SELECT entry_id FROM semantic_keywords WHERE lower(keyword) = lower(?1))
                 GROUP BY se.file_path
                 ORDER BY COUNT(DISTINCT se.id) DESC, MAX(se.timestamp) DESC, se.file_path",
            )?
            .query_map([topic], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for path in stored {
            let path = absolute(root, &path);
            if files.len() < limit
                && seen.insert(path.clone())
                && let Some(file) = live_file(conn, &path)?
            {
                files.push(file);
            }
        }
        if !files.is_empty() {
            return Ok((files, Source::Semantic));
        }
    }
    // The notes themselves: paths first, then text.
    let needle = topic.to_lowercase();
    let mut by_path: Vec<FileRow> = Vec::new();
    let paths: Vec<String> = conn
        .prepare(
            "SELECT path FROM sync_files WHERE deleted = 0
             UNION
             SELECT file_path FROM file_states
             WHERE content_hash IS NOT NULL AND file_path NOT IN (SELECT path FROM sync_files)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for path in paths {
        if relative(root, &path).to_lowercase().contains(&needle)
            && let Some(file) = live_file(conn, &path)?
        {
            by_path.push(file);
        }
    }
    by_path.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then_with(|| a.file_path.cmp(&b.file_path))
    });
    for file in by_path {
        if files.len() < limit && seen.insert(file.file_path.clone()) {
            files.push(file);
        }
    }
    if files.len() < limit {
        let opts = SearchOptions {
            all_versions: false,
            prefix: false,
            limit,
        };
        let hits = match search::search(conn, root, topic, &opts) {
            Ok(hits) => hits,
            // A topic without words, or no index: the paths are the answer.
            Err(SearchError::Query(_) | SearchError::NoIndex) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for hit in hits {
            if files.len() < limit
                && seen.insert(hit.file_path.clone())
                && let Some(file) = live_file(conn, &hit.file_path)?
            {
                files.push(file);
            }
        }
    }
    Ok((files, Source::Notes))
}

/// What changed in a period.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Activity {
    /// Distinct paths with a change.
    pub files_changed: i64,
    /// `file_changes` rows.
    pub total_changes: i64,
    /// Sum of the diffs' `+` lines.
    pub lines_added: i64,
    /// Sum of the diffs' `-` lines.
    pub lines_removed: i64,
    /// `total_changes / files_changed` (0 without changes).
    pub avg_changes_per_file: f64,
}

/// Counts of changes and lines in a period.
///
/// # Errors
/// Any SQLite error.
pub fn activity(conn: &Connection, period: &Period) -> rusqlite::Result<Activity> {
    let (files_changed, total_changes): (i64, i64) = conn.query_row(
        "SELECT COUNT(DISTINCT file_path), COUNT(*) FROM file_changes
         WHERE timestamp >= ?1 AND timestamp < ?2",
        [&period.start, &period.end],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (lines_added, lines_removed): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(lines_added), 0), COALESCE(SUM(lines_removed), 0)
         FROM content_diffs WHERE timestamp >= ?1 AND timestamp < ?2",
        [&period.start, &period.end],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Activity {
        files_changed,
        total_changes,
        lines_added,
        lines_removed,
        avg_changes_per_file: if files_changed > 0 {
            total_changes as f64 / files_changed as f64
        } else {
            0.0
        },
    })
}

/// A period's summary with its topics and keywords.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimeAnalysis {
    /// Distinct paths with a change.
    pub total_files_changed: i64,
    /// Sum of the diffs' `+` lines.
    pub total_lines_added: i64,
    /// Sum of the diffs' `-` lines.
    pub total_lines_removed: i64,
    /// At most [`TOP_N`], most weight first.
    pub top_topics: Vec<String>,
    /// Where the topics came from.
    pub topics_from: Source,
    /// At most [`TOP_N`], most weight first.
    pub top_keywords: Vec<String>,
    /// Where the keywords came from.
    pub keywords_from: Source,
}

/// The period's changed files with their number of changes.
fn changed_files(conn: &Connection, period: &Period) -> rusqlite::Result<Vec<(String, i64)>> {
    conn.prepare(
        "SELECT file_path, COUNT(*) FROM file_changes
         WHERE timestamp >= ?1 AND timestamp < ?2 GROUP BY file_path",
    )?
    .query_map([&period.start, &period.end], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// Topics (`table` semantic_topics, `column` topic) or keywords of the
/// semantic entries about `files`, each weighed by the changes of the files
/// that carry it.
fn semantic_top(
    conn: &Connection,
    root: &Path,
    files: &[(String, i64)],
    table: &str,
    column: &str,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT DISTINCT t.{column} FROM semantic_entries se JOIN {table} t ON t.entry_id = se.id
         WHERE se.file_path IN (?1, ?2)"
    ))?;
    let mut weight: HashMap<String, (String, i64)> = HashMap::new();
    for (path, changes) in files {
        let labels: Vec<String> = stmt
            .query_map(params![path, relative(root, path)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut once = HashSet::new();
        for label in labels {
            let key = label.to_lowercase();
            if once.insert(key.clone()) {
                weight.entry(key).or_insert((label, 0)).1 += changes;
            }
        }
    }
    Ok(top(weight.into_values().map(|(l, w)| (l, w as f64))))
}

/// The `TOP_N` labels by weight (ties by name).
fn top(weighted: impl Iterator<Item = (String, f64)>) -> Vec<String> {
    let mut all: Vec<(String, f64)> = weighted.collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.into_iter().take(TOP_N).map(|(l, _)| l).collect()
}

/// Folders (relative to the root) of the changed files, by changes.
fn folder_topics(root: &Path, files: &[(String, i64)]) -> Vec<String> {
    let mut weight: BTreeMap<String, i64> = BTreeMap::new();
    for (path, changes) in files {
        let rel = relative(root, path);
        if let Some((folder, _)) = rel.rsplit_once('/') {
            *weight.entry(folder.to_owned()).or_default() += changes;
        }
    }
    top(weight.into_iter().map(|(f, w)| (f, w as f64)))
}

/// Words of the lines the period's diffs added, each weighed by its count
/// times how rare it is across all versions (`ln(N / versions holding it)`);
/// a word in more than half of all versions is left out.
fn word_keywords(conn: &Connection, period: &Period) -> rusqlite::Result<Vec<String>> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT diff_content FROM content_diffs
         WHERE timestamp >= ?1 AND timestamp < ?2 AND diff_content IS NOT NULL
         ORDER BY timestamp DESC",
    )?;
    let mut rows = stmt.query([&period.start, &period.end])?;
    let mut read = 0_i64;
    while let Some(r) = rows.next()? {
        let diff: String = r.get(0)?;
        read += i64::try_from(diff.len()).unwrap_or(i64::MAX);
        for line in diff.lines() {
            let Some(added) = line.strip_prefix('+') else {
                continue;
            };
            if line.starts_with("+++ ") {
                continue;
            }
            for word in added
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= MIN_KEYWORD_CHARS)
                .filter(|w| w.chars().any(char::is_alphabetic))
            {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
        if read >= MAX_ANALYSIS_DIFF_BYTES {
            break;
        }
    }
    let mut candidates: Vec<(String, i64)> = counts.into_iter().collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    candidates.truncate(KEYWORD_CANDIDATES);
    if !search::has_index(conn)? {
        return Ok(top(candidates.into_iter().map(|(w, c)| (w, c as f64))));
    }
    let versions = super::counts::history_rows(conn, "file_versions")?;
    let phrases: Vec<String> = candidates
        .iter()
        .map(|(word, _)| format!("content : \"{}\"", word.replace('"', "\"\"")))
        .collect();
    let frequencies = search::matching_versions(conn, &phrases)?;
    let mut scored = Vec::with_capacity(candidates.len());
    for ((word, count), df) in candidates.into_iter().zip(frequencies) {
        // A word in more than half of all versions says nothing about this
        // period ("the", a template's boilerplate): bm25 discounts such words
        // to nothing too.
        if versions >= MIN_VERSIONS_FOR_RARITY && df * 2 > versions {
            continue;
        }
        let idf = ((versions.max(1) as f64 + 1.0) / (df as f64 + 1.0)).ln();
        scored.push((word, count as f64 * idf.max(0.0)));
    }
    Ok(top(scored.into_iter()))
}

/// Changes, lines, topics and keywords of a period.
///
/// # Errors
/// Any SQLite error.
pub fn time_analysis(
    conn: &Connection,
    root: &Path,
    period: &Period,
) -> rusqlite::Result<TimeAnalysis> {
    let counts = activity(conn, period)?;
    let files = changed_files(conn, period)?;
    let semantic = has_semantic_tables(conn)?;
    let from_backend = |table: &str, column: &str| -> rusqlite::Result<Vec<String>> {
        if semantic {
            semantic_top(conn, root, &files, table, column)
        } else {
            Ok(Vec::new())
        }
    };
    let topics = from_backend("semantic_topics", "topic")?;
    let (top_topics, topics_from) = if topics.is_empty() {
        (folder_topics(root, &files), Source::Notes)
    } else {
        (topics, Source::Semantic)
    };
    let keywords = from_backend("semantic_keywords", "keyword")?;
    let (top_keywords, keywords_from) = if keywords.is_empty() {
        (word_keywords(conn, period)?, Source::Notes)
    } else {
        (keywords, Source::Semantic)
    };
    Ok(TimeAnalysis {
        total_files_changed: counts.files_changed,
        total_lines_added: counts.lines_added,
        total_lines_removed: counts.lines_removed,
        top_topics,
        topics_from,
        top_keywords,
        keywords_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_through_unix_seconds() {
        let text = from_unix(1_767_225_600).expect("in range");
        assert_eq!(to_unix(&text), Some(1_767_225_600));
        assert_eq!(
            to_unix(&format!("{}.123456", &text[..19])),
            Some(1_767_225_600)
        );
        assert_eq!(to_unix(&text[..19].replace(' ', "T")), Some(1_767_225_600));
        assert_eq!(to_unix("yesterday"), None);
    }

    #[test]
    fn limits_default_cap_and_refuse_negatives() {
        assert_eq!(limit(0).ok(), Some(DEFAULT_LIMIT));
        assert_eq!(limit(5).ok(), Some(5));
        assert_eq!(limit(1_000_000).ok(), Some(MAX_LIMIT));
        assert!(matches!(limit(-1), Err(HistoryError::Invalid(_))));
    }

    #[test]
    fn a_period_includes_its_end_second_and_refuses_a_reversed_one() {
        let p = Period::new(100, 200).expect("valid");
        assert_eq!(p.start, from_unix(100).expect("t"));
        assert_eq!(p.end, from_unix(201).expect("t"));
        assert!(Period::new(300, 200).is_err());
        assert!(Period::new(-1, 0).is_err());
        assert_eq!(Period::new(0, 0).expect("open"), Period::all());
    }

    #[test]
    fn folders_are_the_fallback_topics() {
        let root = Path::new("/r");
        let files = vec![
            ("/r/notes/work-notes/a.md".to_owned(), 3),
            ("/r/notes/work-notes/b.md".to_owned(), 1),
            ("/r/notes/home/c.md".to_owned(), 2),
            ("/r/top.md".to_owned(), 9),
        ];
        assert_eq!(
            folder_topics(root, &files),
            vec!["notes/work-notes", "notes/home"]
        );
    }
}
