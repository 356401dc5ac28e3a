"""``uun-gateway alarms list|ack`` against a running gateway: the ``alarms`` and ``ack`` commands of
the alarm service on the command socket, and the CLI's errors and exit codes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from uun_gateway.modules.commandsocket import CommandSocket

from tests.helpers import wait_for
from uun_gateway import Gateway, Module, on
from uun_gateway.alarmsclient import EX_NO_RULES, EX_NOTHING_TO_ACK, EX_UNAVAILABLE, EX_UNKNOWN_RULE
from uun_gateway.cli import main

if TYPE_CHECKING:
    from tests.onewire_fixtures import Owserver

pytest_plugins = ["tests.onewire_fixtures"]

CLI = [sys.executable, "-m", "uun_gateway.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(name="running")
def running_fixture(owserver: Owserver, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``uun-gateway run`` reading owserver --tester, whose first DS18B20 trips rule ``warm``."""
    from tests.onewire_fixtures import emulated_id, emulated_value

    first = emulated_id("28", 0)
    value = emulated_value(first) * 0.1
    sock = tmp_path / "control.sock"
    config = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"onewire": {"scan": 60, "read": 0.2}},
            "onewire": {"servers": [{"host": "127.0.0.1", "port": owserver.port}], "conversionDelay": 0.01},
            "socket": {"path": str(sock)},
            "alarms": [
                {
                    "name": "warm",
                    "watch": {"module": "onewire", "device": first, "point": "temperature"},
                    "condition": f"value > {value - 0.5}",
                    "priority": "error",
                },
                {
                    "name": "hot",
                    "watch": {"module": "onewire", "device": "28.*", "point": "temperature"},
                    "condition": f"value > {value + 100}",
                },
            ],
        }
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    child = subprocess.Popen([*CLI, "run", "-c", str(path)], stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_for(lambda: sock.exists() or child.poll() is not None, timeout=30)
        assert child.poll() is None, "uun-gateway run ended"
        yield sock, first
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0


def listed(sock: Path) -> list[dict[str, Any]]:
    done = cli("alarms", "list", "--json", "--socket", str(sock))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_list_and_ack_on_a_running_gateway(running: tuple[Path, str]) -> None:
    sock, first = running
    wait_for(lambda: [(a["rule"], a["state"]) for a in listed(sock)] == [("warm", "active")], timeout=30)
    [alarm] = listed(sock)
    assert (alarm["module"], alarm["device"], alarm["point"], alarm["priority"]) == (
        "onewire",
        first,
        "temperature",
        "error",
    )
    table = cli("alarms", "list", "--socket", str(sock))
    assert table.returncode == 0 and f"active       error    warm onewire/{first}/temperature" in table.stdout

    other = cli("alarms", "ack", "warm", "--device", "28.nothere", "--socket", str(sock))
    assert other.returncode == EX_NOTHING_TO_ACK and "nothing to acknowledge" in other.stderr
    unknown = cli("alarms", "ack", "wram", "--socket", str(sock))
    assert unknown.returncode == EX_UNKNOWN_RULE
    assert "no alarm rule named 'wram'; rules: hot, warm" in unknown.stderr

    done = cli("alarms", "ack", "warm", "--device", first, "--point", "temp*", "--socket", str(sock))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"warm onewire/{first}/temperature: active -> acknowledged\n"
    [alarm] = listed(sock)
    assert (alarm["state"], alarm["acknowledgedBy"]) == ("acknowledged", "socket")
    again = cli("alarms", "ack", "warm", "--socket", str(sock))
    assert again.returncode == EX_NOTHING_TO_ACK


def test_no_socket_at_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "control.sock"
    assert main(["alarms", "list", "--socket", str(missing)]) == EX_UNAVAILABLE
    assert f"{missing}: no command socket" in capsys.readouterr().err
    assert main(["alarms", "ack", "warm", "--socket", str(missing)]) == EX_UNAVAILABLE


def test_a_socket_nobody_serves_any_more(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a killed service leaves behind: the socket file, with nothing listening."""
    stale = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(stale))
    assert main(["alarms", "list", "--socket", str(stale)]) == EX_UNAVAILABLE
    assert f"{stale}: cannot connect to the command socket" in capsys.readouterr().err


class Quiet(Module):
    @on("tick")
    def tick(self) -> None:
        pass


def test_a_gateway_without_alarm_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "control.sock"
    config: dict[str, Any] = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"quiet": 60},
            "socket": {"path": str(sock)},
        }
    }
    with Gateway(config, lambda c, u: [Quiet(c["gateway"], u), CommandSocket(c["gateway"], u)]):
        wait_for(sock.exists)
        assert main(["alarms", "list", "--socket", str(sock)]) == EX_NO_RULES
        assert "has no alarm rules" in capsys.readouterr().err


def test_the_socket_answers_ack_arguments(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    config: dict[str, Any] = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"quiet": 60},
            "socket": {"path": str(sock)},
            "alarms": [{"name": "a", "watch": {"module": "quiet"}, "condition": "value > 1"}],
        }
    }
    from uun_gateway.control import send_command

    with Gateway(config, lambda c, u: [Quiet(c["gateway"], u), CommandSocket(c["gateway"], u)]):
        wait_for(sock.exists)
        assert send_command(sock, "alarms") == (True, "[]")
        assert send_command(sock, "ack a 'dev x' 'p q'") == (True, '{"acknowledged": []}')
        ok, text = send_command(sock, "ack")
        assert ok and json.loads(text) == {"error": "expected: ack NAME [DEVICE [POINT]]", "rules": ["a"]}
        ok, text = send_command(sock, "ack 'unclosed")
        assert ok and json.loads(text)["error"].startswith("cannot read the arguments")
        assert "ack" in send_command(sock, "commands")[1].split(",")
    assert not os.path.exists(sock)
