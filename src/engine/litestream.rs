//! Noticing Litestream beside the engine, to say so in the log.
//!
//! Input: the database path and the engine's [`CheckpointMode`]. Output: log
//! lines only; nothing here changes what the engine does, reads or writes
//! beyond one query of `sqlite_master`.
//!
//! Two signs, the first reliable, the second only history: a process named
//! `litestream` holding the database file open (Linux: its `/proc/<pid>/fd`
//! links; other users' processes are not visible and are missed), and what
//! Litestream 0.5 leaves behind: the `.<name>-litestream` folder beside the
//! database and its `_litestream_seq` / `_litestream_lock` tables (they stay
//! after Litestream stops, and a restored copy has the tables too).
//! Litestream must see every WAL frame before it is checkpointed away, so
//! `auto` beside a running Litestream is warned about (`external` is what to
//! use), and `external` with no Litestream in sight is too (nothing
//! checkpoints then).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::db::CheckpointMode;

/// How often the engine looks for a Litestream process.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// The process name Litestream runs under.
const PROCESS_NAME: &str = "litestream";

/// What the engine last said about Litestream, so each change is logged once.
#[derive(Debug)]
pub struct Watch {
    db: PathBuf,
    mode: CheckpointMode,
    /// The Litestream process seen last time, if any.
    seen: Option<u32>,
    /// Whether the first look (which also reads the traces) happened.
    looked: bool,
}

impl Watch {
    /// A watch on `db` for an engine in `mode`.
    pub fn new(db: &Path, mode: CheckpointMode) -> Watch {
        Watch {
            db: db.to_path_buf(),
            mode,
            seen: None,
            looked: false,
        }
    }

    /// Looks once and logs what changed since the last look.
    pub fn look(&mut self, conn: &Connection) {
        let pid = process_with_open(&self.db);
        let first = !self.looked;
        self.looked = true;
        match (self.seen, pid) {
            (None, Some(pid)) => self.appeared(pid),
            (Some(old), None) => {
                tracing::info!(pid = old, "Litestream no longer has the database open");
                if self.mode == CheckpointMode::External {
                    tracing::warn!(
                        "--checkpoint external and no Litestream: nothing checkpoints the WAL \
                         until it is back (or obby-sync runs with --checkpoint auto)"
                    );
                }
            }
            (Some(old), Some(new)) if old != new => self.appeared(new),
            _ => {}
        }
        if first && pid.is_none() {
            let traces = traces(&self.db, conn);
            match self.mode {
                CheckpointMode::Auto if !traces.is_empty() => tracing::info!(
                    traces = %traces.join(", "),
                    "Litestream has replicated this database before; if it still does, run \
                     obby-sync with --checkpoint external so it sees every WAL frame"
                ),
                CheckpointMode::External => tracing::warn!(
                    "--checkpoint external and no Litestream process has the database open: \
                     nothing checkpoints the WAL, which grows until Litestream (or obby-sync \
                     with --checkpoint auto) does"
                ),
                _ => {}
            }
        }
        self.seen = pid;
    }

    fn appeared(&self, pid: u32) {
        match self.mode {
            CheckpointMode::Auto => tracing::warn!(
                pid,
                "Litestream is replicating this database while obby-sync checkpoints it \
                 (--checkpoint auto): a frame checkpointed before Litestream copied it forces a \
                 new snapshot; run obby-sync with --checkpoint external (or passive)"
            ),
            mode => tracing::info!(
                pid,
                checkpoint = %mode,
                "Litestream is replicating this database; checkpoints are left to it"
            ),
        }
    }
}

/// The pid of a process named `litestream` that holds `db` open, if one is
/// visible in `/proc`.
pub fn process_with_open(db: &Path) -> Option<u32> {
    let canonical = std::fs::canonicalize(db).ok();
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let is_litestream = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end() == PROCESS_NAME);
        if !is_litestream {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target == db || canonical.as_deref() == Some(&target))
        });
        if holds {
            return Some(pid);
        }
    }
    None
}

/// What Litestream left beside and inside the database, named.
fn traces(db: &Path, conn: &Connection) -> Vec<String> {
    let mut found = Vec::new();
    if let (Some(dir), Some(name)) = (db.parent(), db.file_name()) {
        let mut side = std::ffi::OsString::from(".");
        side.push(name);
        side.push("-litestream");
        let side = dir.join(side);
        if side.is_dir() {
            found.push(side.display().to_string());
        }
    }
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name IN ('_litestream_seq', '_litestream_lock') ORDER BY name",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap_or_default();
    found.extend(tables);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_nobody_has_open_has_no_litestream() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("obby.db");
        std::fs::write(&db, b"").expect("write");
        assert_eq!(process_with_open(&db), None);
    }

    #[test]
    fn the_side_folder_and_tables_are_traces() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("obby.db");
        let conn = Connection::open(&db).expect("open");
        assert!(traces(&db, &conn).is_empty());
        std::fs::create_dir(dir.path().join(".obby.db-litestream")).expect("mkdir");
        conn.execute_batch("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)")
            .expect("create");
        let found = traces(&db, &conn);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].ends_with(".obby.db-litestream"), "{found:?}");
        assert_eq!(found[1], "_litestream_seq");
    }
}
