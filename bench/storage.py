#!/usr/bin/env python3
"""Storage figures: device bytes per durable append, appends/s with 1/3/10 threads under an
injected flush delay (group commit), the cost of one append at 1k/10k/100k stored entries, batch
read+ack throughput, disk space after a drain, and peak RSS; with ``--uuniot-python`` the same
figures for uun-iot's Storage, measured in the same run.

    python bench/storage.py [--sizes 1000,10000,100000] [--dir DIR] [--flush-delay-ms 5]
                            [--seconds 2] [--uuniot-python /tmp/uuniot/bin/python]

Every append is durable (committed, WAL flushed) when it returns. DIR defaults to a temporary
directory; pass a directory on the disk you care about (an SD card is much slower than this VM).

Bytes: ``/proc/self/io`` ``write_bytes`` (what this process sent to the block layer, counted when a
page is dirtied) and, where readable, the sectors written of the block device holding DIR
(``/sys/dev/block/M:m/stat``: the whole device, so other writers on the machine add to it, and the
file system's journal is included). Each is divided by the number of appends.

Flush delay: ``uun_gateway.storage.sync_file`` is the one call that makes committed WAL frames
durable; the bench replaces it by a function that sleeps ``--flush-delay-ms`` and then calls the
real ``fdatasync``, so every flush (the one a group of appends shares) takes at least that long, as
on an SD card. uun-iot never flushes (``append(backup=True)`` rewrites its JSON file without fsync),
so it has nothing to delay: its rows are its own speed, and not durable.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from uun_gateway import Storage, storage

READING = {"id": "28.000000000001", "alias": "living-room", "property": "temperature", "value": 21.5, "unit": "C"}


class Bytes:
    """Bytes written by this process and by the device holding ``directory``, since the start."""

    def __init__(self, directory: Path) -> None:
        st = os.stat(directory)
        self.device_stat = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
        self.start = self.read()

    def read(self) -> tuple[int, int | None]:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ") for line in f.read().splitlines())
        mine = int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])
        try:
            device: int | None = int(self.device_stat.read_text().split()[6]) * 512
        except (OSError, IndexError, ValueError):
            device = None
        return mine, device

    def per(self, count: int) -> str:
        mine, device = self.read()
        text = f"process {(mine - self.start[0]) / count:,.0f} B"
        if device is not None and self.start[1] is not None:
            text += f", device {(device - self.start[1]) / count:,.0f} B"
        else:
            text += ", device counters not readable"
        return text


def settle() -> None:
    """Let writeback of earlier work reach the device before counting."""
    os.sync()
    time.sleep(0.5)


def device_bytes(tmp: Path) -> None:
    path = tmp / "bytes.sqlite"
    store = Storage("bytes", path)
    phases: list[tuple[str, Callable[[], int]]] = [
        ("fresh store, WAL growing: 1,000 appends", lambda: sum(1 for _ in range(1000) if store.append(READING))),
        ("steady (WAL reused): 2,000 appends", lambda: sum(1 for _ in range(2000) if store.append(READING))),
        ("extend() of 10 entries: 2,000 entries", lambda: sum(len(store.extend([READING] * 10)) for _ in range(200))),
    ]
    print(f"device bytes per durable append ({len(storage._encode(READING, 0)[2])}-byte JSON reading):")
    for name, run in phases:
        settle()
        counter = Bytes(tmp)
        n = run()
        settle()
        print(f"  {name:<44} {counter.per(n)} per entry")
    store.close()
    store = Storage("bytes", path)
    settle()
    counter = Bytes(tmp)
    for _ in range(1000):
        store.append(READING)
    settle()
    print(f"  {'after close and reopen: 1,000 appends':<44} {counter.per(1000)} per entry")
    store.close()


def threaded(tmp: Path, threads: int, stores: int, seconds: float) -> float:
    """Appends/s of ``threads`` threads spread over ``stores`` stores, for ``seconds``."""
    opened = [Storage(f"t{k}", tmp / f"threads-{threads}-{stores}-{k}.sqlite") for k in range(stores)]
    stop = threading.Event()
    counts = [0] * threads

    def run(k: int) -> None:
        target = opened[k % stores]
        while not stop.is_set():
            target.append(READING)
            counts[k] += 1

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    for s in opened:
        s.close()
    return sum(counts) / elapsed


def group_commit(tmp: Path, delay_ms: float, seconds: float) -> None:
    real_file, real_filesystem = storage.sync_file, storage.sync_filesystem

    def slow(real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            time.sleep(delay_ms / 1000)
            real(fd)

        return flush

    storage.sync_file, storage.sync_filesystem = slow(real_file), slow(real_filesystem)
    try:
        flushes, commits = storage.group_commit.flushes, storage.group_commit.commits
        print(
            f"durable appends/s with a {delay_ms:g} ms flush (group commit; limit without it: {1000 / delay_ms:.0f}/s):"
        )
        for threads in (1, 3, 10):
            one = threaded(tmp, threads, 1, seconds)
            own = threaded(tmp, threads, threads, seconds)
            print(f"  {threads:>2} thread(s): one store {one:>7,.0f}/s   a store each {own:>7,.0f}/s")
        shared = (storage.group_commit.commits - commits) / max(1, storage.group_commit.flushes - flushes)
        print(f"  commits per flush over these runs: {shared:.1f}")
    finally:
        storage.sync_file, storage.sync_filesystem = real_file, real_filesystem


def append_cost(store: Storage, samples: int = 300) -> float:
    """Median seconds of one durable append at the store's current size (entries removed again)."""
    costs = []
    ids = []
    for _ in range(samples):
        start = time.perf_counter()
        ids.append(store.append(READING))
        costs.append(time.perf_counter() - start)
    store.ack(ids)
    return statistics.median(costs)


def backlog(tmp: Path, sizes: list[int]) -> None:
    store = Storage("bench", tmp / "bench.sqlite")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        store.append(READING)
    elapsed = time.perf_counter() - start
    print(f"durable appends, one by one, no injected delay: {n / elapsed:,.0f}/s ({elapsed / n * 1e3:.3f} ms each)")
    store.empty()
    costs = {}
    for size in sizes:
        missing = size - len(store)
        for chunk in range(0, missing, 5000):
            store.extend([READING] * min(5000, missing - chunk))
        costs[size] = append_cost(store)
        print(f"append cost at {size:>7,} stored: {costs[size] * 1e3:.3f} ms (median of 300)")
    print(f"ratio {sizes[-1]:,} / {sizes[0]:,}: {costs[sizes[-1]] / costs[sizes[0]]:.2f}x (target <= 1.5x)")
    store._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
    full = (tmp / "bench.sqlite").stat().st_size
    total, batch = len(store), 500
    start = time.perf_counter()
    while True:
        entries = store.oldest(batch)
        if not entries:
            break
        store.ack(e.id for e in entries)
    elapsed = time.perf_counter() - start
    print(f"batch read+ack ({batch} per batch): {total / elapsed:,.0f} entries/s over {total:,}")
    wal = Path(f"{tmp / 'bench.sqlite'}-wal").stat().st_size
    print(
        f"disk: database {full / 1e6:.1f} MB with {total:,} entries, {(tmp / 'bench.sqlite').stat().st_size / 1e3:.0f}"
        f" KB once drained (WAL kept at {wal / 1e6:.1f} MB for reuse)"
    )
    store.close()


UUNIOT_CHILD = r"""
import json, os, sys, threading, time
from uun_iot.utils import Storage
import uun_iot
tmp, seconds = sys.argv[1], float(sys.argv[2])
READING = json.loads(sys.argv[3])
def written():
    f = dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())
    return int(f["write_bytes"]) - int(f["cancelled_write_bytes"])
print("uun-iot %s Storage, measured in this run (append(backup=True); never fsynced):" % uun_iot.__version__)
for size in (100, 1000, 10000):
    s = Storage("b", os.path.join(tmp, "bytes%d" % size, "s.json"))
    s.merge([READING] * size, backup=True)
    os.sync(); time.sleep(0.5); before = written()
    for _ in range(100):
        s.append(READING, backup=True)
    os.sync(); time.sleep(0.5)
    print("  process bytes per append with %6d stored: %10.0f B" % (size, (written() - before) / 100))
for threads in (1, 3, 10):
    rates = []
    for stores in (1, threads):
        opened = [Storage("t", os.path.join(tmp, "t%d-%d-%d" % (threads, stores, k), "s.json")) for k in range(stores)]
        for s in opened:
            s.merge([READING] * 100, backup=True)
        stop = threading.Event(); counts = [0] * threads
        def run(k):
            while not stop.is_set():
                opened[k % stores].append(READING, backup=True)
                counts[k] += 1
        ws = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        t0 = time.perf_counter()
        for w in ws: w.start()
        time.sleep(seconds); stop.set()
        for w in ws: w.join()
        rates.append(sum(counts) / (time.perf_counter() - t0))
    print("  %2d thread(s): one store %7.0f/s   a store each %7.0f/s  (from 100 stored)"
          % (threads, rates[0], rates[1]))
"""


def uuniot(python: str, tmp: Path, seconds: float) -> None:
    import json

    directory = tmp / "uuniot"
    directory.mkdir()
    done = subprocess.run(
        [python, "-c", UUNIOT_CHILD, str(directory), str(seconds), json.dumps(READING)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout, end="")
    if done.returncode:
        print(f"uun-iot run failed ({python}): {done.stderr.strip()}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--flush-delay-ms", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each threaded run")
    parser.add_argument("--uuniot-python", help="the python of a venv with uun-iot installed (same run)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        tmp = Path(name)
        print(f"uun-gateway Storage in {tmp} (SQLite {sqlite3.sqlite_version})")
        device_bytes(tmp)
        group_commit(tmp, args.flush_delay_ms, args.seconds)
        backlog(tmp, sizes)
        if args.uuniot_python:
            uuniot(args.uuniot_python, tmp, args.seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS (uun-gateway part): {peak:.1f} MB")


if __name__ == "__main__":
    main()
