"""Drain a backlog of stored readings into a local fake uuApp and print readings/s and peak RSS.

Usage (from the repository root)::

    python bench/upload.py [--readings 100000] [--batch 500]

The fake uuApp (tests/fake_uuapp.py, with token grant and auth) runs in a child process so the
RSS printed is the gateway's own. The backlog is stored first (not timed), then a Gateway with the
``upload`` module drains it; the figure is readings acknowledged by the server per second of drain.
The child counts the distinct ids it received, and the bench fails if any reading is missing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from uun_gateway.modules.upload import Upload  # noqa: E402

from tests.fake_uuapp import FakeUuApp  # noqa: E402
from uun_gateway import Gateway, Module  # noqa: E402


class Backlog(Module):
    """The module whose storage holds the readings."""

    id = "backlog"


def serve() -> None:
    """Child mode: run the fake uuApp, print its port, print the distinct ids received at stdin EOF."""
    with FakeUuApp() as fake:
        print(fake.port, flush=True)
        sys.stdin.read()
        ids: set[int] = set()
        for record in fake.for_cmd("gateway/upload", ok_only=True):
            ids.update(item["id"] for item in record.dto["data"])
        print(len(ids), flush=True)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        with tempfile.TemporaryDirectory() as tmp:
            fake = FakeUuApp()
            fake.port = port
            config: dict[str, Any] = fake.config(f"{tmp}/oidc-token")
            config["gateway"] = {
                "storageDir": tmp,
                "moduleTimers": {"upload": 0.01},
                "upload": {"sources": {"backlog": {"uuCmd": "gateway/upload", "batchSize": args.batch}}},
            }
            gateway = Gateway(config, lambda c, u: [Backlog(c["gateway"], u), Upload(c["gateway"], u)])
            backlog, upload = gateway.modules
            storage = backlog.storage
            filled = time.perf_counter()
            for start in range(0, args.readings, 5000):
                count = min(5000, args.readings - start)
                storage.extend([{"sensor": "28.0000000000", "t": 21.5 + (start + i) % 100 / 10} for i in range(count)])
            filled = time.perf_counter() - filled
            rss_before = rss_kb()
            began = time.perf_counter()
            gateway.start()
            while len(storage) and time.perf_counter() - began < 600:
                time.sleep(0.05)
            elapsed = time.perf_counter() - began
            left = len(storage)
            gateway.stop()
            if gateway.uuapp_client is not None:
                gateway.uuapp_client.close()
        child.stdin.close()
        received = int(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drained = args.readings - left
    print(
        json.dumps(
            {
                "readings": args.readings,
                "batch": args.batch,
                "requests": upload.state["backlog"].requests,
                "fill_s": round(filled, 2),
                "drain_s": round(elapsed, 2),
                "readings_per_s": round(drained / elapsed),
                "received_distinct": received,
                "rss_before_drain_mb": round(rss_before / 1024, 1),
                "peak_rss_mb": round(peak / 1024, 1),
            }
        )
    )
    print(f"{drained / elapsed:,.0f} readings/s, peak RSS {peak / 1024:.1f} MB")
    return 0 if left == 0 and received == args.readings else 1


if __name__ == "__main__":
    sys.exit(main())
