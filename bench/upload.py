"""Drain a stored backlog into a local fake uuApp through a delaying TCP proxy; print readings/s, CPU
µs per reading and peak RSS, at each round-trip time, beside uun-iot when its interpreter is given.

Usage (from the repository root)::

    python bench/upload.py [--readings 100000] [--rtt 0,50] [--batch 100] [--pipeline 4]
                           [--compress none] [--uuniot /path/to/venv-with-uun-iot/bin/python]

A child process runs the fake uuApp (tests/fake_uuapp.py, no auth) and, in front of it, a proxy
that holds every chunk for RTT/2 in each direction (latency only, no bandwidth limit), so neither
costs the gateway's CPU or RSS. For each RTT the backlog is stored first (not timed), then a
Gateway with the ``upload`` module drains it; readings/s counts readings the server acknowledged
per second of drain, CPU is this process's user+system time during the drain divided by the
readings, and the bench fails if the server did not receive every id. Each drain runs in a fresh
process, so its peak RSS is its own.

With ``--uuniot``, the same backlog goes through uun-iot's own ``Module._send_storage`` (one
request with the whole backlog, as uun-iot sends it) with that interpreter, against the same
proxy, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPLOAD = "gateway/upload"

UUNIOT_CHILD = r"""
import json, resource, sys, time, requests
from uun_iot import Module

n, url, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
session = requests.Session()

def send(data):
    response = session.post(url, json=data, timeout=600)
    return [] if response.ok else data

class Uploader(Module):
    pass

m = Uploader({"moduleBackupStorage": {"uploader": path}}, uucmd=send)
m._storage.merge([{"sensor": "28.0000000000", "t": 21.5 + i % 100 / 10} for i in range(n)], backup=True)
cpu0, t0 = time.process_time(), time.perf_counter()
m._send_storage()
elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
print(json.dumps({"readings_per_s": round(n / elapsed), "drain_s": round(elapsed, 3),
                  "cpu_us_per_reading": round(cpu / n * 1e6, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "left": len(m._storage.data)}))
"""


# ---------------------------------------------------------------------- the server child
class DelayProxy:
    """Forwards 127.0.0.1:<port> to ``target``, holding each chunk ``delay`` seconds per direction."""

    def __init__(self, target: int, delay: float) -> None:
        self.target = target
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for src, dst in ((client, upstream), (upstream, client)):
                queue: deque[tuple[float, bytes]] = deque()
                ready = threading.Condition()
                threading.Thread(target=self._read, args=(src, queue, ready), daemon=True).start()
                threading.Thread(target=self._write, args=(dst, queue, ready), daemon=True).start()

    def _read(self, src: socket.socket, queue: deque[tuple[float, bytes]], ready: threading.Condition) -> None:
        while True:
            try:
                data = src.recv(262144)
            except OSError:
                data = b""
            with ready:
                queue.append((time.monotonic() + self.delay, data))
                ready.notify()
            if not data:
                return

    def _write(self, dst: socket.socket, queue: deque[tuple[float, bytes]], ready: threading.Condition) -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the emulated link latency itself
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return


def serve(rtts: list[float]) -> None:
    """Child mode: the fake uuApp and one proxy per RTT; answers 'ids' (distinct ids received since
    the last 'ids') on stdin lines; ends at EOF."""
    from tests.fake_uuapp import FakeUuApp

    with FakeUuApp(require_auth=False) as fake:
        proxies = [DelayProxy(fake.port, rtt / 2000) for rtt in rtts]
        print(json.dumps({"direct": fake.port, "proxies": [p.port for p in proxies]}), flush=True)
        seen = 0
        for line in sys.stdin:
            if line.strip() == "ids":
                with fake._lock:
                    records, fake.records = fake.records[seen:], fake.records
                ids: set[int] = set()
                for record in records:
                    if isinstance(record.dto, dict) and isinstance(record.dto.get("data"), list):
                        ids.update(item["id"] for item in record.dto["data"])
                seen = len(fake.records)
                print(len(ids), flush=True)
        for p in proxies:
            p.listener.close()


# ---------------------------------------------------------------------- one drain (its own process)
def drain(port: int, readings: int, settings: dict[str, Any]) -> dict[str, Any]:
    from uun_gateway.modules.upload import Upload

    from tests.fake_uuapp import FakeUuApp
    from uun_gateway import Gateway, Module

    class Backlog(Module):
        id = "backlog"

    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeUuApp()
        fake.port = port
        config: dict[str, Any] = fake.config(auth=False)
        config["uuApp"]["timeout"] = 120
        config["gateway"] = {
            "storageDir": tmp,
            "moduleTimers": {"upload": 0.01},
            "upload": {"sources": {"backlog": {"uuCmd": UPLOAD, **settings}}},
        }
        gateway = Gateway(config, lambda c, u: [Backlog(c["gateway"], u), Upload(c["gateway"], u)])
        backlog, upload = gateway.modules
        storage = backlog.storage
        for start in range(0, readings, 5000):
            count = min(5000, readings - start)
            storage.extend([{"sensor": "28.0000000000", "t": 21.5 + (start + i) % 100 / 10} for i in range(count)])
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = usage.ru_utime + usage.ru_stime
        began = time.perf_counter()
        gateway.start()
        while len(storage) and time.perf_counter() - began < 900:
            time.sleep(0.01)
        elapsed = time.perf_counter() - began
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - cpu0
        left = len(storage)
        requests = upload.state["backlog"].requests
        gateway.stop()
    drained = readings - left
    return {
        "readings_per_s": round(drained / elapsed),
        "drain_s": round(elapsed, 3),
        "cpu_us_per_reading": round(cpu / max(drained, 1) * 1e6, 2),
        "requests": requests,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "left": left,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--rtt", default="0,50", help="round-trip times in ms, comma separated")
    parser.add_argument("--batch", type=int, default=100, help="upload batchSize (entries while the backlog is small)")
    parser.add_argument("--pipeline", type=int, default=4)
    parser.add_argument("--max-batch-bytes", type=int, default=256 * 1024)
    parser.add_argument("--compress", default="none", choices=["none", "gzip", "auto"])
    parser.add_argument("--uuniot", help="a Python interpreter with uun-iot installed: measure it too")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--drain", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve([float(r) for r in args.serve.split(",")])
        return 0
    settings = {
        "batchSize": args.batch,
        "pipeline": args.pipeline,
        "maxBatchBytes": args.max_batch_bytes,
        "compress": args.compress,
    }
    if args.drain:
        print(json.dumps(drain(int(args.drain), args.readings, settings)))
        return 0

    rtts = [float(r) for r in args.rtt.split(",")]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", args.rtt], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    ok = True
    rows: list[dict[str, Any]] = []
    try:
        ports = json.loads(child.stdout.readline())

        def received() -> int:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("ids\n")
            child.stdin.flush()
            return int(child.stdout.readline())

        for rtt, port in zip(rtts, ports["proxies"], strict=True):
            ours = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--drain",
                        str(port),
                        "--readings",
                        str(args.readings),
                        "--batch",
                        str(args.batch),
                        "--pipeline",
                        str(args.pipeline),
                        "--max-batch-bytes",
                        str(args.max_batch_bytes),
                        "--compress",
                        args.compress,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            ours["received_distinct"] = received()
            ok = ok and ours["left"] == 0 and ours["received_distinct"] == args.readings
            rows.append({"rtt_ms": rtt, "who": "uun-gateway", **settings, **ours})
            if args.uuniot:
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"http://127.0.0.1:{port}/uu-fake-app/awid0/{UPLOAD}"
                    out = subprocess.run(
                        [args.uuniot, "-c", UUNIOT_CHILD, str(args.readings), url, f"{tmp}/u.json"],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                rows.append({"rtt_ms": rtt, "who": "uun-iot 0.12.14", **json.loads(out.strip().splitlines()[-1])})
                received()
    finally:
        child.stdin.close()
        child.wait(10)
    for row in rows:
        print(json.dumps(row))
    print(f"{'RTT':>6}  {'who':<16} {'readings/s':>11} {'CPU µs/reading':>15} {'peak RSS MB':>12}")
    for row in rows:
        print(
            f"{row['rtt_ms']:>4.0f}ms  {row['who']:<16} {row['readings_per_s']:>11,} "
            f"{row['cpu_us_per_reading']:>15} {row['peak_rss_mb']:>12}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
