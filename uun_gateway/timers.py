"""RepeatTimer: run a function periodically on a drift-free, monotonic schedule."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)


def _monotonic() -> float:
    """The default clock, looked up at each call so that the module's choice of clock is testable."""
    return time.monotonic()


class RepeatTimer:
    """Call ``f(*args, **kwargs)`` every ``period`` seconds in a thread of its own.

    Scheduling promises:

    - Deadlines are ``t0 + k * period`` on ``clock`` (``time.monotonic()`` unless one is injected):
      no cumulative drift, and wall-clock steps (NTP at boot on a Pi without RTC) do not affect the
      schedule. A run starts at or after its deadline, never before, and no deadline runs twice.
    - At most one run at a time. If a run overruns one or more deadlines, those ticks are skipped
      (coalesced) and counted in ``skipped``; the next run waits for the next deadline on the grid, so
      runs never come back to back. The overrun is logged once, and the recovery once.
    - An exception (even ``SystemExit``) raised by ``f`` is logged with its traceback and counted in
      ``errors``; the timer keeps running.
    - :meth:`stop` wakes a sleeping timer at once; with ``block=True`` it waits for a running call.
    - Changing :attr:`period` while running re-anchors the schedule at the next deadline: no restart
      and no join is needed, so a handler may change its own timer's period.

    The counters, ``running_since`` and ``next_deadline`` (while a run is in progress: the deadline
    it runs for) may be read from any thread; times are on ``clock``. An injected ``clock`` must be
    monotonic (never step back); it may step forward (tests use that to script overruns).
    """

    def __init__(
        self,
        period: float,
        f: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        runonstart: bool = True,
        name: str | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._period = self._check_period(period)
        self._f = f
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.runonstart = runonstart
        self.name = name or getattr(f, "__qualname__", repr(f))
        self._clock = clock if clock is not None else _monotonic
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._anchor = 0.0
        self._k = 0
        self._last_deadline = 0.0
        self._in_run = False
        self.runs = 0
        self.skipped = 0
        self.errors = 0
        self.running_since: float | None = None
        self.next_deadline: float | None = None

    @staticmethod
    def _check_period(period: float) -> float:
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not period > 0:
            raise ValueError(f"timer period must be a number of seconds > 0, got {period!r}")
        if not math.isfinite(period):
            raise ValueError(f"timer period must be finite, got {period!r}")
        return float(period)

    @property
    def period(self) -> float:
        """Seconds between deadlines. Settable at any time (see the class promises)."""
        return self._period

    @period.setter
    def period(self, value: float) -> None:
        value = self._check_period(value)
        with self._lock:
            if value == self._period:
                return
            self._period = value
            if self.is_alive():
                # The new grid starts at the latest deadline that was due: the next run comes one new
                # period after the previous run's deadline (at once if that is already past).
                self._anchor, self._k = self._last_deadline, 0 if self._in_run else 1
                self._wake.set()

    def is_alive(self) -> bool:
        """True while the timer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def in_own_thread(self) -> bool:
        """True when called from the timer's own thread (by its function)."""
        return self._thread is threading.current_thread()

    def start(self) -> None:
        """Start the timer thread. Raises ``RuntimeError`` if it is already running."""
        with self._lock:
            if self.is_alive():
                raise RuntimeError(f"timer {self.name} is already running")
            self._stopped.clear()
            self._wake.clear()
            self._anchor = self._clock()
            self._k = 0 if self.runonstart else 1
            self._last_deadline = self._anchor
            self.next_deadline = self._anchor + self._k * self._period
            self._thread = threading.Thread(target=self._loop, name=f"timer:{self.name}", daemon=True)
            self._thread.start()

    def stop(self, block: bool = True, timeout: float | None = None) -> bool:
        """Stop the timer; wake it at once if it is sleeping.

        With ``block=True`` wait (at most ``timeout`` seconds, ``None`` = no limit) for a running call
        to return. Safe to call before :meth:`start`, twice, or from the timer's own thread (it then
        does not wait). Returns True when the timer thread has ended.
        """
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        if block and thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        overrunning = 0
        while not self._stopped.is_set():
            with self._lock:
                deadline = self._anchor + self._k * self._period
                self.next_deadline = deadline
            delay = deadline - self._clock()
            if delay > 0:
                # Re-check after every wake-up: an injected clock need not advance with the wait.
                self._wake.wait(delay)
                self._wake.clear()
                continue
            with self._lock:
                self._last_deadline, self._in_run = deadline, True
            self._run_once()
            with self._lock:
                self._in_run = False
                now = self._clock()
                passed = math.floor((now - self._anchor) / self._period)
                missed = max(0, passed - self._k)
                self._k += missed + 1
            if missed:
                self.skipped += missed
                if not overrunning:
                    logger.warning(
                        "timer %s: run overran its period of %gs, skipping %d tick(s)", self.name, self._period, missed
                    )
                overrunning += missed
            elif overrunning:
                logger.info("timer %s: back on schedule after skipping %d tick(s)", self.name, overrunning)
                overrunning = 0

    def _run_once(self) -> None:
        self.running_since = self._clock()
        try:
            self._f(*self._args, **self._kwargs)
        except BaseException:
            self.errors += 1
            logger.exception("timer %s: handler raised; the timer keeps running", self.name)
        finally:
            self.runs += 1
            self.running_since = None

    def stalled(self, handler_timeout: float, now: float | None = None) -> str | None:
        """Describe why this running timer is not making progress, or return None if it is.

        A timer is stalled when its thread died, a call has been running for longer than
        ``handler_timeout`` seconds, or a due run has not started for that long. A stopped timer is
        never stalled.
        """
        if self._stopped.is_set() or self._thread is None:
            return None
        now = self._clock() if now is None else now
        if not self._thread.is_alive():
            return f"timer {self.name}: thread is no longer running"
        since, deadline = self.running_since, self.next_deadline
        if since is not None and now - since > handler_timeout:
            return f"timer {self.name}: handler has been running for {now - since:.0f}s (limit {handler_timeout:g}s)"
        if since is None and deadline is not None and now - deadline > handler_timeout:
            return f"timer {self.name}: a run is overdue by {now - deadline:.0f}s"
        return None
