"""Writes: ``OneWire.write``, configured outputs (``set``) and ``uun-gateway onewire set``, against
the real owserver (``--tester``: accepts writes, keeps its computed values) and a fake ownet
server whose devices keep what is written."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.onewire import OneWire, UnknownDevice, WriteFailed

from tests.onewire_fixtures import (
    MSG_READ,
    MSG_WRITE,
    FakeHandler,
    FakeOwserver,
    Owserver,
    emulated_id,
    fake_owserver_fixture,  # noqa: F401
    owserver_factory_fixture,  # noqa: F401
    tree_handler,
)
from uun_gateway import ConfigError
from uun_gateway.cli import main

RELAY = "3A.000000000001"


def module_for(tmp_path: Path, port: int, **section: Any) -> OneWire:
    config = {
        "storageDir": str(tmp_path / "storage"),
        "onewire": {"servers": [{"host": "127.0.0.1", "port": port}], "conversionDelay": 0.0, **section},
    }
    return OneWire(config)


def relay_tree(pio_a: bytes = b"0") -> tuple[dict[str, bytes | int], dict[str, list[str]]]:
    files: dict[str, bytes | int] = {
        f"/bus.0/{RELAY}/type": b"DS2413",
        f"/bus.0/{RELAY}/PIO.A": pio_a,
        f"/bus.0/{RELAY}/PIO.B": b"0",
        f"/bus.0/{RELAY}/sensed.ALL": b"0,0",
    }
    return files, {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{RELAY}/"]}


def pio_ops(fake: FakeOwserver) -> list[tuple[int, str]]:
    return [(t, p) for t, p in fake.requests if p.endswith("/PIO.A")]


@pytest.fixture
def tester(owserver_factory: Callable[..., Owserver]) -> Owserver:
    return owserver_factory(["--tester=28,29,3A"])


def test_write_is_confirmed_by_a_read_back_on_the_real_owserver(tester: Owserver, tmp_path: Path) -> None:
    module = module_for(tmp_path, tester.port, sensors={emulated_id("29", 1): {"alias": "doors"}})
    try:
        module.scan_all()
        result = module.write("doors", "PIO.0", False)  # the tester's PIO.0 reads 0: confirmed
        assert (result.device_id, result.property, result.value, result.changed) == (
            emulated_id("29", 1),
            "PIO.0",
            False,
            True,
        )
        # --tester accepts the write but keeps its computed value: the read-back tells the truth
        with pytest.raises(WriteFailed, match="wrote True but the device reads back False"):
            module.write(emulated_id("29", 1).lower(), "PIO.0", True)
        assert module.write(emulated_id("28", 0), "temphigh", 4).value == 4.0  # tester's temphigh is 4
    finally:
        module.close_storage()


@pytest.mark.parametrize(
    ("device", "prop", "value", "error", "message"),
    [
        (RELAY, "PIO.A", 1, ValueError, "PIO.A expects true or false, not 1"),
        (RELAY, "sensed.A", True, ValueError, "sensed.A is read-only; it is the input pin: write PIO.A"),
        (RELAY, "latch.A", True, ValueError, "latch.A can only be cleared: write false"),
        ("28.000000000002", "tempres", 13, ValueError, "tempres expects a resolution of 9, 10, 11 or 12 bits"),
        ("28.000000000002", "temphigh", 30.5, ValueError, "temphigh expects a whole number of °C"),
        ("boiler", "PIO.A", True, UnknownDevice, "no 1-wire device 'boiler': expected an id"),
        ("28.0000000000FF", "PIO.A", True, UnknownDevice, "(not seen on any bus yet)"),
    ],
)
def test_write_checks_device_property_and_value(
    fake_owserver: Callable[..., FakeOwserver],
    tmp_path: Path,
    device: str,
    prop: str,
    value: Any,
    error: type[Exception],
    message: str,
) -> None:
    files, dirs = relay_tree()
    files["/bus.0/28.000000000002/type"] = b"DS18B20"
    dirs["/uncached/bus.0/"].append("/uncached/bus.0/28.000000000002/")
    fake = fake_owserver(tree_handler(files, dirs, keep_writes=True))
    module = module_for(tmp_path, fake.port)
    try:
        module.scan_all()
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            module.write(device, prop, value)
        assert not [t for t, _ in fake.requests if t == MSG_WRITE]
    finally:
        module.close_storage()


def test_configured_output_is_set_once_confirmed_and_checked_again_after_update(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    files, dirs = relay_tree(b"0")
    fake = fake_owserver(tree_handler(files, dirs, keep_writes=True))
    module = module_for(tmp_path, fake.port, sensors={RELAY: {"alias": "pump", "set": {"PIO.A": True}}})
    try:
        module.read_cycle()
        assert files[f"/bus.0/{RELAY}/PIO.A"] == b"1"
        assert pio_ops(fake) == [
            (MSG_READ, f"/uncached/bus.0/{RELAY}/PIO.A"),  # read first: only write what differs
            (MSG_WRITE, f"/bus.0/{RELAY}/PIO.A"),
            (MSG_READ, f"/uncached/bus.0/{RELAY}/PIO.A"),  # the confirming read-back
        ]
        fake.requests.clear()
        module.read_cycle()
        assert pio_ops(fake) == []  # confirmed: not touched again
        module.on_update()
        module.read_cycle()
        assert pio_ops(fake) == [(MSG_READ, f"/uncached/bus.0/{RELAY}/PIO.A")]  # still on: no write
    finally:
        module.close_storage()


def test_an_output_whose_write_answer_was_lost_is_read_before_it_is_written_again(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files, dirs = relay_tree(b"0")
    plain = tree_handler(files, dirs, keep_writes=True)
    lost = {"answers": 1}

    def handler(msgtype: int, path: str, data: bytes) -> Any:
        answer = plain(msgtype, path, data)
        if msgtype == MSG_WRITE and lost["answers"] > 0:
            lost["answers"] -= 1
            return None  # the device switched, but the answer never arrives
        return answer

    typed_handler: FakeHandler = handler
    fake = fake_owserver(typed_handler)
    module = module_for(tmp_path, fake.port, sensors={RELAY: {"set": {"PIO.A": True}}})
    try:
        module.read_cycle()
        # before: the connection-level retry sent the write a second time, blindly
        assert [t for t, _ in pio_ops(fake)] == [MSG_READ, MSG_WRITE, MSG_READ, MSG_READ]
        assert any("answer was lost" in r.getMessage() and "confirms it" in r.getMessage() for r in caplog.records)
        fake.requests.clear()
        module.read_cycle()
        assert pio_ops(fake) == []  # confirmed: nothing repeated
    finally:
        module.close_storage()


def test_an_output_the_device_does_not_take_is_retried_each_tick_and_logged_once(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files, dirs = relay_tree(b"0")
    fake = fake_owserver(tree_handler(files, dirs))  # accepts writes, keeps nothing
    module = module_for(tmp_path, fake.port, sensors={RELAY: {"set": {"PIO.A": True}}})
    try:
        for _ in range(3):
            module.read_cycle()
        ops = pio_ops(fake)
        assert [t for t, _ in ops] == [MSG_READ, MSG_WRITE, MSG_READ] * 3
        failed = [r for r in caplog.records if "PIO.A output" in r.getMessage()]
        assert len(failed) == 1 and "wrote True but the device reads back False" in failed[0].getMessage()
    finally:
        module.close_storage()


def test_a_configured_output_of_the_wrong_type_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        module_for(tmp_path, 1, sensors={RELAY: {"set": {"PIO.A": "on"}}})
    assert f"gateway.onewire.sensors.{RELAY}.set.PIO.A: PIO.A expects true or false, not 'on'" in str(info.value)


def test_cli_set_writes_and_reports_the_read_back(tester: Owserver, capsys: pytest.CaptureFixture[str]) -> None:
    dev = emulated_id("29", 1)
    assert main(["onewire", "set", dev, "PIO.0", "off", "--server", tester.address]) == 0
    assert capsys.readouterr().out == f"{dev} PIO.0 = false (confirmed by read-back)\n"
    assert main(["onewire", "set", dev, "PIO.0", "on", "--server", tester.address]) == 1
    assert "wrote True but the device reads back False" in capsys.readouterr().err
    assert main(["onewire", "set", dev, "PIO.0", "maybe", "--server", tester.address]) == 1
    assert "PIO.0: expected true or false (on/off, 1/0), not 'maybe'" in capsys.readouterr().err
    assert main(["onewire", "set", "28.0000000000FF", "PIO.0", "on", "--server", tester.address]) == 1
    assert "no device 28.0000000000FF on owserver at" in capsys.readouterr().err
