//! FTS5 auxiliary functions of our own: `obby_bm25`, FTS5's bm25 scored
//! with statistics the caller gives, so two indexes that split one set of
//! documents between them rank it as one index would; and `obby_snippet`,
//! a snippet in time linear in the row's matches.
//!
//! Every-version search reads both search indexes (`search.rs`): the
//! recent one and the history one. FTS5's own `bm25()` takes the number of
//! documents, their average length and each phrase's document frequency
//! from the index it runs on, so the same text would score differently in
//! each (in a small history index a word in most of its rows scores next to
//! nothing). [`register`] adds `obby_bm25(table, avgdl, w_path, w_content,
//! idf_0, …, idf_n-1)` to a connection: FTS5's bm25 formula (k1 = 1.2,
//! b = 0.75, the same phrase frequencies weighted by column and the row's
//! length in tokens) with the average row length and one IDF per phrase
//! of the query passed in. [`Corpus`] reads an index's document and token
//! counts and [`idf`] is FTS5's IDF, so the caller computes the statistics
//! of both indexes together and both return exactly the scores one index
//! of every version would.
//!
//! FTS5's `snippet()` scores every candidate window against every match
//! of the row: a note that repeats a searched word 40,000 times took 10 s,
//! one of 5 MB never ended. [`register`] also adds
//! `obby_inst_count(table)` (the row's matches) and `obby_snippet(table,
//! open, close, ellipsis, tokens)`, which picks the window with the most
//! distinct phrases, then the most matches, in one pass over the matches
//! sorted by offset, centres it on them as FTS5 does, and tokenizes the
//! column only up to the window's end. The search module uses FTS5's own
//! snippet for a row of few matches (the same text as before) and this
//! one above [`SNIPPET_FTS5_MAX_INST`].
//!
//! This module and `memory.rs` are the only ones with `unsafe` code:
//! FTS5's extension API is C (rusqlite does not wrap it). Each block says
//! why it is sound.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::ptr;

use rusqlite::{Connection, ffi};

/// The function's name, as FTS5 is given it.
const NAME: &std::ffi::CStr = c"obby_bm25";
/// The function's name in SQL.
pub const FUNCTION: &str = match NAME.to_str() {
    Ok(name) => name,
    Err(_) => panic!("the name is ASCII"),
};
/// `obby_snippet`'s name (SQL and FTS5 alike).
const SNIPPET_NAME: &std::ffi::CStr = c"obby_snippet";
/// `obby_snippet` in SQL.
pub const SNIPPET_FUNCTION: &str = match SNIPPET_NAME.to_str() {
    Ok(name) => name,
    Err(_) => panic!("the name is ASCII"),
};
/// `obby_inst_count`'s name.
const INST_COUNT_NAME: &std::ffi::CStr = c"obby_inst_count";
/// `obby_inst_count` in SQL.
pub const INST_COUNT_FUNCTION: &str = match INST_COUNT_NAME.to_str() {
    Ok(name) => name,
    Err(_) => panic!("the name is ASCII"),
};
/// Most matches in a row for which FTS5's own `snippet()` is used: its
/// work grows with their square (256² window scores of 256 matches each is
/// well under a millisecond).
pub const SNIPPET_FTS5_MAX_INST: usize = 256;

/// Most phrases a query may have (the search module allows 32): the
/// per-row frequencies live on the stack, not in a fresh allocation for
/// each of the up to ~100,000 rows a common word matches.
pub const MAX_PHRASES: usize = 64;

/// bm25's term-frequency saturation, as FTS5's.
const K1: f64 = 1.2;
/// bm25's length normalisation, as FTS5's.
const B: f64 = 0.75;
/// Arguments before the IDFs: the average row length and the two column
/// weights (path, content).
const FIXED_ARGS: usize = 3;

/// What an index holds, for bm25's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corpus {
    /// Rows (documents).
    pub rows: i64,
    /// Tokens in all columns of all rows.
    pub tokens: i64,
}

impl Corpus {
    /// Reads the counts FTS5 keeps for bm25 in `table`: its averages
    /// record (`{table}_data` row 1: the row count, then each column's
    /// token total, as SQLite varints), which every insert and delete
    /// updates in its own transaction. An index never written has none:
    /// zeros.
    ///
    /// # Errors
    /// Any SQLite error.
    pub fn of(conn: &Connection, table: &str) -> rusqlite::Result<Corpus> {
        let block: Option<Vec<u8>> = conn
            .prepare_cached(&format!("SELECT block FROM {table}_data WHERE id = 1"))?
            .query_row([], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let Some(block) = block else {
            return Ok(Corpus::default());
        };
        let mut at = 0;
        let rows = varint(&block, &mut at);
        let mut tokens = 0_i64;
        while at < block.len() {
            tokens = tokens.saturating_add(varint(&block, &mut at));
        }
        Ok(Corpus { rows, tokens })
    }

    /// Both together.
    pub fn plus(self, other: Corpus) -> Corpus {
        Corpus {
            rows: self.rows + other.rows,
            tokens: self.tokens + other.tokens,
        }
    }

    /// Average row length in tokens (1 for an empty corpus, which no
    /// query matches anyway).
    pub fn avgdl(self) -> f64 {
        if self.rows > 0 {
            self.tokens as f64 / self.rows as f64
        } else {
            1.0
        }
    }
}

/// A SQLite varint (1 to 9 bytes, big-endian groups of 7 bits, the ninth
/// byte whole) at `*at`, which moves past it; a truncated one reads what
/// is there.
fn varint(buf: &[u8], at: &mut usize) -> i64 {
    let mut value: u64 = 0;
    for i in 0..9 {
        let Some(&byte) = buf.get(*at) else {
            break;
        };
        *at += 1;
        if i == 8 {
            value = (value << 8) | u64::from(byte);
            break;
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            break;
        }
    }
    value as i64
}

/// FTS5's IDF of a phrase found in `hits` of `rows` documents (never
/// below 1e-6, as FTS5's: a phrase in over half of them weighs almost
/// nothing).
pub fn idf(rows: i64, hits: i64) -> f64 {
    let idf = ((rows - hits) as f64 + 0.5).ln() - (hits as f64 + 0.5).ln();
    if idf <= 0.0 { 1e-6 } else { idf }
}

/// Adds [`FUNCTION`] to the connection's FTS5, once.
///
/// # Errors
/// Any SQLite error (FTS5 missing among them).
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    // FTS5 declares each auxiliary function as an SQL function too.
    let known: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM pragma_function_list WHERE name = ?1)")?
        .query_row([FUNCTION], |r| r.get(0))?;
    if known {
        return Ok(());
    }
    let mut api: *mut ffi::fts5_api = ptr::null_mut();
    // SAFETY: `conn.handle()` is this open connection's handle, used on
    // this thread only while `conn` is borrowed. The statement is
    // finalized on every path. `sqlite3_bind_pointer` with the type
    // "fts5_api_ptr" is FTS5's documented way to get its API: `SELECT
    // fts5(?1)` writes the `fts5_api` pointer into `api`, which lives
    // until the end of this function; the API object lives as long as the
    // connection. xCreateFunction copies the name; the function pointer
    // is a `'static` fn; there is no user data to free.
    unsafe {
        let db = conn.handle();
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        let sql = c"SELECT fts5(?1)";
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, ptr::null_mut());
        if rc != ffi::SQLITE_OK {
            ffi::sqlite3_finalize(stmt);
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
        }
        ffi::sqlite3_bind_pointer(
            stmt,
            1,
            (&raw mut api).cast::<c_void>(),
            c"fts5_api_ptr".as_ptr(),
            None,
        );
        ffi::sqlite3_step(stmt);
        let rc = ffi::sqlite3_finalize(stmt);
        if rc != ffi::SQLITE_OK || api.is_null() {
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(if rc == ffi::SQLITE_OK {
                    ffi::SQLITE_ERROR
                } else {
                    rc
                }),
                Some("FTS5 is not available".into()),
            ));
        }
        let Some(create) = (*api).xCreateFunction else {
            return Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some("FTS5 has no xCreateFunction".into()),
            ));
        };
        for (name, function) in [
            (NAME, obby_bm25 as AuxFunction),
            (SNIPPET_NAME, obby_snippet),
            (INST_COUNT_NAME, obby_inst_count),
        ] {
            let rc = create(api, name.as_ptr(), ptr::null_mut(), Some(function), None);
            if rc != ffi::SQLITE_OK {
                return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
            }
        }
    }
    Ok(())
}

/// An FTS5 auxiliary function's C signature.
type AuxFunction = unsafe extern "C" fn(
    *const ffi::Fts5ExtensionApi,
    *mut ffi::Fts5Context,
    *mut ffi::sqlite3_context,
    c_int,
    *mut *mut ffi::sqlite3_value,
);

/// The auxiliary function: `obby_bm25(table, avgdl, w_path, w_content,
/// idf_0, …)`, FTS5's `fts5Bm25Function` with the statistics read from
/// its arguments instead of the index.
///
/// # Safety
/// Called by FTS5 only, with pointers valid for the call, `vals` holding
/// `n_val` values.
unsafe extern "C" fn obby_bm25(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    ctx: *mut ffi::sqlite3_context,
    n_val: c_int,
    vals: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: FTS5 passes its API table, the query's context and the
    // trailing SQL arguments, all valid for this call (the extension API's
    // contract); `vals` has `n_val` entries and each is read below that
    // bound only. No pointer is kept past the call.
    unsafe {
        match score(&*api, fts, n_val, vals) {
            Ok(s) => ffi::sqlite3_result_double(ctx, s),
            Err(rc) => ffi::sqlite3_result_error_code(ctx, rc),
        }
    }
}

/// The score of the current row (negated, as FTS5's: smaller is better).
///
/// # Safety
/// As [`obby_bm25`]'s.
unsafe fn score(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    n_val: c_int,
    vals: *mut *mut ffi::sqlite3_value,
) -> Result<f64, c_int> {
    let (Some(phrase_count), Some(inst_count), Some(inst), Some(column_size)) =
        (api.xPhraseCount, api.xInstCount, api.xInst, api.xColumnSize)
    else {
        return Err(ffi::SQLITE_ERROR);
    };
    let args = usize::try_from(n_val).map_err(|_| ffi::SQLITE_ERROR)?;
    // SAFETY: as the caller's: every call below uses FTS5's own context,
    // and `vals` is read at indexes below `args`.
    unsafe {
        let phrases = usize::try_from(phrase_count(fts)).map_err(|_| ffi::SQLITE_ERROR)?;
        if args < FIXED_ARGS + phrases || phrases > MAX_PHRASES {
            // A caller that passed too few IDFs, or a query longer than
            // the search module allows: a bug, said as an error.
            return Err(ffi::SQLITE_MISUSE);
        }
        let arg = |i: usize| ffi::sqlite3_value_double(*vals.add(i));
        let avgdl = arg(0);
        let weights = [arg(1), arg(2)];
        let mut all = [0.0_f64; MAX_PHRASES];
        let freq = &mut all[..phrases];
        let mut n_inst: c_int = 0;
        check(inst_count(fts, &mut n_inst))?;
        for i in 0..n_inst {
            let (mut phrase, mut column, mut offset): (c_int, c_int, c_int) = (0, 0, 0);
            check(inst(fts, i, &mut phrase, &mut column, &mut offset))?;
            let w = usize::try_from(column)
                .ok()
                .and_then(|c| weights.get(c))
                .copied()
                .unwrap_or(1.0);
            if let Some(f) = usize::try_from(phrase).ok().and_then(|p| freq.get_mut(p)) {
                *f += w;
            }
        }
        let mut tokens: c_int = 0;
        check(column_size(fts, -1, &mut tokens))?;
        let d = f64::from(tokens);
        let mut total = 0.0;
        for (p, f) in freq.iter().enumerate() {
            let idf = arg(FIXED_ARGS + p);
            total += idf * (f * (K1 + 1.0)) / (f + K1 * (1.0 - B + B * d / avgdl));
        }
        Ok(-total)
    }
}

/// `obby_inst_count(table)`: the current row's matches (phrase
/// instances), FTS5's `xInstCount`.
///
/// # Safety
/// As [`obby_bm25`]'s.
unsafe extern "C" fn obby_inst_count(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    ctx: *mut ffi::sqlite3_context,
    _n_val: c_int,
    _vals: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: as in `obby_bm25`: FTS5's API table and context, valid for
    // this call.
    unsafe {
        let mut n: c_int = 0;
        match (*api).xInstCount.map(|f| f(fts, &mut n)) {
            Some(ffi::SQLITE_OK) => ffi::sqlite3_result_int(ctx, n),
            Some(rc) => ffi::sqlite3_result_error_code(ctx, rc),
            None => ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_ERROR),
        }
    }
}

/// `obby_snippet(table, open, close, ellipsis, tokens)`: a snippet of at
/// most `tokens` tokens of the column whose best window holds the most
/// distinct phrases (then the most matches), matches wrapped in `open`
/// and `close`, `ellipsis` where the text goes on; the text before the
/// first token and after the last is kept when the window reaches the
/// column's start or end, as FTS5's `snippet()` does.
///
/// # Safety
/// As [`obby_bm25`]'s.
unsafe extern "C" fn obby_snippet(
    api: *const ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    ctx: *mut ffi::sqlite3_context,
    n_val: c_int,
    vals: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: as in `obby_bm25`; `vals` is read below `n_val` only, and
    // the text values are copied before any other SQLite call.
    unsafe {
        if n_val < 4 {
            ffi::sqlite3_result_error_code(ctx, ffi::SQLITE_MISUSE);
            return;
        }
        let text = |i: usize| -> String {
            let v = *vals.add(i);
            let p = ffi::sqlite3_value_text(v);
            let n = usize::try_from(ffi::sqlite3_value_bytes(v)).unwrap_or(0);
            if p.is_null() {
                String::new()
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(p, n)).into_owned()
            }
        };
        let marks = Marks {
            open: text(0),
            close: text(1),
            ellipsis: text(2),
        };
        let tokens = usize::try_from(ffi::sqlite3_value_int(*vals.add(3)))
            .unwrap_or(1)
            .max(1);
        match snippet(&*api, fts, &marks, tokens) {
            Ok(out) => {
                let bytes = out.into_bytes();
                // SQLITE_TRANSIENT: SQLite copies the text before returning.
                ffi::sqlite3_result_text(
                    ctx,
                    bytes.as_ptr().cast(),
                    c_int::try_from(bytes.len()).unwrap_or(c_int::MAX),
                    ffi::SQLITE_TRANSIENT(),
                );
            }
            Err(rc) => ffi::sqlite3_result_error_code(ctx, rc),
        }
    }
}

/// What a snippet wraps matches in and marks cut text with.
struct Marks {
    open: String,
    close: String,
    ellipsis: String,
}

/// The best window of `width` tokens over `matches` (offset, phrase, its
/// length in tokens), sorted by offset: (distinct phrases, matches, the
/// first and last token matched). One pass, two pointers.
fn best_window(matches: &[(usize, usize, usize)], width: usize) -> (usize, usize, usize, usize) {
    let mut seen: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut best = (0, 0, 0, 0);
    let mut right = 0;
    for left in 0..matches.len() {
        let start = matches[left].0;
        while right < matches.len() && matches[right].0 + matches[right].2 <= start + width {
            *seen.entry(matches[right].1).or_default() += 1;
            right += 1;
        }
        if right > left {
            let last = &matches[right - 1];
            let candidate = (seen.len(), right - left, start, last.0 + last.2 - 1);
            if (candidate.0, candidate.1) > (best.0, best.1) {
                best = candidate;
            }
            if let Some(n) = seen.get_mut(&matches[left].1) {
                *n -= 1;
                if *n == 0 {
                    seen.remove(&matches[left].1);
                }
            }
        } else {
            right = left + 1;
        }
    }
    best
}

/// Where a window of `width` tokens starts to hold tokens `first..=last`
/// centred, within a column of `size` tokens (FTS5's adjustment).
fn centred(first: usize, last: usize, width: usize, size: usize) -> usize {
    let spare = width.saturating_sub(last + 1 - first);
    let start = first.saturating_sub(spare / 2);
    start.min(size.saturating_sub(width))
}

/// The byte ranges of a column's tokens `start..end`, collected by the
/// tokenizer's callback, which stops at `end`.
struct Collect {
    start: usize,
    end: usize,
    seen: usize,
    spans: Vec<(usize, usize)>,
}

/// The tokenizer's callback for [`Collect`].
///
/// # Safety
/// `ctx` is the `Collect` passed to `xTokenize`, alive for its call.
unsafe extern "C" fn collect_token(
    ctx: *mut c_void,
    flags: c_int,
    _token: *const std::ffi::c_char,
    _n_token: c_int,
    start: c_int,
    end: c_int,
) -> c_int {
    // SAFETY: `ctx` is the `&mut Collect` given to xTokenize below, which
    // calls back on this thread during that call only.
    let c = unsafe { &mut *ctx.cast::<Collect>() };
    if flags & ffi::FTS5_TOKEN_COLOCATED != 0 {
        return ffi::SQLITE_OK;
    }
    if c.seen >= c.end {
        return ffi::SQLITE_DONE;
    }
    if c.seen >= c.start {
        c.spans.push((
            usize::try_from(start).unwrap_or(0),
            usize::try_from(end).unwrap_or(0),
        ));
    }
    c.seen += 1;
    ffi::SQLITE_OK
}

/// The snippet of the current row (see [`obby_snippet`]).
///
/// # Safety
/// As [`obby_bm25`]'s.
unsafe fn snippet(
    api: &ffi::Fts5ExtensionApi,
    fts: *mut ffi::Fts5Context,
    marks: &Marks,
    width: usize,
) -> Result<String, c_int> {
    let (
        Some(column_count),
        Some(inst_count),
        Some(inst),
        Some(phrase_size),
        Some(column_size),
        Some(column_text),
        Some(tokenize),
    ) = (
        api.xColumnCount,
        api.xInstCount,
        api.xInst,
        api.xPhraseSize,
        api.xColumnSize,
        api.xColumnText,
        api.xTokenize,
    )
    else {
        return Err(ffi::SQLITE_ERROR);
    };
    // SAFETY: every call uses FTS5's own context for this row; the column
    // text pointer is valid until the next call on the context, and is
    // copied (as spans into it are read) before xTokenize, which FTS5
    // documents as leaving it valid.
    unsafe {
        let columns = usize::try_from(column_count(fts)).unwrap_or(0);
        let mut n_inst: c_int = 0;
        check(inst_count(fts, &mut n_inst))?;
        let mut per_column: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); columns];
        for i in 0..n_inst {
            let (mut phrase, mut column, mut offset): (c_int, c_int, c_int) = (0, 0, 0);
            check(inst(fts, i, &mut phrase, &mut column, &mut offset))?;
            let size = usize::try_from(phrase_size(fts, phrase))
                .unwrap_or(1)
                .max(1);
            if let (Some(list), Ok(phrase), Ok(offset)) = (
                usize::try_from(column)
                    .ok()
                    .and_then(|c| per_column.get_mut(c)),
                usize::try_from(phrase),
                usize::try_from(offset),
            ) {
                list.push((offset, phrase, size));
            }
        }
        // The best column's best window; the last column (the text) when
        // nothing matched.
        let mut best: Option<(usize, (usize, usize, usize, usize))> = None;
        for (column, list) in per_column.iter_mut().enumerate() {
            list.sort_unstable();
            let window = best_window(list, width);
            if window.1 > 0 && best.is_none_or(|(_, b)| (window.0, window.1) > (b.0, b.1)) {
                best = Some((column, window));
            }
        }
        let (column, first, last) = match best {
            Some((column, (_, _, first, last))) => (column, first, last),
            None => (columns.saturating_sub(1), 0, 0),
        };
        let mut size: c_int = 0;
        check(column_size(
            fts,
            c_int::try_from(column).unwrap_or(0),
            &mut size,
        ))?;
        let size = usize::try_from(size).unwrap_or(0);
        let start = centred(first, last, width, size);
        let end = (start + width).min(size);
        let mut ptr_text: *const std::ffi::c_char = ptr::null();
        let mut n_text: c_int = 0;
        check(column_text(
            fts,
            c_int::try_from(column).unwrap_or(0),
            &mut ptr_text,
            &mut n_text,
        ))?;
        if ptr_text.is_null() {
            return Ok(String::new());
        }
        let bytes =
            std::slice::from_raw_parts(ptr_text.cast::<u8>(), usize::try_from(n_text).unwrap_or(0));
        let mut collect = Collect {
            start,
            end,
            seen: 0,
            spans: Vec::with_capacity(end - start),
        };
        let rc = tokenize(
            fts,
            ptr_text,
            n_text,
            (&raw mut collect).cast::<c_void>(),
            Some(collect_token),
        );
        if rc != ffi::SQLITE_OK && rc != ffi::SQLITE_DONE {
            return Err(rc);
        }
        let matches = per_column.get(column).map_or(&[][..], Vec::as_slice);
        Ok(render(bytes, &collect.spans, start, size, matches, marks))
    }
}

/// The snippet's text: the column's tokens from `start` on, whose byte
/// ranges `window` holds, matches within them marked.
fn render(
    text: &[u8],
    window: &[(usize, usize)],
    start: usize,
    size: usize,
    matches: &[(usize, usize, usize)],
    marks: &Marks,
) -> String {
    let (Some(&(from, _)), Some(&(_, to))) = (window.first(), window.last()) else {
        return String::new();
    };
    let end = start + window.len();
    // Marked token ranges, clipped to the window.
    let mut marked: Vec<(usize, usize)> = matches
        .iter()
        .map(|&(offset, _, len)| (offset.max(start), (offset + len).min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    marked.sort_unstable();
    let mut out = String::new();
    let from = if start == 0 { 0 } else { from };
    if start > 0 {
        out.push_str(&marks.ellipsis);
    }
    let mut at = from;
    let piece =
        |a: usize, b: usize| String::from_utf8_lossy(text.get(a..b).unwrap_or(&[])).into_owned();
    let mut next = marked.into_iter().peekable();
    while let Some((a, mut b)) = next.next() {
        // Overlapping matches make one mark (adjacent ones two, as FTS5's).
        while let Some(&(c, d)) = next.peek() {
            if c >= b {
                break;
            }
            b = b.max(d);
            next.next();
        }
        let (Some(&(open_at, _)), Some(&(_, close_at))) =
            (window.get(a - start), window.get(b - 1 - start))
        else {
            continue;
        };
        if open_at < at {
            continue;
        }
        out.push_str(&piece(at, open_at));
        out.push_str(&marks.open);
        out.push_str(&piece(open_at, close_at));
        out.push_str(&marks.close);
        at = close_at;
    }
    if end >= size {
        out.push_str(&piece(at, text.len()));
    } else {
        out.push_str(&piece(at, to));
        out.push_str(&marks.ellipsis);
    }
    out
}

fn check(rc: c_int) -> Result<(), c_int> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    #[test]
    fn varints_read_as_sqlite_writes_them() {
        for (bytes, want) in [
            (&[0x00][..], 0_i64),
            (&[0x7f], 127),
            (&[0x81, 0x00], 128),
            (&[0x82, 0x80, 0x01], 32_769),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], -1),
        ] {
            let mut at = 0;
            assert_eq!(varint(bytes, &mut at), want, "{bytes:?}");
            assert_eq!(at, bytes.len());
        }
    }

    /// `obby_snippet` picks the window FTS5's `snippet()` picks (the most
    /// distinct phrases, centred on them) and writes it the same way, for
    /// rows of a few matches; and a row of 100,000 matches, which FTS5's
    /// takes minutes over, gets the same kind of snippet.
    #[test]
    fn obby_snippet_writes_what_fts5s_snippet_writes() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE t USING fts5(file_path, content, tokenize = 'unicode61 remove_diacritics 2');",
        )
        .expect("fts5");
        let filler = |n: usize| vec!["lorem"; n].join(" ");
        let texts = [
            (
                "notes/a.md",
                "# Meeting\nBudget approved by the finance team.\n".to_owned(),
            ),
            (
                "notes/b.md",
                format!(
                    "{} the budget plan, {} and the plan again.",
                    filler(40),
                    filler(40)
                ),
            ),
            ("notes/garden.md", "nothing about it here".to_owned()),
            (
                "notes/c.md",
                format!("{} budget {} plan {}", filler(30), filler(3), filler(30)),
            ),
        ];
        for (p, c) in &texts {
            conn.execute(
                "INSERT INTO t (file_path, content) VALUES (?1, ?2)",
                params![p, c],
            )
            .expect("insert");
        }
        register(&conn).expect("register");
        for expr in [
            "budget",
            "budget plan",
            "\"budget plan\"",
            "garden",
            "plan again",
        ] {
            let rows: Vec<(i64, String, String)> = conn
                .prepare(
                    "SELECT rowid, snippet(t, -1, '[', ']', '…', 12),
                            obby_snippet(t, '[', ']', '…', 12)
                     FROM t WHERE t MATCH ?1",
                )
                .expect("prepare")
                .query_map([expr], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert!(!rows.is_empty(), "{expr}");
            for (id, theirs, ours) in rows {
                assert_eq!(ours, theirs, "{expr}, row {id}");
            }
        }
        let many = format!("{} budget", "word ".repeat(100_000));
        conn.execute(
            "INSERT INTO t (rowid, file_path, content) VALUES (99, 'notes/many.md', ?1)",
            [&many],
        )
        .expect("insert");
        let (count, snippet): (i64, String) = conn
            .query_row(
                "SELECT obby_inst_count(t), obby_snippet(t, '[', ']', '…', 6) FROM t
                 WHERE t MATCH 'word' AND rowid = 99",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("snippet");
        assert_eq!(count, 100_000);
        assert_eq!(snippet, "[word] [word] [word] [word] [word] [word]…");
        let both: String = conn
            .query_row(
                "SELECT obby_snippet(t, '[', ']', '…', 6) FROM t
                 WHERE t MATCH 'word budget' AND rowid = 99",
                [],
                |r| r.get(0),
            )
            .expect("snippet");
        // The text has two spaces before `budget`.
        assert_eq!(both, "…[word] [word] [word] [word] [word]  [budget]");
    }

    /// Over one index, with that index's own statistics, `obby_bm25`
    /// returns what FTS5's `bm25` returns, for words, phrases and
    /// prefixes.
    #[test]
    fn with_an_indexs_own_statistics_it_is_fts5s_bm25() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE VIRTUAL TABLE t USING fts5(file_path, content, tokenize = 'unicode61 remove_diacritics 2');",
        )
        .expect("fts5");
        let texts = [
            ("notes/a.md", "the budget plan for the budget year"),
            ("notes/b.md", "a meeting about the plan"),
            ("notes/budget.md", "nothing here but words"),
            (
                "notes/c.md",
                "Budget review, budget approved, budgeting done",
            ),
            ("notes/d.md", "unrelated text entirely"),
        ];
        for (p, c) in texts {
            conn.execute("INSERT INTO t (file_path, content) VALUES (?1, ?2)", [p, c])
                .expect("insert");
        }
        register(&conn).expect("register");
        register(&conn).expect("registering twice is harmless");
        let corpus = Corpus::of(&conn, "t").expect("corpus");
        assert_eq!(corpus.rows, 5);
        for terms in [
            &["\"budget\""][..],
            &["\"budget\"", "\"plan\""],
            &["\"budget plan\""],
            &["\"budg\"*"],
            &["\"the\"", "\"notes\""],
        ] {
            let expr = terms.join(" ");
            let idfs: Vec<String> = terms
                .iter()
                .map(|t| {
                    let hits: i64 = conn
                        .query_row("SELECT COUNT(*) FROM t WHERE t MATCH ?1", [t], |r| r.get(0))
                        .expect("count");
                    format!("{:?}", idf(corpus.rows, hits))
                })
                .collect();
            let sql = format!(
                "SELECT rowid, bm25(t, 2.0, 1.0), obby_bm25(t, {:?}, 2.0, 1.0, {}) FROM t WHERE t MATCH ?1",
                corpus.avgdl(),
                idfs.join(", ")
            );
            let rows: Vec<(i64, f64, f64)> = conn
                .prepare(&sql)
                .expect("prepare")
                .query_map([&expr], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows");
            assert!(!rows.is_empty(), "{expr} matches");
            for (id, theirs, ours) in rows {
                assert!(
                    (theirs - ours).abs() <= 1e-12 * theirs.abs().max(1.0),
                    "{expr}, row {id}: bm25 {theirs}, obby_bm25 {ours}"
                );
            }
        }
        let err = conn
            .query_row(
                "SELECT obby_bm25(t, 1.0, 2.0, 1.0) FROM t WHERE t MATCH 'budget'",
                [],
                |r| r.get::<_, f64>(0),
            )
            .expect_err("too few IDFs");
        assert!(
            err.to_string().contains("misuse") || err.to_string().contains("bad parameter"),
            "{err}"
        );
    }
}
