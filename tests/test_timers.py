"""RepeatTimer: schedule, coalescing, errors, stop."""

from __future__ import annotations

import itertools
import math
import threading
import time

import pytest

from tests.conftest import wait_for
from uun_gateway import RepeatTimer


def test_runs_repeatedly_and_first_run_is_immediate() -> None:
    calls: list[float] = []
    timer = RepeatTimer(0.01, lambda: calls.append(time.monotonic()))
    timer.start()
    try:
        wait_for(lambda: len(calls) >= 5)
    finally:
        assert timer.stop()
    assert timer.runs >= 5 and timer.skipped == 0


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


def test_overrun_is_coalesced_never_back_to_back(caplog: pytest.LogCaptureFixture) -> None:
    period = 0.02
    release = threading.Event()
    starts: list[float] = []

    def handler() -> None:
        starts.append(time.monotonic())
        if len(starts) == 2:
            release.wait(10)  # overrun: several deadlines pass while this run blocks

    timer = RepeatTimer(period, handler, name="slow")
    timer.start()
    try:
        wait_for(lambda: len(starts) >= 2)
        wait_for(lambda: timer.running_since is not None and time.monotonic() - timer.running_since > 5 * period)
        release.set()
        wait_for(lambda: len(starts) >= 5)
    finally:
        timer.stop()
    assert timer.skipped >= 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= period * 0.9, f"runs came back to back: {gaps}"
    # the schedule stays on its grid: every start is near a multiple of the period from the first
    offsets = [(s - starts[0]) / period for s in starts]
    assert all(abs(o - round(o)) < 0.45 for o in offsets[2:]), offsets
    assert caplog.text.count("overran") == 1


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


def test_wall_clock_jump_does_not_affect_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    timer = RepeatTimer(3600, lambda: calls.append(1), runonstart=False)
    monkeypatch.setattr(time, "time", lambda: 1e12)  # the wall clock jumps far ahead
    timer.start()
    try:
        assert not threading.Event().wait(0.05)
        assert calls == []
    finally:
        timer.stop(timeout=5)


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
