"""obby-sync run beside a process that behaves like the backend's own file monitor.

Obby's Python backend starts a file monitor of its own that has no off switch
(CONTRACT.md section 5). It rewrites `file_states` with `INSERT OR REPLACE` of
its own columns only and inserts `file_versions` rows for what it sees. This
test runs the real `obby-sync run` on a database the backend made
(`<root>/.db/obby.db`, from tests/fixtures/backend_schema.sql) while a thread
of this process plays that monitor on the same file, and a sequence of edits
(create, modify, rename, revert, delete, re-create) goes through the notes.
Then it checks what the issue asks: nothing lost (every state the notes went
through is a version), no duplicate version (no two versions of a path in a
row with the same content), no diff of an existing file without its
`old_version_id`, every file's newest version is what is on disk.

The stand-in monitor checks and writes in one `BEGIN IMMEDIATE` transaction,
so that a duplicate it might write itself (reading its own stale state) is
not blamed on obby-sync. Stdlib only; run from the repository root after
`cargo build`:

    python3 -m unittest tools/python/test_beside_backend_monitor.py -v
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import unittest
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_SCHEMA = REPO_ROOT / "tests" / "fixtures" / "backend_schema.sql"

# How long one step may take to settle (engine debounce + the monitor's scan).
STEP_TIMEOUT_S = 30

# The stand-in monitor looks at the notes this often.
MONITOR_INTERVAL_S = 0.02

warnings.filterwarnings(
    "ignore", message="The default datetime adapter", category=DeprecationWarning
)


def find_binary() -> Path:
    env = os.environ.get("OBBY_SYNC_BIN")
    binary = Path(env) if env else REPO_ROOT / "target" / "debug" / "obby-sync"
    if not binary.is_file():
        raise AssertionError(f"{binary} not found: run `cargo build` first")
    return binary


def normalize(raw: bytes) -> str:
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Monitor(threading.Thread):
    """The backend's file monitor, as CONTRACT.md section 5 describes it."""

    def __init__(self, root: Path, db: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.db = root, db
        self.stop = threading.Event()
        self.writes = 0
        self.errors: list[str] = []

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            while not self.stop.is_set():
                try:
                    self.look(conn)
                except sqlite3.OperationalError as e:  # busy: the next look retries
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self.errors.append(str(e))
                time.sleep(MONITOR_INTERVAL_S)
        finally:
            conn.close()

    def look(self, conn: sqlite3.Connection) -> None:
        notes = self.root / "notes"
        on_disk: dict[str, str] = {}
        for path in notes.rglob("*"):
            if path.is_file():
                try:
                    on_disk[str(path)] = normalize(path.read_bytes())
                except (FileNotFoundError, UnicodeDecodeError):
                    continue
        now = dt.datetime.now()
        conn.execute("BEGIN IMMEDIATE")
        known = dict(
            conn.execute("SELECT file_path, content_hash FROM file_states").fetchall()
        )
        for path, text in on_disk.items():
            digest = sha256_hex(text)
            if known.get(path) == digest:
                continue
            conn.execute(
                "INSERT INTO file_versions (file_path, content_hash, content, line_count,"
                " timestamp, change_description) VALUES (?, ?, ?, ?, ?, ?)",
                (path, digest, text, text.count("\n"), now, "File modified"),
            )
            conn.execute(
                "INSERT OR REPLACE INTO file_states (file_path, content_hash, last_modified,"
                " line_count, file_size, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (path, digest, now, text.count("\n"), len(text.encode()), now),
            )
            self.writes += 1
        for path, digest in known.items():
            if digest is not None and path not in on_disk:
                conn.execute(
                    "INSERT OR REPLACE INTO file_states (file_path, content_hash,"
                    " last_modified, line_count, file_size, updated_at)"
                    " VALUES (?, NULL, ?, 0, 0, ?)",
                    (path, now, now),
                )
                self.writes += 1
        conn.execute("COMMIT")


class BesideBackendMonitorTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="obby-monitor-")
        self.addCleanup(tmp.cleanup)
        self.root = Path(os.path.realpath(tmp.name))
        (self.root / "notes").mkdir()
        (self.root / ".obbywatch").write_text("notes/\n")
        self.db = self.root / ".db" / "obby.db"
        self.db.parent.mkdir()
        backend = sqlite3.connect(self.db)
        backend.executescript(BACKEND_SCHEMA.read_text())
        backend.close()

        env = {**os.environ, "LOG_LEVEL": "warn"}
        env.pop("DB_PATH", None)
        self.engine = subprocess.Popen(
            [str(find_binary()), "run", "--root", str(self.root), "--no-api",
             "--debounce-ms", "100"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.addCleanup(self.stop_engine)
        self.wait_for(lambda: self.meta("last_reconcile") is not None, "the engine to start")
        self.monitor = Monitor(self.root, self.db)
        self.monitor.start()
        self.addCleanup(self.monitor.stop.set)
        # What each note went through, in order (normalized texts).
        self.history: dict[str, list[str]] = {}

    def stop_engine(self) -> None:
        if self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)
            self.engine.wait(timeout=30)
        if self.engine.stderr is not None:
            self.engine.stderr.close()

    def query(self, sql: str, *params: object) -> list[tuple]:
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def meta(self, key: str) -> str | None:
        try:
            rows = self.query("SELECT value FROM sync_meta WHERE key = ?", key)
        except sqlite3.OperationalError:
            return None
        return rows[0][0] if rows else None

    def wait_for(self, cond, what: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.engine.poll() is not None and self.engine.stderr is not None:
                raise AssertionError(f"obby-sync exited: {self.engine.stderr.read()}")
            if cond():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def path(self, rel: str) -> Path:
        return self.root / "notes" / rel

    def write(self, rel: str, text: str) -> None:
        self.path(rel).write_text(text)
        self.history.setdefault(str(self.path(rel)), []).append(text)

    def settled(self) -> bool:
        """Both writers caught up: every note's newest version and the
        engine's own state are what is on disk, every gone note is marked
        gone by the engine, and its queue is empty."""
        on_disk = {
            str(p): sha256_hex(normalize(p.read_bytes()))
            for p in (self.root / "notes").rglob("*") if p.is_file()
        }
        newest = dict(self.query(
            "SELECT file_path, content_hash FROM file_versions fv WHERE id ="
            " (SELECT MAX(id) FROM file_versions WHERE file_path = fv.file_path)"
        ))
        engine = {p: (h, d) for p, h, d in self.query(
            "SELECT path, content_hash, deleted FROM sync_files")}
        if any(newest.get(p) != h or engine.get(p) != (h, 0) for p, h in on_disk.items()):
            return False
        if any(d == 0 and p not in on_disk for p, (_, d) in engine.items()):
            return False
        (outstanding,) = self.query(
            "SELECT COUNT(*) FROM event_queue WHERE status IN ('pending', 'claimed')")[0]
        return outstanding == 0

    def step(self, action) -> None:
        action()
        self.wait_for(self.settled, "obby-sync and the monitor to settle")

    def test_no_loss_no_duplicate_no_missing_base(self) -> None:
        self.step(lambda: (self.write("a.md", "one\n"), self.write("b.md", "bee\n")))
        self.step(lambda: self.write("a.md", "one\ntwo\n"))
        self.step(lambda: self.path("b.md").rename(self.path("c.md")))
        self.history[str(self.path("c.md"))] = ["bee\n"]
        self.step(lambda: self.write("a.md", "one\n"))  # a revert
        self.step(lambda: self.write("c.md", "bee\nsea\n"))
        self.step(lambda: self.path("c.md").unlink())
        self.step(lambda: self.write("d.md", "dee\n"))
        self.stop_engine()
        self.monitor.stop.set()
        self.monitor.join(timeout=10)
        self.assertGreater(self.monitor.writes, 0, "the monitor never wrote: no test")

        versions: dict[str, list[str]] = {}
        for path, digest in self.query(
            "SELECT file_path, content_hash FROM file_versions ORDER BY id"
        ):
            versions.setdefault(path, []).append(digest)
        for path, hashes in versions.items():
            for a, b in zip(hashes, hashes[1:]):
                self.assertNotEqual(a, b, f"{path}: the same content twice in a row: {hashes}")
        for path, texts in self.history.items():
            recorded = versions.get(path, [])
            for text in texts:
                self.assertIn(sha256_hex(text), recorded, f"{path}: {text!r} was lost")
        missing_base = self.query(
            "SELECT file_path, change_type FROM content_diffs"
            " WHERE old_version_id IS NULL AND change_type <> 'created'"
        )
        self.assertEqual(missing_base, [])
        deleted = self.query(
            "SELECT change_type FROM file_changes WHERE file_path = ?", str(self.path("c.md"))
        )
        self.assertIn(("deleted",), deleted)
        self.assertEqual(self.query("PRAGMA integrity_check"), [("ok",)])


if __name__ == "__main__":
    unittest.main()
