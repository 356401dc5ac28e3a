"""The 1-wire module's input edges: ``onewire scan`` arguments and odd owserver values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from uun_gateway.modules.onewire import OneWire, ServerAddress
from uun_gateway.modules.onewire.cli import EXIT_UNREACHABLE

from tests.onewire_fixtures import (
    MSG_DIRALLSLASH,
    FakeOwserver,
    fake_owserver_fixture,  # noqa: F401
    free_port,
    tree_handler,
)
from uun_gateway.cli import main


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[::1]:4305", ServerAddress("::1", 4305)),
        ("[::1]", ServerAddress("::1", 4304)),
        ("::1", ServerAddress("::1", 4304)),
        (" 127.0.0.1:4305 ", ServerAddress("127.0.0.1", 4305)),
        (":4305", ServerAddress("127.0.0.1", 4305)),
    ],
)
def test_server_address_forms(text: str, expected: ServerAddress) -> None:
    assert ServerAddress.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected HOST, HOST:PORT or :PORT"),
        ("[::1", "expected [IPv6 ADDRESS]:PORT"),
        ("[::1]4305", "expected [IPv6 ADDRESS]:PORT"),
        ("host:", "port must be a number"),
        ("host:1_0", "port must be a number"),
        ("host:70000", "port out of range (expected 1 to 65535)"),
    ],
)
def test_bad_server_option_is_a_usage_error_naming_the_problem(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["onewire", "scan", "--server", text])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --server: invalid owserver address {text!r}: {message}" in err, err


@pytest.mark.parametrize("delay", ["inf", "nan", "-1", "11", "soon"])
def test_bad_conversion_delay_is_a_usage_error(delay: str, capsys: pytest.CaptureFixture[str]) -> None:
    # before: inf crashed with an OverflowError traceback, nan and -1 were silently accepted
    with pytest.raises(SystemExit) as info:
        main(["onewire", "scan", "--server", f"127.0.0.1:{free_port()}", "--conversion-delay", delay])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --conversion-delay: invalid delay {delay!r}: expected a number of seconds from 0 to 10" in err


def test_non_finite_values_are_read_errors_and_the_other_readings_are_kept(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    # owserver answers with text; "nan"/"inf" parse as floats, which the storage (JSON) refuses:
    # before, one such value made the whole cycle's store fail and every reading of it was lost
    multi, temp = "26.000000000001", "28.000000000001"
    files: dict[str, bytes | int] = {
        "/bus.0/simultaneous/temperature": b"0",
        f"/bus.0/{multi}/type": b"DS2438",
        f"/bus.0/{multi}/temperature": b"     20.5",
        f"/bus.0/{multi}/humidity": b"         nan",
        f"/bus.0/{multi}/VAD": b"1e999",
        f"/bus.0/{multi}/VDD": b"  -inf",
        f"/bus.0/{multi}/custom": b"nan",
        f"/bus.0/{temp}/type": b"DS18B20",
        f"/bus.0/{temp}/temperature": b"     21.5",
    }
    dirs = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{multi}/", f"/uncached/bus.0/{temp}/"]}
    fake = fake_owserver(tree_handler(files, dirs))
    section = {
        "servers": [{"host": "127.0.0.1", "port": fake.port}],
        "conversionDelay": 0.0,
        "sensors": {multi: {"properties": ["temperature", "humidity", "VAD", "VDD", "custom"]}},
    }
    module = OneWire({"storageDir": str(tmp_path / "storage"), "onewire": section})
    try:
        result = module.read_cycle()
        assert sorted((e.property, e.kind) for e in result.errors) == [
            ("VAD", "parse"),
            ("VDD", "parse"),
            ("humidity", "parse"),
        ]
        stored = [(e.data["deviceId"], e.data["property"], e.data["value"]) for e in module.storage.oldest(100)]
        assert sorted(stored) == [(multi, "custom", "nan"), (multi, "temperature", 20.5), (temp, "temperature", 21.5)]
    finally:
        module.close_storage()


def test_a_garbled_reply_is_an_unavailable_server_not_a_traceback(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pyownet decodes listings as ASCII; before, its UnicodeDecodeError escaped every handler
    def handle(msgtype: int, path: str, data: bytes) -> tuple[int, bytes]:
        return (0, b"/bus.0/,\xff\xfe") if msgtype == MSG_DIRALLSLASH else (-1, b"")

    fake = fake_owserver(handle)
    assert main(["onewire", "scan", "--server", fake.address, "--conversion-delay", "0"]) == EXIT_UNREACHABLE
    assert f"cannot reach owserver at {fake.address}: garbled reply" in capsys.readouterr().err
    module = OneWire({"storageDir": str(tmp_path / "storage"), "onewire": {"servers": [{"port": fake.port}]}})
    try:
        assert module.scan_all() == {fake.address: None}
        assert module.read_cycle().readings == []
    finally:
        module.close_storage()
