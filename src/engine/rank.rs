//! `obby_bm25`: FTS5's bm25 scored with statistics the caller gives, so
//! two indexes that split one set of documents between them rank it as
//! one index would.
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
//! This is the only module with `unsafe` code: FTS5's extension API is C
//! (rusqlite does not wrap it). Each block says why it is sound.
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
        let rc = create(api, NAME.as_ptr(), ptr::null_mut(), Some(obby_bm25), None);
        if rc != ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
        }
    }
    Ok(())
}

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
