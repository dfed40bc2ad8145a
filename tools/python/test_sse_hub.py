"""Proves that an old-style client of the seed's SSE hub works against obby-sync.

CONTRACT.md section 2 ("The seed's phase 3 and 4 services") fixes the hub's
wire: HTTP `GET /sse?topics=...` (server-sent events), `GET /health`, the web
UI's `GET /api/files/updates/stream`, and gRPC `obby.sse.SSEService`. This test
reads the streams the way a plain Python client would, with the standard library
only (`http.client`, `urllib`): it starts the real `obby-sync run` on a temporary
vault with ephemeral ports, reads the bound addresses from `obby.db`
(`sync_meta`), edits notes and checks what arrives, including a reconnect with
`Last-Event-ID` after the engine was stopped and notes changed meanwhile
(nothing missed, nothing twice), and the web UI's payloads byte for byte against
`json.dumps`. With `grpcio` and `grpcio-tools` installed it also publishes
through `Publish` and reads the message back from `/sse`; without them that one
test is skipped (under CI, set CI, it is a failure).

Run from the repository root after `cargo build`:

    python3 -m unittest tools/python/test_sse_hub.py -v

The binary is `$OBBY_SYNC_BIN`, else `target/debug/obby-sync` in the repository.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"

READY_TIMEOUT_S = 20  # `obby-sync run` until the hub's addresses are recorded
EVENT_TIMEOUT_S = 15  # a committed change reaching a stream
STOP_TIMEOUT_S = 15  # SIGTERM until exit

# Never through a proxy: the hub listens on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ci_is_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_binary() -> Path:
    env = os.environ.get("OBBY_SYNC_BIN")
    binary = Path(env) if env else REPO_ROOT / "target" / "debug" / "obby-sync"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise AssertionError(f"no obby-sync binary at {binary}: run `cargo build` first")
    return binary


class EventStream(threading.Thread):
    """Reads one event stream with http.client (what urllib uses underneath)
    and parses it as a browser would."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.netloc, timeout=60)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn.request("GET", target, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise AssertionError(f"GET {url}: HTTP {self.response.status}")
        self.events: queue.Queue = queue.Queue()
        self.start()

    def run(self) -> None:
        event: dict[str, str] = {}
        data: list[str] = []
        try:
            for raw in self.response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if event or data:
                        event["data"] = "\n".join(data)
                        self.events.put(event)
                    event, data = {}, []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    data.append(value)
                elif field in ("event", "id"):
                    event[field] = value
        except (OSError, ValueError, AttributeError):
            pass  # closed by the test (http.client may fail half-way through a read)
        self.events.put(None)

    def next(self, skip_keepalives: bool = True) -> dict[str, str]:
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no event in time")
            event = self.events.get(timeout=left)
            if event is None:
                raise AssertionError("the stream ended")
            if skip_keepalives and (
                event.get("event") == "ping" or '"keepalive"' in event.get("data", "")
            ):
                continue
            return event

    def close(self) -> None:
        # Shut the socket down first: closing the response alone waits for
        # the reading thread's read to return (the next ping, 30 s away).
        if self.conn.sock is not None:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.join(timeout=EVENT_TIMEOUT_S)
        self.conn.close()


class HubCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory(prefix="obby-sse-")
        self.addCleanup(tmp.cleanup)
        base = Path(os.path.realpath(tmp.name))
        self.root = base / "vault"
        self.db_path = base / "obby.db"
        self.log_path = base / "obby-sync.log"
        (self.root / "notes").mkdir(parents=True)
        (self.root / ".obbywatch").write_text("notes/\n")
        self.proc: subprocess.Popen | None = None
        self.addCleanup(self._kill_if_running)
        self.start_engine()

    def start_engine(self) -> None:
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
                "--sse-grpc-port", "0", "--sse-http-port", "0",
                "--debounce-ms", "50", "--rescan-interval", "0",
            ],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        self.meta = self._wait_ready()
        self.http = f"http://{self.meta['api_sse_http_addr']}"

    def stop_engine(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=STOP_TIMEOUT_S), 0, self._log())

    def tearDown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop_engine()

    def _kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _log(self) -> str:
        try:
            return "\n--- obby-sync output ---\n" + self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_ready(self) -> dict[str, str]:
        wanted = ("api_sse_http_addr", "api_sse_grpc_addr", "api_tracker_addr", "last_reconcile")
        deadline = time.monotonic() + READY_TIMEOUT_S
        meta: dict[str, str] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self.fail(f"obby-sync run exited early{self._log()}")
            if self.db_path.exists():
                try:
                    with sqlite3.connect(self.db_path, timeout=5) as c:
                        meta = dict(c.execute("SELECT key, value FROM sync_meta").fetchall())
                except sqlite3.OperationalError:
                    meta = {}
                if all(meta.get(k) for k in wanted):
                    return meta
            time.sleep(0.05)
        self.fail(f"obby-sync run not ready (sync_meta: {meta}){self._log()}")

    def write(self, rel: str, text: str) -> None:
        (self.root / rel).write_text(text)

    def cursors(self) -> list[int]:
        with sqlite3.connect(self.db_path, timeout=5) as c:
            return [r[0] for r in c.execute("SELECT id FROM file_changes ORDER BY id")]


class OldStyleClientTest(HubCase):
    def test_health(self) -> None:
        with OPENER.open(f"{self.http}/health", timeout=10) as r:
            self.assertEqual(r.headers["Access-Control-Allow-Origin"], "*")
            body = json.load(r)
        self.assertEqual(body["status"], "healthy")
        self.assertEqual(body["clients"], 0)
        self.assertAlmostEqual(body["timestamp"], time.time(), delta=5)

    def test_sse_resumes_with_last_event_id_across_a_restart(self) -> None:
        stream = EventStream(f"{self.http}/sse?topics=file-changes")
        connected = stream.next()
        self.assertEqual(connected["event"], "connected")
        self.assertTrue(connected["data"].startswith("client-"), connected)
        self.write("notes/one.md", "one\n")
        first = stream.next()
        self.assertEqual(first["event"], "created")
        message = json.loads(first["data"])
        self.assertEqual(set(message), {"event", "topic", "data"})
        self.assertEqual((message["event"], message["topic"]), ("created", "file-changes"))
        change = json.loads(message["data"])
        self.assertEqual(change["relative_path"], "notes/one.md")
        self.assertEqual(change["path"], str(self.root / "notes/one.md"))
        self.assertEqual(str(change["cursor"]), first["id"])
        stream.close()

        self.stop_engine()
        self.write("notes/two.md", "two\n")  # while the engine is down
        self.start_engine()
        resumed = EventStream(f"{self.http}/sse?topics=file-changes", {"Last-Event-ID": first["id"]})
        self.assertEqual(resumed.next()["id"], first["id"])
        self.write("notes/three.md", "three\n")
        got = [int(resumed.next()["id"]), int(resumed.next()["id"])]
        after = [c for c in self.cursors() if c > int(first["id"])]
        self.assertEqual(got, after, "the change made while down, then the live one, once each")
        resumed.close()

    def test_the_web_ui_stream_is_the_backends(self) -> None:
        stream = EventStream(f"{self.http}/api/files/updates/stream")
        hello = stream.next()
        self.assertNotIn("event", hello)
        payload = json.loads(hello["data"])
        self.assertEqual(
            hello["data"],
            json.dumps({"type": "connected", "clientId": payload["clientId"],
                        "message": "Connected to file updates"}),
        )
        self.write("notes/ui.md", "ui\n")
        update = stream.next()
        payload = json.loads(update["data"])
        self.assertEqual(
            update["data"],
            json.dumps({"type": "created", "filePath": "notes/ui.md",
                        "timestamp": payload["timestamp"]}),
            "byte for byte what the backend's json.dumps writes",
        )
        self.assertTrue(payload["timestamp"].endswith("Z"))
        stream.close()

    def test_publish_reaches_sse(self) -> None:
        try:
            grpc = importlib.import_module("grpc")
            protoc = importlib.import_module("grpc_tools.protoc")
        except ImportError as e:
            if ci_is_set():
                raise AssertionError(f"grpcio and grpcio-tools are needed under CI ({e})") from e
            self.skipTest(f"needs grpcio and grpcio-tools ({e})")
        out = tempfile.TemporaryDirectory(prefix="obby-sse-stubs-")
        self.addCleanup(out.cleanup)
        well_known = Path(protoc.__file__).resolve().parent / "_proto"
        args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
                f"--python_out={out.name}", f"--grpc_python_out={out.name}",
                str(PROTO_DIR / "sse.proto")]
        self.assertEqual(protoc.main(args), 0)
        sys.path.insert(0, out.name)
        self.addCleanup(sys.path.remove, out.name)
        pb2 = importlib.import_module("sse_pb2")
        pb2_grpc = importlib.import_module("sse_pb2_grpc")
        self.addCleanup(sys.modules.pop, "sse_pb2", None)
        self.addCleanup(sys.modules.pop, "sse_pb2_grpc", None)

        stream = EventStream(f"{self.http}/sse?topics=news")
        self.assertEqual(stream.next()["event"], "connected")
        channel = grpc.insecure_channel(self.meta["api_sse_grpc_addr"],
                                        options=[("grpc.enable_http_proxy", 0)])
        self.addCleanup(channel.close)
        stub = pb2_grpc.SSEServiceStub(channel)
        reply = stub.Publish(pb2.PublishRequest(event="update", topic="news", data="hello"),
                             timeout=10)
        self.assertTrue(reply.success)
        self.assertEqual(reply.clients, 1)
        got = stream.next()
        self.assertEqual(got["event"], "update")
        self.assertEqual(json.loads(got["data"]),
                         {"event": "update", "topic": "news", "data": "hello"})
        stream.close()


if __name__ == "__main__":
    unittest.main()
