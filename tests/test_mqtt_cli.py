"""``uun-gateway mqtt watch`` and ``uun-gateway mqtt send-command`` against a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for
from tests.mqtt_fixtures import Mosquitto, broker_factory_fixture  # noqa: F401
from tests.mqtt_helpers import CLIENT_ID, Thermostat, mqtt_section, running
from uun_gateway.cli import main

BrokerFactory = Callable[..., Mosquitto]


def test_send_command_prints_the_reply_and_exits_by_its_outcome(
    tmp_path: Path, broker_factory: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = broker_factory()
    with running(tmp_path, mqtt_section(broker.port), Thermostat) as (_, mqtt, _):
        wait_for(mqtt.connected.is_set)
        base = ["mqtt", "send-command", "--broker", f"127.0.0.1:{broker.port}", CLIENT_ID]
        assert main([*base, "thermostat.setpoint", "--args", '{"value": 22}']) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["ok"] and reply["result"] == {"value": 22.0}
        assert main([*base, "thermostat.setpoint", "--args", '{"value": "hot"}']) == 1
        assert "is not of type 'number'" in json.loads(capsys.readouterr().out)["error"]
        assert main([*base, "health"]) == 0
        assert "thermostat" in json.loads(capsys.readouterr().out)["result"]["modules"]
    # the gateway is gone: no reply
    base = ["mqtt", "send-command", "--broker", f"127.0.0.1:{broker.port}", CLIENT_ID, "health", "--timeout", "0.5"]
    assert main(base) == 2
    assert "no reply" in capsys.readouterr().err


def test_send_command_to_no_broker_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mqtt", "send-command", "--broker", f"127.0.0.1:{free_port()}", "gw", "health"]) == 2
    assert "cannot connect to 127.0.0.1" in capsys.readouterr().err


def test_watch_once_prints_the_fleet(
    tmp_path: Path, broker_factory: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = broker_factory()
    with running(tmp_path, mqtt_section(broker.port)) as (_, mqtt, sensor):
        sensor.storage.extend(range(3))
        wait_for(lambda: len(sensor.storage) == 0)
        wait_for(mqtt.connected.is_set)
    with running(tmp_path / "second", mqtt_section(broker.port, clientId="gw2", healthPeriod=0.1)) as (_, m2, s2):
        s2.storage.extend(range(3))
        wait_for(lambda: m2.delivery is not None and m2.delivery.windows["sensor"].delivered == 3)
        assert main(["mqtt", "watch", "--broker", f"127.0.0.1:{broker.port}", "--once", "--wait", "0.5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["GATEWAY", "STATUS", "STORED"]
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert rows["gw1"][1] == "offline" and rows["gw2"][1] == "online"
    assert rows["gw2"][2] == "0"
    assert table[-1] == "2 gateway(s), 1 online"


def test_watch_rejects_a_bad_broker_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["mqtt", "watch", "--broker", "nohostport"])
    assert "expected HOST:PORT" in capsys.readouterr().err
