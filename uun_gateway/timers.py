"""RepeatTimer and the scheduler that runs them: one thread keeps every timer's monotonic deadline
in a heap, and a bounded pool of worker threads runs the handlers that are due."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .outage import describe_failure

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
"""Worker threads of a scheduler unless configured: handlers running at the same time."""
EXHAUSTED_AFTER = 1.0
"""Seconds due runs wait for a busy pool before that is logged as a warning."""
MAX_STAGGER = 1.0
"""Seconds: the largest shift of a timer's grid from its start, so that timers started together
with the same period do not fall due together."""
_GOLDEN = (math.sqrt(5) - 1) / 2

_IDLE, _WAITING, _QUEUED, _RUNNING = "idle", "waiting", "queued", "running"


def _monotonic() -> float:
    """The default clock, looked up at each call so that the module's choice of clock is testable."""
    return time.monotonic()


class Scheduler:
    """Runs :class:`RepeatTimer` handlers: one scheduler thread waits for the earliest deadline of
    all its timers, and up to ``workers`` worker threads run the handlers that are due.

    - Threads exist only while timers do: the scheduler thread starts with the first timer and ends
      with the last; workers are started as due runs need them (at most ``workers``) and end when the
      last timer stops. A handler that never returns keeps its worker (and only that one).
    - **Pool exhausted**: when every worker is busy, due runs wait, in deadline order, for the next
      free worker; each such run is counted in :attr:`waits`. Runs that have waited for
      ``EXHAUSTED_AFTER`` seconds are logged as a warning naming the longest-running handler, once
      until the pool keeps up again (logged once too); a timer whose run has waited for longer than
      the limit passed to :meth:`RepeatTimer.stalled` reports it there.
    - Timers started on one scheduler get staggered grids: the ``n``-th start shifts its grid by
      ``frac(n * 0.618...) * min(period, MAX_STAGGER)``, spreading timers of equal period evenly.
    - ``clock`` (default ``time.monotonic``) is the time of every deadline. An injected clock must
      never step back. The scheduler waits in real seconds for ``deadline - clock()`` and re-reads the
      clock when it wakes; call :meth:`wake` after stepping an injected clock forward.

    Thread-safe. :func:`default_scheduler` is the one that timers use unless given another.
    """

    def __init__(
        self, workers: int = DEFAULT_WORKERS, *, clock: Callable[[], float] | None = None, name: str = "timers"
    ) -> None:
        self.clock = clock if clock is not None else _monotonic
        self.name = name
        self._max_workers = self._check_workers(workers)
        self._lock = threading.Lock()  # guards the state below and every timer's state
        # Released to wake the scheduler thread (a binary semaphore: cheaper than a Condition).
        self._signal = threading.Lock()
        self._signal.acquire()
        self._heap: list[tuple[float, int, RepeatTimer, int]] = []
        self._backlog: deque[_Job] = deque()  # due runs that no worker was free for
        self._seq = itertools.count()
        self._starts = itertools.count()
        self._worker_ids = itertools.count(1)
        self._active = 0  # timers started and not yet ended (a stopped timer ends when its run returns)
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._workers: set[_Worker] = set()
        # Idle workers, the most recently idle last: it is woken first (its stack is warm, and a
        # light load keeps the same one or two threads busy).
        self._idle: list[_Worker] = []
        self._running: set[RepeatTimer] = set()
        self._waiting_since: float | None = None  # when runs began to wait for a busy pool
        self._exhausted = False  # they have waited for EXHAUSTED_AFTER: logged
        self.waits = 0
        """Due runs that found every worker busy and had to wait for one."""

    @staticmethod
    def _check_workers(workers: int) -> int:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"timer workers must be an integer >= 1, got {workers!r}")
        return workers

    @property
    def workers(self) -> int:
        """The most worker threads (handlers at the same time). Settable at any time; extra workers
        end when their run returns."""
        return self._max_workers

    @workers.setter
    def workers(self, value: int) -> None:
        value = self._check_workers(value)
        with self._lock:
            self._max_workers = value
            while self._idle and len(self._workers) > value:
                self._workers.discard(self._idle[0])
                self._idle.pop(0).wake(None)
            while self._backlog and len(self._workers) < value:
                self._spawn(self._backlog.popleft())

    def threads(self) -> list[threading.Thread]:
        """The scheduler's live threads (the scheduler thread and the workers)."""
        with self._lock:
            found = [*(w.thread for w in self._workers), *([self._thread] if self._thread is not None else [])]
        return [t for t in found if t.is_alive()]

    def wake(self) -> None:
        """Make the scheduler thread re-read the clock now (after an injected clock stepped forward)."""
        self._notify()

    def _notify(self) -> None:
        with contextlib.suppress(RuntimeError):  # already signalled
            self._signal.release()

    def alive(self) -> bool:
        """False when timers are active but the scheduler thread has died (see :meth:`failure`)."""
        with self._lock:
            return self._active == 0 or (self._thread is not None and self._thread.is_alive())

    def failure(self) -> str | None:
        """Why the scheduler thread died, if it did."""
        return self._failure

    # -- used by RepeatTimer, with self._lock held ---------------------------------------------------

    def _stagger(self, period: float) -> float:
        return (next(self._starts) * _GOLDEN) % 1.0 * min(period, MAX_STAGGER)

    def _attach(self) -> None:
        self._active += 1
        if self._thread is None or not self._thread.is_alive():
            self._failure = None
            self._thread = threading.Thread(target=self._loop, name=f"{self.name}:scheduler", daemon=True)
            self._thread.start()

    def _detach(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._heap.clear()  # only stale entries are left
            self._backlog.clear()
            for worker in self._idle:
                self._workers.discard(worker)
                worker.wake(None)
            self._idle.clear()
            self._waiting_since, self._exhausted = None, False
            self._notify()

    def _push(self, timer: RepeatTimer, deadline: float) -> None:
        timer._gen += 1
        timer.next_deadline = deadline
        timer._state = _WAITING
        if not self._heap or deadline < self._heap[0][0]:
            self._notify()
        heapq.heappush(self._heap, (deadline, next(self._seq), timer, timer._gen))

    def _dispatch(self, job: _Job) -> None:
        """Give a due run to the most recently idle worker, or to a new one up to the bound; else it
        waits in the backlog (counted)."""
        if self._idle:
            self._idle.pop().wake(job)
        elif len(self._workers) < self._max_workers:
            self._spawn(job)
        else:
            self._backlog.append(job)
            self.waits += 1
            if self._waiting_since is None:
                self._waiting_since = self.clock()

    def _spawn(self, job: _Job) -> None:
        worker = _Worker(job)
        worker.thread = threading.Thread(
            target=self._work_loop, args=(worker,), name=f"{self.name}:worker-{next(self._worker_ids)}", daemon=True
        )
        self._workers.add(worker)
        worker.thread.start()

    def _exhaustion(self, now: float) -> tuple[str | None, float]:
        """The warning to log when due runs have waited for a busy pool for EXHAUSTED_AFTER seconds
        (once per episode), and the time to check again."""
        since = self._waiting_since
        if since is None or self._exhausted:
            return None, math.inf
        if now - since < EXHAUSTED_AFTER:
            return None, since + EXHAUSTED_AFTER
        self._exhausted = True
        longest = min(self._running, key=lambda t: t.running_since or math.inf, default=None)
        started = longest.running_since if longest is not None else None
        running = "" if longest is None or started is None else f" (longest: {longest.name}, {now - started:.1f}s)"
        message = (
            f"{self.name}: all {self._max_workers} timer workers are busy{running}; {len(self._backlog)} due"
            f" run(s) have waited {now - since:.1f}s for a free worker"
        )
        return message, math.inf

    # -- threads -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._active:
                        self._thread = None
                        return
                    now = self.clock()
                    while self._heap and self._heap[0][0] <= now:
                        _, _, timer, gen = heapq.heappop(self._heap)
                        if timer._gen == gen and timer._state == _WAITING:
                            timer._state = _QUEUED
                            self._dispatch((timer, gen))
                    warning, check_at = self._exhaustion(now)
                    wake_at = min(self._heap[0][0] if self._heap else math.inf, check_at)
                if warning is not None:
                    logger.warning("%s", warning)
                self._signal.acquire(timeout=-1 if wake_at == math.inf else max(0.0, wake_at - now))
        except BaseException as exc:
            self._failure = describe_failure(exc)
            logger.critical(
                "%s: the scheduler thread died: %s; no timer runs until one is started again",
                self.name,
                self._failure,
                exc_info=True,
            )

    def _work_loop(self, worker: _Worker) -> None:
        me = threading.current_thread()
        idle_name = me.name
        job = worker.take()
        while True:
            if job is not None:
                self._run(me, idle_name, *job)
            recovered = False
            with self._lock:
                if self._backlog:
                    job = self._backlog.popleft()
                    if not self._backlog:
                        recovered, self._exhausted, self._waiting_since = self._exhausted, False, None
                elif not self._active or len(self._workers) > self._max_workers:
                    self._workers.discard(worker)
                    return
                else:
                    job = None
                    self._idle.append(worker)
            if recovered:
                logger.info("%s: timer workers keep up again (%d run(s) waited for one so far)", self.name, self.waits)
            if job is None:
                job = worker.take()
                if job is None:
                    return  # told to end (the last timer stopped, or fewer workers)

    def _run(self, me: threading.Thread, idle_name: str, timer: RepeatTimer, gen: int) -> None:
        with self._lock:
            if timer._gen != gen or timer._state != _QUEUED:
                return  # stopped while it waited
            timer._state, timer._runner = _RUNNING, me
            self._running.add(timer)
            deadline = timer.next_deadline
            assert deadline is not None
            timer._last_deadline = deadline
        me.name = f"timer:{timer.name}"
        try:
            timer._run_once()
        finally:
            me.name = idle_name
            with self._lock:
                self._running.discard(timer)
                timer._runner = None
                try:
                    note = timer._after_run()
                except BaseException as exc:  # the clock failed: park the timer, keep the worker
                    note = timer._park(exc)
        if note is not None:
            note()


_Job = tuple["RepeatTimer", int]


class _Worker:
    """A worker thread's mailbox: the job it is woken for (None: end)."""

    def __init__(self, job: _Job | None) -> None:
        self.thread: threading.Thread
        self._job = job
        self._ready = threading.Lock()
        if job is None:
            self._ready.acquire()

    def wake(self, job: _Job | None) -> None:
        self._job = job
        self._ready.release()

    def take(self) -> _Job | None:
        self._ready.acquire()
        job, self._job = self._job, None
        return job


_default: Scheduler | None = None
_default_lock = threading.Lock()


def default_scheduler() -> Scheduler:
    """The process-wide scheduler of every timer not given one (``DEFAULT_WORKERS`` workers; set
    its :attr:`Scheduler.workers` to change that)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Scheduler()
        return _default


class RepeatTimer:
    """Call ``f(*args, **kwargs)`` every ``period`` seconds (uun-iot's ``RepeatTimer``).

    The handlers of all timers run in the worker threads of one :class:`Scheduler` (the
    :func:`default_scheduler` unless ``scheduler`` is given); the timer has no thread of its own.

    Scheduling promises:

    - Deadlines are ``t0 + k * period`` on the scheduler's clock (``time.monotonic()`` unless one is
      injected): no cumulative drift, and wall-clock steps (NTP at boot on a Pi without RTC) do not
      affect the schedule. ``t0`` is :meth:`start` plus a stagger below ``min(period, 1 s)`` (see
      :class:`Scheduler`). With ``runonstart`` (the default) the first run is due at :meth:`start`
      itself, as in uun-iot; without, the first run is due at ``t0 + period``. A run starts at or
      after its deadline, never before, and no deadline runs twice.
    - At most one run at a time. If a run overruns one or more deadlines, those ticks are skipped
      (coalesced) and counted in ``skipped``; the next run waits for the next deadline on the grid, so
      runs never come back to back. The overrun is logged once, and the recovery once.
    - An exception (even ``SystemExit``) raised by ``f`` is logged with its traceback and counted in
      ``errors``; the timer keeps running.
    - :meth:`stop` takes a waiting timer off the schedule at once; with ``block=True`` it waits for a
      running call. It may be called from the timer's own handler.
    - Changing :attr:`period` while running re-anchors the schedule at the latest deadline: no restart
      and no join is needed, so a handler may change its own timer's period.

    The counters, ``running_since`` and ``next_deadline`` (while a run is in progress: the deadline
    it runs for) may be read from any thread; times are on the scheduler's clock. ``clock``, when
    given without ``scheduler``, gives the timer a scheduler of its own on that clock.
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
        scheduler: Scheduler | None = None,
    ) -> None:
        self._period = self._check_period(period)
        self._f = f
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self.runonstart = runonstart
        self.name = name or getattr(f, "__qualname__", repr(f))
        if scheduler is None:
            scheduler = default_scheduler() if clock is None else Scheduler(clock=clock, name=f"timer:{self.name}")
        elif clock is not None and clock is not scheduler.clock:
            raise ValueError("give a timer either a clock or a scheduler (which has its clock), not both")
        self.scheduler = scheduler
        self._clock = scheduler.clock
        self._state = _IDLE
        self._gen = 0
        self._stopping = False
        self._ended = threading.Event()
        self._ended.set()
        self._runner: threading.Thread | None = None
        self._anchor = 0.0
        self._k = 0
        self._last_deadline = 0.0
        self._overrunning = 0
        self._broken: str | None = None
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
        with self.scheduler._lock:
            if value == self._period:
                return
            self._period = value
            if self._stopping or self._broken is not None:
                return
            # The new grid starts at the latest deadline that was due: the next run comes one new
            # period after the previous run's deadline (at once if that is already past).
            if self._state == _WAITING and self._k > 0:  # (k == 0: the run on start is still due)
                self._anchor, self._k = self._last_deadline, 1
                self.scheduler._push(self, self._anchor + value)
            elif self._state == _RUNNING:
                self._anchor, self._k = self._last_deadline, 0
            elif self._state == _QUEUED:
                assert self.next_deadline is not None
                self._anchor, self._k = self.next_deadline, 0

    def is_alive(self) -> bool:
        """True from :meth:`start` until the timer is stopped and no call of it is running."""
        return self._state != _IDLE

    def in_own_thread(self) -> bool:
        """True when called from the thread running this timer's function (by the function)."""
        return self._runner is threading.current_thread()

    def start(self) -> None:
        """Put the timer on its scheduler. Raises ``RuntimeError`` if it is already running."""
        scheduler = self.scheduler
        with scheduler._lock:
            if self._state != _IDLE:
                raise RuntimeError(f"timer {self.name} is already running")
            self._stopping = False
            self._broken = None
            self._ended.clear()
            self._overrunning = 0
            now = self._clock()
            self._anchor = now + scheduler._stagger(self._period)
            self._k = 0 if self.runonstart else 1
            first = now if self.runonstart else self._anchor + self._period
            self._last_deadline = self._anchor
            scheduler._attach()
            scheduler._push(self, first)

    def stop(self, block: bool = True, timeout: float | None = None) -> bool:
        """Stop the timer: no run starts after this call.

        With ``block=True`` wait (at most ``timeout`` seconds, ``None`` = no limit) for a running call
        to return. Safe to call before :meth:`start`, twice, or from the timer's own function (it then
        does not wait). Returns True when the timer has ended (no call of it is running).
        """
        scheduler = self.scheduler
        with scheduler._lock:
            if self._state == _IDLE:
                return True
            self._stopping = True
            if self._state != _RUNNING:
                self._end()  # a queued run of it is dropped by the worker that takes it
                return True
            own = self._runner is threading.current_thread()
        if block and not own:
            self._ended.wait(timeout)
        return self._ended.is_set()

    def _end(self) -> None:
        # with the scheduler's lock held
        self._state = _IDLE
        self._gen += 1
        self.scheduler._detach()
        self._ended.set()

    def _after_run(self) -> Callable[[], None] | None:
        """Reschedule after a run (the scheduler's lock held); return the log call to make, if any."""
        if self._stopping:
            self._end()
            return None
        now = self._clock()
        passed = math.floor((now - self._anchor) / self._period)
        missed = max(0, passed - self._k)
        self._k += missed + 1
        self.scheduler._push(self, self._anchor + self._k * self._period)
        if missed:
            self.skipped += missed
            first = not self._overrunning
            self._overrunning += missed
            if first:
                period = self._period
                return lambda: logger.warning(
                    "timer %s: run overran its period of %gs, skipping %d tick(s)", self.name, period, missed
                )
        elif self._overrunning:
            count, self._overrunning = self._overrunning, 0
            return lambda: logger.info("timer %s: back on schedule after skipping %d tick(s)", self.name, count)
        return None

    def _park(self, exc: BaseException) -> Callable[[], None]:
        """Take the timer off the schedule after it could not be rescheduled (the scheduler's lock
        held): it stays alive, so that :meth:`stalled` reports it until it is stopped."""
        self._broken = describe_failure(exc)
        if self._stopping:
            self._end()
        else:
            self._gen += 1
            self._state = _WAITING  # with no deadline in the heap: stop() ends it at once
        return lambda: logger.critical(
            "timer %s: could not be rescheduled (%s); it runs no more", self.name, self._broken, exc_info=exc
        )

    def _run_once(self) -> None:
        try:
            self.running_since = self._clock()
            self._f(*self._args, **self._kwargs)
        except BaseException:
            self.errors += 1
            logger.exception("timer %s: handler raised; the timer keeps running", self.name)
        finally:
            self.runs += 1
            self.running_since = None

    def stalled(self, handler_timeout: float, now: float | None = None) -> str | None:
        """Describe why this running timer is not making progress, or return None if it is.

        A timer is stalled when its scheduler's thread died, it could not be rescheduled after a run
        (its clock raised), a call has been running for longer than ``handler_timeout`` seconds, or a
        due run has not started for that long (also when it waits because every worker of the
        scheduler is busy). A stopped timer is never stalled.
        """
        scheduler = self.scheduler
        with scheduler._lock:
            state, since, deadline = self._state, self.running_since, self.next_deadline
            if state == _IDLE or self._stopping:
                return None
        if self._broken is not None:
            return f"timer {self.name}: could not be rescheduled ({self._broken}); it runs no more"
        if not scheduler.alive():
            return f"timer {self.name}: the scheduler thread is no longer running ({scheduler.failure()})"
        now = self._clock() if now is None else now
        if since is not None and now - since > handler_timeout:
            return f"timer {self.name}: handler has been running for {now - since:.0f}s (limit {handler_timeout:g}s)"
        if state != _RUNNING and deadline is not None and now - deadline > handler_timeout:
            busy = f": all {scheduler.workers} timer workers are busy" if state == _QUEUED else ""
            return f"timer {self.name}: a run is overdue by {now - deadline:.0f}s{busy}"
        return None
