"""owserver connections: a total deadline per request and stop, against a fake ownet server that
pings forever or drips its answer (faults a real owserver shows only on a sick bus)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uun_gateway.modules.onewire import OneWire, OwServer, ServerAddress, ServerUnavailable

from tests.helpers import wait_for
from tests.onewire_fixtures import (
    MSG_READ,
    Drip,
    FakeHandler,
    FakeOwserver,
    PingForever,
    fake_owserver_fixture,  # noqa: F401
    tree_handler,
)
from uun_gateway import Gateway

DEV = "28.000000000001"
FILES: dict[str, bytes | int] = {
    "/bus.0/simultaneous/temperature": b"0",
    f"/bus.0/{DEV}/temperature": b"  20.0",
    f"/bus.0/{DEV}/type": b"DS18B20",
}
DIRS = {"/": ["/bus.0/"], "/uncached/bus.0/": [f"/uncached/bus.0/{DEV}/"]}


def stalling(answer: PingForever | Drip) -> FakeHandler:
    """The tree above, but reading the temperature stalls with ``answer``."""
    plain = tree_handler(dict(FILES), DIRS)

    def handle(msgtype: int, path: str, data: bytes) -> tuple[int, bytes] | PingForever | Drip | None:
        if msgtype == MSG_READ and path.endswith("/temperature"):
            return answer
        return plain(msgtype, path, data)

    return handle


def read_in_thread(server: OwServer, path: str) -> tuple[threading.Thread, list[ServerUnavailable]]:
    failures: list[ServerUnavailable] = []

    def run() -> None:
        try:
            with server.session() as session:
                session.read(path)
        except ServerUnavailable as err:
            failures.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


def test_keepalive_pings_forever_end_at_the_total_deadline(fake_owserver: Callable[..., FakeOwserver]) -> None:
    # before: pyownet waits through pings without end (its timeout= is checked only per ping)
    fake = fake_owserver(stalling(PingForever(every=0.2)))
    server = OwServer(ServerAddress.parse(fake.address), request_timeout=1.0)
    thread, failures = read_in_thread(server, f"/bus.0/{DEV}/temperature")
    wait_for(lambda: not thread.is_alive(), timeout=15)
    thread.join()
    (err,) = failures
    assert isinstance(err, ServerUnavailable) and err.timed_out
    assert err.reason == "timed out: no complete answer within 1 s"
    assert server.in_backoff() and server.connected is False


def test_an_answer_dripping_one_byte_at_a_time_ends_at_the_total_deadline(
    fake_owserver: Callable[..., FakeOwserver],
) -> None:
    # before: every byte came within pyownet's 2 s per recv, so the read went on for 40 s
    fake = fake_owserver(stalling(Drip(0, b" " * 100 + b"20.0", every=0.3)))
    server = OwServer(ServerAddress.parse(fake.address), request_timeout=1.0)
    thread, failures = read_in_thread(server, f"/bus.0/{DEV}/temperature")
    wait_for(lambda: not thread.is_alive(), timeout=15)
    thread.join()
    (err,) = failures
    assert err.reason == "timed out: no complete answer within 1 s"


def test_stop_ends_a_request_in_progress(fake_owserver: Callable[..., FakeOwserver]) -> None:
    fake = fake_owserver(stalling(PingForever(every=0.2)))
    stop = threading.Event()
    server = OwServer(ServerAddress.parse(fake.address), request_timeout=300.0, stopping=stop.is_set)
    thread, failures = read_in_thread(server, f"/bus.0/{DEV}/temperature")
    wait_for(lambda: (MSG_READ, f"/bus.0/{DEV}/temperature") in fake.requests)
    stop.set()
    wait_for(lambda: not thread.is_alive(), timeout=15)
    thread.join()
    (err,) = failures
    assert err.stopped and err.reason == "interrupted: stopping"
    assert not server.in_backoff()


def test_gateway_stop_is_not_held_by_an_owserver_pinging_forever(
    fake_owserver: Callable[..., FakeOwserver], tmp_path: Path
) -> None:
    # before: the read tick blocked in pyownet and SIGTERM (gateway.stop) waited for it forever
    fake = fake_owserver(stalling(PingForever(every=0.2)))
    config: dict[str, Any] = {
        "gateway": {
            "storageDir": str(tmp_path / "storage"),
            "moduleTimers": {"onewire": {"scan": 600, "read": 600}},
            "onewire": {
                "servers": [{"host": "127.0.0.1", "port": fake.port}],
                "conversionDelay": 0,
                "requestTimeout": 300,
            },
        }
    }
    gateway = Gateway(config, lambda cfg, uu: OneWire(cfg["gateway"], uu))
    gateway.start()
    try:
        wait_for(lambda: any(p.endswith("/temperature") for _, p in fake.requests))
    finally:
        stopper = threading.Thread(target=gateway.stop)
        stopper.start()
        wait_for(lambda: not stopper.is_alive(), timeout=15)
        stopper.join()
