"""uun-iot drop-in: applications written for uun-iot 0.10, 0.11 and 0.12 run after renaming their imports.

Each application in ``tests/uuniot_apps/`` is ported as a user does (the one-line sed) and run as
its own bin script, against the fake uuApp where it sends data.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from uun_gateway import ConfigError, Gateway, Module, Storage, on
from uun_gateway.cli import main

APPS = Path(__file__).parent / "uuniot_apps"


def ported(app: str, into: Path) -> Path:
    """``app`` with ``sed -i 's/\\buun_iot\\b/uun_gateway/g'`` applied, written into ``into``."""
    target = into / app
    target.write_text(re.sub(r"\buun_iot\b", "uun_gateway", (APPS / app).read_text()))
    return target


class App:
    """A ported application running as its own process; stopped (and waited for) at the end."""

    def __init__(self, script: Path, config: dict[str, Any], cwd: Path) -> None:
        self.config_path = cwd / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = cwd / "app.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.config_path)], cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, as systemd stops it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def fake() -> Iterator[FakeUuApp]:
    with FakeUuApp() as server:
        yield server


def command(path: Path, line: str) -> str:
    """Send one command line to a gateway's command socket; its answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rstrip("\n")


# -- the import surface -----------------------------------------------------------------------------

LEGACY_IMPORTS = {
    "uun_gateway": ["Gateway", "Module", "ConfigScopeEnum", "EvTick", "EvStart", "EvStop", "EvConfUpdate",
                    "EvExternal", "attach_handlers", "on_tick", "UuAppClient", "UuCmdSession", "EventRegister",
                    "IModule"],
    "uun_gateway.Gateway": ["Gateway", "Config", "ModuleTimer"],
    "uun_gateway.UuAppClient": ["UuAppClient", "UuCmdSession"],
    "uun_gateway.modules": ["Module", "ConfigScopeEnum", "BaseHealthCheck"],
    "uun_gateway.modules.Module": ["Module", "ConfigScopeEnum"],
    "uun_gateway.modules.BaseHealthCheck": ["BaseHealthCheck"],
    "uun_gateway.decorators": ["on"],
    "uun_gateway.utils": ["LoggingSystemdHandler", "get_iso_timestamp", "get_datetime_from_iso_timestamp",
                          "module_id", "module_id_from_str", "file_save", "get_dict_path", "Storage", "RepeatTimer"],
    "uun_gateway.diagnostic": ["GeneralDiagnosticEvent", "GeneralDiagnosticEvents", "DiagnosticEvent",
                               "GatewayDiagnosticEvent"],
    "uun_gateway.typing": ["IModule", "ModuleId"],
    "uun_gateway.exceptions": ["UunIotException", "UuAppClientException", "TokenError", "TokenCommandError",
                               "EventException", "EventCannotRegisterHandler", "InvalidModuleId", "UnsupportedEvent"],
    "uun_gateway.events": ["EvTick", "EvStart", "EvStop", "EvConfUpdate", "EvExternal", "EventRegister",
                           "attach_handlers", "registered_event_submodule"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(LEGACY_IMPORTS))
def test_every_uun_iot_import_path_resolves(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in LEGACY_IMPORTS[module] if not hasattr(imported, name)]
    assert not missing


def test_legacy_imports_in_a_fresh_interpreter_and_nothing_is_paid_without_them() -> None:
    code = (
        "import sys, uun_gateway\n"
        "assert not any(m.startswith('uun_gateway.compat.') for m in sys.modules), 'compat imported eagerly'\n"
        "from uun_gateway.Gateway import Gateway, Config, ModuleTimer\n"
        "from uun_gateway.modules.Module import Module, ConfigScopeEnum\n"
        "import uun_gateway.utils, uun_gateway.diagnostic\n"
        "from uun_gateway import Gateway as G2, UuAppClient\n"
        "assert G2 is Gateway and isinstance(G2, type) and isinstance(UuAppClient, type)\n"
        "assert uun_gateway.utils.module_id_from_str('WeatherConditions') == 'weatherConditions'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_exceptions_are_ours_under_both_names() -> None:
    from uun_gateway.errors import UnsupportedEvent, UunGatewayError

    legacy = importlib.import_module("uun_gateway.exceptions")  # a legacy path: resolved at run time
    EventException, UunIotException = legacy.EventException, legacy.UunIotException

    assert UunIotException is UunGatewayError
    with pytest.raises(EventException):
        raise UnsupportedEvent("x")


def test_utils_behave_as_uun_iot(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from uun_gateway import utils

    assert utils.get_iso_timestamp(datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=UTC)) == "2026-12-01T12:00:00.250Z"
    assert utils.get_datetime_from_iso_timestamp("Tue, 01 Dec 2026 12:00:00 GMT").year == 2026
    assert utils.get_datetime_from_iso_timestamp("2026-12-01T12:00:00Z").tzinfo is not None
    assert utils.get_dict_path({"a": {"b": 1}}, "a/b") == 1
    assert utils.get_dict_path({"a": {}}, "a/b", must_exist=False) is None
    with pytest.raises(KeyError, match="a/b"):
        utils.get_dict_path({"a": {}}, "a/b")
    path = tmp_path / "f.json"
    assert utils.file_save(path, {"x": 1}) and not utils.file_save(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}

    class WeatherConditions:
        pass

    assert utils.module_id(WeatherConditions) == utils.module_id(WeatherConditions()) == "weatherConditions"


# -- Module semantics ------------------------------------------------------------------------------


def test_module_takes_uun_iot_constructor_shapes_and_c_scopes() -> None:
    from uun_gateway.modules.Module import ConfigScopeEnum

    sent: list[Any] = []

    class Pump(Module):
        pass

    config = {"site": "roof", "pump": {"rate": 3, "deep": {"x": 1}}, "shared": {"rate": 9}}
    for pump in (Pump(config, sent.append), Pump(config=config, uucmd=sent.append)):
        assert pump.uuclient is None
        assert pump._c() == config["pump"]
        assert pump._c(scope=ConfigScopeEnum.GATEWAY) is config
        assert pump._c("rate") == 3 and pump._c("deep/x") == 1
        assert pump._c("site", ConfigScopeEnum.GATEWAY) == "roof"
        assert pump._c("nope", must_exist=False) is None
        with pytest.raises(KeyError, match=r"gateway\.pump\.nope"):
            pump._c("nope")
        pump._set_config_manager_base("shared")
        assert pump._c("rate") == pump._c("rate", scope=ConfigScopeEnum.BASED) == 9
        assert pump._c("rate", scope=ConfigScopeEnum.MODULE) == 3
        pump._send_data({"now": 1})
    assert sent == [{"now": 1}, {"now": 1}]


def test_module_without_storage(tmp_path: Path) -> None:
    class Probe(Module):
        pass

    probe = Probe({"storageDir": str(tmp_path)}, uucmd=lambda data: [], storage=False)
    assert not probe.has_storage and probe._send_storage() is True
    assert list(tmp_path.iterdir()) == []
    given = Storage("probe", tmp_path / "own.sqlite")
    try:
        owner = Probe({}, storage=given)
        assert owner.storage is given and not owner.has_storage
    finally:
        given.close()


def test_on_applied_at_run_time_to_a_bound_method() -> None:
    stopped: list[str] = []

    class Saver(Module):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            on("stop")(self.save)

        def save(self) -> None:
            stopped.append(self.id)

    first, second = Saver({}), Saver({})
    second.id = "saver2"  # type: ignore[misc]
    with Gateway({"gateway": {}}, lambda c, u: [first, second]):
        pass
    assert sorted(stopped) == ["saver", "saver2"]


# -- config strictness -----------------------------------------------------------------------------


class Station(Module):
    @on("tick")
    def read(self) -> None:
        pass

    @on("tick", "never")
    def never(self) -> None:  # uun-iot runs no timer for a tick without a period
        pass


APP_CONFIG: dict[str, Any] = {
    "gateway": {
        "moduleTimers": {"station": {"read": 1}, "legacyThing": 5},
        "moduleBackupStorage": {"otherApp": "other.json"},
        "virtualMode": True,
        "station": {},
    },
    "myApplication": {"anything": 1},
    "uuApp": {"gateway": "http://127.0.0.1:9", "uuAppName": "app", "awid": "awid0"},
    "uuThing": {"accessCode1": "a", "accessCode2": "b"},
}


def _station_config(tmp_path: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(APP_CONFIG))
    config["gateway"]["storageDir"] = str(tmp_path)
    config["gateway"]["moduleTimers"]["station"] = 1
    return config


def test_an_applications_own_keys_are_warnings_with_module_init(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _station_config(tmp_path)
    gateway = Gateway(config, lambda c, u: Station(c["gateway"]))
    try:
        warnings = "\n".join(gateway.config_warnings)
        for key in ("gateway.virtualMode", "myApplication", "uuThing", "legacyThing", "otherApp", "'never'"):
            assert key in warnings, key
        assert list(gateway.timers) == [("station", None)]
        assert "gateway.virtualMode" in caplog.text
        with pytest.raises(ConfigError) as raised:
            Gateway(config, lambda c, u: Station(c["gateway"]), strict=True)
        errors = "\n".join(raised.value.errors)
        for key in ("gateway.virtualMode", "myApplication", "uuIdentity"):
            assert key in errors, key
    finally:
        gateway.stop()
        for module in gateway.modules:
            module.close_storage()


def test_remote_configs_in_the_applications_shape_are_applied_leniently(tmp_path: Path) -> None:
    config = _station_config(tmp_path)
    with Gateway(config, lambda c, u: Station(c["gateway"])) as gateway:
        update = json.loads(json.dumps(config))
        update["gateway"]["moduleTimers"]["station"] = 2
        update["gateway"]["virtualMode"] = False
        assert gateway.reconfigure(update, save=False)
        assert gateway.timers[("station", None)].period == 2
        assert any("virtualMode" in w for w in gateway.config_warnings)


def test_check_config_warns_and_strict_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"gateway": {"virtualMode": True, "moduleTimers": {"myModule": 3}}, "myApp": {}}))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "gateway.virtualMode" in err and "myApp" in err and "gateway.moduleTimers.myModule" in err
    assert main(["check-config", "--strict", str(path)]) == 78
    err = capsys.readouterr().err
    assert "gateway.virtualMode" in err and "myApp" in err


# -- the applications -----------------------------------------------------------------------------


def test_a_uun_iot_010_application_runs_after_the_rename(tmp_path: Path, fake: FakeUuApp) -> None:
    rejected = {2, 5}
    received: list[int] = []
    lock = threading.Lock()

    def answer(dto: Any) -> tuple[int, Any]:
        ns = [item["n"] for item in dto["data"]]
        with lock:
            received.extend(n for n in ns if n not in rejected)
        return 200, {"failed": [n for n in ns if n in rejected], "uuAppErrorMap": {}}

    fake.upload_handler = answer
    config = fake.config(token_path=str(tmp_path / "token"))
    config["gateway"] = {
        "moduleTimers": {"weatherConditions": {"measure": 0.05, "send": 0.1}},
        "moduleBackupStorage": {"weatherConditions": "backup/weatherConditions.json"},
        "site": "roof",
        "weatherConditions": {"unit": "C", "marker": str(tmp_path / "stopped.json")},
    }
    (tmp_path / "backup").mkdir()
    app = App(ported("weather_010.py", tmp_path), config, tmp_path)
    try:
        wait_for(lambda: len(received) >= 10 and app.proc.poll() is None, timeout=30)
        assert app.terminate() == 0, app.log()
    finally:
        app.stop()
    marker = json.loads((tmp_path / "stopped.json").read_text())
    assert marker["loops"] > 0
    record = fake.for_cmd("weather/add", ok_only=True)[0]
    assert record.dto["data"][0] == {"n": 1, "unit": "C", "site": "roof"}
    assert record.headers.get("authorization", "").startswith("Bearer ")
    store = Storage("weatherConditions", tmp_path / "backup" / "weatherConditions.json")
    try:
        left = [entry.data["n"] for entry in store.oldest(1000)]
    finally:
        store.close()
    sent = set(received)
    assert set(left) | sent == set(range(1, marker["measured"] + 1))  # nothing lost
    assert rejected <= set(left) and not (sent & set(left))  # failed entries stayed, accepted ones left
    assert received == sorted(received)


def test_a_uun_iot_012_application_driven_over_its_socket(tmp_path: Path, fake: FakeUuApp) -> None:
    sock = tmp_path / "app.sock"
    config = fake.config(token_path=str(tmp_path / "token"))
    config["gateway"] = {
        "moduleTimers": {"relay": 0.1, "config": 0.1},
        "storageDir": str(tmp_path / "storage"),
        "relayBoard": {"threshold": 40},
        "socket": {"path": str(sock)},
    }
    app = App(ported("relay_012.py", tmp_path), config, tmp_path)
    try:
        wait_for(lambda: sock.exists() or app.proc.poll() is not None, timeout=30)
        assert command(sock, "relay on") == "0 relay on"
        assert command(sock, "relay sideways").startswith("1 Command failed! Exception: ValueError")
        assert command(sock, "nonsense") == "1 Unknown command!"
        assert command(sock, "threshold") == "0 40"
        assert "relay" in command(sock, "commands")
        wait_for(lambda: any(d["state"] == "on" for r in fake.for_cmd("relay/report") for d in r.dto["data"]))
        fake.gateway_config = {**config["gateway"], "relayBoard": {"threshold": 55}}
        wait_for(lambda: command(sock, "threshold") == "0 55", timeout=20)
        status = json.loads(command(sock, "status")[2:])
        assert status["modules"]["relay"]["lastSendOk"] is not None
        assert app.terminate() == 0, app.log()
    finally:
        app.stop()
    log = app.log()
    assert "<6>relay: relay board started" in log and "<6>relay: relay board stopped" in log
    assert not sock.exists()


def test_a_uun_iot_health_check_reports_into_our_health(tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    config = {
        "gateway": {
            "moduleTimers": {"healthCheck": 0.05, "sender": 0.05},
            "healthCheck": {"diagnosticsPath": str(tmp_path / "diag"), "modules": {"sender": {"leeway": 0.3}}},
            "sender": {"sending": False},
            "socket": {"path": str(sock)},
        }
    }
    app = App(ported("health_012.py", tmp_path), config, tmp_path)
    try:
        wait_for(lambda: sock.exists() or app.proc.poll() is not None, timeout=30)

        def problem() -> Any:
            return json.loads(command(sock, "status")[2:])["modules"]["healthCheck"]["problem"]

        wait_for(lambda: problem() is not None, timeout=30)
        assert "sender" in problem()
        assert app.proc.poll() is None  # reported, not killed by SIGUSR1
        assert app.terminate() == 0, app.log()
    finally:
        app.stop()
    (log,) = (tmp_path / "diag" / "sender").iterdir()
    assert "Diagnostics of module sender" in log.read_text()


def test_a_uun_iot_011_application_with_an_event_register(tmp_path: Path) -> None:
    sock = tmp_path / "app.sock"
    counter = tmp_path / "count"
    config = {
        "gateway": {"moduleTimers": {"counter": 0.05}, "counter": {"path": str(counter)}, "socket": {"path": str(sock)}}
    }
    app = App(ported("counter_011.py", tmp_path), config, tmp_path)
    try:
        wait_for(lambda: counter.exists() and int(counter.read_text() or 0) >= 3, timeout=30)
        wait_for(lambda: sock.exists(), timeout=30)
        assert int(command(sock, "count")[2:]) >= 3
        assert app.terminate() == 0, app.log()
    finally:
        app.stop()


def test_the_apps_are_written_against_uun_iot() -> None:
    for app in APPS.glob("*_0*.py"):
        text = app.read_text()
        assert "uun_iot" in text and "uun_gateway" not in text, app.name
    assert os.path.isdir(APPS)


def test_the_systemd_handler_writes_journal_lines_whatever_formatter_the_application_sets() -> None:
    # the published applications' bin scripts set "%(name)s - %(levelname)s - %(message)s" on it
    import io
    import logging

    from uun_gateway.compat.utils import LoggingSystemdHandler  # uun_gateway.utils for applications

    stream = io.StringIO()
    handler = LoggingSystemdHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s - %(levelname)s - %(message)s"))
    log = logging.getLogger("tests.compat.journal")
    log.propagate = False
    log.addHandler(handler)
    try:
        log.warning("multi\nline")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = stream.getvalue().splitlines()
    assert first == "<4>tests.compat.journal - WARNING - multi\\nline"
    assert second.startswith("<3>tests.compat.journal - ERROR - failed\\nTraceback (most recent call last):\\n")
    assert second.endswith("ValueError: boom")
