"""Alarm polling (conditional search, ``/alarm``) with thresholds set from config, against a fake
ownet server (owserver's emulated buses never report alarms)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uun_gateway.modules.onewire import DeviceAlarm, DeviceAlarmCleared, Event, OneWire

from tests.onewire_fixtures import (
    MSG_DIRALLSLASH,
    MSG_WRITE,
    FakeOwserver,
    fake_owserver_fixture,  # noqa: F401
    tree_handler,
)

BOILER = "28.000000000001"
OTHER = "28.000000000002"


def test_a_device_in_alarm_raises_one_event_and_entry_until_it_clears(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    files: dict[str, bytes | int] = {"/bus.0/simultaneous/temperature": b"0"}
    for dev, temp in ((BOILER, b"  31"), (OTHER, b"  20")):
        files[f"/bus.0/{dev}/type"] = b"DS18B20"
        files[f"/bus.0/{dev}/temperature"] = temp
        files[f"/bus.0/{dev}/temphigh"] = b"  75"
        files[f"/bus.0/{dev}/templow"] = b"  0"
    alarming: list[str] = []

    def dirs(path: str) -> list[str] | None:
        if path == "/":
            return ["/bus.0/"]
        if path == "/uncached/bus.0/":
            return [f"/uncached/bus.0/{BOILER}/", f"/uncached/bus.0/{OTHER}/"]
        if path == "/uncached/bus.0/alarm":
            return [f"/uncached/bus.0/alarm/{dev}/" for dev in alarming]
        return None

    fake = fake_owserver(tree_handler(files, dirs, keep_writes=True))
    section = {
        "servers": [{"host": "127.0.0.1", "port": fake.port}],
        "conversionDelay": 0.0,
        "alarmInterval": 10,
        "sensors": {BOILER: {"alias": "boiler", "set": {"temphigh": 30, "templow": 5}}},
    }
    timers = {"onewire": {"scan": 60, "read": 1}}
    module = OneWire({"storageDir": str(tmp_path / "storage"), "moduleTimers": timers, "onewire": section})
    now = [0.0]
    module.schedule.clock = lambda: now[0]
    module.clock = lambda: 1_700_000_000.0 + now[0]
    events: list[Event] = []
    module.subscribe(events.append)
    try:
        module.read_cycle()  # sets the thresholds; nothing in alarm yet
        assert files[f"/bus.0/{BOILER}/temphigh"] == b"30" and files[f"/bus.0/{BOILER}/templow"] == b"5"
        assert [p for t, p in fake.requests if t == MSG_WRITE].count(f"/bus.0/{BOILER}/temphigh") == 1
        alarming.append(BOILER)
        now[0] = 5.0
        module.read_cycle()  # alarms are polled every 10 s: not yet
        assert not [e for e in events if isinstance(e, DeviceAlarm)]
        now[0] = 10.0
        module.read_cycle()
        now[0] = 20.0
        module.read_cycle()  # still in alarm: no second event
        (alarm,) = [e for e in events if isinstance(e, DeviceAlarm)]
        assert (alarm.device_id, alarm.alias) == (BOILER, "boiler")
        assert alarm.reason == "temperature 31 °C at or above temphigh 30 °C"
        assert alarm.values == {"temperature": 31.0, "temphigh": 30.0, "templow": 5.0}
        alarming.clear()
        now[0] = 30.0
        module.read_cycle()
        (cleared,) = [e for e in events if isinstance(e, DeviceAlarmCleared)]
        assert cleared.device_id == BOILER
        entries = [e.data for e in module.storage.oldest(1000) if e.data.get("event") == "alarm"]
        assert [(e["deviceId"], e["alarm"], e["reason"]) for e in entries] == [
            (BOILER, True, "temperature 31 °C at or above temphigh 30 °C"),
            (BOILER, False, "cleared"),
        ]
        assert entries[0]["timestamp"] == 1_700_000_010.0 and entries[0]["server"] == fake.address
        polls = [p for t, p in fake.requests if t == MSG_DIRALLSLASH and p.endswith("/alarm")]
        assert len(polls) == 4  # at 0, 10, 20 and 30 s
    finally:
        module.close_storage()
