"""Helpers for the timer tests: a clock the test can step forward, and the scheduling rules every
recorded run must obey."""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass

from uun_gateway.timers import RepeatTimer


class SteppedClock:
    """``time.monotonic()`` plus an offset the test moves forward: ``advance(dt)`` inside a handler
    makes that run look ``dt`` seconds longer without waiting for it. Never steps back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never steps back"
        with self._lock:
            self._offset += seconds


@dataclass(frozen=True)
class Run:
    """One recorded run: the deadline it ran for, the clock when it started and ended, and the
    timer's ``skipped`` count when it started."""

    deadline: float
    start: float
    end: float
    skipped: int


class RunLog:
    """Records every run of a timer (call :meth:`begin` first thing in the handler and :meth:`end`
    last) and checks the scheduling rules over them."""

    def __init__(self, clock: SteppedClock | None = None) -> None:
        self.clock = clock if clock is not None else time.monotonic
        self.runs: list[Run] = []
        self._started: tuple[float, float, int] | None = None

    def begin(self, timer: RepeatTimer) -> None:
        deadline = timer.next_deadline
        assert deadline is not None, "a running timer knows the deadline it runs for"
        self._started = (deadline, self.clock(), timer.skipped)

    @property
    def runs_started(self) -> list[Run]:
        """The recorded runs plus the one in progress (its ``end`` is its start)."""
        if self._started is None:
            return list(self.runs)
        deadline, start, skipped = self._started
        return [*self.runs, Run(deadline, start, start, skipped)]

    def end(self) -> None:
        assert self._started is not None
        deadline, start, skipped = self._started
        self.runs.append(Run(deadline, start, self.clock(), skipped))
        self._started = None

    def check_rules(self, timer: RepeatTimer) -> list[int]:
        """Assert the rules for a timer whose period did not change; return the grid index of each
        run's deadline, the first run being tick 0.

        The grid is ``t0 + k * period``; the first run may be due before ``t0`` (the run on start is
        due at ``start()``, and the grid is staggered by less than a period), the others are on it.
        """
        runs = self.runs
        assert runs, "no run recorded"
        period = timer.period
        first = runs[0].deadline
        if len(runs) > 1:  # t0: the grid point in [first, first + period)
            origin = runs[1].deadline - period * math.floor((runs[1].deadline - first) / period + 1e-9)
        else:
            origin = first
        assert first <= origin + 1e-9 and origin - first < period, (first, origin)
        ticks = [0]
        for run in runs:
            assert run.start >= run.deadline, f"a run started before its deadline: {run}"
        for run in runs[1:]:
            k = (run.deadline - origin) / period
            assert math.isclose(k, round(k), abs_tol=1e-6), (
                f"deadline {run.deadline} is off the grid {origin}+k*{period}"
            )
            ticks.append(round(k))
        for (a, b), (ka, kb) in zip(itertools.pairwise(runs), itertools.pairwise(ticks), strict=True):
            assert kb > ka, f"deadline run twice or out of order: ticks {ticks}"
            # coalescing: the next run is for a deadline that was still ahead when the previous one ended
            assert b.deadline > a.end, f"a deadline that passed during a run was run late (catch-up): {a} then {b}"
            # every grid point between two runs was skipped, and counted before the next run began
            assert b.skipped - a.skipped == kb - ka - 1, f"skipped ticks miscounted: {a} then {b} (ticks {ticks})"
        return ticks
