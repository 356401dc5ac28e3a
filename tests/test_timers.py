"""RepeatTimer: schedule, coalescing, errors, stop."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time

import pytest

from tests.conftest import wait_for
from tests.timer_helpers import RunLog, SteppedClock
from uun_gateway import RepeatTimer


def test_runs_repeatedly_and_first_run_is_immediate() -> None:
    log = RunLog()
    timer: RepeatTimer

    def handler() -> None:
        log.begin(timer)
        log.end()

    timer = RepeatTimer(0.01, handler)
    before = time.monotonic()
    timer.start()
    try:
        wait_for(lambda: len(log.runs) >= 5)
    finally:
        assert timer.stop()
    assert before <= log.runs[0].deadline <= time.monotonic()  # due at start
    log.check_rules(timer)


def test_runonstart_false_waits_one_period() -> None:
    called = threading.Event()
    timer = RepeatTimer(3600, called.set, runonstart=False)
    timer.start()
    assert not called.wait(0.05)
    assert timer.stop(timeout=5)
    assert timer.runs == 0


def test_handler_exception_is_counted_and_timer_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise ValueError("boom")

    timer = RepeatTimer(0.005, boom, name="boomer")
    timer.start()
    try:
        wait_for(lambda: timer.errors >= 3)
    finally:
        timer.stop()
    assert timer.runs >= 3
    assert "boomer" in caplog.text and "ValueError: boom" in caplog.text


def test_system_exit_in_handler_does_not_end_the_timer() -> None:
    def leave() -> None:
        raise SystemExit(3)

    timer = RepeatTimer(0.005, leave)
    timer.start()
    try:
        wait_for(lambda: timer.errors >= 2)
    finally:
        timer.stop()


def test_overrun_is_coalesced_and_logged_once_on_a_stepped_clock(caplog: pytest.LogCaptureFixture) -> None:
    # Each run moves the clock to `margin` before a later deadline, so the test never waits a period:
    # runs 0-2 overrun by almost 3 periods each, then the runs take almost a period until one of them
    # finds the previous one on schedule. A stall of the test machine can only add skipped ticks.
    caplog.set_level(logging.INFO, logger="uun_gateway.timers")
    period, margin = 10.0, 0.05
    clock = SteppedClock()
    log = RunLog(clock)
    done = threading.Event()
    timer: RepeatTimer

    def handler() -> None:
        log.begin(timer)
        deadline, n = log.runs_started[-1].deadline, len(log.runs)
        if n >= 4 and log.runs[-1].skipped == timer.skipped:
            done.set()  # the previous run kept to its period: recovered
        else:
            clock.advance(max(0.0, deadline + (3 if n < 3 else 1) * period - margin - clock()))
        log.end()

    timer = RepeatTimer(period, handler, name="slow", clock=clock)
    timer.start()
    try:
        assert done.wait(30)
    finally:
        timer.stop(timeout=5)
    ticks = log.check_rules(timer)
    assert all(b - a >= 3 for a, b in itertools.pairwise(ticks[:4])), ticks
    assert timer.skipped >= 6
    assert caplog.text.count("overran") == 1 and caplog.text.count("back on schedule") == 1


def test_overrun_under_real_time_keeps_the_rules() -> None:
    # Whatever the machine's load, the recorded runs obey the rules; only the counts vary.
    period = 0.02
    log = RunLog()
    release = threading.Event()
    timer: RepeatTimer

    def handler() -> None:
        log.begin(timer)
        if len(log.runs) == 1:
            release.wait(10)  # overrun: several deadlines pass while this run blocks
        log.end()

    timer = RepeatTimer(period, handler, name="slow")
    timer.start()
    try:
        wait_for(lambda: timer.running_since is not None and time.monotonic() - timer.running_since > 5 * period)
        release.set()
        wait_for(lambda: len(log.runs) >= 6)
    finally:
        timer.stop(timeout=5)
    ticks = log.check_rules(timer)
    assert ticks[2] - ticks[1] >= 6, f"the blocked run overran at least 5 periods: {ticks}"
    assert timer.skipped >= log.runs[-1].skipped >= 5


def test_stop_wakes_a_one_hour_timer_at_once() -> None:
    timer = RepeatTimer(3600, lambda: None)
    timer.start()
    wait_for(lambda: timer.runs == 1)
    assert timer.stop(block=True, timeout=5)
    assert not timer.is_alive()


def test_stop_waits_for_running_handler() -> None:
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def handler() -> None:
        entered.set()
        release.wait(10)
        finished.set()

    timer = RepeatTimer(3600, handler)
    timer.start()
    entered.wait(5)
    assert not timer.stop(timeout=0.01)  # still running: the bounded wait gives up
    release.set()
    assert timer.stop(timeout=5)
    assert finished.is_set()


def test_stop_from_own_handler_does_not_deadlock() -> None:
    timer: RepeatTimer

    def handler() -> None:
        timer.stop()

    timer = RepeatTimer(0.01, handler)
    timer.start()
    wait_for(lambda: not timer.is_alive())
    assert timer.runs == 1


def test_stop_before_start_and_twice_is_harmless() -> None:
    timer = RepeatTimer(1, lambda: None)
    assert timer.stop()
    timer.start()
    assert timer.stop(timeout=5)
    assert timer.stop(timeout=5)


def test_start_twice_raises_and_restart_after_stop_works() -> None:
    timer = RepeatTimer(3600, lambda: None)
    timer.start()
    try:
        wait_for(lambda: timer.runs == 1)
        with pytest.raises(RuntimeError, match="already running"):
            timer.start()
    finally:
        timer.stop(timeout=5)
    timer.start()
    wait_for(lambda: timer.runs == 2)
    timer.stop(timeout=5)


def test_period_change_while_sleeping_takes_effect_without_restart() -> None:
    timer = RepeatTimer(3600, lambda: None)
    timer.start()
    try:
        wait_for(lambda: timer.runs == 1)
        timer.period = 0.01
        wait_for(lambda: timer.runs >= 4)
    finally:
        timer.stop(timeout=5)


def test_handler_may_change_its_own_period() -> None:
    timer: RepeatTimer

    def handler() -> None:
        if timer.runs == 0:
            timer.period = 0.01

    timer = RepeatTimer(3600, handler)
    timer.start()
    try:
        wait_for(lambda: timer.runs >= 3)
    finally:
        timer.stop(timeout=5)


@pytest.mark.parametrize("period", [0, -1, "1", True, None, math.nan, math.inf])
def test_invalid_period_is_rejected(period: object) -> None:
    with pytest.raises(ValueError, match="period"):
        RepeatTimer(period, lambda: None)  # type: ignore[arg-type]


def test_wall_clock_jump_after_start_does_not_affect_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    # Steps of the wall clock (NTP at boot) while the timer runs: a schedule on time.time() would stop
    # for a day after the step back, and skip a day of ticks after the step forward.
    real_time = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    timer = RepeatTimer(0.01, lambda: None)
    timer.start()
    try:
        wait_for(lambda: timer.runs >= 2)
        offset[0] = -86400.0
        runs = timer.runs
        wait_for(lambda: timer.runs >= runs + 3)
        offset[0] = +86400.0
        runs = timer.runs
        wait_for(lambda: timer.runs >= runs + 3)
    finally:
        timer.stop(timeout=5)
    assert timer.skipped < 1000, f"{timer.skipped} ticks skipped: the schedule followed the wall clock"


def test_stalled_reports_a_handler_running_too_long() -> None:
    release = threading.Event()
    timer = RepeatTimer(3600, lambda: release.wait(10), name="stuck")
    timer.start()
    try:
        wait_for(lambda: timer.running_since is not None)
        assert timer.stalled(handler_timeout=3600) is None
        wait_for(lambda: timer.stalled(handler_timeout=0.01) is not None)
        assert "stuck" in (timer.stalled(handler_timeout=0.01) or "")
    finally:
        release.set()
        timer.stop(timeout=5)
    assert timer.stalled(handler_timeout=0.01) is None


def test_stalled_reports_an_overdue_run() -> None:
    timer = RepeatTimer(3600, lambda: None, runonstart=False)
    timer.start()
    try:
        assert timer.stalled(handler_timeout=10) is None
        future = time.monotonic() + 3600 + 11  # as seen after the thread failed to wake for 11 s
        assert "overdue" in (timer.stalled(handler_timeout=10, now=future) or "")
    finally:
        timer.stop(timeout=5)
