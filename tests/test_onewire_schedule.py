"""Per-sensor and per-property intervals on the module's read timer (an injected clock drives the
schedule; a fake ownet server counts what is read)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.onewire import OneWire
from uun_gateway.modules.onewire.schedule import Schedule

from tests.onewire_fixtures import (
    MSG_READ,
    MSG_WRITE,
    FakeOwserver,
    fake_owserver_fixture,  # noqa: F401
    tree_handler,
)

TEMPS = [f"28.0000000000{i:02X}" for i in range(3)]
DOOR = "3A.000000000010"
COUNTER = "1D.000000000011"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def installation(fake_owserver: Callable[..., FakeOwserver]) -> FakeOwserver:
    files: dict[str, bytes | int] = {"/bus.0/simultaneous/temperature": b"0"}
    for dev in TEMPS:
        files[f"/bus.0/{dev}/type"] = b"DS18B20"
        files[f"/bus.0/{dev}/temperature"] = b"  20.5"
    files[f"/bus.0/{DOOR}/type"] = b"DS2413"
    files[f"/bus.0/{DOOR}/sensed.ALL"] = b"1,0"
    files[f"/bus.0/{COUNTER}/type"] = b"DS2423"
    files[f"/bus.0/{COUNTER}/counter.A"] = b"  5"
    files[f"/bus.0/{COUNTER}/counter.B"] = b"  6"
    devices = [*TEMPS, DOOR, COUNTER]
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{d}/" for d in devices]}
    return fake_owserver(tree_handler(files, dirs))


def module_for(tmp_path: Path, port: int, read_period: float, **section: Any) -> OneWire:
    config = {
        "storageDir": str(tmp_path / "storage"),
        "moduleTimers": {"onewire": {"scan": 600, "read": read_period}},
        "onewire": {"servers": [{"host": "127.0.0.1", "port": port}], "conversionDelay": 0.5, **section},
    }
    return OneWire(config)


def test_mixed_intervals_read_each_property_at_its_own_pace_and_convert_only_when_needed(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    fake = installation(fake_owserver)
    module = module_for(
        tmp_path,
        fake.port,
        1,
        interval=60,
        alarmInterval=0,
        sensors={DOOR: {"intervals": {"sensed.A": 1}}, COUNTER: {"intervals": {"counter.A": 10, "counter.B": 10}}},
    )
    clock = Clock()
    module.schedule.clock = clock
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return True

    module.reader._wait = wait
    try:
        for _ in range(120):  # two minutes of 1 s ticks, each a little late or early
            module.read_cycle()
            clock.now += 1.0 + (0.003 if len(waits) % 2 else -0.003)
        reads = [p for t, p in fake.requests if t == MSG_READ and not p.endswith(("/type", "/name"))]
        count = {name: sum(p.endswith(name) for p in reads) for name in ("temperature", "sensed.ALL", "counter.A")}
        assert count == {"temperature": 2 * len(TEMPS), "sensed.ALL": 120, "counter.A": 12}
        triggers = [p for t, p in fake.requests if t == MSG_WRITE]
        assert len(triggers) == 2 and len(waits) == 2  # the conversion wait only on temperature cycles
    finally:
        module.close_storage()


def test_an_interval_shorter_than_the_read_timer_is_warned_naming_both_keys(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = installation(fake_owserver)
    with caplog.at_level(logging.WARNING):
        module = module_for(tmp_path, fake.port, 10, sensors={DOOR: {"intervals": {"sensed.A": 1}}})
    module.close_storage()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"gateway.onewire.sensors.{DOOR}.intervals.sensed.A is 1 s but the read timer ticks every 10 s" in warning
    assert "set gateway.moduleTimers.onewire.read to 1 or less" in warning


def test_schedule_slack_keeps_the_interval_on_a_jittering_tick() -> None:
    schedule = Schedule()
    schedule.tick = 1.0
    key = ("28.000000000001", "temperature")
    schedule.done(key, 60, 0.0)
    assert not schedule.due(key, 60, 59.0)
    assert schedule.due(key, 60, 59.999)  # a tick a millisecond early still reads
    assert schedule.due(key, None, 0.0)
    schedule.forget(lambda k: k == key)
    assert schedule.due(key, 60, 1.0)
