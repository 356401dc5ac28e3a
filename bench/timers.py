#!/usr/bin/env python3
"""Timer figures: threads, memory and tick lateness with 10 to 1000 timers, beside uun-iot's
RepeatTimer; and cumulative drift and tick-interval jitter of one 50 ms RepeatTimer.

    python bench/timers.py [--timers 10,100,500,1000] [--many-period 1] [--many-duration 6]
                           [--duration 10] [--period 0.05]
                           [--uuniot-python /tmp/uuniot-venv/bin/python]

**Many timers.** Each count runs in a fresh child process: N timers with the same period, started
together, each handler records ``time.monotonic()``. After the first (immediate) run the figures
are taken over the rest of the run: live threads, RSS and address space (VmSize: what a 32-bit Pi
OS runs out of), CPU, and the **tick lateness** of every run after the first: its start minus its
timer's own grid ``origin + k * period``, the origin being fitted as the earliest of that timer's
ticks (so both libraries are judged by the same rule, and a late first tick cannot hide lateness).
For uun-gateway the exact lateness (start minus the deadline the scheduler ran it for) is printed
too. ``--uuniot-python`` (a venv with ``uun-iot==0.12.14``) measures uun-iot's
``uun_iot.utils.RepeatTimer`` as shipped in the same run, and runs the timer section of
``../shared/bench/uuniot_baseline.py`` (drift, jitter, catch-up burst) with it.

**Drift.** "Drift at last tick" is one sample and includes that tick's jitter; "accumulated"
compares the median lateness of the last 20 ticks with that of the first 20 after tick 0, which is
what grows if a schedule drifts. Drift is measured against the ideal grid ``t0 + k * period``
(t0 = the first tick).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# ../shared/bench from the main checkout (/work/main), ../../shared/bench from a worktree (/work/wt/x)
BASELINE = next(
    (
        p
        for p in (Path(__file__).resolve().parents[i] / "shared" / "bench" / "uuniot_baseline.py" for i in (2, 3))
        if p.exists()
    ),
    Path(__file__).resolve().parents[2] / "shared" / "bench" / "uuniot_baseline.py",
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


# -- many timers (child process) ------------------------------------------------------------------


class Recorder:
    """A timer's handler: the start of every run, and for uun-gateway its lateness vs the deadline."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.exact: list[float] = []
        self.timer: Any = None

    def tick(self) -> None:
        now = time.monotonic()
        self.stamps.append(now)
        deadline = getattr(self.timer, "next_deadline", None)  # the deadline this run is for
        if deadline is not None:
            self.exact.append(now - deadline)


def many(impl: str, count: int, period: float, duration: float) -> dict[str, Any]:
    """Run ``count`` timers of ``impl`` ("uun-gateway" or "uun-iot") for ``duration`` seconds."""
    recorders = [Recorder() for _ in range(count)]
    timers: list[Any] = []
    if impl == "uun-iot":
        from uun_iot.utils import RepeatTimer as UuIotTimer  # type: ignore[import-not-found]

        timers = [UuIotTimer(period, r.tick) for r in recorders]
    else:
        from uun_gateway import RepeatTimer

        timers = [RepeatTimer(period, r.tick, name=f"t{i}") for i, r in enumerate(recorders)]
        for r, t in zip(recorders, timers, strict=True):
            r.timer = t
    rss_before = proc_status_kb("VmRSS")
    for t in timers:
        t.start()
    time.sleep(min(period, duration) / 2)  # the first (immediate) runs are done; figures from here
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(duration)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    threads = threading.active_count() - 1
    rss, vmsize = proc_status_kb("VmRSS"), proc_status_kb("VmSize")
    for t in timers:
        t.stop()
    lateness: list[float] = []
    exact = [x for r in recorders for x in r.exact[1:]]
    for r in recorders:
        ticks = r.stamps[1:]  # the run on start comes at start(), by design of both libraries
        if len(ticks) < 2:
            continue
        origin = min(s - k * period for k, s in enumerate(ticks))
        lateness.extend(s - (origin + k * period) for k, s in enumerate(ticks))
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (wall1 - wall0)
    result = {
        "threads": threads,
        "rss_mb": rss / 1024,
        "rss_delta_mb": (rss - rss_before) / 1024,
        "vmsize_mb": vmsize / 1024,
        "cpu_pct": cpu * 100,
        "ticks": len(lateness),
        "late_p50_ms": percentile(lateness, 50) * 1e3 if lateness else float("nan"),
        "late_p99_ms": percentile(lateness, 99) * 1e3 if lateness else float("nan"),
        "late_max_ms": max(lateness) * 1e3 if lateness else float("nan"),
    }
    if exact:
        result["exact_p99_ms"] = percentile(exact, 99) * 1e3
    return result


def run_many(python: str, impl: str, count: int, period: float, duration: float) -> dict[str, Any]:
    cmd = [python, __file__, "--child", impl, str(count), str(period), str(duration)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 4 + 120, check=False)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def print_many(label: str, count: int, r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {label:12s} {count:5d} timers  FAILED: {r['error']}")
        return
    exact = f"  (exact vs deadline p99 {r['exact_p99_ms']:.2f} ms)" if "exact_p99_ms" in r else ""
    print(
        f"  {label:12s} {count:5d} timers  threads {r['threads']:5d}  RSS {r['rss_mb']:6.1f} MB"
        f" (+{r['rss_delta_mb']:5.1f} for the timers)  VmSize {r['vmsize_mb']:7.0f} MB  CPU {r['cpu_pct']:5.1f} %"
        f"  lateness p50/p99/max {r['late_p50_ms']:.2f}/{r['late_p99_ms']:.2f}/{r['late_max_ms']:.2f} ms"
        f" over {r['ticks']} ticks{exact}"
    )


# -- drift of one timer -------------------------------------------------------------------------------


def drift(period: float, duration: float, work: float) -> dict[str, float]:
    from uun_gateway import RepeatTimer

    stamps: list[float] = []
    deadlines: list[float] = []
    done = threading.Event()
    timer: RepeatTimer

    def handler() -> None:
        stamps.append(time.monotonic())
        deadlines.append(timer.next_deadline or 0.0)
        if work:
            time.sleep(work)
        if stamps[-1] - stamps[0] >= duration:
            done.set()

    timer = RepeatTimer(period, handler)
    timer.start()
    done.wait(duration * 2 + 5)
    timer.stop()
    # tick 1 onwards: the grid is anchored at start() plus a stagger, the run on start is at start().
    # A skipped (coalesced) tick has no run: each run's grid index k comes from its deadline, and its
    # lateness is measured against the ideal t0 + k * period, t0 = the first grid tick's start.
    ticks = stamps[1:]
    index = [round((d - deadlines[1]) / period) for d in deadlines[1:]]
    lateness = [t - (ticks[0] + k * period) for k, t in zip(index, ticks, strict=True)]
    intervals = [b - a for a, b in itertools.pairwise(ticks)]
    window = min(20, len(lateness) // 4)
    return {
        "ticks": len(stamps),
        "drift_ms": lateness[-1] * 1e3,
        "accumulated_ms": (statistics.median(lateness[-window:]) - statistics.median(lateness[1 : 1 + window])) * 1e3,
        "p50_ms": statistics.median(intervals) * 1e3,
        "p99_ms": percentile(intervals, 99) * 1e3,
        "max_ms": max(intervals) * 1e3,
        "skipped": timer.skipped,
    }


def stall(period: float) -> tuple[float, int]:
    """The shortest interval between runs after a handler stalled for 1 s, and the ticks skipped."""
    from uun_gateway import RepeatTimer

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
    return min(b - a for a, b in itertools.pairwise(stamps[1:])), timer.skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--timers", default="10,100,500,1000", help="comma list of timer counts")
    parser.add_argument("--many-period", type=float, default=1.0)
    parser.add_argument("--many-duration", type=float, default=6.0)
    parser.add_argument("--duration", type=float, default=10.0, help="drift run length (s)")
    parser.add_argument("--period", type=float, default=0.05, help="drift run period (s)")
    parser.add_argument("--uuniot-python", help="interpreter of a venv with uun-iot installed (compare with it)")
    parser.add_argument("--baseline", default=str(BASELINE), help="uun-iot's baseline bench (its timer section)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        impl, count, period, duration = args.child
        print(json.dumps(many(impl, int(count), float(period), float(duration))))
        return

    print(f"machine: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, load average {os.getloadavg()}")
    print(
        f"Many timers: period {args.many_period:g} s, figures over {args.many_duration:g} s after the first run,"
        " one child process per row"
    )
    counts = [int(c) for c in args.timers.split(",")]
    impls = [("uun-gateway", sys.executable)]
    if args.uuniot_python:
        version = subprocess.run(
            [args.uuniot_python, "-c", "import importlib.metadata as m; print(m.version('uun-iot'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        impls.append((f"uun-iot {version}", args.uuniot_python))
    for count in counts:
        for label, python in impls:
            impl = "uun-iot" if label.startswith("uun-iot") else "uun-gateway"
            print_many(label, count, run_many(python, impl, count, args.many_period, args.many_duration))

    print(f"\nRepeatTimer (uun-gateway), period {args.period * 1e3:g} ms, {args.duration:g} s")
    for label, work in (("idle", 0.0), ("20 ms handler", 0.02)):
        r = drift(args.period, args.duration, work)
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
    if args.uuniot_python:
        print(f"\nuun-iot, same run: {args.baseline} --only timers")
        sys.stdout.flush()
        subprocess.run([args.uuniot_python, args.baseline, "--only", "timers"], check=False)


if __name__ == "__main__":
    main()
