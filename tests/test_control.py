"""The control channel: ``status`` and ``reload`` on the shared command socket, the ``uun-gateway
status``/``reload`` clients, and SIGHUP reloading a running ``uun-gateway run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import liveset_modules
from tests.conftest import wait_for
from uun_gateway import Gateway, cli
from uun_gateway.control import ControlError, client_socket_path, default_socket_path, send_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """The test modules installed as entry points (a dist-info on sys.path); the journal cleared."""
    (tmp_path / "site").mkdir()
    with liveset_modules.installed_in(tmp_path / "site") as site:
        yield site


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def socket_config(tmp_path: Path, **gateway: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "stopTimeout": 5,
            "socket": {"path": str(tmp_path / "control.sock")},
            **gateway,
        }
    }


@pytest.fixture
def served(tmp_path: Path, site: Path) -> Iterator[tuple[Gateway, Path, Path]]:
    """A started gateway from a config file, serving its command socket: (gateway, file, socket)."""
    path = write(tmp_path / "config.json", socket_config(tmp_path))
    sock = tmp_path / "control.sock"
    gateway = Gateway(path)
    try:
        gateway.start()
        wait_for(sock.exists)
        yield gateway, path, sock
    finally:
        gateway.stop()


def test_status_over_the_socket_and_its_cli_client(
    served: tuple[Gateway, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path, sock = served
    assert sock.stat().st_mode & 0o777 == 0o600
    ok, text = send_command(sock, "commands")
    assert ok and set(text.split(",")) >= {"commands", "status", "reload"}
    assert cli.main(["status", "--socket", str(sock)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert list(status["modules"]) == ["socket"] and status["configError"] is None and "timers" in status
    assert cli.main(["status", "-c", str(path)]) == 0  # the socket named by the config file
    assert json.loads(capsys.readouterr().out)["modules"].keys() == {"socket"}


def test_reload_over_the_socket_applies_the_edited_file_or_refuses_it(
    served: tuple[Gateway, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, path, sock = served
    assert cli.main(["reload", "--socket", str(sock)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: no change"

    write(path, socket_config(tmp_path, moduleTimers={"ticker": 0.01}, ticker={"label": "x"}))
    assert cli.main(["reload", "--socket", str(sock)]) == 0
    assert capsys.readouterr().out.strip() == "added: ticker"
    ticker = next(m for m in gateway.modules if m.id == "ticker")
    wait_for(lambda: ticker.ticks >= 2)
    ok, ticks = send_command(sock, "ticks")  # a live-added module's command is answered at once
    assert ok and int(ticks) >= 2

    good = gateway.config
    write(path, socket_config(tmp_path, moduleTimers={"ticker": 0.01}, ticker={"label": 5}))
    assert cli.main(["reload", "--socket", str(sock)]) == 78
    err = capsys.readouterr().err
    assert "reload refused: gateway.ticker.label: 5 is not of type" in err
    assert gateway.config == good and gateway.config_error is not None

    path.write_text("{not json")
    ok, text = send_command(sock, "reload")
    assert not ok and text.startswith("reload refused: ") and gateway.config == good


def test_clients_name_the_socket_they_cannot_reach(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.sock"
    with pytest.raises(ControlError, match=f"{missing}: no command socket"):
        send_command(missing, "status")
    assert cli.main(["status", "--socket", str(missing)]) == 1
    assert f"{missing}: no command socket" in capsys.readouterr().err


def test_the_default_socket_is_in_the_runtime_directory_under_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{tmp_path}/run:{tmp_path}/other")
    assert default_socket_path() == tmp_path / "run" / "control.sock"
    assert client_socket_path(None) == tmp_path / "run" / "control.sock"
    assert client_socket_path(None, {"gateway": {"socket": {"path": "/x.sock"}}}) == Path("/x.sock")
    assert client_socket_path("/given.sock", {"gateway": {"socket": {"path": "/x.sock"}}}) == Path("/given.sock")
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert default_socket_path() == Path("uun-gateway.sock")


def test_sighup_reloads_a_running_uun_gateway_run(tmp_path: Path, site: Path) -> None:
    path = write(tmp_path / "config.json", socket_config(tmp_path))
    sock = tmp_path / "control.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("RUNTIME_DIRECTORY", None)
    with subprocess.Popen(
        [sys.executable, "-m", "uun_gateway.cli", "run", "-c", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            wait_for(sock.exists, timeout=30)

            def status() -> dict[str, Any]:
                ok, text = send_command(sock, "status")
                assert ok
                result: dict[str, Any] = json.loads(text)
                return result

            assert list(status()["modules"]) == ["socket"]
            write(path, socket_config(tmp_path, moduleTimers={"ticker": 0.01}, ticker={"label": "hup"}))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: sock.exists() and status()["timers"].get("ticker", {}).get("runs", 0) >= 2, timeout=30)
            assert list(status()["modules"]) == ["ticker", "socket"]  # config order: moduleTimers' ids first

            write(path, {"gateway": {"bogus": 1}})
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: status()["configError"] is not None, timeout=30)
            assert list(status()["modules"]) == ["ticker", "socket"]  # the running config is kept
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "config reloaded: added: ticker" in err
    assert "config not reloaded, the running config is kept" in err and "gateway.bogus" in err


def test_a_reload_that_moves_the_socket_is_answered_on_the_old_one_and_served_on_the_new(
    served: tuple[Gateway, Path, Path], tmp_path: Path
) -> None:
    _, path, sock = served
    moved = tmp_path / "moved.sock"
    config = socket_config(tmp_path)
    config["gateway"]["socket"]["path"] = str(moved)
    write(path, config)
    assert send_command(sock, "reload") == (True, "restarted: socket")
    wait_for(moved.exists)
    wait_for(lambda: not sock.exists())
    ok, text = send_command(moved, "status")
    assert ok and list(json.loads(text)["modules"]) == ["socket"]
    assert moved.stat().st_mode & 0o777 == 0o600
