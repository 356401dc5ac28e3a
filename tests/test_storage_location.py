"""Where a module's storage may live: the checks made before anything starts, the confinement of
storages named by a remote config to the state directory, and check-config judging relative paths
where the service resolves them."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from uun_gateway import ConfigApplyError, ConfigError, Gateway, Module, on
from uun_gateway.cli import main


class Keeper(Module):
    id = "keeper"

    @on("tick")
    def tick(self) -> None:
        pass


def _gateway(gateway: dict[str, Any], path: Path | None = None) -> Gateway:
    config = {"gateway": {"moduleTimers": {"keeper": 3600}, **gateway}}
    if path is None:
        return Gateway(config, lambda c, u: Keeper(c["gateway"]))
    path.write_text(json.dumps(config))
    return Gateway(path, lambda c, u: Keeper(c["gateway"]))


def _errors(gateway: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        _gateway(gateway)
    return "\n".join(info.value.errors)


def test_a_symlink_loop_is_an_error_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert "gateway.storageDir: " in _errors({"storageDir": str(tmp_path / "loop")})
    text = _errors({"moduleBackupStorage": {"keeper": str(tmp_path / "loop" / "x.sqlite")}})
    assert "gateway.moduleBackupStorage.keeper: " in text and "cannot be resolved" in text


@pytest.mark.parametrize("place", ["/proc/self/keeper.sqlite", "/sys/keeper.sqlite", "/dev/shm/keeper.sqlite"])
def test_system_directories_are_refused(place: str) -> None:
    text = _errors({"moduleBackupStorage": {"keeper": place}})
    assert "gateway.moduleBackupStorage.keeper: " in text and "under a system directory" in text


def test_an_existing_file_that_is_not_a_storage_is_refused_and_left_alone(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    text = _errors({"moduleBackupStorage": {"keeper": str(notes)}})
    assert "gateway.moduleBackupStorage.keeper: " in text and "is left alone" in text
    assert notes.read_text() == "my notes\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in _errors({"moduleBackupStorage": {"keeper": str(tmp_path / "fifo")}})
    for fine in ("empty.sqlite", "backup.json"):
        (tmp_path / fine).write_text("" if fine == "empty.sqlite" else '[{"t": 1}]')
        _gateway({"moduleBackupStorage": {"keeper": str(tmp_path / fine)}})


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_an_existing_read_only_store_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "keeper.sqlite"
    store.write_bytes(b"")
    store.chmod(0o444)
    assert "read-only" in _errors({"moduleBackupStorage": {"keeper": str(store)}})


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    return state


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_a_remote_config_cannot_place_a_storage_outside_the_state_directory(
    state: Path, tmp_path: Path, where: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (state / "link").symlink_to(outside)
    target = {
        "absolute": str(outside / "k.sqlite"),
        "dotdot": str(state / ".." / "outside" / "k.sqlite"),
        "symlink": str(state / "link" / "k.sqlite"),
    }[where]
    gateway = _gateway({"storageDir": str(state / "storage")})
    before = json.dumps(gateway.config)
    with pytest.raises(ConfigError) as info:
        gateway.reconfigure({"gateway": {**gateway.config["gateway"], "moduleBackupStorage": {"keeper": target}}})
    assert not isinstance(info.value, ConfigApplyError)
    text = "\n".join(info.value.errors)
    assert "gateway.moduleBackupStorage.keeper: " in text and "outside the state directory" in text
    assert json.dumps(gateway.config) == before and gateway.config_error is not None
    assert not any(outside.iterdir())


def test_a_remote_config_may_keep_a_local_location_and_move_inside(state: Path, tmp_path: Path) -> None:
    local = tmp_path / "data"  # outside the state directory, but the local config put it there
    local.mkdir()
    gateway = _gateway({"storageDir": str(local)})
    assert gateway.reconfigure({"gateway": {**gateway.config["gateway"], "stopTimeout": 3}}, save=False)
    assert gateway.reconfigure({"gateway": {**gateway.config["gateway"], "storageDir": str(state / "s")}}, save=False)


def test_a_saved_remote_config_pointing_outside_is_ignored_at_start(state: Path, tmp_path: Path) -> None:
    (state / "remote-config.json").write_text(
        json.dumps({"gateway": {"moduleTimers": {"keeper": 3600}, "storageDir": "/etc/cron.d"}})
    )
    gateway = _gateway({"storageDir": str(state / "storage")}, tmp_path / "config.json")
    assert gateway.config["gateway"]["storageDir"] == str(state / "storage")
    assert gateway.config_error is not None and "outside the state directory" in gateway.config_error


def test_a_remote_config_cannot_turn_the_config_file_into_a_storage(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    gateway = _gateway({"storageDir": str(tmp_path / "storage")}, path)
    original = path.read_text()
    with pytest.raises(ConfigError, match="is left alone"):
        gateway.reconfigure({"gateway": {**gateway.config["gateway"], "moduleBackupStorage": {"keeper": str(path)}}})
    assert path.read_text() == original


def test_check_config_judges_relative_paths_from_the_service_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, home = tmp_path / "service", tmp_path / "home"
    service.mkdir()
    home.mkdir()
    (service / "storage").write_text("")  # in the service's directory, "storage" cannot be a directory
    config = home / "config.json"
    config.write_text(json.dumps({"gateway": {"moduleTimers": {"heartbeat": 60}}}))
    monkeypatch.chdir(home)
    assert main(["check-config", str(config)]) == 0  # judged from here: fine
    assert main(["check-config", str(config), "--workdir", str(service)]) == 78
    err = capsys.readouterr().err
    assert f"'storage/heartbeat.sqlite' (relative to {str(service)!r})" in err
    monkeypatch.setenv("STATE_DIRECTORY", str(service))
    assert main(["check-config", str(config)]) == 78  # under systemd: its state directory
    assert Path.cwd() == home


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_check_config_refuses_what_is_not_a_small_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "config.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        path.write_text(json.dumps({"gateway": {}, "pad": "x" * (5 * 1024 * 1024)}))
    else:
        path = Path("/dev/zero")
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(main(["check-config", str(path)])))
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "check-config blocked"
    assert done == [78]
    assert ("not a regular file" if kind != "huge" else "larger than 4 MiB") in capsys.readouterr().err


def test_a_uuthing_string_is_not_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    uuapp = {"gateway": "uuapp.example.com", "uuAppName": "app", "awid": "a1"}
    path.write_text(json.dumps({"uuApp": uuapp, "uuThing": "the-access-code-1234"}))
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "uuThing" in err and "the-access-code-1234" not in err
