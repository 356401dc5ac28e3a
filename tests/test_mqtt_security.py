"""TLS (always verified), mutual TLS, a password file and an ACL, against a real mosquitto."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.mqtt_fixtures import (
    Certificates,
    Mosquitto,
    Subscriber,
    broker_factory_fixture,  # noqa: F401
    test_ca_fixture,  # noqa: F401
)
from tests.mqtt_helpers import DATA_TOPIC, mqtt_section, running

BrokerFactory = Callable[..., Mosquitto]


def tls_broker(factory: BrokerFactory, ca: Certificates, *, mutual: bool = False, **kwargs: Any) -> Mosquitto:
    extra = [f"cafile {ca.ca}", f"certfile {ca.server_cert}", f"keyfile {ca.server_key}"]
    if mutual:
        extra += ["require_certificate true"]
    return factory(extra=extra, **kwargs)


def client_context(ca: Certificates, mutual: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.ca))
    if mutual:
        context.load_cert_chain(str(ca.client_cert), str(ca.client_key))
    return context


def test_tls_with_the_test_ca_delivers(tmp_path: Path, broker_factory: BrokerFactory, test_ca: Certificates) -> None:
    broker = tls_broker(broker_factory, test_ca)
    section = mqtt_section(broker.port, tls={"caFile": str(test_ca.ca)})
    with (
        Subscriber(broker.port, [DATA_TOPIC], tls=client_context(test_ca)) as sub,
        running(tmp_path, section) as (
            _,
            _,
            sensor,
        ),
    ):
        sensor.storage.extend(range(50))
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 50)


def test_a_certificate_of_another_ca_is_refused_logged_once_and_nothing_is_lost(
    tmp_path: Path, broker_factory: BrokerFactory, test_ca: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    broker = tls_broker(broker_factory, test_ca)
    section = mqtt_section(broker.port, tls={"caFile": str(test_ca.other_ca)})
    caplog.set_level(logging.WARNING, "uun_gateway.modules.mqtt")
    with running(tmp_path, section) as (_, mqtt, sensor):
        sensor.storage.extend(range(20))
        assert mqtt.link is not None
        link = mqtt.link
        wait_for(lambda: link.backoff.failures >= 3)
        assert not mqtt.connected.is_set()
        assert len(sensor.storage) == 20
    tls_lines = [r.getMessage() for r in caplog.records if "TLS" in r.getMessage()]
    assert len(tls_lines) == 1 and "certificate verify failed" in tls_lines[0]


def test_mutual_tls(tmp_path: Path, broker_factory: BrokerFactory, test_ca: Certificates) -> None:
    broker = tls_broker(broker_factory, test_ca, mutual=True)
    tls = {"caFile": str(test_ca.ca), "certFile": str(test_ca.client_cert), "keyFile": str(test_ca.client_key)}
    with (
        Subscriber(broker.port, [DATA_TOPIC], tls=client_context(test_ca, mutual=True)) as sub,
        running(tmp_path, mqtt_section(broker.port, tls=tls)) as (_, _, sensor),
    ):
        sensor.storage.extend(range(30))
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 30)


def test_mutual_tls_without_a_client_certificate_is_refused(
    tmp_path: Path, broker_factory: BrokerFactory, test_ca: Certificates
) -> None:
    broker = tls_broker(broker_factory, test_ca, mutual=True)
    with running(tmp_path, mqtt_section(broker.port, tls={"caFile": str(test_ca.ca)})) as (_, mqtt, sensor):
        sensor.storage.extend(range(5))
        assert mqtt.link is not None
        link = mqtt.link
        wait_for(lambda: link.backoff.failures >= 2)
        assert not mqtt.connected.is_set() and len(sensor.storage) == 5


def test_password_file(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory(users={"gw1": "s3cret", "reader": "r"})
    (tmp_path / "pw").write_text("s3cret\n")
    section = mqtt_section(broker.port, username="gw1", passwordFile=str(tmp_path / "pw"))
    with (
        Subscriber(broker.port, [DATA_TOPIC], username="reader", password="r") as sub,
        running(tmp_path, section) as (_, _, sensor),
    ):
        sensor.storage.extend(range(10))
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 10)


def test_a_bad_password_backs_off_and_is_logged_once(
    tmp_path: Path, broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(users={"gw1": "s3cret"})
    (tmp_path / "pw").write_text("wrong\n")
    section = mqtt_section(broker.port, username="gw1", passwordFile=str(tmp_path / "pw"), protocol="5")
    caplog.set_level(logging.WARNING, "uun_gateway.modules.mqtt")
    with running(tmp_path, section) as (_, mqtt, sensor):
        sensor.storage.extend(range(5))
        assert mqtt.link is not None
        link = mqtt.link
        wait_for(lambda: link.backoff.failures >= 4)
        assert link.backoff.delay(link.backoff.failures) >= 4 * link.backoff.delay(1)  # no tight loop
        assert len(sensor.storage) == 5
    refused = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refused) == 1 and ("Not authorized" in refused[0] or "Bad user name or password" in refused[0])


def test_a_topic_the_acl_denies_keeps_its_entries_and_others_flow(
    tmp_path: Path, broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.mqtt_helpers import Other

    acl = "topic readwrite uun/gw1/status\ntopic readwrite uun/gw1/health\ntopic readwrite uun/gw1/cmd/#\n"
    acl += "topic readwrite uun/gw1/data/sensor\ntopic read #\n"
    broker = broker_factory(acl=acl)
    section = mqtt_section(broker.port, protocol="5", sources={"sensor": {}, "other": {"topic": "data/secret"}})
    caplog.set_level(logging.WARNING, "uun_gateway.modules.mqtt")
    with (
        Subscriber(broker.port, ["uun/gw1/#"]) as sub,
        running(tmp_path, section, Other) as (gateway, mqtt, sensor),
    ):
        other = next(m for m in gateway.modules if isinstance(m, Other))
        other.storage.extend(range(10))
        sensor.storage.extend(range(10))
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 10)
        assert mqtt.delivery is not None
        delivery = mqtt.delivery
        wait_for(lambda: delivery.windows["other"].refused >= 1)
        assert len(other.storage) == 10  # refused by the broker (MQTT 5 PUBACK reason): kept
        assert sub.on("uun/gw1/data/secret") == []
    refused = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
    assert refused and "Not authorized" in refused[0]


def test_a_missing_password_file_is_named_and_retried_with_backoff(
    tmp_path: Path, broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory(users={"gw1": "s3cret"})
    missing = tmp_path / "no-such-password"
    section = mqtt_section(broker.port, username="gw1", passwordFile=str(missing))
    caplog.set_level(logging.WARNING, "uun_gateway.modules.mqtt")
    with running(tmp_path, section) as (_, mqtt, sensor):
        sensor.storage.extend(range(3))
        assert mqtt.link is not None
        link = mqtt.link
        wait_for(lambda: link.backoff.failures >= 3)
        missing.write_text("s3cret\n")  # read again at the next attempt
        wait_for(mqtt.connected.is_set, timeout=20)
        wait_for(lambda: len(sensor.storage) == 0)
    setup = [r.getMessage() for r in caplog.records if "cannot set up the connection" in r.getMessage()]
    assert len(setup) == 1 and str(missing) in setup[0]
