"""Alarms in a running gateway: Module.publish stores readings and hands them to the rules,
transitions land in the ``alarms`` storage and reach ``@on("alarm")`` handlers, state survives a
restart, and rules come and go with a config update."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from uun_gateway.modules.onewire.families import properties_for
from uun_gateway.modules.onewire.module import OneWire
from uun_gateway.modules.unisenza.module import Unisenza
from uun_gateway.modules.upload import Upload

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.test_unisenza_module import config_for as unisenza_config
from tests.unisenza_fakes import FakeCloud, fixtures, section_for
from tests.uuapp_modules import gateway_config
from uun_gateway import ConfigError, Gateway, Module, on
from uun_gateway.alarms import AlarmTransition
from uun_gateway.alarmservice import AlarmService
from uun_gateway.readings import PointInfo, Reading
from uun_gateway.storage import Storage

if TYPE_CHECKING:
    from tests.onewire_fixtures import Owserver

# onewire_fixtures as a plugin, not imported at the top, so that pytest rewrites its asserts
pytest_plugins = ["tests.uuapp_fixtures", "tests.onewire_fixtures"]

# the cloud double's fixtures, as tests/test_unisenza_module.py uses them
ca, shared_env, cloud = fixtures.ca, fixtures.shared_env, fixtures.cloud

TESTER_PROPERTIES = [p for family in ("28", "28", "10", "26", "1D", "29") for p in properties_for(family)]
BOILER = PointInfo(unit="°C", min=-55, max=125)


class Ramp(Module):
    """Publishes a rising temperature, one reading per tick, and records its alarm events."""

    def __init__(self, config: Any, start: float = 70.0, step: float = 1.0) -> None:
        super().__init__(config)
        self.value = start
        self.step = step
        self.lock = threading.Lock()
        self.alarms: list[AlarmTransition] = []

    @on("tick")
    def tick(self) -> None:
        with self.lock:
            value, self.value = self.value, self.value + self.step
        self.publish([Reading.of("ramp", "boiler", "temperature", value, BOILER)])

    @on("alarm")
    def alarm(self, transition: AlarmTransition) -> None:
        with self.lock:
            self.alarms.append(transition)

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(t.rule, t.state) for t in self.alarms]


def config_for(tmp_path: Path, rules: list[dict[str, Any]] | None, period: float = 0.01) -> dict[str, Any]:
    gateway: dict[str, Any] = {"storageDir": str(tmp_path), "moduleTimers": {"ramp": period}}
    if rules is not None:
        gateway["alarms"] = rules
    return {"gateway": gateway}


HOT = {"name": "hot", "watch": {"module": "ramp", "point": "temperature"}, "condition": "value >= 75"}


def stored(path: Path) -> list[Any]:
    storage = Storage("check", path)
    try:
        return [e.data for e in storage]
    finally:
        storage.close()


def test_a_published_ramp_trips_an_alarm_once_and_it_is_stored(tmp_path: Path) -> None:
    ramp: list[Ramp] = []
    start = [70.0]

    def init(config: dict[str, Any], uuclient: Any) -> Ramp:
        ramp.append(Ramp(config["gateway"], start=start[0]))
        return ramp[0]

    with Gateway(config_for(tmp_path, [HOT]), init) as gateway:
        wait_for(lambda: ramp[0].value >= 80)
        assert gateway.alarms is not None
        assert [(a.rule, a.device, a.state) for a in gateway.alarms.alarms()] == [("hot", "boiler", "active")]
        [status] = gateway.health()["alarms"]
        assert (status["rule"], status["state"], status["priority"]) == ("hot", "active", "warning")
        assert status["value"] >= 75.0  # the latest value
    assert ramp[0].seen() == [("hot", "active")]
    [entry] = stored(tmp_path / "alarms.sqlite")
    assert (entry["rule"], entry["module"], entry["device"], entry["state"], entry["value"]) == (
        "hot",
        "ramp",
        "boiler",
        "active",
        75.0,
    )
    readings = stored(tmp_path / "ramp.sqlite")
    assert readings[0] == {
        "module": "ramp",
        "device": "boiler",
        "point": "temperature",
        "value": 70.0,
        "unit": "°C",
        "timestamp": readings[0]["timestamp"],
        "quality": "good",
    }

    # a restart, still hot: still active, not raised again, and acknowledging it works
    ramp.clear()
    start[0] = 80.0
    with Gateway(config_for(tmp_path, [HOT]), init) as gateway:
        assert gateway.alarms is not None
        assert [a.state for a in gateway.alarms.alarms()] == ["active"]
        wait_for(lambda: ramp[0].value >= 85)
        [acked] = gateway.alarms.acknowledge("hot", by="test")
        assert acked.state == "acknowledged"
        wait_for(lambda: ramp[0].seen() == [("hot", "acknowledged")])
    assert [e["state"] for e in stored(tmp_path / "alarms.sqlite")] == ["active", "acknowledged"]


def test_a_rule_that_does_not_compile_stops_the_gateway_from_loading(tmp_path: Path) -> None:
    bad = dict(HOT, condition="value >= ")
    with pytest.raises(ConfigError, match=r"gateway\.alarms\[0\]\.condition: column 10: expected a number"):
        Gateway(config_for(tmp_path, [bad]), lambda c, u: Ramp(c["gateway"]))


def test_without_alarms_publish_only_stores(tmp_path: Path) -> None:
    ramp: list[Ramp] = []

    def init(config: dict[str, Any], uuclient: Any) -> Ramp:
        ramp.append(Ramp(config["gateway"]))
        return ramp[0]

    with Gateway(config_for(tmp_path, None), init) as gateway:
        wait_for(lambda: ramp[0].value >= 75)
        assert gateway.alarms is None
    assert not (tmp_path / "alarms.sqlite").exists()
    assert len(stored(tmp_path / "ramp.sqlite")) >= 5


def test_rules_added_and_changed_by_a_config_update(tmp_path: Path) -> None:
    ramp: list[Ramp] = []

    def init(config: dict[str, Any], uuclient: Any) -> Ramp:
        ramp.append(Ramp(config["gateway"], start=0.0, step=1.0))
        return ramp[0]

    config = config_for(tmp_path, None)
    with Gateway(config, init) as gateway:
        wait_for(lambda: ramp[0].value >= 2)
        gateway.reconfigure(config_for(tmp_path, [dict(HOT, condition="value >= 5")]), save=False)
        wait_for(lambda: ramp[0].seen() == [("hot", "active")])
        assert gateway.alarms is not None
        # a second rule; the first keeps its state (active, not raised again)
        second = {"name": "hotter", "watch": {"module": "ramp"}, "condition": "value >= 1"}
        gateway.reconfigure(config_for(tmp_path, [dict(HOT, condition="value >= 5"), second]), save=False)
        wait_for(lambda: ("hotter", "active") in ramp[0].seen())
        assert sorted(a.rule for a in gateway.alarms.alarms()) == ["hot", "hotter"]
        assert ramp[0].seen().count(("hot", "active")) == 1
        with pytest.raises(ConfigError, match=r"gateway\.alarms\[0\]\.condition: column 1: unknown name 'vaule'"):
            gateway.reconfigure(config_for(tmp_path, [dict(HOT, condition="vaule > 1")]), save=False)


def test_an_alarm_handler_that_raises_is_counted_and_the_gateway_goes_on(tmp_path: Path) -> None:
    class Broken(Ramp):
        id = "ramp"

        @on("alarm")
        def alarm(self, transition: AlarmTransition) -> None:
            raise RuntimeError("handler bug")

    ramp: list[Ramp] = []

    def init(config: dict[str, Any], uuclient: Any) -> Ramp:
        ramp.append(Broken(config["gateway"]))
        return ramp[0]

    with Gateway(config_for(tmp_path, [HOT]), init) as gateway:
        wait_for(lambda: gateway.health()["modules"]["ramp"]["handlerErrors"] == 1)
        wait_for(lambda: ramp[0].value >= 80)
    assert [e["state"] for e in stored(tmp_path / "alarms.sqlite")] == ["active"]


def test_transitions_are_uploaded_from_the_alarms_storage(fake: FakeUuApp, tmp_path: Path) -> None:
    config = gateway_config(
        fake,
        tmp_path,
        moduleTimers={"ramp": 0.01, "upload": 0.02},
        alarms=[HOT],
        upload={"sources": {"alarms": {"uuCmd": "gateway/alarms"}}},
    )
    gateway = Gateway(config, lambda c, u: [Ramp(c["gateway"]), Upload(c["gateway"], u)])
    try:
        gateway.start()
        wait_for(lambda: any(r.processed for r in fake.for_cmd("gateway/alarms")))
    finally:
        gateway.stop()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()
    [record] = [r for r in fake.for_cmd("gateway/alarms") if r.processed]
    assert record.dto["source"] == "alarms"
    [item] = record.dto["data"]
    assert (item["data"]["rule"], item["data"]["state"], item["data"]["value"]) == ("hot", "active", 75.0)
    assert stored(tmp_path / "storage" / "alarms.sqlite") == []  # delivered, so gone


def test_rules_on_a_real_module_onewire_on_owserver_tester(owserver: Owserver, tmp_path: Path) -> None:
    """owserver --tester values are fixed: the first DS18B20 (28.*) reads 4.0 °C, so a threshold
    below it trips and one above it does not."""
    from tests.onewire_fixtures import emulated_id, emulated_value

    first = emulated_id("28", 0)
    expected = emulated_value(first) * 0.1
    rules = [
        {
            "name": "above",
            "watch": {"module": "onewire", "device": first, "point": "temperature"},
            "condition": f"value > {expected - 0.5}",
        },
        {
            "name": "below",
            "watch": {"module": "onewire", "device": "28.*", "point": "temperature"},
            "condition": f"value > {expected + 100}",
        },
    ]
    config = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"onewire": {"scan": 60, "read": 0.2}},
            "onewire": {"servers": [{"host": "127.0.0.1", "port": owserver.port}], "conversionDelay": 0.01},
            "alarms": rules,
        }
    }
    with Gateway(config, lambda c, u: OneWire(c["gateway"], u)) as gateway:
        assert gateway.alarms is not None
        service = gateway.alarms
        wait_for(lambda: [(a.rule, a.device, a.state) for a in service.alarms()] == [("above", first, "active")])
        (module,) = gateway.modules
        wait_for(lambda: len(module.storage) >= 2 * len(TESTER_PROPERTIES))  # two read cycles
        assert [a.value for a in service.alarms()] == [pytest.approx(expected)]
    # the module's own entry format is kept
    assert {"deviceId", "property", "value", "unit", "timestamp"} <= set(
        stored(tmp_path / "storage" / "onewire.sqlite")[0]
    )
    assert [e["rule"] for e in stored(tmp_path / "storage" / "alarms.sqlite")] == ["above"]


def test_rules_on_unisenza_thermostats(cloud: FakeCloud, tmp_path: Path) -> None:
    """The cloud double's living room (T1) is at 21.35 °C."""
    rules = [
        {
            "name": "warm",
            "watch": {"module": "unisenza", "device": "T1", "point": "currentTemperature"},
            "condition": "value > 21",
        },
        {"name": "hot", "watch": {"module": "unisenza", "point": "*Temperature"}, "condition": "value > 40"},
    ]
    config = unisenza_config(tmp_path, section_for(cloud, tmp_path))
    config["gateway"]["alarms"] = rules
    with Gateway(config, lambda c, u: Unisenza(c["gateway"], u)) as gateway:
        assert gateway.alarms is not None
        service = gateway.alarms
        wait_for(lambda: [(a.rule, a.device, a.state) for a in service.alarms()] == [("warm", "T1", "active")], 15)
        assert [a.value for a in service.alarms()] == [21.35]


def test_reading_listeners_see_every_published_reading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service = AlarmService({"storageDir": str(tmp_path), "alarms": [HOT]})
    seen: list[float] = []

    def broken(reading: Reading) -> None:
        raise RuntimeError("listener bug")

    service.subscribe_readings(broken)
    unsubscribe = service.subscribe_readings(lambda r: seen.append(r.value))
    service.start()
    try:
        [tripped] = service.publish([Reading("ramp", "boiler", "temperature", v, 0.0) for v in (70.0, 76.0)])
        assert tripped.state == "active"
        assert seen == [70.0, 76.0]
        unsubscribe()
        service.publish([Reading("ramp", "boiler", "temperature", 77.0, 0.0)])
        assert seen == [70.0, 76.0]
    finally:
        service.stop()
    assert sum("reading listener" in r.getMessage() for r in caplog.records) == 3
    assert [e["state"] for e in stored(tmp_path / "alarms.sqlite")] == ["active"]
    assert (tmp_path / "alarms-state.json").exists()
