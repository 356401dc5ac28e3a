"""The ``unisenza`` gateway module and its CLI, in a real Gateway, against the local cloud double."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.unisenza.module import Unisenza

from tests.helpers import free_port, wait_for
from tests.unisenza_fakes import PASSWORD, FakeCloud, fixtures, section_for
from uun_gateway import ConfigError, Gateway, cli

# The double's fixtures, shared with the other unisenza test module.
ca, shared_env, cloud = fixtures.ca, fixtures.shared_env, fixtures.cloud


def config_for(tmp_path: Path, section: dict[str, Any]) -> dict[str, Any]:
    return {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"unisenza": 0.1},
            "unisenza": section,
        }
    }


@pytest.fixture
def run_gateway() -> Iterator[Any]:
    gateways: list[Gateway] = []

    def run(config: dict[str, Any], entry_point: bool = False) -> tuple[Gateway, Unisenza]:
        if entry_point:  # as `uun-gateway run` loads it: enabled by its config section
            gateway = Gateway(config)
        else:
            gateway = Gateway(config, lambda cfg, uuclient: Unisenza(cfg["gateway"], uuclient))
        gateways.append(gateway)
        gateway.start()
        module = gateway.modules[0]
        assert isinstance(module, Unisenza)
        return gateway, module

    yield run
    for gateway in gateways:
        gateway.stop()


def latest(module: Unisenza, device_id: str) -> dict[str, Any] | None:
    records = [r for r in module.storage.data if r["deviceId"] == device_id]
    return records[-1] if records else None


def test_readings_and_setpoints_from_config_and_remote_update(
    cloud: FakeCloud, tmp_path: Path, run_gateway: Any
) -> None:
    section = section_for(cloud, tmp_path, setpoints={"Kitchen": {"temperature": 22.5}})
    gateway, module = run_gateway(config_for(tmp_path, section))
    wait_for(lambda: (latest(module, "T2") or {}).get("targetTemperature") == 22.5, timeout=15)
    living = latest(module, "T1")
    assert living is not None
    assert {k: living[k] for k in living if k not in ("timestamp", "id")} == {
        "deviceId": "T1",
        "name": "Living room",
        "gateway": "GW1",
        "currentTemperature": 21.35,
        "targetTemperature": 20.5,
        "mode": "heat",
        "runningState": "idle",
        "available": True,
    }
    assert living["timestamp"].endswith("Z")
    assert {r["deviceId"] for r in module.storage.data} == {"T1", "T2", "T3", "T4"}

    new_section = dict(section, setpoints={"Kitchen": {"temperature": 22.5}, "T3": {"mode": "off"}})
    assert gateway.reconfigure(config_for(tmp_path, new_section))
    wait_for(lambda: (latest(module, "T3") or {}).get("mode") == "off", timeout=15)
    assert cloud.stats()["updates"] == {"T2": 1, "T3": 1}  # the unchanged Kitchen setpoint was not resent

    old_client = module.client
    assert gateway.reconfigure(config_for(tmp_path, dict(new_section, requestTimeout=4)))
    wait_for(lambda: module.client not in (None, old_client) and module.client.is_connected(), timeout=15)
    assert cloud.stats()["logins"] == 2  # a changed connection setting logs in and connects again


def test_refused_password_is_not_retried_in_a_loop(
    cloud: FakeCloud, tmp_path: Path, run_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    section = section_for(cloud, tmp_path, authRetryDelay=60)
    del section["passwordFile"]
    section["password"] = "hunter2-wrong"
    gateway, module = run_gateway(config_for(tmp_path, section))
    wait_for(lambda: module.last_error is not None and "login refused" in module.last_error, timeout=10)
    timer = gateway.timers[("unisenza", None)]
    runs = timer.runs
    wait_for(lambda: timer.runs >= runs + 5, timeout=10)  # the gateway keeps ticking
    assert cloud.stats()["failed_logins"] == 1
    assert len(module.storage) == 0
    assert "hunter2-wrong" not in caplog.text


def test_unreachable_cloud_does_not_block_start(tmp_path: Path, run_gateway: Any, cloud: FakeCloud) -> None:
    section = section_for(cloud, tmp_path)
    section["endpoints"] = dict(section["endpoints"], idpUrl=f"https://127.0.0.1:{free_port()}/")
    gateway, module = run_gateway(config_for(tmp_path, section), entry_point=True)
    wait_for(lambda: module.last_error is not None and "cloud unreachable" in module.last_error, timeout=10)
    assert gateway.runev.is_set() and module.client is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"passwordFile": None}, "gateway.unisenza"),
        ({"setpoints": {"Kitchen": {"mode": "auto"}}}, "gateway.unisenza.setpoints.Kitchen.mode"),
        ({"requestTimeout": -1}, "gateway.unisenza.requestTimeout"),
    ],
)
def test_config_errors_name_the_path(tmp_path: Path, cloud: FakeCloud, change: dict[str, Any], path: str) -> None:
    section = section_for(cloud, tmp_path, **change)
    section = {k: v for k, v in section.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        Gateway(config_for(tmp_path, section), lambda cfg, uuclient: Unisenza(cfg["gateway"], uuclient))
    assert any(error.startswith(path) for error in info.value.errors), info.value.errors


# -- CLI --------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    """``uun-gateway ARGV``: the real command line, which finds the module by its entry point."""
    return cli.main(argv)


def test_cli_list_and_set(
    cloud: FakeCloud, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config_for(tmp_path, section_for(cloud, tmp_path))))
    caplog.set_level(logging.INFO)

    assert run_cli(["unisenza", "list", "-c", str(config_file), "--timeout", "5"]) == 0
    out = capsys.readouterr().out
    assert "GW1  Home gateway  gateway  available" in out
    assert "  T1  Living room  current 21.35°C  target 20.5°C  mode heat  idle  available" in out

    assert run_cli(["unisenza", "set", "Kitchen", "--temperature", "23", "--mode", "off", "-c", str(config_file)]) == 0
    assert "T2 (Kitchen): target_temperature 23.0, system_mode off accepted" in capsys.readouterr().out
    desired = cloud.control("shadow", thing="T2")["desired"]["11"]["properties"]
    assert desired == {"ep1:sTherS:SetHeatingSetpoint_x100": 2300, "ep1:sTherS:SetSystemMode": 0}

    assert run_cli(["unisenza", "set", "Kitchen", "-t", "99", "-c", str(config_file)]) == 2
    assert "outside the range" in capsys.readouterr().err
    assert run_cli(["unisenza", "set", "Garage", "-m", "heat", "-c", str(config_file)]) == 2
    assert run_cli(["unisenza", "set", "Kitchen", "-c", str(config_file)]) == 2
    assert PASSWORD not in caplog.text

    bad = config_for(tmp_path, section_for(cloud, tmp_path, password="nope"))
    del bad["gateway"]["unisenza"]["passwordFile"]
    config_file.write_text(json.dumps(bad))
    assert run_cli(["unisenza", "list", "-c", str(config_file)]) == 1
    assert "login refused" in capsys.readouterr().err
