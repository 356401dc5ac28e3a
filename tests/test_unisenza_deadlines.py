"""Every network call of the Unisenza client ends: a total deadline per HTTP call and per MQTT
connection attempt, and a stop that cuts them short. The fake cloud answers one byte at a time
for ever (``drip``), which a per-read timeout never ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.unisenza import Client, ClientError, ClientOptions, CognitoAuth
from uun_gateway.modules.unisenza.module import Unisenza, build_client

from tests.helpers import wait_for
from tests.unisenza_fakes import PASSWORD, USERNAME, FakeCloud, fixtures, section_for

ca, shared_env, cloud = fixtures.ca, fixtures.shared_env, fixtures.cloud

DRIP = 0.05  # seconds per byte: a 200-byte answer would take 10 s, the drip goes on for minutes


@pytest.fixture
def dripping(cloud: FakeCloud) -> Iterator[Callable[..., None]]:
    """``dripping(http=True, front=True)`` makes those parts of the cloud drip; undone at the end."""

    def start(http: bool = False, front: bool = False) -> None:
        cloud.control("drip", **({"http": DRIP} if http else {}), **({"front": DRIP} if front else {}))

    yield start
    cloud.control("drip", http=None, front=None)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``work`` in a thread; the list receives what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, name="dripping-call")
    thread.start()
    return thread, raised


def test_a_dripping_login_ends_at_its_deadline(cloud: FakeCloud, dripping: Callable[..., None]) -> None:
    # before: requests' timeout is per read, so each byte restarted it and login never returned
    dripping(http=True)
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=1)
    try:
        with pytest.raises(ClientError, match=r"^InitiateAuth: no complete answer within 1 s$"):
            auth.login()
    finally:
        auth.close()
    assert cloud.stats()["http_drips"] == 1


def test_a_dripping_discovery_ends_at_its_deadline(cloud: FakeCloud, dripping: Callable[..., None]) -> None:
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5)
    client = Client(auth, ClientOptions(request_timeout=1))
    try:
        client.login()
        dripping(http=True)
        with pytest.raises(ClientError, match="GET /occupants/slider_list: no complete answer within 1 s"):
            client.populate_devices()
    finally:
        client.close()


def test_close_interrupts_a_dripping_login(cloud: FakeCloud, dripping: Callable[..., None]) -> None:
    dripping(http=True)
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=3600)
    thread, raised = in_thread(auth.login)
    try:
        wait_for(lambda: cloud.stats()["http_drips"] == 1)
        auth.close()
        thread.join(30)
        assert not thread.is_alive(), "close() did not end the call in flight"
    finally:
        auth.close()
        thread.join()
    assert [str(e) for e in raised] == ["InitiateAuth: interrupted by stop"]
    with pytest.raises(ClientError, match="interrupted by stop"):
        auth.login()  # and no new call starts after close


@pytest.mark.parametrize("via", ["options", "gateway.unisenza.connectTimeout"])
def test_a_dripping_mqtt_connect_is_cut_short_and_retried(
    cloud: FakeCloud, dripping: Callable[..., None], caplog: pytest.LogCaptureFixture, tmp_path: Path, via: str
) -> None:
    # before: the websocket upgrade's per-read timeout restarted with every byte: one attempt for ever
    if via == "options":
        options = ClientOptions(connect_timeout=0.5, reconnect_min_delay=0.1, reconnect_max_delay=0.2)
        client = Client(CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5), options)
    else:
        client = build_client(section_for(cloud, tmp_path, connectTimeout=0.5, httpTimeout=5))
    try:
        client.login()
        client.populate_devices()
        dripping(front=True)
        with caplog.at_level(logging.WARNING, logger="uun_gateway.modules.unisenza.shadow"):
            assert not client.connect(0)
            wait_for(lambda: cloud.stats()["front_drips"] >= 3, timeout=30)
        assert "not connected within 0.5 s (TCP, TLS, websocket upgrade and CONNACK); retrying" in caplog.text
    finally:
        client.close()


def test_close_interrupts_a_dripping_mqtt_connect(cloud: FakeCloud, dripping: Callable[..., None]) -> None:
    options = ClientOptions(connect_timeout=3600, reconnect_min_delay=0.1, reconnect_max_delay=0.2)
    client = Client(CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5), options)
    client.login()
    client.populate_devices()
    dripping(front=True)
    client.connect(0)
    wait_for(lambda: cloud.stats()["front_drips"] == len(client.connections()))
    thread, raised = in_thread(client.close)
    thread.join(30)
    assert not thread.is_alive(), "close() waited for the dripping websocket upgrade"
    assert raised == []


def test_stopping_the_module_interrupts_a_dripping_login(
    cloud: FakeCloud, dripping: Callable[..., None], tmp_path: Path
) -> None:
    # before: stop() closed only a connected client; the worker sat in the login until its end
    dripping(http=True)
    module = Unisenza({"unisenza": section_for(cloud, tmp_path, httpTimeout=3600)})
    runev, stopev = threading.Event(), threading.Event()
    runev.set()
    thread, raised = in_thread(lambda: module._run((runev, stopev)))
    try:
        wait_for(lambda: cloud.stats()["http_drips"] == 1)
        stopev.set()
        module._stop()
        thread.join(30)
        assert not thread.is_alive(), "stop did not end the login in flight"
    finally:
        stopev.set()
        module._stop()
        thread.join()
    assert raised == []
