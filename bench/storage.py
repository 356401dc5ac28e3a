#!/usr/bin/env python3
"""Storage figures: durable appends per second, the cost of one append at 1k, 10k and 100k stored
entries, batch read+ack throughput, and peak RSS.

    python bench/storage.py [--sizes 1000,10000,100000] [--dir DIR]

Every append is durable (committed, WAL fsynced) when it returns. DIR defaults to a temporary
directory; pass a directory on the disk you care about (an SD card is much slower than this VM).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

from uun_gateway import Storage

READING = {"id": "28.000000000001", "alias": "living-room", "property": "temperature", "value": 21.5, "unit": "C"}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Storage("bench", Path(tmp) / "bench.sqlite")
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            store.append(READING)
        elapsed = time.perf_counter() - start
        print(f"durable appends, one by one: {n / elapsed:,.0f}/s ({elapsed / n * 1e3:.3f} ms each)")
        store.empty()
        costs = {}
        for size in sizes:
            missing = size - len(store)
            for chunk in range(0, missing, 5000):
                store.extend([READING] * min(5000, missing - chunk))
            costs[size] = append_cost(store)
            print(f"append cost at {size:>7,} stored: {costs[size] * 1e3:.3f} ms (median of 300)")
        base = costs[sizes[0]]
        print(f"ratio {sizes[-1]:,} / {sizes[0]:,}: {costs[sizes[-1]] / base:.2f}x (target <= 1.5x)")
        total, batch = len(store), 500
        start = time.perf_counter()
        while True:
            entries = store.oldest(batch)
            if not entries:
                break
            store.ack(e.id for e in entries)
        elapsed = time.perf_counter() - start
        print(f"batch read+ack ({batch} per batch): {total / elapsed:,.0f} entries/s over {total:,}")
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.1f} MB (files at the end: {size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
