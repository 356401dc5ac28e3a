"""Outages of the MQTT uplink: broker down at start, killed, restarted and frozen mid-burst, the
gateway SIGKILLed mid-burst, failover between two brokers and back. Nothing stored is lost."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for
from tests.mqtt_fixtures import (
    GatewayProcess,
    Mosquitto,
    Proxy,
    Subscriber,
    broker_factory_fixture,  # noqa: F401
    proxy_factory_fixture,  # noqa: F401
)
from tests.mqtt_helpers import DATA_TOPIC, STATUS_TOPIC, config, mqtt_section, running, runs
from uun_gateway import Storage

BrokerFactory = Callable[..., Mosquitto]


def test_broker_down_at_start_is_logged_once_and_everything_arrives_later(
    tmp_path: Path, broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, "uun_gateway.modules.mqtt")
    with running(tmp_path, mqtt_section(port)) as (_, mqtt, sensor):
        sensor.storage.extend(range(500))
        assert mqtt.link is not None
        link = mqtt.link
        wait_for(lambda: link.backoff.failures >= 4)
        failures = [r for r in caplog.records if "no broker took the connection" in r.getMessage()]
        assert len(failures) == 1  # once per change of state, not once per attempt
        assert link.backoff.delay(link.backoff.failures) > link.backoff.delay(1)  # backing off, no tight loop
        broker = broker_factory(port=port)
        with Subscriber(broker.port, [DATA_TOPIC]) as sub:
            wait_for(lambda: len(sensor.storage) == 0, timeout=15)
            wait_for(lambda: len(sub.ids(DATA_TOPIC)) >= 500)
            assert sub.ids(DATA_TOPIC) == list(range(1, 501))
    assert any("connected to" in r.getMessage() and "after" in r.getMessage() for r in caplog.records)


def test_broker_restart_mid_burst_loses_nothing(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory(extra=["persistence true", f"persistence_location {tmp_path}/"])
    # a persistent session, so what the restarted broker receives before this subscriber is back waits for it
    sub = Subscriber(broker.port, [DATA_TOPIC], client_id="restart-sub", clean=False)
    try:
        with running(tmp_path, mqtt_section(broker.port, sources={"sensor": {"batchSize": 50}})) as (_, mqtt, sensor):
            sensor.storage.extend({"n": i} for i in range(20000))
            wait_for(lambda: len(sub.ids(DATA_TOPIC)) > 2000, timeout=20)
            broker.stop()
            assert len(sensor.storage) > 0  # the restart really is mid-burst
            wait_for(lambda: not mqtt.connected.is_set())
            broker.start()
            wait_for(lambda: len(sensor.storage) == 0, timeout=60)
            wait_for(lambda: set(sub.ids(DATA_TOPIC)) >= set(range(1, 20001)), timeout=30)
    finally:
        sub.close()
    ids = sub.ids(DATA_TOPIC)
    assert len(runs(ids)) <= 3  # in order, but for the re-send after the reconnect


def test_broker_crash_mid_burst_resends_everything_still_stored(
    tmp_path: Path, broker_factory: BrokerFactory, proxy_factory: Callable[[int], Proxy]
) -> None:
    broker = broker_factory(extra=["log_type all"])
    proxy = proxy_factory(broker.port)
    with running(tmp_path, mqtt_section(proxy.port)) as (_, mqtt, sensor):
        with Subscriber(broker.port, [DATA_TOPIC]) as first:
            sensor.storage.extend({"n": i} for i in range(20000))
            wait_for(lambda: len(first.ids(DATA_TOPIC)) > 2000, timeout=20)
            proxy.cut()
            broker.kill()
        wait_for(lambda: not mqtt.connected.is_set())
        left = [e.id for e in sensor.storage]  # nothing can be acknowledged any more: no connection
        assert left
        broker.start()
        with Subscriber(broker.port, [DATA_TOPIC]) as second:
            proxy.restore()
            wait_for(lambda: len(sensor.storage) == 0, timeout=60)
            wait_for(lambda: set(second.ids(DATA_TOPIC)) >= set(left), timeout=30)
            # from the oldest, in order, with the same ids (what the crashed broker acknowledged
            # before it died is its own durability, not the gateway's)
            assert second.ids(DATA_TOPIC)[: len(left)] == left


def test_frozen_broker_is_detected_by_keepalive_and_delivery_resumes(
    tmp_path: Path, broker_factory: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = broker_factory()
    caplog.set_level(logging.INFO, "uun_gateway.modules.mqtt")
    with (
        Subscriber(broker.port, [DATA_TOPIC]) as sub,
        running(tmp_path, mqtt_section(broker.port, keepalive=5, connectTimeout=2)) as (_, mqtt, sensor),
    ):
        wait_for(mqtt.connected.is_set)
        broker.freeze()
        try:
            sensor.storage.extend(range(300))
            wait_for(lambda: not mqtt.connected.is_set(), timeout=30)  # keepalive noticed it
            assert len(sensor.storage) == 300
        finally:
            broker.thaw()
        wait_for(lambda: len(sensor.storage) == 0, timeout=30)
        wait_for(lambda: set(sub.ids(DATA_TOPIC)) >= set(range(1, 301)))
    assert any("lost" in r.getMessage() for r in caplog.records)


def test_failover_to_the_second_broker_and_back(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    first = broker_factory()
    second = broker_factory()
    section = mqtt_section(first.port, second.port, failbackInterval=0.2)
    with Subscriber(second.port, [DATA_TOPIC]) as on_second, running(tmp_path, section) as (_, mqtt, sensor):
        with Subscriber(first.port, [DATA_TOPIC]) as on_first:
            sensor.storage.extend(range(100))
            wait_for(lambda: len(on_first.ids(DATA_TOPIC)) == 100, timeout=30)
        port = first.port
        first.kill()
        sensor.storage.extend(range(100, 200))
        wait_for(lambda: set(on_second.ids(DATA_TOPIC)) >= set(range(101, 201)), timeout=30)
        assert mqtt.link is not None and mqtt.link.broker is not None and mqtt.link.broker.port == second.port
        back = broker_factory(port=port)
        with Subscriber(back.port, [DATA_TOPIC]) as on_back:
            link = mqtt.link
            wait_for(lambda: link.broker is not None and link.broker.port == port and mqtt.connected.is_set(), 30)
            sensor.storage.extend(range(200, 300))
            wait_for(lambda: set(on_back.ids(DATA_TOPIC)) >= set(range(201, 301)), timeout=30)
    assert len(sensor.storage) == 0  # what the stop's last acks deleted (this reopens the store)
    sensor.close_storage()


def test_gateway_sigkill_mid_burst_loses_nothing(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    cfg = config(tmp_path, mqtt_section(broker.port, keepalive=5, sources={"sensor": {"batchSize": 100}}))
    storage_file = tmp_path / "storage" / "sensor.sqlite"
    with Subscriber(broker.port, [DATA_TOPIC, STATUS_TOPIC]) as sub:
        gw = GatewayProcess(cfg, 30000, 100, tmp_path / "gateway.log")
        try:
            wait_for(lambda: len(sub.ids(DATA_TOPIC)) > 3000, timeout=30)
        finally:
            gw.kill()
        before = sub.ids(DATA_TOPIC)
        store = Storage("sensor", storage_file)
        try:
            left = {e.id for e in store}
        finally:
            store.close()
        produced = set(before) | left
        top = max(produced)
        assert produced == set(range(1, top + 1))  # nothing produced was lost in the kill
        assert left, "the kill was not mid-burst"
        # the broker publishes the will once the keepalive runs out
        wait_for(lambda: [m.payload for m in sub.on(STATUS_TOPIC)][-1:] == [b"offline"], timeout=20)
        gw = GatewayProcess(cfg, 0, 100, tmp_path / "gateway.log")
        try:
            wait_for(lambda: set(sub.ids(DATA_TOPIC)) >= produced, timeout=60)
            wait_for(lambda: [m.payload for m in sub.on(STATUS_TOPIC)][-1:] == [b"online"])
        finally:
            gw.kill()
        ids = sub.ids(DATA_TOPIC)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert duplicates <= left  # only entries that were never acknowledged come twice
    assert len(runs(ids)) <= 2  # in order per source, but for the one re-send after the restart
