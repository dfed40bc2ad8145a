"""Proves that the Python backend's queries work on a database written by obby-sync.

CONTRACT.md section 1 lists the queries Obby's Python backend runs on `obby.db`.
This test builds a small notes folder, runs the real `obby-sync scan` twice (a
creation pass, then a pass with two edits and one deletion), and runs each of
those queries verbatim through Python's own `sqlite3` module, the way the
backend does: a `datetime` bound as a parameter with the module's default
adapter (text `YYYY-MM-DD HH:MM:SS.ffffff`, space separator, local time).

Both processes run in a non-UTC time zone (TEST_TZ), so a timestamp within a
minute of the local clock proves obby-sync writes local time, not UTC.

Stdlib only (Python 3.11+); needs GNU `patch` on PATH. Run from the repository
root after `cargo build`:

    python3 -m unittest tools/python/test_backend_compat.py -v

The binary is `$OBBY_SYNC_BIN`, else `target/debug/obby-sync` in the repository.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import unittest
import warnings
from pathlib import Path

# The repository root: this file is tools/python/test_backend_compat.py.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Far from UTC (-5 h / -4 h), so local time and UTC text can never be confused.
TEST_TZ = "America/New_York"

# The text form of every DATETIME value (CONTRACT.md, "Timestamps").
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")

# How far a stored time may be from the local clock at check time.
CLOCK_SLACK = dt.timedelta(minutes=1)

# Each `obby-sync` run must finish well inside the 30 s budget of the test.
RUN_TIMEOUT_S = 20

# Python 3.12 deprecates the default datetime adapter; the backend relies on
# it, so it is exactly what this test exercises.
warnings.filterwarnings(
    "ignore", message="The default datetime adapter", category=DeprecationWarning
)

# ------------------------------------------------------------------ scenario
# Paths are relative to the project root; contents are the raw bytes on disk.

# Written before the first scan. Everything under notes/ is tracked.
SCAN1_FILES: dict[str, bytes] = {
    "notes/plain.md": "# Plain\n\nJust text, café ✓.\n".encode(),
    "notes/windows.md": b"# Windows\r\nfirst\r\nsecond\r\nthird\r\n",
    "notes/old-mac.md": b"lone\rcarriage\rreturns\r",
    "notes/no-eol.md": b"alpha\nbeta\ngamma",
    "notes/front-matter.md": (
        b"---\ntitle: Front matter\ntags: [a, b]\n---\n# Body\n\n--- not a header\n"
    ),
    "notes/sub/with space.md": b"nested\n",
}

# Outside `notes/`: must never reach the database.
UNTRACKED_FILES: dict[str, bytes] = {"README.md": b"not a note\n"}

# Rewritten before the second scan. The CRLF file keeps CRLF and loses its
# final newline; the no-EOL file stays without one (both patch markers).
SCAN2_MODIFIED: dict[str, bytes] = {
    "notes/windows.md": b"# Windows\r\nfirst\r\nsecond, edited\r\nthird\r\nfourth, no newline",
    "notes/no-eol.md": b"alpha\nBETA\ngamma\ndelta",
}

# Removed before the second scan.
SCAN2_DELETED = "notes/front-matter.md"

# ------------------------------------------------------- the backend queries
# Verbatim from CONTRACT.md section 1.

DIFFS_SELECT = (
    "SELECT cd.*, fv_old.content_hash AS old_hash, fv_old.timestamp AS old_timestamp, "
    "fv_new.content_hash AS new_hash, fv_new.timestamp AS new_timestamp "
    "FROM content_diffs cd "
    "LEFT JOIN file_versions fv_old ON cd.old_version_id = fv_old.id "
    "LEFT JOIN file_versions fv_new ON cd.new_version_id = fv_new.id"
)
Q_RECENT_DIFFS = DIFFS_SELECT + " ORDER BY cd.timestamp DESC LIMIT ?"
Q_DIFFS_SINCE = DIFFS_SELECT + " WHERE cd.timestamp > ? ORDER BY cd.timestamp DESC LIMIT ?"
Q_DIFFS_BETWEEN = (
    DIFFS_SELECT + " WHERE cd.timestamp BETWEEN ? AND ? ORDER BY cd.timestamp DESC LIMIT ?"
)
Q_FILE_HISTORY = "SELECT * FROM file_versions WHERE file_path = ? ORDER BY timestamp DESC LIMIT ?"
Q_FILE_STATES = "SELECT * FROM file_states ORDER BY last_modified DESC"
Q_EVENTS_TODAY = "SELECT COUNT(*) FROM events WHERE DATE(timestamp) = DATE('now')"
# Not in the contract: the local-day form, for comparison (see test_events_today_query).
Q_EVENTS_TODAY_LOCAL = (
    "SELECT COUNT(*) FROM events WHERE DATE(timestamp) = DATE('now', 'localtime')"
)
Q_HOURLY = (
    "SELECT strftime('%Y-%m-%d %H:00:00', timestamp) AS hour, COUNT(*) AS n "
    "FROM {table} GROUP BY hour ORDER BY hour"
)

# A database as the backend's schema.sql makes it (CONTRACT.md section 5).
BACKEND_SCHEMA = REPO_ROOT / "tests" / "fixtures" / "backend_schema.sql"

# Every table the backend's routes and start-up migrations use (section 5).
BACKEND_TABLES = (
    "file_versions", "content_diffs", "file_changes", "events", "file_states",
    "semantic_entries", "semantic_topics", "semantic_keywords", "config_values",
    "living_note_sessions", "living_note_entries", "watch_patterns", "migration_log",
    "semantic_search",
)

# The tables of CONTRACT.md section 1.
OBBY_TABLES = ("file_versions", "content_diffs", "file_changes", "file_states", "events")


# ------------------------------------------------------------------ helpers


def normalize(raw: bytes) -> str:
    """The contract's normalized text: CRLF and lone CR become LF."""
    return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of normalized text, as content_hash stores it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def line_count(text: str) -> int:
    """Lines as an editor shows them: a last line without newline counts."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def local_text(mtime_ns: int) -> str:
    """A file mtime as the local-time text obby-sync stores (microseconds truncated)."""
    seconds, nanos = divmod(mtime_ns, 10**9)
    moment = dt.datetime.fromtimestamp(seconds).replace(microsecond=nanos // 1000)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def find_binary() -> Path:
    """`$OBBY_SYNC_BIN`, else the debug build in this repository."""
    env = os.environ.get("OBBY_SYNC_BIN")
    binary = Path(env) if env else REPO_ROOT / "target" / "debug" / "obby-sync"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise AssertionError(
            f"obby-sync binary not found or not executable at {binary}: "
            "run `cargo build` in the repository root, or set OBBY_SYNC_BIN"
        )
    return binary


# --------------------------------------------------------------------- test


class BackendCompatTest(unittest.TestCase):
    """One scenario (two scans) in setUpClass; each test checks one query or fact.

    obby-sync creates the database (engine first), at an explicit `--db`.
    """

    # True: the backend made the database first (BackendFirstCompatTest).
    BACKEND_FIRST = False

    @classmethod
    def db_args(cls) -> list[str]:
        """Engine first names the file; backend first uses the default."""
        return [] if cls.BACKEND_FIRST else ["--db", str(cls.db_path)]

    # ------------------------------------------------------------ scenario

    @classmethod
    def setUpClass(cls) -> None:
        cls.binary = find_binary()
        if shutil.which("patch") is None:
            raise AssertionError("GNU patch is not on PATH")

        # Same time zone for this process (SQLite's 'localtime', datetime.now())
        # and for obby-sync (see _run). Class cleanups run even when
        # setUpClass fails half-way, unlike tearDownClass.
        cls.addClassCleanup(cls._restore_tz, os.environ.get("TZ"))
        os.environ["TZ"] = TEST_TZ
        time.tzset()
        if time.localtime().tm_gmtoff == 0:
            raise AssertionError(
                f"TZ={TEST_TZ} gave a zero UTC offset: is tzdata installed? "
                "Without it this test cannot tell local time from UTC."
            )

        tmp = tempfile.TemporaryDirectory(prefix="obby-compat-")
        cls.addClassCleanup(tmp.cleanup)
        # Canonical, as obby-sync stores file paths (e.g. /tmp may be a symlink).
        cls.root = Path(os.path.realpath(tmp.name))
        cls.db_path = cls.root / ".db" / "obby.db"
        if cls.BACKEND_FIRST:
            # The backend ran first and owns <root>/.db/obby.db, made by its
            # schema.sql (the fixture obby-sync's own tests use).
            cls.db_path.parent.mkdir()
            backend = sqlite3.connect(cls.db_path)
            backend.executescript(BACKEND_SCHEMA.read_text())
            backend.close()
        cls._last_mtime_ns = 0
        cls.mtime_ns: dict[str, int] = {}  # last mtime written, per relative path

        (cls.root / ".obbywatch").write_text("notes/\n")
        for rel, data in {**SCAN1_FILES, **UNTRACKED_FILES}.items():
            cls._write(rel, data)

        cls.t_start = dt.datetime.now()
        cls.scan1 = cls._run("scan", "--root", str(cls.root), *cls.db_args(), "--json")

        # t_mid separates the two scans' rows: every stamp of scan 1 is
        # before it, every stamp of scan 2 after it.
        time.sleep(0.05)
        cls.t_mid = dt.datetime.now()
        time.sleep(0.05)

        for rel, data in SCAN2_MODIFIED.items():
            cls._write(rel, data)
        (cls.root / SCAN2_DELETED).unlink()
        cls.scan2 = cls._run("scan", "--root", str(cls.root), *cls.db_args(), "--json")
        cls.t_end = dt.datetime.now()

        cls.status = cls._run("status", "--root", str(cls.root), *cls.db_args(), "--json")

        # The backend's connection: default adapters, rows by column name.
        cls.conn = sqlite3.connect(cls.db_path, timeout=30)
        cls.addClassCleanup(cls.conn.close)
        cls.conn.row_factory = sqlite3.Row

    @staticmethod
    def _restore_tz(saved: str | None) -> None:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()

    @classmethod
    def _write(cls, rel: str, data: bytes) -> None:
        """Writes raw bytes and gives the file an mtime 1 ms after the last one.

        Distinct mtimes make `ORDER BY last_modified DESC` fully determined
        (coarse file-system clocks could otherwise tie).
        """
        path = cls.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        mtime = max(time.time_ns(), cls._last_mtime_ns + 1_000_000)
        os.utime(path, ns=(mtime, mtime))
        cls._last_mtime_ns = mtime
        cls.mtime_ns[rel] = path.stat().st_mtime_ns

    @classmethod
    def _run(cls, *args: str) -> dict:
        """Runs obby-sync in TEST_TZ; returns its JSON output."""
        env = {**os.environ, "TZ": TEST_TZ, "LOG_LEVEL": "warn"}
        env.pop("DB_PATH", None)
        proc = subprocess.run(
            [str(cls.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"obby-sync {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
            )
        return json.loads(proc.stdout)

    # ------------------------------------------------------------ expectations

    @classmethod
    def abs_path(cls, rel: str) -> str:
        """The file_path obby-sync stores: absolute and canonical."""
        return str(cls.root / rel)

    def versions_of(self, rel: str) -> list[str]:
        """The normalized texts a tracked file went through, oldest first."""
        texts = [normalize(SCAN1_FILES[rel])]
        if rel in SCAN2_MODIFIED:
            texts.append(normalize(SCAN2_MODIFIED[rel]))
        return texts

    def last_raw(self, rel: str) -> bytes:
        """The last bytes written to a tracked file."""
        return SCAN2_MODIFIED.get(rel, SCAN1_FILES[rel])

    def rel_of(self, file_path: str) -> str:
        """The relative path of a stored absolute path."""
        return Path(file_path).relative_to(self.root).as_posix()

    def expected_diff(self, row: sqlite3.Row) -> tuple[str, str]:
        """(old text, new text) a content_diffs row must turn one into the other."""
        texts = self.versions_of(self.rel_of(row["file_path"]))
        if row["change_type"] == "created":
            return "", texts[0]
        self.assertEqual(row["change_type"], "modified")
        return texts[0], texts[1]

    def query(self, sql: str, *params: object) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def assert_local_now(self, value: object, where: str) -> dt.datetime:
        """A DATETIME value: exact text form, parseable, close to the local clock."""
        self.assertIsInstance(value, str, f"{where}: {value!r} is not text")
        self.assertRegex(value, TIMESTAMP_RE, f"{where}: not 'YYYY-MM-DD HH:MM:SS.ffffff'")
        moment = dt.datetime.fromisoformat(value)
        offset = abs(dt.datetime.now() - moment)
        self.assertLess(
            offset, CLOCK_SLACK, f"{where}: {value} is {offset} from local time (UTC written?)"
        )
        return moment

    # ------------------------------------------------------------ the CLI

    def test_scan_and_status_summaries(self) -> None:
        """Scan 1 creates every note; scan 2 records the edits and the deletion."""
        tracked, edited = len(SCAN1_FILES), len(SCAN2_MODIFIED)
        self.assertEqual(self.scan1["files_seen"], tracked)
        self.assertEqual(
            (self.scan1["versions"], self.scan1["diffs"], self.scan1["changes"]),
            (tracked, tracked, tracked),
        )
        self.assertEqual(self.scan1["failed"], 0)
        self.assertEqual(self.scan2["files_seen"], tracked - 1)
        self.assertEqual(
            (self.scan2["versions"], self.scan2["diffs"], self.scan2["changes"]),
            (edited, edited, edited + 1),
        )
        self.assertEqual(self.scan2["failed"], 0)
        self.assertEqual(self.status["files_tracked"], tracked - 1)
        self.assertEqual(self.status["files_deleted"], 1)
        self.assertEqual(
            (self.status["versions"], self.status["diffs"], self.status["changes"]),
            (tracked + edited, tracked + edited, tracked + edited + 1),
        )

    def test_untracked_files_are_not_stored(self) -> None:
        """Files outside `notes/` (and the engine's own files) leave no rows."""
        columns = [
            ("file_versions", "file_path"),
            ("file_states", "file_path"),
            ("file_changes", "file_path"),
            ("events", "path"),
        ]
        for rel in [*UNTRACKED_FILES, ".obbywatch", "obby.db"]:
            for table, column in columns:
                rows = self.query(f"SELECT 1 FROM {table} WHERE {column} = ?", self.abs_path(rel))
                self.assertEqual(rows, [], f"{rel} found in {table}")

    # ------------------------------------------------------------ timestamps

    def test_python_binds_datetime_as_space_separated_text(self) -> None:
        """The premise of the contract: what `?` becomes for a datetime."""
        bound = self.conn.execute("SELECT ?, typeof(?)", (self.t_mid, self.t_mid)).fetchone()
        self.assertEqual(tuple(bound), (self.t_mid.isoformat(" "), "text"))

    def test_every_datetime_is_local_text(self) -> None:
        checked = 0
        for table in OBBY_TABLES:
            columns = [
                r["name"]
                for r in self.query(f"PRAGMA table_info({table})")
                if r["type"].upper() == "DATETIME"
            ]
            self.assertTrue(columns, f"{table} has no DATETIME column")
            for column in columns:
                sql = f"SELECT rowid AS rid, {column} AS v, typeof({column}) AS t FROM {table}"
                for row in self.query(sql):
                    where = f"{table}.{column} (rowid {row['rid']})"
                    self.assertEqual(row["t"], "text", where)
                    self.assert_local_now(row["v"], where)
                    checked += 1
        versions = len(SCAN1_FILES) + len(SCAN2_MODIFIED)
        changes = versions + 1  # and the deletion
        states = len(SCAN1_FILES)
        # Two DATETIME columns in each table (its own time and created_at; for
        # file_states last_modified and updated_at): versions, diffs (one per
        # version), changes, states and events (one per change).
        self.assertEqual(checked, versions * 2 * 2 + changes * 2 + states * 2 + changes * 2)

    def test_stamps_fall_in_their_scan_window(self) -> None:
        """Scan 1's stamps are in (t_start, t_mid), scan 2's in (t_mid, t_end)."""
        start, mid, end = (t.isoformat(" ") for t in (self.t_start, self.t_mid, self.t_end))
        for row in self.query("SELECT change_type, timestamp FROM file_changes"):
            if row["change_type"] == "created":
                self.assertTrue(start < row["timestamp"] < mid, tuple(row))
            else:
                self.assertTrue(mid < row["timestamp"] < end, tuple(row))

    # ------------------------------------------------------------ content

    def test_content_hash_is_sha256_of_lf_normalized_content(self) -> None:
        rows = self.query("SELECT * FROM file_versions ORDER BY id")
        seen: dict[str, list[str]] = collections.defaultdict(list)
        for row in rows:
            rel = self.rel_of(row["file_path"])
            text = self.versions_of(rel)[len(seen[rel])]
            raw = SCAN1_FILES[rel] if not seen[rel] else SCAN2_MODIFIED[rel]
            seen[rel].append(row["content_hash"])
            self.assertEqual(row["content"], text, rel)
            self.assertNotIn("\r", row["content"], rel)
            self.assertEqual(row["content_hash"], sha256_hex(text), rel)
            self.assertEqual(row["size"], len(raw), f"{rel}: size is bytes on disk")
            self.assertEqual(row["line_count"], line_count(text), rel)
        self.assertEqual(
            {rel: len(h) for rel, h in seen.items()},
            {rel: len(self.versions_of(rel)) for rel in SCAN1_FILES},
        )
        # The CR files' hashes are not the hashes of their raw bytes.
        for rel in ("notes/windows.md", "notes/old-mac.md"):
            raw_hash = hashlib.sha256(SCAN1_FILES[rel]).hexdigest()
            self.assertNotEqual(seen[rel][0], raw_hash, rel)

    def test_file_changes_rows(self) -> None:
        rows = self.query("SELECT * FROM file_changes ORDER BY id")
        got = sorted((self.rel_of(r["file_path"]), r["change_type"]) for r in rows)
        want = sorted(
            [(rel, "created") for rel in SCAN1_FILES]
            + [(rel, "modified") for rel in SCAN2_MODIFIED]
            + [(SCAN2_DELETED, "deleted")]
        )
        self.assertEqual(got, want)
        for r in rows:
            rel, kind = self.rel_of(r["file_path"]), r["change_type"]
            hashes = [sha256_hex(t) for t in self.versions_of(rel)]
            expected = {
                "created": (None, hashes[0]),
                "modified": (hashes[0], hashes[-1]),
                "deleted": (hashes[-1], None),
            }[kind]
            self.assertEqual(
                (r["old_content_hash"], r["new_content_hash"]), expected, f"{rel} {kind}"
            )
        # content_hash is UNIQUE in the backend's schema: an id of the change,
        # a SHA-256 no other change has.
        ids = [r["content_hash"] for r in rows]
        for change_id in ids:
            self.assertRegex(change_id, r"^[0-9a-f]{64}$")
        self.assertEqual(len(set(ids)), len(ids))

    # ------------------------------------------------------------ content_diffs queries

    def test_recent_diffs_query(self) -> None:
        rows = self.query(Q_RECENT_DIFFS, 100)
        self.assertEqual(len(rows), len(SCAN1_FILES) + len(SCAN2_MODIFIED))
        # Newest first; stamps are unique, and their order is the commit order.
        stamps = [r["timestamp"] for r in rows]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        self.assertEqual(len(set(stamps)), len(stamps))
        self.assertEqual([r["id"] for r in rows], sorted((r["id"] for r in rows), reverse=True))
        # Scan 2's edits are the two newest; then scan 1's creations.
        self.assertEqual(
            {(self.rel_of(r["file_path"]), r["change_type"]) for r in rows[:2]},
            {(rel, "modified") for rel in SCAN2_MODIFIED},
        )
        self.assertEqual(
            sorted((self.rel_of(r["file_path"]), r["change_type"]) for r in rows[2:]),
            sorted((rel, "created") for rel in SCAN1_FILES),
        )
        for r in rows:
            rel = self.rel_of(r["file_path"])
            hashes = [sha256_hex(t) for t in self.versions_of(rel)]
            self.assertIsNotNone(r["new_version_id"], rel)
            self.assertEqual(r["new_timestamp"], r["timestamp"], rel)
            if r["change_type"] == "created":
                self.assertIsNone(r["old_version_id"], rel)
                self.assertEqual((r["old_hash"], r["old_timestamp"]), (None, None), rel)
                self.assertEqual(r["new_hash"], hashes[0], rel)
            else:
                self.assertIsNotNone(r["old_version_id"], rel)
                self.assertEqual((r["old_hash"], r["new_hash"]), (hashes[0], hashes[1]), rel)
                self.assertLess(r["old_timestamp"], r["new_timestamp"], rel)
            old, new = self.expected_diff(r)
            counts = (r["lines_added"], r["lines_removed"])
            self.assertEqual(counts, self.count_diff_lines(r["diff_content"]), rel)
            self.assertGreater(r["lines_added"] + r["lines_removed"], 0, rel)
            self.assertNotEqual(old, new)
        # LIMIT keeps the newest.
        newest = self.query(Q_RECENT_DIFFS, 3)
        self.assertEqual([r["id"] for r in newest], [r["id"] for r in rows[:3]])

    def test_diffs_since_t_mid_query(self) -> None:
        """`cd.timestamp > ?` with a datetime returns exactly scan 2's diffs."""
        rows = self.query(Q_DIFFS_SINCE, self.t_mid, 100)
        self.assertEqual(
            sorted((self.rel_of(r["file_path"]), r["change_type"]) for r in rows),
            sorted((rel, "modified") for rel in SCAN2_MODIFIED),
        )
        for r in rows:
            self.assertIsNotNone(r["old_hash"])
            self.assertIsNotNone(r["new_hash"])
        # Nothing is newer than the end of scan 2.
        self.assertEqual(self.query(Q_DIFFS_SINCE, self.t_end, 100), [])

    def test_diffs_between_query(self) -> None:
        created = self.query(Q_DIFFS_BETWEEN, self.t_start, self.t_mid, 100)
        self.assertEqual(
            sorted(self.rel_of(r["file_path"]) for r in created), sorted(SCAN1_FILES)
        )
        self.assertEqual({r["change_type"] for r in created}, {"created"})
        modified = self.query(Q_DIFFS_BETWEEN, self.t_mid, self.t_end, 100)
        self.assertEqual(
            sorted(self.rel_of(r["file_path"]) for r in modified), sorted(SCAN2_MODIFIED)
        )
        self.assertEqual({r["change_type"] for r in modified}, {"modified"})
        both = self.query(Q_DIFFS_BETWEEN, self.t_start, self.t_end, 100)
        self.assertEqual(
            [r["id"] for r in both], [r["id"] for r in modified] + [r["id"] for r in created]
        )

    @staticmethod
    def count_diff_lines(diff: str) -> tuple[int, int]:
        """(+ lines, - lines) of a single-file unified diff, headers excluded."""
        added = removed = 0
        in_hunks = False
        for line in diff.splitlines():
            if line.startswith("@@"):
                in_hunks = True
            elif in_hunks and line.startswith("+"):
                added += 1
            elif in_hunks and line.startswith("-"):
                removed += 1
        return added, removed

    def test_stored_diffs_apply_with_gnu_patch(self) -> None:
        """`patch` turns the old text into the new one exactly (old = '' when created)."""
        rows = self.query("SELECT * FROM content_diffs ORDER BY id")
        self.assertEqual(len(rows), len(SCAN1_FILES) + len(SCAN2_MODIFIED))
        markers = 0
        with tempfile.TemporaryDirectory(prefix="obby-patch-") as work:
            for r in rows:
                rel = self.rel_of(r["file_path"])
                old, new = self.expected_diff(r)
                diff = r["diff_content"]
                if diff == "":  # obby-sync stores '' for equal texts: nothing to patch
                    self.assertEqual(old, new, f"{rel}: empty diff for a real change")
                    continue
                markers += diff.count("\\ No newline at end of file")
                old_file = Path(work, f"old-{r['id']}")
                out_file = Path(work, f"out-{r['id']}")
                old_file.write_bytes(old.encode())
                # -f: never ask (no tty) and never guess "reversed"; -F0: no fuzz,
                # the hunks must match exactly.
                proc = subprocess.run(
                    ["patch", "-s", "-f", "-F0", "--no-backup-if-mismatch",
                     "-o", str(out_file), str(old_file)],
                    input=diff.encode(),
                    capture_output=True,
                    timeout=RUN_TIMEOUT_S,
                    check=False,
                )
                self.assertEqual(
                    proc.returncode, 0,
                    f"{rel} {r['change_type']}: patch failed: "
                    f"{proc.stdout!r} {proc.stderr!r}\n{diff}",
                )
                self.assertEqual(out_file.read_bytes(), new.encode(), f"{rel} {r['change_type']}")
        # no-eol.md created, no-eol.md modified (old and new side), windows.md modified.
        self.assertEqual(markers, 4)

    # ------------------------------------------------------------ file_versions / file_states

    def test_file_history_query(self) -> None:
        for rel in SCAN1_FILES:
            texts = self.versions_of(rel)
            rows = self.query(Q_FILE_HISTORY, self.abs_path(rel), 10)
            self.assertEqual([r["content"] for r in rows], texts[::-1], rel)
            self.assertEqual(
                [r["change_description"] for r in rows],
                ["File modified"] * (len(texts) - 1) + ["File created"],
                rel,
            )
            self.assertEqual([r["file_path"] for r in rows], [self.abs_path(rel)] * len(texts))
            newest = self.query(Q_FILE_HISTORY, self.abs_path(rel), 1)
            self.assertEqual([r["id"] for r in newest], [rows[0]["id"]], rel)
        # The deleted file keeps its history.
        self.assertEqual(len(self.query(Q_FILE_HISTORY, self.abs_path(SCAN2_DELETED), 10)), 1)

    def test_file_states_query(self) -> None:
        rows = self.query(Q_FILE_STATES)
        # Order: the deleted file first (its last_modified is when its
        # deletion was recorded, during scan 2), then the mtimes this test
        # gave the files, newest first.
        live = [rel for rel in SCAN1_FILES if rel != SCAN2_DELETED]
        want_order = [SCAN2_DELETED] + sorted(
            live, key=lambda rel: self.mtime_ns[rel], reverse=True
        )
        self.assertEqual([self.rel_of(r["file_path"]) for r in rows], want_order)
        self.assertEqual(
            {self.rel_of(r["file_path"]) for r in rows[1:3]}, set(SCAN2_MODIFIED)
        )
        for r in rows:
            rel = self.rel_of(r["file_path"])
            if rel == SCAN2_DELETED:
                # The backend's convention for a gone file, and obby-sync's flag.
                self.assertEqual(
                    (r["content_hash"], r["line_count"], r["file_size"], r["is_deleted"]),
                    (None, 0, 0, 1),
                )
                stamp = r["last_modified"]
                self.assertTrue(
                    self.t_mid.isoformat(" ") < stamp < self.t_end.isoformat(" "), stamp
                )
                continue
            text = self.versions_of(rel)[-1]
            self.assertEqual(r["last_modified"], local_text(self.mtime_ns[rel]), rel)
            self.assertEqual(r["content_hash"], sha256_hex(text), rel)
            self.assertEqual(r["line_count"], line_count(text), rel)
            self.assertEqual(r["file_size"], len(self.last_raw(rel)), rel)
            self.assertEqual(r["is_deleted"], 0, rel)

    # ------------------------------------------------------------ events

    def test_events_rows(self) -> None:
        rows = self.query("SELECT * FROM events ORDER BY id")
        got = sorted((self.rel_of(r["path"]), r["type"], r["size"], r["processed"]) for r in rows)
        want = sorted(
            [(rel, "created", len(raw), 0) for rel, raw in SCAN1_FILES.items()]
            + [(rel, "modified", len(raw), 0) for rel, raw in SCAN2_MODIFIED.items()]
            + [(SCAN2_DELETED, "deleted", len(SCAN1_FILES[SCAN2_DELETED]), 0)]
        )
        self.assertEqual(got, want)

    def test_events_today_query(self) -> None:
        """`DATE(timestamp) = DATE('now')` as the backend runs it.

        events.timestamp is local time (the contract), but SQLite's DATE('now')
        is the *UTC* date. So the verbatim query counts the events whose local
        date equals today's UTC date: every event of today while the local and
        UTC dates agree, and none during the hours when they differ (in
        America/New_York: from 19:00 EST / 20:00 EDT until local midnight).
        That is the query's own semantics, not an obby-sync defect: obby-sync
        must write local time, and for local-time text "today" is
        DATE('now', 'localtime'). The test predicts the verbatim query from the
        UTC and local dates of this run, and checks the local-day form counts
        every event.
        """
        (total,) = self.conn.execute("SELECT COUNT(*) FROM events").fetchone()
        self.assertEqual(total, len(SCAN1_FILES) + len(SCAN2_MODIFIED) + 1)
        run_day = self.t_start.date()
        if self.t_end.date() != run_day:
            self.skipTest("the scans straddled local midnight; the counts are not predictable")

        for _ in range(3):  # retry if a UTC midnight falls between the statements
            (utc_before,) = self.conn.execute("SELECT DATE('now')").fetchone()
            (count,) = self.conn.execute(Q_EVENTS_TODAY).fetchone()
            (utc_after,) = self.conn.execute("SELECT DATE('now')").fetchone()
            if utc_before == utc_after:
                break
        self.assertEqual(utc_after, dt.datetime.now(dt.timezone.utc).date().isoformat())
        expected = total if utc_after == run_day.isoformat() else 0
        self.assertEqual(
            count, expected,
            f"DATE('now') = {utc_after} (UTC), events written on {run_day} (local)",
        )

        # SQLite and Python agree on the local date (same TZ), and the
        # local-day form counts every event of this run.
        (local_today,) = self.conn.execute("SELECT DATE('now', 'localtime')").fetchone()
        self.assertEqual(local_today, dt.date.today().isoformat())
        if local_today == run_day.isoformat():  # false only if midnight passed since
            (local_count,) = self.conn.execute(Q_EVENTS_TODAY_LOCAL).fetchone()
            self.assertEqual(local_count, total)

    # ------------------------------------------------------------ hourly buckets

    def test_hourly_buckets_query(self) -> None:
        """`strftime('%Y-%m-%d %H:00:00', timestamp)` buckets by *local* hour."""
        now = dt.datetime.now()
        this_hour = now.replace(minute=0, second=0, microsecond=0)
        for table in ("content_diffs", "file_changes", "events"):
            stamps = [r[0] for r in self.query(f"SELECT timestamp FROM {table}")]
            want = collections.Counter(
                dt.datetime.fromisoformat(s).strftime("%Y-%m-%d %H:00:00") for s in stamps
            )
            rows = self.query(Q_HOURLY.format(table=table))
            self.assertEqual({r["hour"]: r["n"] for r in rows}, dict(want), table)
            self.assertEqual(sum(r["n"] for r in rows), len(stamps), table)
            for r in rows:
                # The current local hour, or the previous one if the run crossed it.
                bucket = dt.datetime.fromisoformat(r["hour"])
                self.assertIn(bucket, (this_hour, this_hour - dt.timedelta(hours=1)), table)


    # ------------------------------------------------------------ the backend's own tables

    def test_backend_tables_and_config_rows_exist(self) -> None:
        names = {r["name"] for r in self.query("SELECT name FROM sqlite_master")}
        for table in BACKEND_TABLES:
            self.assertIn(table, names)
        config = {
            r["key"]: (r["value"], r["type"])
            for r in self.query("SELECT key, value, type FROM config_values")
        }
        self.assertEqual(config["dbVersion"], ("3.0.0-file-based", "str"))
        self.assertEqual(len(config), 6)
        self.assertEqual(self.query("PRAGMA integrity_check")[0][0], "ok")
        self.assertEqual(self.query("PRAGMA foreign_key_check"), [])

    def test_backend_writes_beside_ours(self) -> None:
        """The backend's own writes work on this file: its start-up migration,
        a semantic entry found through its FTS5 search, a version it inserts
        (indexed for obby-sync's search by its triggers) and deletes, its
        INSERT OR REPLACE of file_states. Rolled back afterwards."""
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        self.addCleanup(conn.close)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN")
        try:
            conn.execute("ALTER TABLE semantic_entries ADD COLUMN extra_migrated TEXT")
            conn.execute("CREATE TABLE IF NOT EXISTS backend_later (id INTEGER PRIMARY KEY)")
            (version_id,) = conn.execute(
                "SELECT id FROM file_versions WHERE file_path = ? ORDER BY id DESC LIMIT 1",
                (self.abs_path("notes/plain.md"),),
            ).fetchone()
            now = dt.datetime.now()
            conn.execute(
                "INSERT INTO semantic_entries (version_id, timestamp, date, time, type, summary,"
                " impact, file_path, searchable_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (version_id, now, now.date().isoformat(), now.strftime("%H:%M"), "edit",
                 "Plain note about coffee", "minor", self.abs_path("notes/plain.md"),
                 "café coffee beans"),
            )
            hits = conn.execute(
                "SELECT se.file_path FROM semantic_search JOIN semantic_entries se"
                " ON se.id = semantic_search.rowid WHERE semantic_search MATCH ?",
                ("coffee",),
            ).fetchall()
            self.assertEqual(hits, [(self.abs_path("notes/plain.md"),)])
            text = "backend wrote this\n"
            conn.execute(
                "INSERT INTO file_versions (file_path, content_hash, content, line_count,"
                " timestamp, change_description) VALUES (?, ?, ?, ?, ?, ?)",
                (self.abs_path("notes/plain.md"), sha256_hex(text), text, 1, now,
                 "File modified"),
            )
            # obby-sync's search index (its triggers) takes the backend's
            # version in the same transaction (the newest of its path: into
            # the recent index), and lets it go with a delete.
            found = conn.execute(
                "SELECT fv.file_path FROM file_current_fts JOIN file_versions fv"
                " ON fv.id = file_current_fts.rowid WHERE file_current_fts MATCH ?",
                ('"backend" "wrote"',),
            ).fetchall()
            self.assertEqual(found, [(self.abs_path("notes/plain.md"),)])
            conn.execute("DELETE FROM file_versions WHERE content = ?", (text,))
            for table in ("file_current_fts", "file_versions_fts"):
                conn.execute(
                    f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 0)"
                )
                self.assertEqual(
                    conn.execute(
                        f"SELECT COUNT(*) FROM {table} WHERE {table} MATCH ?",
                        ('"backend" "wrote"',),
                    ).fetchone()[0],
                    0,
                )
            conn.execute(
                "INSERT INTO file_versions (file_path, content_hash, content, line_count,"
                " timestamp, change_description) VALUES (?, ?, ?, ?, ?, ?)",
                (self.abs_path("notes/plain.md"), sha256_hex(text), text, 1, now,
                 "File modified"),
            )
            conn.execute(
                "INSERT OR REPLACE INTO file_states (file_path, content_hash, last_modified,"
                " line_count, file_size, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.abs_path("notes/plain.md"), sha256_hex(text), now, 1, len(text), now),
            )
            # Its own guard still holds: no version from the future.
            with self.assertRaises(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO file_versions (file_path, content_hash, timestamp)"
                    " VALUES (?, ?, ?)",
                    ("x", sha256_hex("x"), now + dt.timedelta(days=2)),
                )
        finally:
            conn.execute("ROLLBACK")


class BackendFirstCompatTest(BackendCompatTest):
    """The same scenario and checks on a database the backend made first, at
    its default place `<root>/.db/obby.db`, which obby-sync finds by itself."""

    BACKEND_FIRST = True


if __name__ == "__main__":
    unittest.main()
