"""Scheduler: one thread and a bounded worker pool for all timers; staggered grids; pool exhaustion and
a dead scheduler are reported."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

import pytest

from tests.conftest import wait_for
from tests.timer_helpers import RunLog, SteppedClock
from uun_gateway.timers import MAX_STAGGER, RepeatTimer, Scheduler, default_scheduler


def _stop_all(timers: list[RepeatTimer]) -> None:
    for timer in timers:
        timer.stop(block=False)
    for timer in timers:
        assert timer.stop(timeout=5)


def test_many_timers_share_one_scheduler_thread_and_a_bounded_pool() -> None:
    scheduler = Scheduler(workers=3, name="many")
    peak = [0]
    busy = [0]
    lock = threading.Lock()

    def handler() -> None:
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        threading.Event().wait(0.002)  # some work, so that runs overlap
        with lock:
            busy[0] -= 1

    timers = [RepeatTimer(0.01, handler, name=f"t{i}", scheduler=scheduler) for i in range(60)]
    before = threading.active_count()
    for timer in timers:
        timer.start()
    try:
        wait_for(lambda: all(t.runs >= 3 for t in timers))
        assert len(scheduler.threads()) <= 1 + 3
        assert threading.active_count() - before <= 1 + 3
        assert "many:scheduler" in {t.name for t in scheduler.threads()}
    finally:
        _stop_all(timers)
    assert peak[0] <= 3
    wait_for(lambda: scheduler.threads() == [])  # no timer left: no thread left


def test_one_run_at_a_time_per_timer_with_many_workers() -> None:
    scheduler = Scheduler(workers=8)
    inside = [0]
    overlaps = [0]
    log = RunLog()
    timer: RepeatTimer

    def handler() -> None:
        inside[0] += 1
        if inside[0] > 1:
            overlaps[0] += 1
        log.begin(timer)
        threading.Event().wait(0.015)  # overruns its 10 ms period every time
        log.end()
        inside[0] -= 1

    timer = RepeatTimer(0.01, handler, scheduler=scheduler)
    timer.start()
    try:
        wait_for(lambda: len(log.runs) >= 8)
    finally:
        timer.stop(timeout=5)
    assert overlaps[0] == 0
    log.check_rules(timer)
    assert timer.skipped >= 7


def test_a_handler_blocked_forever_does_not_starve_the_others() -> None:
    scheduler = Scheduler(workers=2)
    release = threading.Event()
    blocked = RepeatTimer(0.01, lambda: release.wait(30), name="hung", scheduler=scheduler)
    ticking = RepeatTimer(0.01, lambda: None, name="ticking", scheduler=scheduler)
    blocked.start()
    wait_for(lambda: blocked.running_since is not None)
    ticking.start()
    try:
        wait_for(lambda: ticking.runs >= 10)
        assert "hung" in (blocked.stalled(handler_timeout=0.0, now=(blocked.running_since or 0) + 1) or "")
        assert ticking.stalled(handler_timeout=60) is None
    finally:
        release.set()
        _stop_all([blocked, ticking])


def test_exhausted_pool_delays_runs_logs_once_and_shows_in_stalled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uun_gateway.timers")
    scheduler = Scheduler(workers=1, name="small")
    release = threading.Event()
    blocked = RepeatTimer(3600, lambda: release.wait(30), name="hung", scheduler=scheduler)
    waiting = RepeatTimer(0.01, lambda: None, name="waiting", scheduler=scheduler)
    blocked.start()
    wait_for(lambda: blocked.running_since is not None)
    waiting.start()
    try:
        wait_for(lambda: scheduler.waits >= 1)
        assert waiting.runs == 0
        deadline = waiting.next_deadline
        assert deadline is not None
        reason = waiting.stalled(handler_timeout=10, now=deadline + 11)
        assert reason is not None and "overdue" in reason and "all 1 timer workers are busy" in reason, reason
        assert waiting.stalled(handler_timeout=10, now=deadline + 9) is None
        wait_for(lambda: "timer workers are busy" in caplog.text)  # after EXHAUSTED_AFTER
        release.set()
        wait_for(lambda: waiting.runs >= 5)
    finally:
        release.set()
        _stop_all([blocked, waiting])
    warnings = [r.getMessage() for r in caplog.records if "timer workers are busy" in r.getMessage()]
    assert len(warnings) == 1 and "longest: hung" in warnings[0] and "waited" in warnings[0], warnings
    assert "timer workers keep up again" in caplog.text


def test_timers_started_together_get_spread_grids() -> None:
    clock = SteppedClock()
    scheduler = Scheduler(clock=clock)
    period, count = 5.0, 20
    timers = [RepeatTimer(period, lambda: None, runonstart=False, scheduler=scheduler) for _ in range(count)]
    started = clock()
    for timer in timers:
        timer.start()
    try:
        firsts = sorted(t.next_deadline or 0.0 for t in timers)
    finally:
        _stop_all(timers)
    offsets = [d - started - period for d in firsts]
    span = min(period, MAX_STAGGER)
    assert all(0 <= o < span + 0.1 for o in offsets), offsets  # at least one period, at most one stagger more
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert min(gaps) > span / (3 * count), f"first deadlines bunch: {offsets}"
    assert offsets[-1] - offsets[0] > span / 2


def test_first_run_is_immediate_whatever_the_stagger() -> None:
    scheduler = Scheduler()
    logs = [RunLog() for _ in range(5)]
    timers: list[RepeatTimer] = []

    def handler(log: RunLog, timer_index: int) -> None:
        log.begin(timers[timer_index])
        log.end()

    for i, log in enumerate(logs):
        timers.append(RepeatTimer(3600, handler, (log, i), name=f"t{i}", scheduler=scheduler))
    for timer in timers:
        before = scheduler.clock()
        timer.start()
        after = scheduler.clock()
        wait_for(lambda: timer.runs == 1)  # noqa: B023 (waited for within the iteration)
        log = logs[timers.index(timer)]
        assert before <= log.runs[0].deadline <= after, "the run on start is due at start()"
    _stop_all(timers)


def test_a_stepped_clock_drives_the_schedule_after_wake() -> None:
    clock = SteppedClock()
    scheduler = Scheduler(clock=clock)
    log = RunLog(clock)
    timer: RepeatTimer

    def handler() -> None:
        log.begin(timer)
        log.end()

    timer = RepeatTimer(3600, handler, runonstart=False, scheduler=scheduler)
    timer.start()
    try:
        for n in range(1, 4):
            clock.advance(3600 + MAX_STAGGER)
            scheduler.wake()
            wait_for(lambda: len(log.runs) == n)  # noqa: B023 (waited for within the iteration)
    finally:
        timer.stop(timeout=5)
    assert log.check_rules(timer) == [0, 1, 2]


class _BreakableClock:
    """Once broken, raises in the threads whose name contains ``where`` (only once if ``once``)."""

    def __init__(self, clock: Callable[[], float], where: str = ":scheduler", *, once: bool = False) -> None:
        self.clock = clock
        self.where = where
        self.once = once
        self.broken = False

    def __call__(self) -> float:
        if self.broken and self.where in threading.current_thread().name:
            self.broken = not self.once
            raise OSError("clock source failed")
        return self.clock()


def test_a_dead_scheduler_thread_is_reported_and_restarted_by_start(caplog: pytest.LogCaptureFixture) -> None:
    clock = _BreakableClock(SteppedClock())
    scheduler = Scheduler(clock=clock, name="fragile")
    timer = RepeatTimer(3600, lambda: None, name="victim", scheduler=scheduler)
    timer.start()
    try:
        wait_for(lambda: timer.runs == 1)
        assert timer.stalled(handler_timeout=10) is None
        clock.broken = True
        scheduler.wake()
        wait_for(lambda: not scheduler.alive())
        reason = timer.stalled(handler_timeout=10)
        assert reason is not None and "scheduler thread is no longer running" in reason, reason
        assert "clock source failed" in reason
        assert "fragile: the scheduler thread died" in caplog.text
    finally:
        timer.stop(timeout=5)
    clock.broken = False
    timer.start()
    try:
        wait_for(lambda: timer.runs == 2)
        assert scheduler.alive() and timer.stalled(handler_timeout=10) is None
    finally:
        timer.stop(timeout=5)


def test_workers_bound_is_validated_and_settable() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            Scheduler(workers=bad)  # type: ignore[arg-type]
    scheduler = Scheduler(workers=1)
    scheduler.workers = 4
    assert scheduler.workers == 4
    assert default_scheduler() is default_scheduler()


def test_clock_and_scheduler_together_must_agree() -> None:
    scheduler = Scheduler()
    with pytest.raises(ValueError, match="either a clock or a scheduler"):
        RepeatTimer(1, lambda: None, clock=SteppedClock(), scheduler=scheduler)
    timer = RepeatTimer(1, lambda: None, clock=SteppedClock())
    assert timer.scheduler is not default_scheduler()


def test_a_timer_that_cannot_be_rescheduled_is_reported_and_its_worker_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _BreakableClock(SteppedClock(), where=":worker-", once=True)
    scheduler = Scheduler(workers=1, clock=clock)
    victim: RepeatTimer

    def break_clock_after_this_run() -> None:
        clock.broken = True  # the run itself is fine; rescheduling it reads the clock, which fails once

    victim = RepeatTimer(0.01, break_clock_after_this_run, name="victim", scheduler=scheduler)
    other = RepeatTimer(0.01, lambda: None, name="other", scheduler=scheduler)
    victim.start()
    try:
        wait_for(lambda: victim.stalled(handler_timeout=10, now=0) is not None)
        reason = victim.stalled(handler_timeout=10, now=0) or ""
        assert "could not be rescheduled" in reason and "clock source failed" in reason, reason
        assert "timer victim: could not be rescheduled" in caplog.text
        victim.period = 0.02  # does not revive it
        other.start()
        wait_for(lambda: other.runs >= 3)  # the one worker survived
        assert victim.runs == 1 and victim.is_alive()
    finally:
        _stop_all([victim, other])
    assert victim.stalled(handler_timeout=10, now=0) is None
