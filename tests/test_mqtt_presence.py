"""Presence: the retained status (online on connect, offline on a clean stop, offline as the will
when the gateway vanishes) and the retained health."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import wait_for
from tests.mqtt_fixtures import (
    Mosquitto,
    Proxy,
    Subscriber,
    broker_factory_fixture,  # noqa: F401
    proxy_factory_fixture,  # noqa: F401
)
from tests.mqtt_helpers import HEALTH_TOPIC, STATUS_TOPIC, mqtt_section, running

BrokerFactory = Callable[..., Mosquitto]


def test_status_is_retained_online_then_offline_on_stop(tmp_path: Path, broker_factory: BrokerFactory) -> None:
    broker = broker_factory()
    with (
        Subscriber(broker.port, [STATUS_TOPIC, HEALTH_TOPIC]) as early,
        running(tmp_path, mqtt_section(broker.port)),
    ):
        wait_for(lambda: early.on(STATUS_TOPIC) and early.on(HEALTH_TOPIC))  # both published
        with Subscriber(broker.port, [STATUS_TOPIC, HEALTH_TOPIC]) as late:
            wait_for(lambda: late.on(STATUS_TOPIC) and late.on(HEALTH_TOPIC))
            assert late.on(STATUS_TOPIC)[0].payload == b"online" and late.on(STATUS_TOPIC)[0].retain
            assert late.on(HEALTH_TOPIC)[0].retain
    with Subscriber(broker.port, [STATUS_TOPIC]) as after:
        wait_for(lambda: after.on(STATUS_TOPIC))
        assert after.on(STATUS_TOPIC)[0].payload == b"offline" and after.on(STATUS_TOPIC)[0].retain


def test_will_says_offline_when_the_gateway_vanishes(
    tmp_path: Path, broker_factory: BrokerFactory, proxy_factory: Callable[[int], Proxy]
) -> None:
    broker = broker_factory()
    proxy = proxy_factory(broker.port)
    with (
        Subscriber(broker.port, [STATUS_TOPIC]) as sub,
        running(tmp_path, mqtt_section(proxy.port, keepalive=5)) as (_, mqtt, _),
    ):
        wait_for(lambda: [m.payload for m in sub.on(STATUS_TOPIC)][-1:] == [b"online"])
        proxy.cut()  # no DISCONNECT reaches the broker: it must publish the will
        wait_for(lambda: [m.payload for m in sub.on(STATUS_TOPIC)][-1:] == [b"offline"], timeout=20)
        proxy.restore()
        wait_for(lambda: [m.payload for m in sub.on(STATUS_TOPIC)][-1:] == [b"online"], timeout=20)
        assert mqtt.link is not None and mqtt.link.connects == 2
