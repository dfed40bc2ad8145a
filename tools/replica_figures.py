#!/usr/bin/env python3
"""Figures for Litestream beside obby-sync (README "Backups and replicas").

1. WAL size with each --checkpoint mode during a scan of N new notes
   (sampled every 5 ms until the scan exits): peak, after exit, database file.
2. Replication lag under a flood: `run --checkpoint external` and
   `litestream replicate` (file replica, sync-interval 1s); F new notes are
   written as fast as possible; while they go through, the age of the
   replica's newest LTX file is sampled every 100 ms; after the last version
   is committed, restores are repeated until one holds all of them.
3. Restore time of the history the flood and the N-note scan made.

Usage: tools/replica_figures.py [--notes 10000] [--flood 20000]
Needs target/release/obby-sync (or $OBBY_SYNC_BIN) and `litestream` on PATH.
Standard library only.
"""

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def binary():
    env = os.environ.get("OBBY_SYNC_BIN")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return str(target / "release" / "obby-sync")


def note(i, tag=""):
    text = f"# note {i}{tag}\n\n"
    while len(text) < 4000:
        text += f"line {len(text)} of note {i}{tag}, some words to fill it\n"
    return text


def vault(base, n):
    root = base / "vault"
    (root / "notes").mkdir(parents=True)
    (root / ".obbywatch").write_text("notes/\n")
    for i in range(n):
        d = root / "notes" / f"d{i % 100}"
        d.mkdir(exist_ok=True)
        (d / f"n{i}.md").write_text(note(i))
    return root


def count(db, table="file_versions"):
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def size(p):
    try:
        return os.path.getsize(p)
    except OSError:
        return 0


def mib(n):
    return f"{n / 1048576:.0f} MiB"


def wal_by_mode(base, n):
    print(f"== WAL size during a scan of {n} new notes", flush=True)
    root = vault(base / "modes", n)
    rows = []
    for mode in ["auto", "passive", "external"]:
        db = base / "modes" / f"{mode}.db"
        wal = Path(f"{db}-wal")
        start = time.monotonic()
        p = subprocess.Popen(
            [binary(), "scan", "--root", str(root), "--db", str(db), "--checkpoint", mode],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        while p.poll() is None:
            peak = max(peak, size(wal))
            time.sleep(0.005)
        secs = time.monotonic() - start
        assert p.returncode == 0, f"scan --checkpoint {mode}: {p.returncode}"
        rows.append((mode, peak, size(wal), size(db), secs))
    print("| mode | WAL peak | WAL after exit | database file | scan |")
    print("|---|---|---|---|---|")
    for mode, peak, after, dbs, secs in rows:
        print(f"| `{mode}` | {mib(peak)} | {mib(after)} | {mib(dbs)} | {secs:.1f} s |")
    return base / "modes" / "external.db"


def litestream_config(path, db, replica):
    path.write_text(
        f"dbs:\n  - path: {db}\n    replicas:\n      - type: file\n"
        f"        path: {replica}\n        sync-interval: 1s\n")


def restore_until(config, db, want, out):
    """Restores until the copy holds `want` versions; returns (seconds until
    then, duration of the last restore)."""
    start = time.monotonic()
    while True:
        if out.exists():
            out.unlink()
        t = time.monotonic()
        r = subprocess.run(["litestream", "restore", "-config", str(config), "-o", str(out), str(db)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took = time.monotonic() - t
        if r.returncode == 0 and count(out) >= want:
            return time.monotonic() - start, took
        if time.monotonic() - start > 120:
            raise SystemExit("the replica never caught up")
        time.sleep(0.2)


def flood(base, n):
    print(f"== replication lag under a flood of {n} new notes", flush=True)
    root = base / "flood" / "vault"
    (root / "notes").mkdir(parents=True)
    (root / ".obbywatch").write_text("notes/\n")
    for d in range(100):
        (root / "notes" / f"d{d}").mkdir()
    db = base / "flood" / "obby.db"
    replica = base / "flood" / "replica"
    config = base / "flood" / "litestream.yml"
    litestream_config(config, db, replica)
    engine = subprocess.Popen(
        [binary(), "run", "--root", str(root), "--db", str(db), "--checkpoint", "external",
         "--rescan-interval", "0", "--no-api"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while count(db, "sync_meta") == 0:
        time.sleep(0.05)
    streamer = subprocess.Popen(["litestream", "replicate", "-config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    start = time.monotonic()
    for i in range(n):
        (root / "notes" / f"d{i % 100}" / f"n{i}.md").write_text(note(i))
    wrote = time.monotonic() - start
    ages = []
    l0 = replica / "ltx" / "0"
    while count(db) < n:
        newest = max((f.stat().st_mtime for f in l0.glob("*.ltx")), default=None) if l0.exists() else None
        if newest is not None:
            ages.append(time.time() - newest)
        time.sleep(0.1)
    committed = time.monotonic() - start
    lag, took = restore_until(config, db, n, base / "flood" / "restored.db")
    engine.send_signal(signal.SIGTERM)
    engine.wait()
    streamer.send_signal(signal.SIGTERM)
    streamer.wait()
    ages.sort()
    p = lambda q: ages[min(len(ages) - 1, int(q * len(ages)))] if ages else float("nan")
    print(f"flood: {n} notes written in {wrote:.1f} s, all committed after {committed:.1f} s")
    print(f"replica's newest LTX age while the flood went through: median {p(0.5):.2f} s, "
          f"p99 {p(0.99):.2f} s, max {max(ages) if ages else float('nan'):.2f} s ({len(ages)} samples)")
    print(f"last commit -> a restore holds every version: {lag:.2f} s (that restore took {took:.2f} s)")
    return config, db


def restore_time(base, n, label, db_source):
    print(f"== restore time: {label}", flush=True)
    config = base / f"restore-{label}.yml"
    replica = base / f"replica-{label}"
    litestream_config(config, db_source, replica)
    streamer = subprocess.Popen(["litestream", "replicate", "-config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = base / f"restored-{label}.db"
    _, _ = restore_until(config, db_source, n, out)
    streamer.send_signal(signal.SIGTERM)
    streamer.wait()
    times = []
    for _ in range(3):
        out.unlink()
        t = time.monotonic()
        subprocess.run(["litestream", "restore", "-config", str(config), "-o", str(out), str(db_source)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.monotonic() - t)
    times.sort()
    print(f"restore of {label} ({mib(size(out))}, {count(out)} versions): median of 3 {times[1]:.2f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=int, default=10000)
    ap.add_argument("--flood", type=int, default=20000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="obby-replica-figures-"))
    try:
        print(f"{os.cpu_count()} cores; litestream "
              + subprocess.run(["litestream", "version"], capture_output=True, text=True).stdout.strip())
        external = wal_by_mode(base, args.notes)
        restore_time(base, args.notes, f"{args.notes}-note scan", external)
        flood(base, args.flood)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
