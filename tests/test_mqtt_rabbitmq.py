"""The uplink against Debian's RabbitMQ with its MQTT plugin (3.1.1), the cluster-class broker:
delivery in order, and a broker restart mid-burst with nothing lost.

RabbitMQ takes tens of seconds to boot on a loaded 2-core machine; when it does not open its MQTT
port within ``UUN_TEST_RABBITMQ_TIMEOUT`` seconds (default 150) the test is skipped, saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.mqtt_fixtures import RabbitMQ, Subscriber, rabbitmq_fixture  # noqa: F401
from tests.mqtt_helpers import DATA_TOPIC, mqtt_section, running, runs


@pytest.mark.timeout(600)
def test_rabbitmq_delivery_in_order_and_restart_mid_burst(tmp_path: Path, rabbitmq: RabbitMQ) -> None:
    # a persistent session: RabbitMQ keeps its queue (durable) across the restart
    sub = Subscriber(rabbitmq.port, [DATA_TOPIC], client_id="rabbit-sub", clean=False)
    try:
        section = mqtt_section(rabbitmq.port, sources={"sensor": {"batchSize": 100}}, keepalive=10)
        with running(tmp_path, section) as (_, mqtt, sensor):
            sensor.storage.extend({"n": i} for i in range(20000))
            wait_for(lambda: len(sub.ids(DATA_TOPIC)) > 2000, timeout=60)
            rabbitmq.stop()
            assert len(sensor.storage) > 0  # the restart really is mid-burst
            wait_for(lambda: not mqtt.connected.is_set(), timeout=30)
            rabbitmq.start()
            wait_for(lambda: len(sensor.storage) == 0, timeout=120)
            wait_for(lambda: set(sub.ids(DATA_TOPIC)) >= set(range(1, 20001)), timeout=60)
            assert [e["data"]["n"] for e in sub.entries(DATA_TOPIC)][:100] == list(range(100))
    finally:
        sub.close()
    assert len(runs(sub.ids(DATA_TOPIC))) <= 3  # in order, but for the re-send after the reconnect
