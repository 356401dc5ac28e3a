"""The built-in ``onewire`` module against a real Debian owserver (``--tester`` devices) and a fake
ownet server for faults owserver cannot emulate."""

from __future__ import annotations

import argparse
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyownet import protocol  # type: ignore[import-untyped]
from uun_gateway.modules.onewire import (
    Device,
    DeviceAdded,
    DeviceLocated,
    DeviceMoved,
    DeviceNotFound,
    DeviceValue,
    Event,
    OneWire,
    OwServer,
    Reader,
    ReadTarget,
    ServerAddress,
    ServerConnected,
    ServerDisconnected,
    ServerUnavailable,
    scan,
)
from uun_gateway.modules.onewire.cli import EXIT_UNREACHABLE, register
from uun_gateway.modules.onewire.families import properties_for, reading_names
from uun_gateway.modules.onewire.reader import PowerOnFilter

from tests.helpers import wait_for
from tests.onewire_fixtures import (
    MSG_READ,
    MSG_WRITE,
    FakeOwserver,
    Owserver,
    emulated_id,
    emulated_value,
    fake_owserver_fixture,  # noqa: F401
    free_port,
    owserver_factory_fixture,  # noqa: F401
    owserver_fixture,  # noqa: F401
    tree_handler,
)
from uun_gateway import Commands, ConfigError, Gateway

TESTER = ["28", "28", "10", "26", "1D", "29"]
TESTER_VALUES = sum(len(reading_names(spec)) for fam in TESTER for spec in properties_for(fam))


def make_module(tmp_path: Path, *addresses: str, **section: Any) -> OneWire:
    servers = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        servers.append({"host": host, "port": int(port)})
    config = {
        "storageDir": str(tmp_path / "storage"),
        "onewire": {"servers": servers, "conversionDelay": 0.0, **section},
    }
    return OneWire(config)


@pytest.fixture
def modules() -> Any:
    """Construct OneWire modules through ``make``; their storages are closed at teardown."""
    made: list[OneWire] = []

    def make(tmp_path: Path, *addresses: str, **section: Any) -> OneWire:
        module = make_module(tmp_path, *addresses, **section)
        made.append(module)
        return module

    yield make
    for module in made:
        module.close_storage()


def collect(module: OneWire) -> list[Event]:
    events: list[Event] = []
    module.subscribe(events.append)
    return events


def device(module: OneWire, dev_id: str) -> Device:
    found = module.inventory.get(dev_id)
    assert found is not None, f"{dev_id} not in the inventory"
    return found


def stored(module: OneWire) -> list[dict[str, Any]]:
    return [entry.data for entry in module.storage.oldest(10_000)]


# -- scanning ---------------------------------------------------------------------------------


def test_scan_lists_tester_devices_with_type_and_bus(owserver: Owserver) -> None:
    server = OwServer(ServerAddress.parse(owserver.address))
    with server.session() as session:
        result = scan(session)
    expected = {emulated_id(fam, i) for i, fam in enumerate(TESTER)}
    assert set(result.devices) == expected
    assert result.buses == ["/bus.0/"]
    assert {d.bus_path for d in result.devices.values()} == {"/bus.0/"}
    types = {d.id[:2]: d.type for d in result.devices.values()}
    assert types == {"28": "DS18B20", "10": "DS18S20", "26": "DS2438", "1D": "DS2423", "29": "DS2408"}
    assert result.simulated_buses == {"/bus.0/": "Simulated-Computed"}
    assert server.connected is True


def test_coupler_walk_terminates_and_lists_each_device_once(
    owserver_factory: Callable[..., Owserver],
) -> None:
    # Emulated DS2409s list the whole bus again under main/ and aux/, themselves included.
    ow = owserver_factory(["--tester=28,1F,10,1F"])
    server = OwServer(ServerAddress.parse(ow.address))
    with server.session() as session:
        result = scan(session, max_depth=3)
    ids = [emulated_id(fam, i) for i, fam in enumerate(["28", "1F", "10", "1F"])]
    assert sorted(result.devices) == sorted(ids)
    assert all(d.bus_path == "/bus.0/" for d in result.devices.values())
    couplers = [i for i in ids if i.startswith("1F")]
    branches = {f"/bus.0/{c}/{b}/" for c in couplers for b in ("main", "aux")}
    assert set(result.buses) == {"/bus.0/"} | branches
    # root dir + bus name + 4 type reads + 5 listings: bounded, not proportional to recursion depth
    assert result.round_trips == 1 + 1 + 4 + 5


def test_coupler_chain_stops_at_depth_limit(fake_owserver: Callable[..., FakeOwserver]) -> None:
    # Each coupler branch shows a new coupler: a walk without a depth limit never ends.
    counter = iter(range(1, 1000))

    def dirs(path: str) -> list[str] | None:
        path = path.removeprefix("/uncached")
        if path == "/":
            return ["/bus.0/"]
        if path.endswith("/aux/"):
            return []
        return [f"{path}1F.{next(counter):012X}/"]

    fake = fake_owserver(tree_handler({}, dirs))
    server = OwServer(ServerAddress.parse(fake.address))
    with server.session() as session:
        result = scan(session, max_depth=2)
    couplers = sorted(result.devices)
    assert len(couplers) == 3  # one per level 0, 1, 2
    assert len(result.depth_limited) == 1
    assert result.depth_limited[0].count("/main/") == 2


def test_scan_events_added_located_moved_not_found(
    owserver_factory: Callable[..., Owserver], tmp_path: Path, modules: Any
) -> None:
    a, b, c = "28.00000000AF00", "10.00000000B400", "26.000000000100"
    ow = owserver_factory([f"--tester={a},{b}"])
    module = modules(tmp_path, ow.address, missedScans=2)
    events = collect(module)
    module.scan_all()
    assert [type(e) for e in events] == [
        ServerConnected,
        DeviceAdded,
        DeviceLocated,
        DeviceAdded,
        DeviceLocated,
    ]
    assert {e.device.id for e in events if isinstance(e, DeviceAdded)} == {a, b}
    located = {e.device.id: e.location for e in events if isinstance(e, DeviceLocated)}
    assert located[a].server == ow.address and located[a].bus_path == "/bus.0/"

    # b disappears, c appears; b is only "not found" after missedScans=2 consecutive misses
    ow.restart([f"--tester={a},{c}"])
    events.clear()
    module.scan_all()
    kinds = [(type(e).__name__, getattr(getattr(e, "device", None), "id", None)) for e in events]
    assert ("DeviceAdded", c) in kinds and ("DeviceLocated", c) in kinds
    assert not any(isinstance(e, DeviceNotFound) for e in events)
    events.clear()
    module.scan_all()
    assert [(type(e), e.device.id) for e in events if isinstance(e, DeviceNotFound)] == [(DeviceNotFound, b)]
    assert device(module, b).location is None

    # a moves to another bus (second --tester option) and b comes back: located again, not added
    ow.restart([f"--tester={c}", f"--tester={a},{b}"])
    events.clear()
    module.scan_all()
    moved = [e for e in events if isinstance(e, DeviceMoved)]
    assert [m.device.id for m in moved] == [a]
    assert moved[0].old.bus_path != moved[0].new.bus_path
    assert not any(isinstance(e, DeviceAdded) for e in events)
    assert [e.device.id for e in events if isinstance(e, DeviceLocated)] == [b]


def test_simulated_bus_is_warned_once(owserver: Owserver, tmp_path: Path, modules: Any, caplog: Any) -> None:
    module = modules(tmp_path, owserver.address)
    with caplog.at_level(logging.WARNING, logger="uun_gateway.modules.onewire"):
        module.scan_all()
        module.scan_all()
    warnings = [r for r in caplog.records if "simulated bus master" in r.getMessage()]
    assert len(warnings) == 1


# -- reading ----------------------------------------------------------------------------------


def test_read_cycle_stores_entries_with_values_units_and_alias(
    owserver: Owserver, tmp_path: Path, modules: Any
) -> None:
    first = emulated_id("28", 0)
    module = modules(tmp_path, owserver.address, sensors={first: {"alias": "boiler"}})
    events = collect(module)
    result = module.read_cycle()  # the first read scans first
    assert not result.errors and not result.unavailable
    entries = stored(module)
    by_key = {(e["deviceId"], e["property"]): e for e in entries}
    direct = protocol.proxy("127.0.0.1", owserver.port)
    for index, fam in enumerate(TESTER):
        dev = emulated_id(fam, index)
        for n, spec in enumerate(properties_for(fam)):
            for channel, name in enumerate(reading_names(spec)):
                entry = by_key.pop((dev, name))
                raw = emulated_value(dev, n if fam == "1D" else 0)
                if spec.unit in ("°C", "%", "V"):
                    assert entry["value"] == pytest.approx(raw / 10)
                    assert isinstance(entry["value"], float)
                elif spec.channels:  # emulated bit fields do not follow the value formula
                    bits = direct.read(f"/{dev}/{spec.name}").split(b",")
                    assert entry["value"] is (bits[channel] == b"1")
                else:
                    assert entry["value"] == raw
                assert entry["unit"] == spec.unit
                assert entry["server"] == owserver.address
                assert entry["alias"] == ("boiler" if dev == first else None)
                assert isinstance(entry["timestamp"], float)
    assert by_key == {}
    assert len([e for e in events if isinstance(e, DeviceValue)]) == len(entries)


def test_sensor_settings_select_properties_resolution_and_ignore(
    owserver: Owserver, tmp_path: Path, modules: Any, fake_owserver: Callable[..., FakeOwserver]
) -> None:
    ds2438 = emulated_id("26", 3)
    module = modules(
        tmp_path,
        owserver.address,
        readUnlisted=False,
        sensors={ds2438: {"properties": ["humidity"]}, emulated_id("28", 0): {"ignore": True}},
    )
    module.read_cycle()
    assert [(e["deviceId"], e["property"]) for e in stored(module)] == [(ds2438, "humidity")]


def test_resolution_reads_temperature_nn_path(fake_owserver: Callable[..., FakeOwserver], tmp_path: Path) -> None:
    dev = "28.000000000001"
    files: dict[str, bytes | int] = {
        f"/bus.0/{dev}/temperature11": b"   21.125",
        f"/bus.0/{dev}/type": b"DS18B20",
        "/bus.0/simultaneous/temperature": b"0",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{dev}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    module = make_module(tmp_path, fake.address, resolution=11)
    try:
        module.read_cycle()
        assert [(e["property"], e["value"]) for e in stored(module)] == [("temperature", 21.125)]
    finally:
        module.close_storage()
    assert (MSG_READ, f"/bus.0/{dev}/temperature11") in fake.requests


def test_simultaneous_conversion_triggers_each_bus_once_then_waits_once(
    fake_owserver: Callable[..., FakeOwserver],
) -> None:
    sensors = {"/bus.0/": [f"28.0000000000{i:02X}" for i in range(5)], "/bus.1/": ["10.000000000A01"]}
    files: dict[str, bytes | int] = {}
    for bus, ids in sensors.items():
        files[f"{bus}simultaneous/temperature"] = b"0"
        for dev in ids:
            files[f"{bus}{dev}/temperature"] = b"   20.5"
            files[f"/uncached{bus}{dev}/temperature"] = b"   20.5"
    fake = fake_owserver(tree_handler(files, {}))
    waits: list[float] = []
    order_at_wait: list[int] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        order_at_wait.append(len(fake.requests))
        return True

    targets = [ReadTarget(dev, None, bus, properties_for(dev[:2])) for bus, ids in sensors.items() for dev in ids]
    server = OwServer(ServerAddress.parse(fake.address))
    with server.session() as session:
        result = Reader(conversion_delay=0.75, wait=wait).read([(session, targets)])
    assert len(result.readings) == 6 and not result.errors
    assert result.triggers == 2
    assert len(waits) == 1 and 0 < waits[0] <= 0.75
    ops = [(t, p) for t, p in fake.requests if t in (MSG_READ, MSG_WRITE) and not p.startswith("/settings/")]
    writes = [p for t, p in ops if t == MSG_WRITE]
    assert writes == ["/bus.0/simultaneous/temperature", "/bus.1/simultaneous/temperature"]
    # both triggers before the wait, every read after it, and reads use the cached path
    assert ops[:2] == [(MSG_WRITE, w) for w in writes]
    assert order_at_wait[0] == fake.requests.index((MSG_WRITE, writes[1])) + 1
    assert all(not p.startswith("/uncached") for _, p in ops)
    assert {r.timestamp for r in result.readings if r.device_id.startswith("28")} == {result.readings[0].timestamp}

    fake.requests.clear()
    waits.clear()
    with server.session() as session:
        result = Reader(simultaneous=False, conversion_delay=0.75, wait=wait).read([(session, targets)])
    assert len(result.readings) == 6 and result.triggers == 0 and waits == []
    assert not any(t == MSG_WRITE for t, _ in fake.requests)
    # without a bus conversion each read converts its own sensor: uncached, never a stale copy
    assert all(p.startswith("/uncached/") for t, p in fake.requests if t == MSG_READ)


def test_stop_interrupts_conversion_wait(fake_owserver: Callable[..., FakeOwserver]) -> None:
    files: dict[str, bytes | int] = {
        "/bus.0/simultaneous/temperature": b"0",
        "/bus.0/28.000000000001/temperature": b"1",
    }
    fake = fake_owserver(tree_handler(files, {}))
    stop = threading.Event()
    stop.set()
    reader = Reader(conversion_delay=30.0, wait=lambda s: not stop.wait(s))
    server = OwServer(ServerAddress.parse(fake.address))
    with server.session() as session:
        result = reader.read([(session, [ReadTarget("28.000000000001", None, "/bus.0/", properties_for("28"))])])
    assert result.interrupted and result.readings == []


def test_repeated_85_keeps_being_rejected_counted_and_logged_once(
    owserver_factory: Callable[..., Owserver], tmp_path: Path, modules: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # before: the second 85.0 in a row was taken as "confirmed" and stored
    ok, power_on = "28.00000000AF00", "28.000000002A03"  # 21.5 and 85.0 degC
    ow = owserver_factory([f"--tester={ok},{power_on}"])
    module = modules(tmp_path, ow.address)
    for cycle in range(1, 5):
        result = module.read_cycle()
        assert [(r.device_id, r.value) for r in result.readings] == [(ok, 21.5)]
        assert [(e.device_id, e.kind) for e in result.errors] == [(power_on, "power-on")]
        assert device(module, power_on).read_errors == cycle
    assert [e for e in stored(module) if e["deviceId"] == power_on] == []
    assert module.reader.power_on.stuck((power_on, "temperature")) == 4
    assert module.reader.power_on.rejected == 4
    logged = [r for r in caplog.records if power_on in r.getMessage()]
    assert len(logged) == 1 and "power-on value" in logged[0].getMessage()


def test_power_on_filter_accepts_85_near_previous_value() -> None:
    gate = PowerOnFilter()
    assert gate.accept(("a", "temperature"), 84.0)
    assert gate.accept(("a", "temperature"), 85.0)
    assert gate.accept(("b", "temperature"), 20.0)
    assert not gate.accept(("b", "temperature"), 85.0)
    assert not gate.accept(("b", "temperature"), 85.0)  # a run of 85.0 stays rejected
    assert gate.stuck(("b", "temperature")) == 2
    assert gate.accept(("b", "temperature"), 20.5)  # ends the run
    assert gate.stuck(("b", "temperature")) == 0
    assert not gate.accept(("b", "temperature"), 85.0)  # 20.5 is not near 85


def test_bus_and_crc_errors_are_counted_and_logged_once_per_state_change(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, caplog: Any
) -> None:
    good, bad = "28.000000000001", "28.000000000002"
    files: dict[str, bytes | int] = {
        "/bus.0/simultaneous/temperature": b"0",
        f"/bus.0/{good}/temperature": b"  20.0",
        f"/bus.0/{bad}/temperature": 22,  # owserver: bus transaction/CRC failure
        f"/bus.0/{good}/type": b"DS18B20",
        f"/bus.0/{bad}/type": b"DS18B20",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{good}/", f"/uncached/bus.0/{bad}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    module = make_module(tmp_path, fake.address)
    now = [0.0]
    module.schedule.clock = lambda: now[0]
    try:
        with caplog.at_level(logging.INFO, logger="uun_gateway.modules.onewire"):
            for _ in range(3):
                result = module.read_cycle()
                assert [(e.device_id, e.kind) for e in result.errors] == [(bad, "bus")]
            files[f"/bus.0/{bad}/temperature"] = b"  19.0"
            module.read_cycle()
            now[0] = 300.0  # "reads again" once a summary period has passed without failures
            module.read_cycle()
        assert device(module, bad).read_errors == 3
        assert device(module, bad).consecutive_errors == 0
        messages = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
        (failed,) = [m for m in messages if "read failed" in m]
        assert "bus error: the device gave no valid answer (CRC error or not responding)" in failed
        assert "Startup" not in failed  # not pyownet's text for the errno
        assert len([m for m in messages if "reads again" in m]) == 1
        assert len([e for e in stored(module) if e["deviceId"] == good]) == 5
    finally:
        module.close_storage()


def test_a_flaky_sensor_is_logged_once_then_summarised_not_per_failure(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, caplog: Any
) -> None:
    # before: a bus error on 1 read in 3 logged "read failed" and "reads again" every 3 cycles
    flaky = "28.000000000003"
    files: dict[str, bytes | int] = {
        "/bus.0/simultaneous/temperature": b"0",
        f"/bus.0/{flaky}/type": b"DS18B20",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{flaky}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    module = make_module(tmp_path, fake.address)
    now = [0.0]
    module.schedule.clock = lambda: now[0]
    try:
        with caplog.at_level(logging.DEBUG, logger="uun_gateway.modules.onewire"):
            for cycle in range(60):  # ten minutes of 10 s cycles
                files[f"/bus.0/{flaky}/temperature"] = 22 if cycle % 3 == 0 else b"  20.0"
                module.read_cycle()
                now[0] += 10.0
        lines = [
            r
            for r in caplog.records
            if flaky in r.getMessage() and r.levelno >= logging.INFO and "found at" not in r.getMessage()
        ]
        assert len(lines) <= 3, [r.getMessage() for r in lines]  # first failure + one summary per 5 min
        assert "read failed" in lines[0].getMessage()
        assert any("still failing" in r.getMessage() for r in lines[1:])
        stored_lines = [r for r in caplog.records if "stored" in r.getMessage()]
        assert stored_lines and all(r.levelno == logging.DEBUG for r in stored_lines)
    finally:
        module.close_storage()


# -- outages ----------------------------------------------------------------------------------


def test_owserver_down_at_start_then_started(
    owserver_factory: Callable[..., Owserver], tmp_path: Path, modules: Any, caplog: Any
) -> None:
    port = free_port()
    module = modules(tmp_path, f"127.0.0.1:{port}")
    events = collect(module)
    with caplog.at_level(logging.INFO, logger="uun_gateway.modules.onewire"):
        for _ in range(3):
            result = module.read_cycle()
            assert result.readings == []
        module.scan_all()
    down = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(down) == 1
    assert [type(e) for e in events] == [ServerDisconnected]
    ow = Owserver(["--tester=28"], tmp_path)
    ow.port = port
    try:
        ow.start(new_port_on_failure=False)
        result = module.read_cycle()  # the very next tick: scans, then reads
        assert [(r.device_id, r.value) for r in result.readings] == [(emulated_id("28", 0), 4.0)]
        assert [type(e) for e in events][:4] == [
            ServerDisconnected,
            ServerConnected,
            DeviceAdded,
            DeviceLocated,
        ]
    finally:
        ow.stop()


def test_owserver_killed_and_restarted(owserver: Owserver, tmp_path: Path, modules: Any) -> None:
    module = modules(tmp_path, owserver.address)
    events = collect(module)
    assert len(module.read_cycle().readings) == TESTER_VALUES
    owserver.kill()
    result = module.read_cycle()
    assert result.readings == [] and owserver.address in result.unavailable
    assert module.scan_all() == {owserver.address: None}
    owserver.restart()
    assert len(module.read_cycle().readings) == TESTER_VALUES
    kinds = [type(e) for e in events if not isinstance(e, (DeviceValue, DeviceAdded, DeviceLocated))]
    assert kinds == [ServerConnected, ServerDisconnected, ServerConnected]
    # devices were not lost while the server was down
    assert not any(isinstance(e, DeviceNotFound) for e in events)


def test_persistent_connection_broken_by_restart_raises_shortread_once_and_is_retried(
    owserver: Owserver,
) -> None:
    # The raw pyownet behaviour this guards against:
    raw = protocol.clone(protocol.proxy("127.0.0.1", owserver.port), persistent=True)
    raw.dir("/")
    server = OwServer(ServerAddress.parse(owserver.address))
    try:
        with server.session() as session:
            session.dir("/")
            owserver.restart()
            with pytest.raises(protocol.ShortRead):
                raw.dir("/")
            assert len(session.dir("/")) == len(TESTER)  # ShortRead handled inside
        assert server.connected is True and server.failures == 0
    finally:
        raw.close_connection()


def test_frozen_owserver_costs_one_timeout_then_backs_off(owserver: Owserver, tmp_path: Path, modules: Any) -> None:
    module = modules(tmp_path, owserver.address)
    assert len(module.read_cycle().readings) == TESTER_VALUES
    owserver.freeze()
    result = module.read_cycle()  # one pyownet timeout (2 s), not one per sensor
    assert result.readings == [] and "timed out" in result.unavailable[owserver.address]
    (server,) = module.servers
    assert server.in_backoff()
    # skipped without waiting: nothing to read from
    assert module.read_cycle().unavailable == {owserver.address: "in backoff after a timeout"}
    owserver.thaw()
    wait_for(lambda: not server.in_backoff(), timeout=5)
    assert len(module.read_cycle().readings) == TESTER_VALUES
    assert server.connected is True


def test_each_thread_gets_its_own_persistent_proxy(owserver: Owserver) -> None:
    server = OwServer(ServerAddress.parse(owserver.address))
    seen: list[Any] = []

    def grab() -> None:
        with server.session() as session:
            session.dir("/")
            seen.append(session._proxy)

    grab()
    grab()
    thread = threading.Thread(target=grab)
    thread.start()
    thread.join()
    assert seen[0] is seen[1] and seen[2] is not seen[0]


# -- gateway, config, CLI ---------------------------------------------------------------------


def test_gateway_runs_module_and_stores_readings(owserver: Owserver, tmp_path: Path) -> None:
    config = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"onewire": {"scan": 60, "read": 0.2}},
            "onewire": {"servers": [{"host": "127.0.0.1", "port": owserver.port}], "conversionDelay": 0.01},
        }
    }
    values: list[DeviceValue] = []
    seen = threading.Event()

    def listen(event: Event) -> None:
        if isinstance(event, DeviceValue):
            values.append(event)
            seen.set()

    def init(cfg: dict[str, Any], uuclient: Any) -> OneWire:
        module = OneWire(cfg["gateway"], uuclient)
        module.subscribe(listen)
        return module

    with Gateway(config, init) as gateway:
        assert seen.wait(10)
        wait_for(lambda: len(values) >= 2 * TESTER_VALUES)  # two read cycles
        (module,) = gateway.modules
        assert len(module.storage) >= 2 * TESTER_VALUES


def test_config_schema_rejects_bad_values(tmp_path: Path) -> None:
    config = {
        "gateway": {
            "storageDir": str(tmp_path),
            "onewire": {
                "servers": [{"host": "127.0.0.1", "port": "x"}],
                "resolution": 13,
                "sensors": {"bad": {}},
            },
        }
    }
    with pytest.raises(ConfigError) as info:
        Gateway(config, lambda cfg, uu: OneWire(cfg["gateway"], uu))
    text = "\n".join(info.value.errors)
    assert "gateway.onewire.servers[0].port" in text
    assert "gateway.onewire.resolution" in text
    assert "bad" in text


def _cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="uun-gateway")
    register(Commands(parser.add_subparsers(dest="command", required=True)))
    args = parser.parse_args(["onewire", "scan", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_scan_lists_devices_with_values(owserver: Owserver) -> None:
    code, out, err = _cli("--server", owserver.address, "--conversion-delay", "0")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    first = emulated_id("28", 0)
    assert lines[first].split()[1:4] == ["28", "DS18B20", "/bus.0/"]
    assert "temperature=4.0 °C" in lines[first]
    counter = emulated_id("1D", 4)
    assert f"counter.A={emulated_value(counter)}, counter.B={emulated_value(counter, 1)}" in lines[counter]
    assert "simulated bus master" in err


def test_cli_scan_unreachable_server_exits_nonzero() -> None:
    code, out, err = _cli("--server", f"127.0.0.1:{free_port()}")
    assert code == EXIT_UNREACHABLE
    assert "cannot reach owserver at 127.0.0.1:" in err and out == ""


def test_server_unavailable_when_refused_is_not_backed_off() -> None:
    server = OwServer(ServerAddress("127.0.0.1", free_port()))
    for _ in range(2):
        with pytest.raises(ServerUnavailable) as info, server.session():
            pass
        assert not info.value.timed_out
    assert not server.in_backoff() and server.failures == 2


def test_gateway_stop_interrupts_a_conversion_wait(fake_owserver: Callable[..., FakeOwserver], tmp_path: Path) -> None:
    dev = "28.000000000001"
    files: dict[str, bytes | int] = {
        "/bus.0/simultaneous/temperature": b"0",
        f"/bus.0/{dev}/temperature": b"  20.0",
        f"/bus.0/{dev}/type": b"DS18B20",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{dev}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    config = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"onewire": {"scan": 60, "read": 60}},
            "onewire": {"servers": [{"host": "127.0.0.1", "port": fake.port}], "conversionDelay": 10},
        }
    }
    gateway = Gateway(config, lambda cfg, uu: OneWire(cfg["gateway"], uu))
    gateway.start()
    try:
        wait_for(lambda: (MSG_WRITE, "/bus.0/simultaneous/temperature") in fake.requests)
    finally:
        stopper = threading.Thread(target=gateway.stop)
        stopper.start()
        stopper.join(5)  # the conversion wait is 10 s: stop must not wait for it
        alive = stopper.is_alive()
        stopper.join()
    assert not alive


def test_update_switches_servers_and_keeps_inventory(
    owserver_factory: Callable[..., Owserver], tmp_path: Path, modules: Any
) -> None:
    first = owserver_factory(["--tester=28.00000000AF00"])
    second = owserver_factory(["--tester=10.00000000B400"])
    module = modules(tmp_path, first.address)
    assert [r.value for r in module.read_cycle().readings] == [21.5]
    section = {"servers": [{"host": "127.0.0.1", "port": second.port}], "conversionDelay": 0.0}
    module._config = {**module._config, "onewire": section}
    module.on_update()
    assert [r.value for r in module.read_cycle().readings] == [19.6]
    assert {d.id for d in module.inventory.devices()} == {"28.00000000AF00", "10.00000000B400"}


def test_uun_gateway_cli_has_onewire_scan(owserver: Owserver, capsys: Any) -> None:
    from uun_gateway.cli import main

    assert main(["onewire", "scan", "--server", owserver.address, "--conversion-delay", "0"]) == 0
    out = capsys.readouterr().out
    assert f"owserver {owserver.address}: {len(TESTER)} device(s)" in out
    assert emulated_id("26", 3) in out


def test_sensor_behind_coupler_is_converted_and_read_on_its_branch(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    coupler, sensor = "1F.000000000001", "28.000000000002"
    branch = f"/bus.0/{coupler}/main/"
    files: dict[str, bytes | int] = {
        f"/bus.0/{coupler}/type": b"DS2409",
        f"{branch}{sensor}/type": b"DS18B20",
        f"{branch}simultaneous/temperature": b"0",
        f"{branch}{sensor}/temperature": b"  -3.25",
    }
    dirs = {
        "/": ["/bus.0/"],
        "/uncached/bus.0/": [f"/uncached/bus.0/{coupler}/"],
        f"/uncached{branch}": [f"/uncached{branch}{sensor}/"],
        f"/uncached/bus.0/{coupler}/aux/": [],
    }
    fake = fake_owserver(tree_handler(files, dirs))
    module = make_module(tmp_path, fake.address)
    try:
        result = module.read_cycle()
        assert [(r.device_id, r.value) for r in result.readings] == [(sensor, -3.25)]
        assert device(module, sensor).path == f"{branch}{sensor}/"
    finally:
        module.close_storage()
    assert (MSG_WRITE, f"{branch}simultaneous/temperature") in fake.requests
