#!/usr/bin/env python3
"""Timer figures: cumulative drift and tick-interval jitter of a 50 ms RepeatTimer over 10 s, idle and
with a 20 ms handler, plus the catch-up behaviour after a 1 s stall.

"Drift at last tick" is one sample and includes that tick's jitter; "accumulated" compares the
median lateness of the last 20 ticks with that of the first 20, which is what grows if a schedule
drifts.

    python bench/timers.py [--duration 10] [--period 0.05]

Drift is measured against the ideal grid ``t0 + k * period`` (t0 = the first tick); "accumulated
after tick 1" leaves out any one-off offset of the first tick.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import threading
import time

from uun_gateway import RepeatTimer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(period: float, duration: float, work: float) -> dict[str, float]:
    stamps: list[float] = []
    done = threading.Event()

    def handler() -> None:
        stamps.append(time.monotonic())
        if work:
            time.sleep(work)
        if stamps[-1] - stamps[0] >= duration:
            done.set()

    timer = RepeatTimer(period, handler)
    timer.start()
    done.wait(duration * 2 + 5)
    timer.stop()
    drift = [t - (stamps[0] + i * period) for i, t in enumerate(stamps)]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    window = min(20, len(drift) // 4)
    return {
        "ticks": len(stamps),
        "drift_ms": drift[-1] * 1e3,
        # jitter-free: median lateness of the last ticks minus that of the first ticks after tick 0
        "accumulated_ms": (statistics.median(drift[-window:]) - statistics.median(drift[1 : 1 + window])) * 1e3,
        "p50_ms": statistics.median(intervals) * 1e3,
        "p99_ms": percentile(intervals, 99) * 1e3,
        "max_ms": max(intervals) * 1e3,
        "skipped": timer.skipped,
    }


def stall(period: float) -> tuple[float, int]:
    """The shortest interval between runs after a handler stalled for 1 s, and the ticks skipped."""
    stamps: list[float] = []
    after = threading.Event()

    def handler() -> None:
        stamps.append(time.monotonic())
        if len(stamps) == 3:
            time.sleep(1.0)
        if len(stamps) >= 8:
            after.set()

    timer = RepeatTimer(period, handler)
    timer.start()
    after.wait(10)
    timer.stop()
    return min(b - a for a, b in itertools.pairwise(stamps)), timer.skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--period", type=float, default=0.05)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"RepeatTimer, period {args.period * 1e3:g} ms, {args.duration:g} s")
    for label, work in (("idle", 0.0), ("20 ms handler", 0.02)):
        r = run(args.period, args.duration, work)
        print(
            f"  {label:14s} ticks {r['ticks']:4.0f}  drift at last tick {r['drift_ms']:+.2f} ms"
            f"  accumulated (median of last 20 - first 20) {r['accumulated_ms']:+.3f} ms"
            f"  interval p50/p99/max {r['p50_ms']:.2f}/{r['p99_ms']:.2f}/{r['max_ms']:.2f} ms"
            f"  skipped {r['skipped']:.0f}"
        )
    shortest, skipped = stall(args.period)
    print(
        f"  after a 1 s stall: shortest interval between the next runs {shortest * 1e3:.2f} ms"
        f" (a catch-up burst would be ~0), {skipped} tick(s) skipped and counted"
    )


if __name__ == "__main__":
    main()
