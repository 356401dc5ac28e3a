"""The handler boundary: exceptions caught and counted; a repeating failure logged in full once,
then summarised at most every few minutes, and once when the handler works again."""

from __future__ import annotations

import logging

import pytest

from uun_gateway import Module, on
from uun_gateway.handlers import HandlerRunner
from uun_gateway.loading import adapt


class Flaky(Module):
    def __init__(self) -> None:
        super().__init__({})
        self.broken = True

    @on("tick")
    def measure(self) -> None:
        if self.broken:
            raise RuntimeError("sensor unplugged")


def test_a_repeating_failure_is_one_traceback_then_summaries_then_one_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    runner = HandlerRunner(repeat_every=300.0, clock=lambda: now[0])
    module = Flaky()
    loaded = adapt(module)
    (handler,) = loaded.of("tick")
    with caplog.at_level(logging.INFO, logger="uun_gateway"):
        for _ in range(100):  # a tick every second for 100 s
            assert not runner.call(loaded, handler)
            now[0] += 1.0
        assert caplog.text.count("Traceback") == 1
        assert "module flaky: tick handler Flaky.measure: raised RuntimeError: sensor unplugged" in caplog.text
        assert len(caplog.records) == 1
        now[0] = 301.0
        assert not runner.call(loaded, handler)
        assert len(caplog.records) == 2
        assert (
            "still failing (100 more time(s), 101 in all); last: raised RuntimeError: sensor unplugged" in caplog.text
        )
        assert caplog.text.count("Traceback") == 1

        module.broken = False
        assert runner.call(loaded, handler) and runner.call(loaded, handler)
        assert len(caplog.records) == 3
        assert "Flaky.measure: works again after 101 failure(s)" in caplog.records[-1].getMessage()

        module.broken = True
        assert not runner.call(loaded, handler)
        assert caplog.text.count("Traceback") == 2  # a new failure after recovery: in full again
    assert module.stats.handler_errors == 102
