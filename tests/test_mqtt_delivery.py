"""Delivery over MQTT to a real mosquitto: acknowledged only by PUBACK, in order, re-sent after a
reconnect with the same ids, QoS 0 at most once, a bounded window."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.mqtt.delivery import Delivery
from uun_gateway.modules.mqtt.schema import settings_from

from tests.helpers import wait_for
from tests.mqtt_fixtures import Mosquitto, Proxy, Subscriber, broker_factory_fixture, proxy_factory_fixture  # noqa: F401
from tests.mqtt_helpers import CLIENT_ID, DATA_TOPIC, Other, mqtt_section, running, runs
from uun_gateway import Deadline, Storage, parse_iso

BrokerFactory = Callable[..., Mosquitto]


def test_entries_arrive_in_order_with_ids_and_leave_the_storage(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    section = mqtt_section(broker.port)
    with Subscriber(broker.port, [DATA_TOPIC]) as sub, running(tmp_path, section) as (_, mqtt, sensor):
        sensor.storage.extend({"n": i} for i in range(1000))
        sensor.storage.append(b"\x00\xffraw")
        wait_for(lambda: len(sub.entries(DATA_TOPIC)) >= 1001)
        wait_for(lambda: len(sensor.storage) == 0)
        messages = [m.json() for m in sub.on(DATA_TOPIC)]
        entries = sub.entries(DATA_TOPIC)
        uid = sensor.storage.uid  # read while the gateway runs: after its stop it would reopen the store
    assert [e["data"] for e in entries[:1000]] == [{"n": i} for i in range(1000)]
    assert entries[-1]["encoding"] == "base64" and entries[-1]["data"] == "AP9yYXc="
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == 1001
    assert all(len(m["entries"]) <= 100 for m in messages)
    assert {m["gatewayId"] for m in messages} == {CLIENT_ID}
    assert {m["source"] for m in messages} == {"sensor"}
    assert {m["storageId"] for m in messages} == {uid}
    assert parse_iso(entries[0]["created"]).year >= 2026
    assert mqtt.delivery is not None and mqtt.delivery.windows["sensor"].delivered == 1001


def test_nothing_is_deleted_before_the_broker_acknowledges(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    section = mqtt_section(broker.port, maxInflight=3, keepalive=60)
    with Subscriber(broker.port, [DATA_TOPIC]) as sub, running(tmp_path, section) as (_, mqtt, sensor):
        wait_for(mqtt.connected.is_set)
        broker.freeze()  # the messages reach its socket buffer, PUBACKs never come
        try:
            sensor.storage.extend({"n": i} for i in range(1000))
            assert mqtt.delivery is not None
            delivery = mqtt.delivery
            wait_for(lambda: delivery.inflight == 3)
            assert len(sensor.storage) == 1000  # published, not acknowledged: all still stored
            assert delivery.windows["sensor"].messages == 3  # the window bounds what is in flight
        finally:
            broker.thaw()
        wait_for(lambda: len(sensor.storage) == 0)
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) >= 1000)
        assert sub.ids(DATA_TOPIC) == sorted(set(sub.ids(DATA_TOPIC)))


def test_qos0_deletes_on_send(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    section = mqtt_section(broker.port, sources={"sensor": {"qos": 0, "batchSize": 10}})
    with Subscriber(broker.port, [DATA_TOPIC]) as sub, running(tmp_path, section) as (_, mqtt, sensor):
        wait_for(mqtt.connected.is_set)
        broker.freeze()
        try:
            sensor.storage.extend({"n": i} for i in range(50))
            # deleted although the broker acknowledged nothing: at most once
            wait_for(lambda: len(sensor.storage) == 0)
            assert mqtt.delivery is not None and mqtt.delivery.inflight == 0
        finally:
            broker.thaw()
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 50)


def test_sources_share_the_window_and_each_keeps_its_order(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    section = mqtt_section(
        broker.port, maxInflight=2, sources={"sensor": {"batchSize": 7}, "other": {"topic": "x/y", "batchSize": 5}}
    )
    with (
        Subscriber(broker.port, ["uun/gw1/#"]) as sub,
        running(tmp_path, section, Other) as (gateway, _, sensor),
    ):
        other = next(m for m in gateway.modules if isinstance(m, Other))
        sensor.storage.extend(range(300))
        other.storage.extend(range(300))
        wait_for(lambda: len(sensor.storage) == 0 and len(other.storage) == 0)
        wait_for(lambda: len(sub.ids(DATA_TOPIC)) == 300 and len(sub.ids("uun/gw1/x/y")) == 300)
        assert [e["data"] for e in sub.entries(DATA_TOPIC)] == list(range(300))
        assert [e["data"] for e in sub.entries("uun/gw1/x/y")] == list(range(300))
        order = [m.topic for m in sub.messages if m.topic in (DATA_TOPIC, "uun/gw1/x/y")]
        last_sensor = len(order) - 1 - order[::-1].index(DATA_TOPIC)
        assert order.index("uun/gw1/x/y") < last_sensor  # interleaved, not one source after the other


def test_a_cut_connection_resends_everything_unacknowledged_with_the_same_ids(
    tmp_path: Path, broker_factory: BrokerFactory, proxy_factory: Callable[[int], Proxy]
) -> None:
    broker = broker_factory()
    proxy = proxy_factory(broker.port)
    section = mqtt_section(proxy.port, maxInflight=5, keepalive=60)
    with Subscriber(broker.port, [DATA_TOPIC]) as sub, running(tmp_path, section) as (_, mqtt, sensor):
        wait_for(mqtt.connected.is_set)
        broker.freeze()
        try:
            sensor.storage.extend({"n": i} for i in range(2000))
            assert mqtt.delivery is not None
            first = mqtt.delivery
            wait_for(lambda: first.inflight == 5)
            in_flight = set(first.windows["sensor"].inflight_ids)
            proxy.cut()  # the connection is gone with 5 messages unacknowledged
            wait_for(lambda: not mqtt.connected.is_set())
            proxy.restore()
        finally:
            broker.thaw()
        wait_for(lambda: len(sensor.storage) == 0, timeout=20)
        wait_for(lambda: set(sub.ids(DATA_TOPIC)) >= set(range(1, 2001)))
        ids = sub.ids(DATA_TOPIC)
        assert first.windows["sensor"].resent == len(in_flight)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert duplicates <= in_flight  # only what was never acknowledged came twice
    assert len(runs(ids)) <= 2  # in order, except where the re-send starts over


def test_health_document_and_stored_counts(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    topic = f"uun/{CLIENT_ID}/health"
    with (
        Subscriber(broker.port, [topic]) as sub,
        running(tmp_path, mqtt_section(broker.port, healthPeriod=0.2)) as (
            _,
            _,
            sensor,
        ),
    ):
        sensor.storage.extend(range(10))
        wait_for(lambda: any(json.loads(m.payload)["mqtt"]["sources"]["sensor"]["delivered"] for m in sub.on(topic)))
        doc = json.loads(sub.on(topic)[-1].payload)
    assert doc["gatewayId"] == CLIENT_ID
    assert doc["mqtt"]["sources"]["sensor"]["stored"] == 0
    assert doc["mqtt"]["sources"]["sensor"]["lastDelivery"].endswith("Z")
    assert "sensor" in doc["modules"] and "mqtt" in doc["modules"]


class _Window:
    """Drives a :class:`Delivery` without a broker: publishes into a list, acknowledges on demand."""

    def __init__(self, storage: Storage, batch: int = 10, inflight: int = 4) -> None:
        settings = settings_from(mqtt_section(1883, sources={"sensor": {"batchSize": batch}}, maxInflight=inflight))
        self.delivery = Delivery(settings, lambda source: storage, logging.getLogger("test"))
        self.inflight = inflight
        self.sent: list[tuple[int, list[int]]] = []

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        self.sent.append((len(self.sent) + 1, [e["id"] for e in json.loads(payload)["entries"]]))
        return len(self.sent)

    def fill(self) -> int:
        return int(self.delivery.fill(self.publish, self.inflight, Deadline(10)))

    def ack(self, mid: int, ok: bool = True) -> None:
        self.delivery.published(mid, ok, "Success" if ok else "Not authorized")


def test_entries_in_flight_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage("sensor", tmp_path / "s.sqlite")
    read: list[int] = []
    original = Storage._oldest_rows

    def counting(self: Storage, limit: int, after: int | None) -> Any:
        rows = original(self, limit, after)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(Storage, "_oldest_rows", counting)
    try:
        storage.extend({"n": i} for i in range(1000))
        window = _Window(storage)
        acked = 0
        while len(storage):
            window.fill()  # the window full again: 4 messages of 10 in flight
            acked += 1
            window.ack(acked)  # the oldest message acknowledged, the others still in flight
            window.delivery.process_acks(flush=True)
        ids = [i for _, batch in window.sent for i in batch]
        assert ids == sorted(ids) and len(ids) == 1000
        # a read starts after the newest entry read, not with the 30 in flight again (that would
        # read about 1,750 rows); only the reads once caught up start from the oldest
        assert sum(read) <= 1000 + 2 * 70
    finally:
        storage.close()


def test_an_entry_stored_in_front_while_a_backlog_drains_is_delivered(tmp_path: Path) -> None:
    storage = Storage("sensor", tmp_path / "s.sqlite")
    try:
        storage.extend({"n": i} for i in range(200))
        window = _Window(storage)
        window.fill()
        storage.merge([{"n": "older"}], new_data=False)  # an id below every one read so far
        while len(storage):
            window.fill()
            for mid, _ in window.sent[-window.delivery.inflight :]:
                window.ack(mid)
            window.delivery.process_acks(flush=True)
            assert len(window.sent) < 100, "the entry stored in front was never sent"
    finally:
        storage.close()


def test_a_refused_message_is_sent_again_before_the_later_ones(tmp_path: Path) -> None:
    storage = Storage("sensor", tmp_path / "s.sqlite")
    try:
        ids = storage.extend({"n": i} for i in range(100))
        window = _Window(storage)
        window.fill()
        assert [batch for _, batch in window.sent] == [ids[i : i + 10] for i in range(0, 40, 10)]
        window.ack(1, ok=False)  # the first message refused, the others acknowledged
        for mid in (2, 3, 4):
            window.ack(mid)
        window.delivery.process_acks(flush=True)
        window.delivery.windows["sensor"].backoff.succeeded()
        window.fill()
        assert window.sent[4][1] == ids[:10]  # the refused entries first, then on after the cursor
        assert window.sent[5][1] == ids[40:50]
    finally:
        storage.close()
