"""The SSE hub in a real browser: headless Chromium's own `EventSource`.

A page served by this test (Python's `http.server`, another origin than the
hub, as Obby's web UI is) opens two `EventSource`s on the real `obby-sync
run`: `/sse?topics=file-changes` and the web UI's `/api/files/updates/stream`,
and writes every event it gets into its DOM. The test edits notes and reads
the DOM back (Playwright's sync API). Then the engine is killed (`kill -9`)
while the page stays open, notes change while it is down, it is started again
on the same HTTP port, more notes change, and the page's `EventSource`s
reconnect by themselves with `Last-Event-ID`: the DOM must show every change
exactly once, in cursor order, the same as `file_changes`; then the same
around a clean stop (SIGTERM). A second test opens the streams with the token
in the URL (`?token=`, since `EventSource` cannot set headers), sees one
without it refused for good (401), and fetches `/health` from the page. A
third hides `file_changes` for a moment, so that the hub cannot open a client:
an `EventSource` opened then is told so and retries by itself (it is not
closed for good, as a 503 would close it) until the table is back.

Needs Debian's Chromium (`apt-get install chromium`: `/usr/bin/chromium`, or
set `$CHROMIUM`) and Playwright for Python (`python3 -m pip install
playwright==1.65.2`; no `playwright install`, it drives that Chromium).
`.ci/run` installs both; without them the test fails and says what to
install, it never skips.

Run from the repository root after `cargo build`:

    python3 -m unittest discover -s tools/python -p test_browser_sse.py -v

The binary is `$OBBY_SYNC_BIN`, else `target/debug/obby-sync` in the repository.
"""

from __future__ import annotations

import http.server
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import Counter
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_sse_hub import READY_TIMEOUT_S, find_binary  # noqa: E402

PLAYWRIGHT_PIN = "1.65.2"  # what .ci/run installs
DOM_TIMEOUT_S = 90  # a committed change reaching the page's DOM (slow, shared machine)
STOP_TIMEOUT_S = 15  # SIGTERM until exit
BROWSER_TIMEOUT_S = 120  # Chromium's start, a page load, one DOM read

# Debian's Chromium, headless, in a closed network: without the background
# networking flags it keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# The page: two EventSources, every event appended to a list in the DOM;
# `probe(url)` opens one more, listed under #probe.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>obby-sync hub in a browser</title>
<link rel="icon" href="data:,">
<h1>/sse?topics=file-changes</h1>
<ol id="sse"></ol>
<h1>/api/files/updates/stream</h1>
<ol id="web"></ol>
<h1>probe</h1>
<ol id="probe"></ol>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const hub = params.get("hub");
// EventSource cannot set headers: a token goes in the URL.
const auth = params.has("token") ? "token=" + encodeURIComponent(params.get("token")) : "";
function add(list, fields) {
  const li = document.createElement("li");
  for (const [k, v] of Object.entries(fields)) li.dataset[k] = v === null ? "" : String(v);
  li.textContent = JSON.stringify(fields);
  document.getElementById(list).appendChild(li);
}
function watch(list, source) {
  source.onopen = () => add(list, { kind: "open", state: source.readyState });
  source.onerror = () => add(list, { kind: "error", state: source.readyState });
}
function sse(list, url) {
  const source = new EventSource(url);
  watch(list, source);
  for (const name of ["connected", "reset", "dropped", "unavailable"]) {
    source.addEventListener(name, (e) => add(list, { kind: name, id: e.lastEventId, data: e.data }));
  }
  for (const name of ["created", "modified", "deleted", "moved"]) {
    source.addEventListener(name, (e) => {
      const envelope = JSON.parse(e.data);
      const change = JSON.parse(envelope.data);
      add(list, { kind: "change", event: name, id: e.lastEventId, topic: envelope.topic,
                  cursor: change.cursor, path: change.relative_path,
                  oldPath: change.old_relative_path });
    });
  }
}
function web(list, url) {
  const source = new EventSource(url);
  watch(list, source);
  source.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "keepalive") return;
    const kind = m.type === "connected" || m.type === "error" ? m.type : "change";
    add(list, { kind: kind, event: m.type, id: e.lastEventId,
                path: m.filePath === undefined ? null : m.filePath });
  };
}
sse("sse", hub + "/sse?topics=file-changes" + (auth && "&" + auth));
web("web", hub + "/api/files/updates/stream" + (auth && "?" + auth));
window.probe = (path) => sse("probe", hub + path);
</script>
"""


def require_browser():
    """Playwright's sync API and the Chromium binary, or a failure naming
    what to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise AssertionError(
            f"this test needs Playwright for Python ({e}): install it with "
            f"`python3 -m pip install playwright=={PLAYWRIGHT_PIN}` (what .ci/run does; "
            "no `playwright install` needed, it drives Debian's Chromium)"
        ) from e
    chromium = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    if not (chromium.is_file() and os.access(chromium, os.X_OK)):
        raise AssertionError(
            f"this test needs Chromium and found none at {chromium}: install Debian's "
            "with `apt-get install chromium` (what .ci/run does), or set $CHROMIUM"
        )
    return sync_playwright, chromium


class PageServer(threading.Thread):
    """Serves PAGE at `/` on 127.0.0.1, a port of its own."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        body = PAGE.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.start()

    def run(self) -> None:
        self.server.serve_forever()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrowserTest(unittest.TestCase):
    def setUp(self) -> None:
        sync_playwright, chromium = require_browser()
        tmp = tempfile.TemporaryDirectory(prefix="obby-browser-")
        self.addCleanup(tmp.cleanup)
        base = Path(os.path.realpath(tmp.name))
        self.root = base / "vault"
        self.db_path = base / "obby.db"
        self.log_path = base / "obby-sync.log"
        (self.root / "notes").mkdir(parents=True)
        (self.root / ".obbywatch").write_text("notes/\n")
        (self.root / "notes" / "first.md").write_text("first\n")
        self.proc: subprocess.Popen | None = None
        self.addCleanup(self._kill_if_running)

        server = PageServer()
        self.addCleanup(server.close)
        self.page_url = server.url

        pw = sync_playwright().start()
        self.addCleanup(pw.stop)
        profile = tempfile.TemporaryDirectory(prefix="obby-browser-profile-")
        self.addCleanup(profile.cleanup)
        # A persistent context so that the profile is the new empty folder
        # made here (launch() refuses a --user-data-dir argument).
        self.browser = pw.chromium.launch_persistent_context(
            profile.name, executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS,
            timeout=BROWSER_TIMEOUT_S * 1000,
        )
        self.addCleanup(self.browser.close)
        self.page = self.browser.pages[0] if self.browser.pages else self.browser.new_page()
        self.page.set_default_timeout(BROWSER_TIMEOUT_S * 1000)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

    # --- the engine ---------------------------------------------------

    def start_engine(self, http_port: int = 0, extra: tuple[str, ...] = ()) -> str:
        """Starts `obby-sync run`; returns the hub's HTTP address."""
        if self.db_path.exists():
            with sqlite3.connect(self.db_path, timeout=5) as c:
                c.execute("DELETE FROM sync_meta WHERE key LIKE 'api_%_addr'")
        env = {**os.environ, "LOG_LEVEL": "warn"}
        for var in ("DB_PATH", "SSE_GRPC_PORT", "SSE_HTTP_PORT", "OBBY_TOKEN"):
            env.pop(var, None)
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed by a cleanup)
        self.addCleanup(log.close)
        self.proc = subprocess.Popen(
            [
                str(find_binary()), "run",
                "--root", str(self.root), "--db", str(self.db_path),
                "--watcher-port", "0", "--tracker-port", "0",
                "--sse-grpc-port", "0", "--sse-http-port", str(http_port),
                "--debounce-ms", "50", "--rescan-interval", "0", *extra,
            ],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        meta: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"obby-sync run exited early{self._log()}")
            if self.db_path.exists():
                try:
                    with sqlite3.connect(self.db_path, timeout=5) as c:
                        meta = dict(c.execute("SELECT key, value FROM sync_meta").fetchall())
                except sqlite3.OperationalError:
                    meta = {}
                if meta.get("api_sse_http_addr") and meta.get("last_reconcile"):
                    return meta["api_sse_http_addr"]
            time.sleep(0.05)
        self.fail(f"obby-sync run not ready (sync_meta: {meta}){self._log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop_engine(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=STOP_TIMEOUT_S), 0, self._log())

    def _kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _log(self) -> str:
        try:
            return "\n--- obby-sync output ---\n" + self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def changes(self, after: int) -> list[dict[str, str]]:
        """`file_changes` after a cursor, as the page should show them."""
        with sqlite3.connect(self.db_path, timeout=5) as c:
            rows = c.execute(
                "SELECT id, change_type, file_path, old_path FROM file_changes WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
        return [
            {"id": str(i), "event": kind, "path": self.rel(path), "old_path": self.rel(old)}
            for i, kind, path, old in rows
        ]

    def rel(self, path: str | None) -> str:
        return Path(path).relative_to(self.root).as_posix() if path else ""

    # --- the page -----------------------------------------------------

    def dom(self, list_id: str) -> list[dict[str, str]]:
        """The page's list `list_id`, one dict of data attributes per item."""
        return self.page.eval_on_selector_all(
            f"#{list_id} li", "items => items.map(li => Object.assign({}, li.dataset))",
        )

    def wait_dom(self, what: str, ready, lists: tuple[str, ...] = ("sse", "web")) -> None:
        """Polls the DOM until `ready(*lists)` is true (the lists' items)."""
        deadline = time.monotonic() + DOM_TIMEOUT_S
        while True:
            items = [self.dom(name) for name in lists]
            if ready(*items):
                return
            if time.monotonic() > deadline:
                shown = "\n".join(f"{name}: {got}" for name, got in zip(lists, items))
                self.fail(
                    f"the page did not show {what} within {DOM_TIMEOUT_S} s\n"
                    f"{shown}\nconsole: {self.console}\n"
                    f"file_changes: {self.changes(0) if self.db_path.exists() else None}"
                    f"{self._log()}"
                )
            time.sleep(0.1)

    @staticmethod
    def received(items: list[dict[str, str]]) -> list[dict[str, str]]:
        """The change events of one DOM list, as `file_changes` rows."""
        return [
            {"id": i["id"], "event": i["event"], "path": i["path"]}
            for i in items if i["kind"] == "change"
        ]

    def web_expected(self, start: int) -> list[dict[str, str]]:
        """What the web UI stream sends for the rows after `start`: a move as
        deleted + created, where only the second carries an id (the browser's
        `lastEventId` of the first is the id before it)."""
        out: list[dict[str, str]] = []
        last = str(start)
        for row in self.changes(start):
            if row["event"] == "moved":
                out.append({"id": last, "event": "deleted", "path": row["old_path"]})
                out.append({"id": row["id"], "event": "created", "path": row["path"]})
            else:
                out.append({k: row[k] for k in ("id", "event", "path")})
            last = row["id"]
        return out

    def wait_for_the_database(self, sse_start: int, web_start: int,
                              made: list[tuple[str, str]]) -> None:
        """Waits until `file_changes` after `sse_start` holds exactly the
        changes `made` ((event, path), in any order) and both of the page's
        lists show exactly those rows, in cursor order. The lists only grow,
        so a duplicate or a change out of order never matches."""
        def same(s: list, w: list) -> bool:
            rows = self.changes(sse_start)
            return (
                Counter((r["event"], r["path"]) for r in rows) == Counter(made)
                and self.received(s) == [{k: r[k] for k in ("id", "event", "path")}
                                         for r in rows]
                and self.received(w) == self.web_expected(web_start)
            )
        self.wait_dom(f"the changes {made} after cursor {sse_start}", same)

    def write(self, rel: str, text: str) -> None:
        (self.root / rel).write_text(text)

    def wait_rows(self, n: int) -> None:
        deadline = time.monotonic() + DOM_TIMEOUT_S
        while len(self.changes(0)) < n:
            if time.monotonic() > deadline:
                self.fail(f"fewer than {n} rows in file_changes{self._log()}")
            time.sleep(0.05)

    @staticmethod
    def connected(n: int):
        """A `wait_dom` condition: both streams connected `n` times."""
        return lambda s, w: (sum(i["kind"] == "connected" for i in s) >= n
                             and sum(i["kind"] == "connected" for i in w) >= n)

    def open_page(self, hub: str, token: str | None = None) -> tuple[int, int]:
        """Opens the page on `hub` once the first note is recorded; returns
        the cursors its two streams start after."""
        self.wait_rows(1)  # notes/first.md, scanned at start
        query = urllib.parse.urlencode({"hub": hub, **({"token": token} if token else {})})
        self.page.goto(f"{self.page_url}?{query}")
        self.wait_dom("both streams connected", self.connected(1))
        sse_start = int(next(i for i in self.dom("sse") if i["kind"] == "connected")["id"])
        web_start = int(next(i for i in self.dom("web") if i["kind"] == "connected")["id"])
        self.assertEqual(sse_start, int(self.changes(0)[-1]["id"]),
                         "a first connection starts after the newest change")
        return sse_start, web_start

    def test_event_source_gets_every_change_once_across_a_kill_and_a_restart(self) -> None:
        addr = self.start_engine()
        port = int(addr.rsplit(":", 1)[1])
        sse_start, web_start = self.open_page(f"http://{addr}")
        made: list[tuple[str, str]] = []  # every change, as (event, path)

        # 1. Live changes, the engine up: created, modified, moved, deleted.
        self.write("notes/a.md", "a\n")
        self.write("notes/b.md", "b\n")
        made += [("created", "notes/a.md"), ("created", "notes/b.md")]
        self.wait_for_the_database(sse_start, web_start, made)  # no coalescing with the next
        self.write("notes/a.md", "a\nmore\n")
        (self.root / "notes/b.md").rename(self.root / "notes/c.md")
        (self.root / "notes/first.md").unlink()
        made += [("modified", "notes/a.md"), ("moved", "notes/c.md"),
                 ("deleted", "notes/first.md")]
        self.wait_for_the_database(sse_start, web_start, made)

        # 2. kill -9 while the page is open; the page notices and keeps trying.
        lasts = [self.received(self.dom("sse"))[-1]["id"]]  # the id before each outage
        self.kill9()
        self.wait_dom("an error on both streams", lambda s, w: (
            s[-1]["kind"] == "error" and w[-1]["kind"] == "error"))
        self.write("notes/down1.md", "made while down\n")
        self.write("notes/a.md", "changed while down\n")
        (self.root / "notes/c.md").unlink()
        made += [("created", "notes/down1.md"), ("modified", "notes/a.md"),
                 ("deleted", "notes/c.md")]
        self.start_engine(http_port=port)  # the same port: the page's URL
        self.wait_dom("both streams connected again", self.connected(2))
        self.write("notes/after-kill.md", "after the restart\n")
        made += [("created", "notes/after-kill.md")]
        self.wait_for_the_database(sse_start, web_start, made)

        # 3. A clean stop (SIGTERM) while the page is open, then the same.
        lasts.append(self.received(self.dom("sse"))[-1]["id"])
        self.stop_engine()
        self.write("notes/down2.md", "made while stopped\n")
        (self.root / "notes/down1.md").rename(self.root / "notes/moved-while-down.md")
        made += [("created", "notes/down2.md"), ("moved", "notes/moved-while-down.md")]
        self.start_engine(http_port=port)
        self.wait_dom("both streams connected a third time", self.connected(3))
        self.write("notes/after-stop.md", "after the second restart\n")
        made += [("created", "notes/after-stop.md")]
        self.wait_for_the_database(sse_start, web_start, made)

        sse, web = self.dom("sse"), self.dom("web")
        for items in (sse, web):
            connections = [i for i in items if i["kind"] == "connected"]
            self.assertEqual(len(connections), 3, items)
            self.assertEqual([c["id"] for c in connections[1:]], lasts,
                             "the browser sent Last-Event-ID and the hub resumed after it")
            kinds = {i["kind"] for i in items}
            self.assertLessEqual(kinds, {"open", "connected", "change", "error"}, items)
            self.assertNotIn("2", [i["state"] for i in items if i["kind"] == "error"],
                             "the browser never gave up (readyState CLOSED)")
        self.assertTrue(all(i["topic"] == "file-changes" and i["cursor"] == i["id"]
                            for i in sse if i["kind"] == "change"), sse)

    def test_a_token_in_the_url_and_health_from_the_page(self) -> None:
        hub = f"http://{self.start_engine(extra=('--token', 's3cret'))}"
        sse_start, web_start = self.open_page(hub, token="s3cret")
        # Without the token: 401, which an EventSource takes as final.
        state = self.page.evaluate("""hub => new Promise(resolve => {
            const source = new EventSource(hub + "/sse?topics=file-changes");
            source.onopen = () => resolve("open");
            source.onerror = () => resolve(source.readyState);
        })""", hub)
        self.assertEqual(state, 2, "refused without the token (readyState CLOSED)")
        # A plain cross-origin fetch from the page: /health needs no token.
        health = self.page.evaluate("hub => fetch(hub + '/health').then(r => r.json())", hub)
        self.assertEqual((health["status"], health["clients"]), ("healthy", 2), health)
        self.write("notes/secret.md", "s\n")
        self.wait_for_the_database(sse_start, web_start, [("created", "notes/secret.md")])
    def test_an_event_source_comes_back_after_the_hub_could_not_serve_it(self) -> None:
        hub = f"http://{self.start_engine()}"
        sse_start, web_start = self.open_page(hub)
        # The hub cannot open a client while its table is away.
        with sqlite3.connect(self.db_path, timeout=5) as c:
            c.execute("ALTER TABLE file_changes RENAME TO file_changes_away")
        self.page.evaluate("() => probe('/sse?topics=file-changes')")
        self.wait_dom("the probe told twice, and retrying", lambda p: (
            sum(i["kind"] == "unavailable" for i in p) >= 2
            and all(i["state"] == "0" for i in p if i["kind"] == "error")), ("probe",))
        with sqlite3.connect(self.db_path, timeout=5) as c:
            c.execute("ALTER TABLE file_changes_away RENAME TO file_changes")
        self.wait_dom("the probe connected", lambda p: any(
            i["kind"] == "connected" for i in p), ("probe",))
        self.write("notes/back.md", "back\n")
        self.wait_for_the_database(sse_start, web_start, [("created", "notes/back.md")])
        self.wait_dom("the change on the probe", lambda p: [
            (i["event"], i["path"]) for i in p if i["kind"] == "change"]
            == [("created", "notes/back.md")], ("probe",))
        probe = self.dom("probe")
        self.assertTrue(all("file_changes" in i["data"] for i in probe
                            if i["kind"] == "unavailable"), probe)


if __name__ == "__main__":
    unittest.main()
