"""What is read from each family, with which type and unit, and through which path (cached or
``/uncached``): the real owserver's ``--tester`` devices and a fake ownet server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.onewire import OneWire
from uun_gateway.modules.onewire.families import default_names, properties_for, property_spec

from tests.onewire_fixtures import (
    MSG_READ,
    FakeOwserver,
    Owserver,
    emulated_id,
    fake_owserver_fixture,  # noqa: F401
    owserver_factory_fixture,  # noqa: F401
    tree_handler,
)


def module_for(tmp_path: Path, port: int, **section: Any) -> OneWire:
    config = {
        "storageDir": str(tmp_path / "storage"),
        "onewire": {"servers": [{"host": "127.0.0.1", "port": port}], "conversionDelay": 0.0, **section},
    }
    return OneWire(config)


def stored(module: OneWire) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e.data["deviceId"], e.data["property"]): e.data for e in module.storage.oldest(10_000)}


@pytest.mark.parametrize(
    ("name", "family", "unit", "kind"),
    [
        ("volt.A", "20", "V", "float"),
        ("volt2.B", "20", "V", "float"),
        ("VAD", "26", "V", "float"),
        ("vis", "26", "V", "float"),
        ("B1-R1-A/pressure", "26", "mbar", "float"),
        ("S3-R1-A/illuminance", "26", "lx", "float"),
        ("HIH4000/humidity", "26", "%", "float"),
        ("typeK/temperature", "30", "°C", "float"),
        ("current", "30", "A", "float"),
        ("EDS0068/light", "7E", "lx", "float"),
        ("EDS0068/pressure", "7E", "mbar", "float"),
        ("temphigh", "28", "°C", "float"),
        ("counter.A", "1D", None, "int"),
        ("sensed.0", "29", None, "bool"),
        ("sensed.BYTE", "29", None, "int"),
        ("latch.B", "12", None, "bool"),
        ("PIO", "05", None, "bool"),
    ],
)
def test_units_and_types_follow_the_owfs_names(name: str, family: str, unit: str | None, kind: str) -> None:
    spec = property_spec(name, family)
    assert (spec.unit, spec.kind) == (unit, kind)


def test_defaults_read_inputs_not_outputs_and_no_ds2438_humidity() -> None:
    # before: 12/3A/05 read PIO.* (the transistor), 29 PIO.BYTE (an int), 26 read humidity
    assert default_names("12") == ("sensed.ALL", "latch.ALL")
    assert default_names("29") == ("sensed.ALL", "latch.ALL")
    assert default_names("3A") == ("sensed.ALL",)
    assert default_names("05") == ("sensed",)
    assert default_names("26") == ("temperature", "VAD", "VDD")
    assert default_names("20") == ("volt.ALL",)
    assert default_names("30") == ("temperature", "volt", "current")
    assert default_names("7E", "EDS0068") == (
        "EDS0068/temperature",
        "EDS0068/humidity",
        "EDS0068/pressure",
        "EDS0068/light",
    )
    assert default_names("7E", "EDS0065") == ("EDS0065/temperature", "EDS0065/humidity")


@pytest.fixture
def io_tester(owserver_factory: Callable[..., Owserver]) -> Owserver:
    return owserver_factory(["--tester=12,29,3A,05,20,30,26"])


def test_inputs_are_booleans_one_per_channel_on_the_real_owserver(io_tester: Owserver, tmp_path: Path) -> None:
    module = module_for(tmp_path, io_tester.port)
    try:
        result = module.read_cycle()
        assert not result.errors
        entries = stored(module)
        inputs = {k: e["value"] for k, e in entries.items() if k[1].startswith(("sensed", "latch", "PIO"))}
        names: dict[str, set[str]] = {dev[:2]: set() for dev, _ in inputs}
        for dev, prop in inputs:
            names[dev[:2]].add(prop)
        assert names == {
            "12": {"sensed.A", "sensed.B", "latch.A", "latch.B"},
            "29": {f"{b}.{i}" for b in ("sensed", "latch") for i in range(8)},
            "3A": {"sensed.A", "sensed.B"},
            "05": {"sensed"},
        }
        assert all(isinstance(v, bool) for v in inputs.values())
        ds2450 = emulated_id("20", 4)
        assert [entries[(ds2450, f"volt.{c}")]["value"] for c in "ABCD"] == [3.6, 3.7, 3.8, 3.9]
        assert all(entries[(ds2450, f"volt.{c}")]["unit"] == "V" for c in "ABCD")
        ds2760 = emulated_id("30", 5)
        assert {p for d, p in entries if d == ds2760} == {"temperature", "volt", "current"}
        assert entries[(ds2760, "current")]["unit"] == "A"
        assert {p for d, p in entries if d == emulated_id("26", 6)} == {"temperature", "VAD", "VDD"}
    finally:
        module.close_storage()


def test_a_whole_number_float_stays_a_float_for_names_typed_by_owserver_structure(
    owserver_factory: Callable[..., Owserver], tmp_path: Path
) -> None:
    # before: an unlisted name was parsed by its text, so owserver's "5" (for 5.0) became an int
    dev = "30.000000000200"  # tester value 48 + 2 = 50: amphours reads "5"
    ow = owserver_factory([f"--tester={dev}"])
    module = module_for(tmp_path, ow.port, sensors={dev: {"properties": ["amphours", "temperature"]}})
    try:
        module.read_cycle()
        entries = stored(module)
        assert entries[(dev, "amphours")]["value"] == 5.0
        assert isinstance(entries[(dev, "amphours")]["value"], float)
        assert isinstance(entries[(dev, "temperature")]["value"], float)
    finally:
        module.close_storage()


def test_volatile_properties_are_read_uncached_with_a_per_property_override(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    temp, multi, counter = "28.000000000001", "26.000000000002", "1D.000000000003"
    files: dict[str, bytes | int] = {"/bus.0/simultaneous/temperature": b"0"}
    for dev, kind in ((temp, b"DS18B20"), (multi, b"DS2438"), (counter, b"DS2423")):
        files[f"/bus.0/{dev}/type"] = kind
    files.update(
        {
            f"/bus.0/{temp}/temperature": b"  21",
            f"/bus.0/{multi}/temperature": b"  19.5",
            f"/bus.0/{multi}/VAD": b"  4.5",
            f"/bus.0/{multi}/VDD": b"  5",
            f"/bus.0/{counter}/counter.A": b"  17",
            f"/bus.0/{counter}/counter.B": b"  18",
        }
    )
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{d}/" for d in (temp, multi, counter)]}
    fake = fake_owserver(tree_handler(files, dirs))
    module = module_for(tmp_path, fake.port, sensors={multi: {"uncached": {"VDD": False}}})
    try:
        result = module.read_cycle()
        assert not result.errors
        reads = {p for t, p in fake.requests if t == MSG_READ and not p.endswith("/type")}
        assert reads == {
            f"/bus.0/{temp}/temperature",  # converted for the whole bus: read from that conversion
            f"/uncached/bus.0/{multi}/temperature",
            f"/uncached/bus.0/{multi}/VAD",
            f"/bus.0/{multi}/VDD",  # the override
            f"/uncached/bus.0/{counter}/counter.A",
            f"/uncached/bus.0/{counter}/counter.B",
        } | {p for p in reads if p.startswith("/bus.0/interface")}
        assert stored(module)[(temp, "temperature")]["value"] == 21.0
    finally:
        module.close_storage()


def test_eds_sensors_are_read_by_their_device_type(fake_owserver: Callable[..., FakeOwserver], tmp_path: Path) -> None:
    eds = "7E.000000000001"
    files: dict[str, bytes | int] = {
        f"/bus.0/{eds}/device_type": b"EDS0068",
        f"/bus.0/{eds}/EDS0068/temperature": b"  22",
        f"/bus.0/{eds}/EDS0068/humidity": b"  40.5",
        f"/bus.0/{eds}/EDS0068/pressure": b"  1013",
        f"/bus.0/{eds}/EDS0068/light": b"  300",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{eds}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    module = module_for(tmp_path, fake.port)
    try:
        module.read_cycle()
        got = {p: (e["value"], e["unit"]) for (_, p), e in stored(module).items()}
        assert got == {
            "EDS0068/temperature": (22.0, "°C"),
            "EDS0068/humidity": (40.5, "%"),
            "EDS0068/pressure": (1013.0, "mbar"),
            "EDS0068/light": (300.0, "lx"),
        }
        found = module.inventory.get(eds)
        assert found is not None and found.type == "EDS0068"
        assert len(properties_for("7E", device_type="EDS0068")) == 4
    finally:
        module.close_storage()
