"""Config validation messages, and the CLI: check-config, run, signals, journal log format."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from uun_gateway import ConfigApplyError, ConfigError, Gateway, Module, on
from uun_gateway.cli import main

UUAPP = {"gateway": "uuapp.example.com", "uuAppName": "app", "awid": "a1"}

# (config, JSON path the error must name, a word the message must contain)
MALFORMED: list[tuple[Any, str, str]] = [
    ({"gateway": []}, "gateway", "wrong type"),
    ({"gateway": {"moduleTimers": 5}}, "gateway.moduleTimers", "wrong type"),
    ({"gateway": {"moduleTimers": {"m": 0}}}, "gateway.moduleTimers.m", "number > 0"),
    ({"gateway": {"moduleTimers": {"m": -1}}}, "gateway.moduleTimers.m", "-1"),
    ({"gateway": {"moduleTimers": {"m": "10"}}}, "gateway.moduleTimers.m", '"10"'),
    ({"gateway": {"moduleTimers": {"m": True}}}, "gateway.moduleTimers.m", "true"),
    ({"gateway": {"moduleTimers": {"m": {"read": "x"}}}}, "gateway.moduleTimers.m.read", '"x"'),
    ({"gateway": {"moduleTimers": {"m": {}}}}, "gateway.moduleTimers.m", "timerId"),
    ({"gateway": {"moduleBackupStorage": {"m": 5}}}, "gateway.moduleBackupStorage.m", "file path"),
    ({"gateway": {"moduleBackupStorage": {"m": {"limit": 5}}}}, "gateway.moduleBackupStorage.m", "'path'"),
    (
        {"gateway": {"moduleBackupStorage": {"m": {"path": "a", "limit": -1}}}},
        "gateway.moduleBackupStorage.m.limit",
        ">= 0",
    ),
    (
        {"gateway": {"moduleBackupStorage": {"m": {"path": "a", "lmit": 1}}}},
        "gateway.moduleBackupStorage.m.lmit",
        '"limit"',
    ),
    ({"gateway": {"moduleBackupStorage": {"m": ""}}}, "gateway.moduleBackupStorage.m", "file path"),
    ({"gateway": {"storageDir": ""}}, "gateway.storageDir", "directory"),
    ({"gateway": {"stopTimeout": 0}}, "gateway.stopTimeout", "> 0"),
    ({"gateway": {"handlerTimeout": "x"}}, "gateway.handlerTimeout", "wrong type"),
    ({"gateway": {"nondecrementalUpdate": "yes"}}, "gateway.nondecrementalUpdate", "true or false"),
    ({"gateway": {"m": 5}}, "gateway.m", "object"),
    ({"uuAp": {}}, "uuAp", '"uuApp"'),
    ({"getaway": {}}, "getaway", '"gateway"'),
    ({"uuApp": {"gateway": "h", "uuAppName": "app"}}, "uuApp", "'awid'"),
    ({"uuApp": {**UUAPP, "gateway": "bad host name"}}, "uuApp.gateway", "bad host name"),
    ({"uuApp": {**UUAPP, "timeout": -3}}, "uuApp.timeout", "-3"),
    ({"uuApp": UUAPP, "uuThing": {"uuIdentity": "1-2", "accessCode1": "a"}}, "uuThing", "'accessCode2'"),
    ({"gateway": {"moduleTimers": {"hearbeat": 60}}}, "gateway.moduleTimers.hearbeat", '"heartbeat"'),
    # numbers that validate as numbers but cannot be scheduled or waited for
    ({"gateway": {"moduleTimers": {"m": 1e10}}}, "gateway.moduleTimers.m", "at most a year"),
    ({"gateway": {"moduleTimers": {"m": {"read": 31536001}}}}, "gateway.moduleTimers.m.read", "at most a year"),
    ({"gateway": {"stopTimeout": 1e10}}, "gateway.stopTimeout", "at most a day"),
    ({"gateway": {"handlerTimeout": 1e10}}, "gateway.handlerTimeout", "at most"),
    ({"gateway": {"moduleTimers": {"m": 10**400}}}, "gateway.moduleTimers.m", "integer of 401 digits"),
    (
        {"gateway": {"moduleBackupStorage": {"m": {"path": "a", "limit": 2**64}}}},
        "gateway.moduleBackupStorage.m.limit",
        "at most",
    ),
]


@pytest.mark.parametrize(("config", "path", "word"), MALFORMED, ids=[f"{i}:{m[1]}" for i, m in enumerate(MALFORMED)])
def test_malformed_config_names_path_and_expectation(config: Any, path: str, word: str) -> None:
    with pytest.raises(ConfigError) as info:
        Gateway(config)
    matching = [e for e in info.value.errors if e.startswith(f"{path}:")]
    assert matching, f"no error names {path}: {info.value.errors}"
    assert any(word in e for e in matching), f"{word!r} not in {matching}"


@pytest.mark.parametrize("code", [987654321, ""])
def test_secret_values_are_not_printed(code: object) -> None:
    thing = {"uuIdentity": "1-2", "accessCode1": code, "accessCode2": "s3cr3t-two"}
    with pytest.raises(ConfigError) as info:
        Gateway({"uuApp": UUAPP, "uuThing": thing})
    text = str(info.value)
    assert "uuThing.accessCode1: <secret>" in text
    assert "987654321" not in text and "s3cr3t-two" not in text


def test_empty_config_is_valid() -> None:
    gateway = Gateway({})
    assert gateway.modules == [] and gateway.config == {"gateway": {}}


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Gateway({"gateway": {"stopTimeout": 0, "handlerTimeout": 0, "storageDir": ""}})
    assert len(info.value.errors) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "line 1 column 2: invalid JSON"), ("[]", "expected a JSON object"), ("", "invalid JSON")],
)
def test_unreadable_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        Gateway(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Gateway(tmp_path / "nope.json")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text("{}")
    bad.write_text(json.dumps({"gateway": {"stopTimeout": 0, "moduleTimers": {"x": -1}}}))
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "gateway.stopTimeout" in err and "gateway.moduleTimers.x" in err and str(bad) in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from uun_gateway import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def test_storage_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uun_gateway import Storage

    store = Storage("s", tmp_path / "s.sqlite")
    store.extend([{"t": 1}, b"\x00"])
    store.close()
    assert main(["storage", str(tmp_path / "s.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and '{"t": 1}' in out and "<1 bytes>" in out
    assert main(["storage", str(tmp_path / "missing.sqlite")]) == 1


class Run:
    """``uun-gateway run`` in a subprocess, its stderr lines collected by a reader thread."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uun_gateway.cli", "run", "-c", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 20) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if text in line:
                return line

    def finish(self) -> int:
        code = self.proc.wait(timeout=30)
        self.reader.join()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGUSR1, 1)])
def test_run_stops_cleanly_on_signals(tmp_path: Path, sig: int, code: int) -> None:
    config = tmp_path / "c.json"
    config.write_text("{}")
    run = Run(config)
    run.wait_for_line("gateway started")
    run.proc.send_signal(sig)
    assert run.finish() == code
    assert any("gateway stopped" in line for line in run.seen)


def test_run_exits_78_on_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gateway": {"moduleTimers": {"x": 0}}}))
    run = Run(config)
    assert run.finish() == 78
    assert any("gateway.moduleTimers.x" in line for line in run.seen)


def test_run_under_systemd_logs_with_priority_prefixes(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text("{}")
    run = Run(config, env={"JOURNAL_STREAM": "8:12345"})
    assert run.wait_for_line("gateway started").startswith("<6>uun_gateway.gateway: ")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth):
        doc = {"a": doc}
    return doc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"gateway": {"moduleTimers": {"m": 1' + "0" * 400 + "}}}", "integer of 401 digits"),
        ('{"gateway": {"moduleTimers": {"m": 1' + "0" * 5000 + "}}}", "invalid JSON"),
        ('{"gateway": {"m": ' + '{"a": ' * 900 + "1" + "}" * 900 + "}}", "nested deeper than 64 levels"),
        ('{"gateway": {"m": ' + "[" * 100000 + "]" * 100000 + "}}", "nested too deeply"),
    ],
    ids=["400 digits", "5000 digits", "900 levels", "100000 levels"],
)
def test_every_config_failure_exits_78_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_exits_78_on_a_period_that_cannot_be_scheduled(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gateway": {"moduleTimers": {"heartbeat": 1e10}, "stopTimeout": 1e10}}))
    run = Run(config)
    assert run.finish() == 78
    assert any("gateway.moduleTimers.heartbeat" in line and "at most a year" in line for line in run.seen)
    assert any("gateway.stopTimeout" in line for line in run.seen)


def test_a_remote_config_with_unschedulable_or_deep_values_is_rejected_unapplied() -> None:
    gateway = Gateway({"gateway": {"moduleTimers": {"heartbeat": 60}}})
    before = json.dumps(gateway.config)
    for bad in (
        {"gateway": {"moduleTimers": {"heartbeat": 1e10}}},
        {"gateway": {"moduleTimers": {"heartbeat": 10**400}}},
        {"gateway": {"moduleTimers": {"heartbeat": 60}, "heartbeat": _nested(5000)}},
    ):
        with pytest.raises(ConfigError) as info:
            gateway.reconfigure(bad, save=False)
        assert not isinstance(info.value, ConfigApplyError)
        assert json.dumps(gateway.config) == before
        assert gateway.config_error is not None and "gateway." in gateway.config_error
    assert gateway.timers[("heartbeat", None)].period == 60


class Referrer(Module):
    """A module whose section names a file and other modules, as the uuApp CA bundle and the
    upload sources do."""

    id = "referrer"
    config_schema = {
        "type": "object",
        "properties": {
            "caBundle": {"type": "string", "format": "existing-file", "description": "a CA file"},
            "sources": {"type": "object", "propertyNames": {"format": "module-id"}},
        },
    }

    @on("tick")
    def tick(self) -> None:
        pass


def test_files_and_module_ids_a_section_names_are_checked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    good = {"caBundle": str(ca), "sources": {"referrer": {}}}
    Gateway({"gateway": {"moduleTimers": {"referrer": 60}}}, lambda c, u: Referrer({"referrer": good}))
    bad = {
        "gateway": {
            "moduleTimers": {"referrer": 60},
            "referrer": {"caBundle": str(tmp_path / "nope.pem"), "sources": {"onewir": {}}},
        }
    }
    with pytest.raises(ConfigError) as info:
        Gateway(bad, lambda c, u: Referrer({}))
    text = "\n".join(info.value.errors)
    assert f'gateway.referrer.caBundle: "{tmp_path / "nope.pem"}": no such file; expected a CA file' in text
    assert 'gateway.referrer.sources: "onewir": no loaded module has this id' in text


def test_a_missing_uuapp_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    from uun_gateway import ConfigError, Gateway

    config = {
        "gateway": {},
        "uuApp": {
            "gateway": "https://127.0.0.1:9",
            "uuAppName": "app",
            "awid": "awid0",
            "caBundle": str(tmp_path / "missing-ca.pem"),
        },
    }
    with pytest.raises(ConfigError) as raised:
        Gateway(config)
    assert any(e.startswith("uuApp.caBundle:") and "no such file" in e for e in raised.value.errors), raised.value


def _unbounded_numbers(node: Any, path: str) -> list[str]:
    """Paths of the JSON-Schema numbers under ``node`` that have a lower bound but no upper one."""
    found: list[str] = []
    if isinstance(node, dict):
        bounded_below = "minimum" in node or "exclusiveMinimum" in node
        if node.get("type") == "number" and bounded_below and not {"maximum", "exclusiveMaximum"} & node.keys():
            found.append(path)
        for key, value in node.items():
            found += _unbounded_numbers(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _unbounded_numbers(value, f"{path}[{index}]")
    return found


def test_every_duration_in_the_core_and_built_in_schemas_has_an_upper_bound() -> None:
    # a duration that validates but cannot be waited for (OverflowError) failed at run time instead
    from uun_gateway.config import CORE_GATEWAY_SCHEMA
    from uun_gateway.plugins import available_module_ids, load_module_class

    unbounded = _unbounded_numbers(CORE_GATEWAY_SCHEMA, "gateway")
    builtin = [mid for mid in available_module_ids() if mid in BUILTIN_MODULES]
    assert sorted(builtin) == sorted(BUILTIN_MODULES)
    for mid in builtin:
        unbounded += _unbounded_numbers(getattr(load_module_class(mid), "config_schema", None), f"gateway.{mid}")
    assert unbounded == []


BUILTIN_MODULES = ("config", "heartbeat", "mqtt", "onewire", "socket", "unisenza", "upload")


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"mqtt": {"brokers": [{"host": "127.0.0.1"}], "connectTimeout": 1e10}}, "gateway.mqtt.connectTimeout"),
        ({"unisenza": {"username": "u", "password": "p", "httpTimeout": 1e10}}, "gateway.unisenza.httpTimeout"),
        ({"upload": {"backoffMax": 1e10}}, "gateway.upload.backoffMax"),
        (
            {"alarms": [{"name": "a", "watch": {"module": "onewire"}, "staleAfter": 1e10}]},
            "gateway.alarms[0].staleAfter",
        ),
    ],
)
def test_a_duration_too_long_to_wait_for_is_a_config_error_naming_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: dict[str, Any], key: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"gateway": section}))
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert any(line.strip().startswith(f"{key}: 10000000000") and "at most" in line for line in err.splitlines()), err
