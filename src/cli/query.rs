//! `obby-sync search` and `obby-sync stats`: the Query service's answers for
//! people, read straight from the database (no running engine needed).
//!
//! Both open `obby.db` read-only ([`crate::engine::Database`]) and read it
//! through [`crate::engine::History`], as the gRPC service does; bad input
//! (a wordless query, an unreadable `--since`) is one clear line and exit 1.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone as _};

use crate::engine::{
    Activity, Database, MAX_LIMIT, Period, SearchError, SearchOptions, Source, TimeAnalysis,
    fts_query,
};

/// `obby-sync search`.
pub(super) fn search(
    db_path: &Path,
    words: &[String],
    all_versions: bool,
    prefix: bool,
    limit: usize,
    json: bool,
) -> Result<ExitCode> {
    let query = words.join(" ");
    // The query is checked before the database is opened: a wordless query
    // is the user's mistake whatever the database holds.
    fts_query(&query, prefix)?;
    if limit == 0 || limit > MAX_LIMIT {
        bail!("--limit must be between 1 and {}", MAX_LIMIT);
    }
    let db = Database::open_read_only(db_path)?;
    let building = db.search_progress()?.filter(|p| !p.complete());
    let history = db.into_history(Path::new(""));
    let opts = SearchOptions {
        all_versions,
        prefix,
        limit,
    };
    let hits = match history.search(&query, &opts) {
        Ok(hits) => hits,
        Err(SearchError::Db(e)) => {
            return Err(e).with_context(|| format!("searching {}", db_path.display()));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(p) = building {
        eprintln!(
            "obby-sync: the search index holds {} of {} versions so far (`obby-sync run` or `scan` builds the rest)",
            p.indexed,
            p.indexed + p.pending
        );
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        eprintln!("no match for {query:?}");
        return Ok(ExitCode::SUCCESS);
    }
    let (open, close) = if std::io::stdout().is_terminal() {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    for hit in hits {
        outln!(
            "{}  version {}  {}  rank {:.3}",
            hit.file_path,
            hit.version_id,
            hit.timestamp.as_deref().unwrap_or("-"),
            hit.rank
        );
        let text = unescape(&hit.highlighted)
            .replace("<mark>", open)
            .replace("</mark>", close);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            outln!("    {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A snippet's HTML escapes back to text (for a terminal).
fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Parses a `--since` / `--until` value: a date (`2026-11-30`: local
/// midnight for `--since`, the day's last second for `--until`), a local
/// date and time (`2026-11-30 14:00[:00]`), an age (`90m`, `36h`, `7d`,
/// `2w`) or unix seconds (`@1764500000`).
fn parse_time(value: &str, flag: &str) -> Result<i64> {
    let v = value.trim();
    if let Some(secs) = v.strip_prefix('@') {
        return secs
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .with_context(|| format!("{flag} {value:?}: @ must be followed by unix seconds"));
    }
    let age = v
        .char_indices()
        .last()
        .filter(|(_, unit)| matches!(unit, 'm' | 'h' | 'd' | 'w'))
        .and_then(|(i, unit)| Some((v[..i].parse::<i64>().ok()?, unit)));
    if let Some((n, unit)) = age {
        let secs = match unit {
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => 604_800,
        };
        return Ok(Local::now().timestamp() - n.saturating_mul(secs));
    }
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
    .or_else(|| {
        // A date alone: its whole day, from its first second for
        // `--since`, through its last for `--until` (which is included).
        let day = NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
        if flag == "--until" {
            day.and_hms_opt(23, 59, 59)
        } else {
            day.and_hms_opt(0, 0, 0)
        }
    });
    let Some(naive) = naive else {
        bail!(
            "{flag} {value:?} is not a time: give a date (2026-11-30), a local date and time \
             (\"2026-11-30 14:00\"), an age (90m, 36h, 7d, 2w) or unix seconds (@1764500000)"
        );
    };
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp())
        .with_context(|| format!("{flag} {value:?} does not exist in local time"))
}

#[derive(serde::Serialize)]
struct Stats {
    since: Option<i64>,
    until: Option<i64>,
    activity: Activity,
    analysis: TimeAnalysis,
}

/// `obby-sync stats`.
pub(super) fn stats(
    db_path: &Path,
    root: &Path,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let since = since.map(|s| parse_time(s, "--since")).transpose()?;
    let until = until.map(|s| parse_time(s, "--until")).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && u < s
    {
        bail!("--until is before --since");
    }
    // 0 leaves a side of a Period open: `--until @0` is the epoch's first
    // second instead, before any change.
    let period = Period::new(since.unwrap_or(0), until.map_or(0, |u| u.max(1)))?;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let history = Database::open_read_only(db_path)?.into_history(&root);
    let stats = Stats {
        since,
        until,
        activity: history.activity(&period)?,
        analysis: history.time_analysis(&period)?,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    let when = |t: Option<i64>, open: &str| {
        t.and_then(|t| Local.timestamp_opt(t, 0).single())
            .map_or_else(
                || open.to_owned(),
                |t| t.format("%Y-%m-%d %H:%M").to_string(),
            )
    };
    let a = &stats.activity;
    let t = &stats.analysis;
    let from = |s: Source, semantic: &str, notes: &str| match s {
        Source::Semantic => semantic.to_owned(),
        Source::Notes => notes.to_owned(),
    };
    outln!(
        "period        {} to {}",
        when(since, "the beginning"),
        when(until, "now")
    );
    outln!(
        "changes       {} in {} files ({:.1} per file)",
        a.total_changes,
        a.files_changed,
        a.avg_changes_per_file
    );
    outln!("lines         +{} -{}", a.lines_added, a.lines_removed);
    outln!(
        "top topics    {} ({})",
        list(&t.top_topics),
        from(t.topics_from, "the backend's topics", "folders")
    );
    outln!(
        "top keywords  {} ({})",
        list(&t.top_keywords),
        from(
            t.keywords_from,
            "the backend's keywords",
            "words added, rarest first"
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_documented_form_and_bad_ones_say_what_is_accepted() {
        assert_eq!(
            parse_time("@1764500000", "--since").ok(),
            Some(1_764_500_000)
        );
        let now = Local::now().timestamp();
        let week = parse_time("1w", "--since").expect("age");
        assert!((now - 604_800 - week).abs() <= 2);
        let day = parse_time("2026-11-30", "--since").expect("date");
        assert_eq!(
            parse_time("2026-11-30 00:00", "--since").expect("date and time"),
            day
        );
        // A date alone is its whole day: `--until` its last second.
        assert_eq!(
            parse_time("2026-11-30", "--until").expect("date"),
            parse_time("2026-11-30 23:59:59", "--until").expect("date and time")
        );
        let err = parse_time("last tuesday", "--since").expect_err("not a time");
        assert!(err.to_string().contains("an age (90m"), "{err}");
        assert!(parse_time("@-5", "--since").is_err());
    }
}
