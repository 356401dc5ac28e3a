"""``gateway.mqtt``: the schema refuses bad sections with clear errors; defaults are filled in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.mqtt.module import Mqtt
from uun_gateway.modules.mqtt.schema import default_client_id, settings_from

from tests.mqtt_helpers import Sensor, config
from uun_gateway import ConfigError, Gateway


def errors_of(tmp_path: Path, section: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        Gateway(config(tmp_path, section), lambda c, u: [Sensor(c["gateway"], u)])
    return str(caught.value)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({}, "gateway.mqtt: required key 'brokers' is missing"),
        ({"brokers": []}, "gateway.mqtt.brokers"),
        ({"brokers": [{"host": "h", "port": 70000}]}, "gateway.mqtt.brokers[0].port"),
        ({"brokers": [{"host": "h"}], "sources": {"sensor": {"qos": 2}}}, "gateway.mqtt.sources.sensor.qos"),
        ({"brokers": [{"host": "h"}], "sources": {"sensor": {"topic": "a/#"}}}, "gateway.mqtt.sources.sensor.topic"),
        ({"brokers": [{"host": "h"}], "tls": {"certFile": "c"}}, "gateway.mqtt.tls"),
        ({"brokers": [{"host": "h"}], "tls": {"insecure": True}}, "gateway.mqtt.tls.insecure"),
        ({"brokers": [{"host": "h"}], "passwordFile": "p"}, "gateway.mqtt"),
        ({"brokers": [{"host": "h"}], "protocol": "3"}, "gateway.mqtt.protocol"),
        ({"brokers": [{"host": "h"}], "clientId": "a/b"}, "gateway.mqtt.clientId"),
    ],
)
def test_bad_sections_are_refused_naming_the_key(tmp_path: Path, section: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(tmp_path, section)


def test_defaults() -> None:
    s = settings_from({"brokers": [{"host": "b"}], "sources": {"oneWire": {}}}, "12-3456 7/8")
    assert s.client_id == "12-3456_7_8" and s.prefix == "uun/12-3456_7_8"
    assert s.brokers[0].port == 1883 and s.protocol == "3.1.1" and s.keepalive == 30
    assert s.sources[0].topic == "uun/12-3456_7_8/data/oneWire" and s.sources[0].qos == 1
    assert s.sources[0].batch_size == 200 and s.max_inflight == 20
    tls = settings_from({"brokers": [{"host": "b"}], "tls": {}, "topicPrefix": "site/pi", "batchSize": 7,
                         "sources": {"x": {"topic": "t"}}})  # fmt: skip
    assert tls.brokers[0].port == 8883 and tls.tls is not None and tls.sources[0].topic == "site/pi/t"
    assert tls.sources[0].batch_size == 7
    assert default_client_id(None)  # the host name


def test_client_id_comes_from_the_uu_identity(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"brokers": [{"host": "127.0.0.1"}]})
    cfg["uuThing"] = {"uuIdentity": "12-3456-1", "accessCode1": "a", "accessCode2": "b"}
    cfg["uuApp"] = {"gateway": "http://127.0.0.1:9", "uuAppName": "app", "awid": "a1"}
    gateway = Gateway(cfg, lambda c, u: [Sensor(c["gateway"], u)])
    mqtt = next(m for m in gateway.modules if isinstance(m, Mqtt))
    settings = mqtt.settings()
    assert settings is not None and settings.client_id == "12-3456-1"
