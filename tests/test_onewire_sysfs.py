"""The kernel w1 backend (sysfs) behind the same inventory, events and readings, over a fake sysfs
tree in the kernel's formats (CRC ``NO`` lines, millidegree ``temperature``, ``therm_bulk_read``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.onewire import DeviceLocated, DeviceNotFound, Event, OneWire
from uun_gateway.modules.onewire.sysfs import device_id, kernel_name

from tests.onewire_sysfs import FakeSysfs

NEW = "28-0000075abc12"  # kernel >= 5.10: a temperature file
OLD = "28-0000075abc13"  # only w1_slave
BAD = "28-0000075abc14"  # w1_slave with a CRC error
COUNT = "1d-000000001234"
DOOR = "3a-000000004321"


def module_for(tmp_path: Path, root: Path, **section: Any) -> OneWire:
    config = {
        "storageDir": str(tmp_path / "storage"),
        "onewire": {"servers": [{"sysfs": str(root)}], "conversionDelay": 0.0, **section},
    }
    return OneWire(config)


def test_kernel_names_map_to_owserver_ids_and_back() -> None:
    assert device_id(NEW) == "28.12BC5A070000"
    assert kernel_name("28.12BC5A070000") == NEW
    assert device_id("not found.") is None and device_id("w1_bus_master1") is None


def test_sysfs_bus_is_scanned_and_read_like_an_owserver(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "w1")
    master = sysfs.master(1, [NEW, OLD, BAD, COUNT, DOOR])
    sysfs.therm(NEW, 23125)
    sysfs.therm(OLD, -1500, temperature_file=False)
    sysfs.therm(BAD, 21000, crc_ok=False, temperature_file=False)
    sysfs.counter(COUNT, 17, 42)
    sysfs.ds2413(DOOR, 0x4B)  # pin A high, pin B low
    module = module_for(tmp_path, sysfs.root, sensors={device_id(NEW): {"alias": "boiler"}})
    events: list[Event] = []
    module.subscribe(events.append)
    try:
        result = module.read_cycle()
        assert (master / "therm_bulk_read").read_text() == "trigger\n"  # one conversion for the bus
        assert result.triggers == 1
        got = {(r.device_id, r.property): (r.value, r.unit) for r in result.readings}
        assert got == {
            ("28.12BC5A070000", "temperature"): (23.125, "°C"),
            ("28.13BC5A070000", "temperature"): (-1.5, "°C"),
            ("1D.341200000000", "counter.A"): (17, None),
            ("1D.341200000000", "counter.B"): (42, None),
            ("3A.214300000000", "sensed.A"): (True, None),
            ("3A.214300000000", "sensed.B"): (False, None),
        }
        ((dev, prop, kind, detail),) = [(e.device_id, e.property, e.kind, e.detail) for e in result.errors]
        assert (dev, prop, kind) == ("28.14BC5A070000", "temperature", "bus")
        assert detail == "bus error: CRC check failed (w1_slave: crc=1c NO)"
        entries = {(e.data["deviceId"], e.data["property"]): e.data for e in module.storage.oldest(100)}
        boiler = entries[("28.12BC5A070000", "temperature")]
        assert boiler["alias"] == "boiler" and boiler["server"] == f"sysfs:{sysfs.root}"
        located = [e for e in events if isinstance(e, DeviceLocated)]
        assert {e.location.bus_path for e in located} == {"/w1_bus_master1/"}
        assert len(located) == 5
    finally:
        module.close_storage()


def test_a_device_gone_from_w1_master_slaves_is_not_found_after_missed_scans(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "w1")
    sysfs.master(1, [NEW])
    sysfs.therm(NEW, 20000)
    module = module_for(tmp_path, sysfs.root, missedScans=2)
    events: list[Event] = []
    module.subscribe(events.append)
    try:
        module.scan_all()
        sysfs.master(1, [])
        module.scan_all()
        assert not [e for e in events if isinstance(e, DeviceNotFound)]
        module.scan_all()
        (gone,) = [e for e in events if isinstance(e, DeviceNotFound)]
        assert gone.device.id == "28.12BC5A070000"
    finally:
        module.close_storage()


def test_a_missing_sysfs_root_is_an_unavailable_bus_naming_the_overlay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = module_for(tmp_path, tmp_path / "absent")
    try:
        result = module.read_cycle()
        (reason,) = result.unavailable.values()
        assert "does not exist: the kernel's w1 driver is not loaded" in reason and "dtoverlay=w1-gpio" in reason
        module.read_cycle()
        assert len([r for r in caplog.records if "w1 driver is not loaded" in r.getMessage()]) == 1
    finally:
        module.close_storage()


def test_tempres_is_written_and_confirmed_through_sysfs(tmp_path: Path) -> None:
    sysfs = FakeSysfs(tmp_path / "w1")
    sysfs.master(1, [NEW])
    device = sysfs.therm(NEW, 20000)
    module = module_for(tmp_path, sysfs.root)
    try:
        module.scan_all()
        assert module.write("28.12BC5A070000", "tempres", 10).value == 10
        assert (device / "resolution").read_text() == "10\n"
    finally:
        module.close_storage()


def test_cli_scan_lists_the_kernel_bus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uun_gateway.cli import main

    sysfs = FakeSysfs(tmp_path / "w1")
    sysfs.master(1, [NEW])
    sysfs.therm(NEW, 21500)
    assert main(["onewire", "scan", "--sysfs", str(sysfs.root), "--conversion-delay", "0"]) == 0
    out = capsys.readouterr().out
    assert f"kernel 1-wire bus {sysfs.root}: 1 device(s) on 1 bus path(s)" in out
    assert "28.12BC5A070000  28     DS18B20    /w1_bus_master1/" in out and "temperature=21.5 °C" in out
