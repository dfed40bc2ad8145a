//! Shared fixture: a temp vault with its own database, and helpers to run the
//! real binary and read rows back in a stable, redacted form.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_obby-sync")
}

/// Runs `obby-sync scan --json` on any root and database (tests that do
/// not use a [`Vault`]'s own database).
pub fn scan_into(root: &Path, db: &Path) -> Output {
    Command::new(bin())
        .args(["scan", "--json", "--root"])
        .arg(root)
        .arg("--db")
        .arg(db)
        .env("LOG_LEVEL", "error")
        .output()
        .expect("run obby-sync scan")
}

/// A temp folder holding a vault (`root`, with `.obbywatch` = `notes/`) and,
/// beside it, the database.
pub struct Vault {
    _dir: tempfile::TempDir,
    /// Canonical root of the vault.
    pub root: PathBuf,
    /// The database file (outside the root).
    pub db: PathBuf,
}

impl Vault {
    pub fn new() -> Vault {
        Self::with_watch("notes/\n")
    }

    pub fn with_watch(watch: &str) -> Vault {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("vault");
        std::fs::create_dir_all(root.join("notes")).expect("mkdir");
        std::fs::write(root.join(".obbywatch"), watch).expect("write .obbywatch");
        let root = std::fs::canonicalize(&root).expect("canonical root");
        let db = std::fs::canonicalize(dir.path())
            .expect("canonical dir")
            .join("obby.db");
        Vault {
            _dir: dir,
            root,
            db,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn abs(&self, rel: &str) -> String {
        self.path(rel).to_str().expect("utf-8 path").to_owned()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).expect("remove");
    }

    pub fn rename(&self, from: &str, to: &str) {
        let to = self.path(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::rename(self.path(from), to).expect("rename");
    }

    /// `obby-sync <args> --root <root> --db <db>`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--root")
            .arg(&self.root)
            .arg("--db")
            .arg(&self.db)
            .env_remove("DB_PATH")
            .env_remove("OBBY_TOKEN")
            .env("LOG_LEVEL", "warn");
        cmd
    }

    /// Runs `scan` with extra flags and returns its output (any exit code).
    pub fn scan_output(&self, extra: &[&str]) -> Output {
        let mut args = vec!["scan", "--json"];
        args.extend_from_slice(extra);
        self.command(&args).output().expect("run obby-sync")
    }

    /// Runs `scan` and requires success; returns the JSON summary.
    pub fn scan(&self, extra: &[&str]) -> serde_json::Value {
        let out = self.scan_output(extra);
        assert!(
            out.status.success(),
            "scan failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("scan --json prints JSON")
    }

    pub fn conn(&self) -> Connection {
        Connection::open(&self.db).expect("open db")
    }

    /// Every row the engine wrote, sorted and with volatile values redacted:
    /// the root becomes `<root>`, times disappear, and ids become references
    /// by (path, short hash), so 1 and N workers give the same text.
    pub fn dump(&self) -> String {
        let conn = self.conn();
        let root = self.root.to_str().expect("utf-8");
        let short = |s: Option<String>| s.map(|h| h[..8.min(h.len())].to_owned());
        let rel = |s: Option<String>| s.map(|p| p.replace(root, "<root>"));
        let mut out = String::new();
        let vref = |id: Option<i64>| -> String {
            id.map_or_else(
                || "-".to_owned(),
                |id| {
                    conn.query_row(
                        "SELECT file_path, content_hash FROM file_versions WHERE id = ?1",
                        [id],
                        |r| {
                            Ok(format!(
                                "{}@{}",
                                r.get::<_, String>(0)?,
                                &r.get::<_, String>(1)?[..8]
                            ))
                        },
                    )
                    .map(|s| s.replace(root, "<root>"))
                    .unwrap_or_else(|_| format!("missing#{id}"))
                },
            )
        };
        let mut section = |title: &str, mut rows: Vec<String>, sort: bool| {
            if sort {
                rows.sort();
            }
            out.push_str(&format!("[{title}]\n"));
            for r in rows {
                out.push_str(&r);
                out.push('\n');
            }
        };
        let versions = query(
            &conn,
            "SELECT file_path, content_hash, content, line_count, size, change_description FROM file_versions ORDER BY id",
            |r| {
                Ok(format!(
                    "{} {} lines={:?} size={:?} desc={:?} content={:?}",
                    rel(r.get(0)?).unwrap_or_default(),
                    short(r.get(1)?).unwrap_or_default(),
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    rel(r.get(5)?),
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        );
        section("file_versions (in id order)", versions, false);
        let diffs = query(
            &conn,
            "SELECT file_path, old_version_id, new_version_id, change_type, diff_content, lines_added, lines_removed FROM content_diffs ORDER BY id",
            |r| {
                Ok((
                    rel(r.get(0)?).unwrap_or_default(),
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    rel(r.get(4)?),
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        );
        let diffs = diffs
            .into_iter()
            .map(|(p, o, n, t, d, a, rm)| {
                format!(
                    "{p} {} {} -> {} +{} -{}\n{}",
                    t.unwrap_or_default(),
                    vref(o),
                    vref(n),
                    a.unwrap_or(-1),
                    rm.unwrap_or(-1),
                    d.unwrap_or_else(|| "<NULL>".into())
                )
            })
            .collect();
        section("content_diffs (in id order)", diffs, false);
        let changes = query(
            &conn,
            // content_hash is a change id (UNIQUE in the backend's schema):
            // shown as whether it is a SHA-256 no other change has.
            "SELECT file_path, change_type, old_content_hash, new_content_hash,
                    CASE WHEN length(content_hash) = 64 AND content_hash GLOB '[0-9a-f]*'
                          AND (SELECT COUNT(*) FROM file_changes o WHERE o.content_hash = fc.content_hash) = 1
                         THEN 'unique' ELSE content_hash END,
                    old_path
             FROM file_changes fc ORDER BY id",
            |r| {
                Ok(format!(
                    "{} {} old={:?} new={:?} id={} from={:?}",
                    rel(r.get(0)?).unwrap_or_default(),
                    r.get::<_, String>(1)?,
                    short(r.get(2)?),
                    short(r.get(3)?),
                    r.get::<_, Option<String>>(4)?.unwrap_or_else(|| "NULL".into()),
                    rel(r.get(5)?),
                ))
            },
        );
        section("file_changes (in id order)", changes, false);
        let states = query(
            &conn,
            "SELECT file_path, content_hash, line_count, file_size, is_deleted FROM file_states",
            |r| {
                Ok(format!(
                    "{} {:?} lines={:?} size={:?} deleted={:?}",
                    rel(r.get(0)?).unwrap_or_default(),
                    short(r.get(1)?),
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        );
        section("file_states (sorted)", states, true);
        let own = query(
            &conn,
            "SELECT path, content_hash, version_id, deleted FROM sync_files",
            |r| {
                Ok(format!(
                    "{} {:?} version={} deleted={}",
                    rel(r.get(0)?).unwrap_or_default(),
                    short(r.get(1)?),
                    vref(r.get(2)?),
                    r.get::<_, i64>(3)?,
                ))
            },
        );
        section("sync_files (sorted)", own, true);
        let events = query(
            &conn,
            "SELECT type, path, size, processed, old_path FROM events ORDER BY id",
            |r| {
                Ok(format!(
                    "{} {} size={:?} processed={:?} from={:?}",
                    r.get::<_, String>(0)?,
                    rel(r.get(1)?).unwrap_or_default(),
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    rel(r.get(4)?),
                ))
            },
        );
        section("events (in id order)", events, false);
        let queue = query(
            &conn,
            "SELECT status, COUNT(*) FROM event_queue GROUP BY status ORDER BY status",
            |r| {
                Ok(format!(
                    "{} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?
                ))
            },
        );
        section("event_queue", queue, false);
        out
    }

    /// One integer from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).expect(sql)
    }
}

/// Collects a query's rows.
pub fn query<T>(
    conn: &Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut stmt = conn.prepare(sql).expect(sql);
    stmt.query_map([], f)
        .expect(sql)
        .collect::<Result<_, _>>()
        .expect(sql)
}

/// True when GNU `patch` applies `diff` to `old` and gives exactly `new`.
pub fn patch_applies(old: &str, diff: &str, new: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let old_file = dir.path().join("old");
    let out_file = dir.path().join("out");
    let diff_file = dir.path().join("diff");
    std::fs::write(&old_file, old).map_err(|e| e.to_string())?;
    std::fs::write(&diff_file, diff).map_err(|e| e.to_string())?;
    if diff.is_empty() {
        return if old == new {
            Ok(())
        } else {
            Err("empty diff for different texts".into())
        };
    }
    let out = Command::new("patch")
        .args(["-s", "-f", "-o"])
        .arg(&out_file)
        .arg(&old_file)
        .arg(&diff_file)
        .output()
        .map_err(|e| format!("running patch: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "patch failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let got = std::fs::read(&out_file).map_err(|e| e.to_string())?;
    if got == new.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "patched text differs:\n{:?}\nwanted\n{:?}",
            String::from_utf8_lossy(&got),
            new
        ))
    }
}

/// Path of the database's lock file, for tests that need it.
#[allow(dead_code)]
pub fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_for(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A running `obby-sync run`; killed when dropped if not stopped.
pub struct Running {
    child: std::process::Child,
}

impl Vault {
    /// Starts `obby-sync run` with extra flags and waits until it watches
    /// and has reconciled.
    pub fn start(&self, extra: &[&str]) -> Running {
        self.start_with_env(extra, &[])
    }

    /// [`Vault::start`] with extra environment variables.
    pub fn start_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let before = self.meta("last_reconcile");
        if self.db.exists() {
            // Forget the previous run's api addresses: readiness waits for new ones.
            let _ = self
                .conn()
                .execute("DELETE FROM sync_meta WHERE key LIKE 'api_%_addr'", []);
        }
        // Ephemeral api ports, so tests run side by side.
        let mut args = vec!["run", "--watcher-port", "0", "--tracker-port", "0"];
        args.extend_from_slice(&["--sse-grpc-port", "0", "--sse-http-port", "0"]); // SSE hub (issue 12)
        args.extend(["--query-port", "0"]);
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn obby-sync run");
        let mut running = Running { child };
        let ready = wait_for(std::time::Duration::from_secs(20), || {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("obby-sync run exited early: {status}");
            }
            self.db.exists()
                && self.meta("watch_backend").is_some()
                && self.meta("last_reconcile") != before
                && (extra.contains(&"--no-api") || self.meta("api_tracker_addr").is_some())
        });
        assert!(ready, "obby-sync run did not become ready");
        running
    }

    /// A `sync_meta` value, if the database and the key exist.
    pub fn meta(&self, key: &str) -> Option<String> {
        let conn =
            Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        conn.query_row("SELECT value FROM sync_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .ok()
    }

    /// The api's `Sync` barrier on a running engine: returns once every
    /// change made before the call is committed (or held on purpose: paused,
    /// a VCS lock), with the cursor. The positive signal tests wait for
    /// instead of sleeping before they assert that nothing (more) happened.
    #[allow(dead_code)]
    pub fn barrier(&self) -> i64 {
        use obby_sync::api::proto::sync::SyncRequest;
        use obby_sync::api::proto::sync::sync_client::SyncClient;
        let url = format!(
            "http://{}",
            self.meta("api_tracker_addr").expect("api address recorded")
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut client = SyncClient::connect(url).await.expect("connect");
            client
                .sync(SyncRequest { timeout_ms: 30_000 })
                .await
                .expect("sync")
                .into_inner()
                .cursor
        })
    }

    /// `(change_type, path relative to the root, old path)` of every change.
    pub fn changes(&self) -> Vec<(String, String, Option<String>)> {
        let root = format!("{}/", self.root.to_str().expect("utf-8"));
        let conn = self.conn();
        query(
            &conn,
            "SELECT change_type, file_path, old_path FROM file_changes ORDER BY id",
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )
        .into_iter()
        .map(|(t, p, o)| (t, p.replace(&root, ""), o.map(|o| o.replace(&root, ""))))
        .collect()
    }
}

impl Running {
    /// Peak resident memory so far, in KiB (from /proc).
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The niceness of each of the engine's threads named `name` (from
    /// /proc: `comm` and the 19th field of `stat`).
    pub fn thread_nice(&self, name: &str) -> Vec<i64> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(tasks).expect("tasks").flatten() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The fields after the parenthesised name: state is field 3, nice 19.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            if let Some(nice) = rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()) {
                out.push(nice);
            }
        }
        out
    }

    /// Resident memory now, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Inotify watches the process holds now: the `inotify wd:` lines of
    /// the fdinfo of each of its inotify descriptors (from /proc).
    pub fn inotify_watches(&self) -> usize {
        let pid = self.child.id();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return 0;
        };
        fds.flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify")
            })
            .filter_map(|fd| {
                std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .ok()
            })
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("inotify wd:"))
                    .count()
            })
            .sum()
    }

    /// The exit status once the process ends by itself within `timeout`.
    #[allow(dead_code)]
    pub fn exited_within(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_for(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The Query service's address (a port of its own).
    #[allow(dead_code)]
    pub fn query_url(&self, v: &Vault) -> String {
        format!(
            "http://{}",
            v.meta("api_query_addr").expect("query address recorded")
        )
    }

    /// The api's address (both ports serve every service).
    pub fn api_url(&self, v: &Vault) -> String {
        format!(
            "http://{}",
            v.meta("api_tracker_addr").expect("api address recorded")
        )
    }
}
