"""Commands over MQTT: config through reconfigure, module commands with schema-checked arguments,
replies with the correlation id, error replies for bad requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import liveset_modules
from tests.helpers import wait_for
from tests.mqtt_fixtures import Mosquitto, Subscriber, broker_factory_fixture  # noqa: F401
from tests.mqtt_helpers import CLIENT_ID, Thermostat, mqtt_section, running

BrokerFactory = Callable[..., Mosquitto]
CMD = f"uun/{CLIENT_ID}/cmd"


def ask(sub: Subscriber, name: str, body: Any, request_id: str) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sub.publish(f"{CMD}/{name}", raw)
    topic = f"{CMD}/{name}/result"

    def reply() -> dict[str, Any] | None:
        for m in sub.on(topic):
            doc = m.json()
            if doc.get("id") == request_id or (request_id == "" and doc.get("id") is None):
                return dict(doc)
        return None

    wait_for(reply)
    found = reply()
    assert found is not None
    return found


def test_module_commands_good_and_bad_arguments(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with (
        Subscriber(broker.port, [f"{CMD}/+/result"]) as sub,
        running(tmp_path, mqtt_section(broker.port), Thermostat) as (gateway, mqtt, _),
    ):
        wait_for(mqtt.connected.is_set)
        thermostat = next(m for m in gateway.modules if isinstance(m, Thermostat))
        ok = ask(sub, "thermostat.setpoint", {"id": "a1", "args": {"value": 21.5}}, "a1")
        assert ok == {"id": "a1", "ok": True, "result": {"value": 21.5}}
        assert thermostat.target == 21.5
        bad = ask(sub, "thermostat.setpoint", {"id": "a2", "args": {"value": 99}}, "a2")
        assert not bad["ok"] and "args.value" in bad["error"] and "99" in bad["error"]
        missing = ask(sub, "thermostat.setpoint", {"id": "a3", "args": {}}, "a3")
        assert not missing["ok"] and "'value' is a required property" in missing["error"]
        refused = ask(sub, "thermostat.setpoint", {"id": "a4", "args": {"value": 13}}, "a4")
        assert refused == {"id": "a4", "ok": False, "error": "13 is unlucky"}
        boom = ask(sub, "thermostat.explode", {"id": "a5"}, "a5")
        assert not boom["ok"] and "internal error: RuntimeError: boom" in boom["error"]
        unknown = ask(sub, "nope", {"id": "a6"}, "a6")
        assert not unknown["ok"] and "unknown command 'nope'" in unknown["error"]
        assert "thermostat.setpoint" in unknown["error"]
        garbage = ask(sub, "thermostat.setpoint", b"{not json", "")
        assert not garbage["ok"] and "not JSON" in garbage["error"]
        listing = ask(sub, "commands", {"id": "a7"}, "a7")
        assert listing["result"]["thermostat.setpoint"]["description"] == "Set the target temperature."
        assert thermostat.target == 21.5
        # the connection survived every bad request: still the first connection
        assert mqtt.link is not None and mqtt.link.connects == 1 and mqtt.connected.is_set()


def test_config_command_applies_through_reconfigure_and_refuses_invalid(
    tmp_path: Path, broker_factory: BrokerFactory
) -> None:
    broker = broker_factory()
    section = mqtt_section(broker.port)
    with (
        Subscriber(broker.port, [f"{CMD}/+/result", f"uun/{CLIENT_ID}/data/#"]) as sub,
        running(tmp_path, section) as (gateway, mqtt, sensor),
    ):
        wait_for(mqtt.connected.is_set)
        current = dict(gateway.config["gateway"])
        bad = ask(sub, "config", {"id": "c1", "args": {"gateway": {**current, "stopTimeout": -1}}}, "c1")
        assert not bad["ok"] and "gateway.stopTimeout" in bad["error"]
        assert gateway.config["gateway"]["stopTimeout"] == current["stopTimeout"]
        new_mqtt = {**section, "sources": {"sensor": {"topic": "data/moved"}}}
        good = ask(sub, "config", {"id": "c2", "args": {"gateway": {**current, "mqtt": new_mqtt}}}, "c2")
        assert good == {"id": "c2", "ok": True, "result": {"changed": True}}
        # the module picked up its new section: it reconnects and delivers to the new topic
        sensor.storage.extend(range(5))
        wait_for(lambda: len(sub.ids(f"uun/{CLIENT_ID}/data/moved")) == 5)
        args_bad = ask(sub, "config", {"id": "c3", "args": {"gateway": 5}}, "c3")
        assert not args_bad["ok"] and "args.gateway" in args_bad["error"]


def test_a_retained_command_is_not_run(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with Subscriber(broker.port, [f"{CMD}/+/result"]) as sub:
        sub.publish(f"{CMD}/thermostat.setpoint", b'{"id": "r1", "args": {"value": 25}}', retain=True)
        with running(tmp_path, mqtt_section(broker.port), Thermostat) as (gateway, mqtt, _):
            wait_for(mqtt.connected.is_set)
            thermostat = next(m for m in gateway.modules if isinstance(m, Thermostat))
            # a later, live command is answered; by then the retained one was seen and ignored
            assert ask(sub, "thermostat.setpoint", {"id": "r2", "args": {"value": 6}}, "r2")["ok"]
            assert thermostat.target == 6
            assert [m.json()["id"] for m in sub.on(f"{CMD}/thermostat.setpoint/result")] == ["r2"]


def test_a_module_added_live_is_commanded_and_one_removed_is_not(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    (tmp_path / "site").mkdir()
    with (
        liveset_modules.installed_in(tmp_path / "site"),
        Subscriber(broker.port, [f"{CMD}/+/result"]) as sub,
        running(tmp_path, mqtt_section(broker.port)) as (gateway, mqtt, _),
    ):
        wait_for(mqtt.connected.is_set)
        before = ask(sub, "ticker.ticks", {"id": "t1"}, "t1")
        assert not before["ok"] and "unknown command 'ticker.ticks'" in before["error"]
        base = gateway.config["gateway"]
        gateway.reconfigure(
            {"gateway": {**base, "moduleTimers": {**base.get("moduleTimers", {}), "ticker": 3600}}}, save=False
        )
        ticker = next(m for m in gateway.modules if isinstance(m, liveset_modules.Ticker))
        wait_for(lambda: ticker.ticks >= 1)
        answer = ask(sub, "ticker.ticks", {"id": "t2"}, "t2")
        assert answer["ok"] and answer["result"]["instance"] == ticker.name and answer["result"]["ticks"] >= 1
        gateway.reconfigure({"gateway": base}, save=False)
        after = ask(sub, "ticker.ticks", {"id": "t3"}, "t3")
        assert not after["ok"] and "unknown command 'ticker.ticks'" in after["error"]


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
@pytest.mark.parametrize("session_expiry", [0, 600])
def test_a_command_sent_while_the_gateway_is_offline_waits_in_a_kept_session(
    tmp_path: Path, broker_factory: BrokerFactory, protocol: str, session_expiry: int
) -> None:
    broker = broker_factory()
    section = mqtt_section(broker.port, protocol=protocol, sessionExpiry=session_expiry)
    with Subscriber(broker.port, [f"{CMD}/+/result"]) as sub:
        with running(tmp_path, section, Thermostat) as (_gateway, mqtt, _):
            wait_for(mqtt.connected.is_set)  # the broker knows the session (and its subscription) now
        sub.publish(f"{CMD}/thermostat.setpoint", json.dumps({"id": "offline", "args": {"value": 22}}).encode())
        with running(tmp_path, section, Thermostat) as (gateway, mqtt, _):
            wait_for(mqtt.connected.is_set)
            online = ask(sub, "thermostat.setpoint", {"id": "online", "args": {"value": 23}}, "online")
            assert online["ok"]
            thermostat = next(m for m in gateway.modules if isinstance(m, Thermostat))
            replies = [m.json().get("id") for m in sub.on(f"{CMD}/thermostat.setpoint/result")]
            if session_expiry:
                # the queued command came first, then the live one
                assert replies == ["offline", "online"] and thermostat.target == 23
            else:
                assert replies == ["online"], "a clean session drops what was sent while offline"
