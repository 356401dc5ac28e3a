"""Every uuApp call has a total deadline (connect + the whole answer), not one per read, and a stop
interrupts it: a server dripping one byte at a time cannot hold a module, the token lock or stop()."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.uuapp_modules import UPLOAD, running, upload_config
from uun_gateway import TokenError
from uun_gateway.httpcall import DeadlineExceeded, Interrupted
from uun_gateway.uuapp import RequestResult, UuAppClient

pytest_plugins = ["tests.uuapp_fixtures"]

SAFETY = 30.0
"""How long a test waits for a call bounded at well under a second before calling it hung."""


def in_thread(call: Callable[[], RequestResult]) -> tuple[threading.Thread, list[RequestResult]]:
    results: list[RequestResult] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


def finished(thread: threading.Thread) -> bool:
    thread.join(SAFETY)
    return not thread.is_alive()


@pytest.mark.parametrize("kind", ["drip", "drip-body", "headers-cut"])
def test_a_dripping_answer_is_cut_at_the_deadline(fake: FakeUuApp, tmp_path: Path, kind: str) -> None:
    with UuAppClient(fake.config(str(tmp_path / "tok")), timeout=0.5) as client:
        client.refresh_token()
        fake.fault(kind, UPLOAD)
        thread, results = in_thread(lambda: client.post(UPLOAD, {}))
        assert finished(thread), "a server sending a byte every 50 ms held the call past its deadline"
    ((response, exc),) = results
    assert response is None and isinstance(exc, DeadlineExceeded)


def test_a_stop_interrupts_a_call_in_flight(fake: FakeUuApp, tmp_path: Path) -> None:
    stop = threading.Event()
    with UuAppClient(fake.config(str(tmp_path / "tok")), timeout=600) as client:
        client.refresh_token()
        fake.fault("drip", UPLOAD)
        thread, _results = in_thread(lambda: client.post(UPLOAD, {}, stop=stop))
        wait_for(lambda: fake.for_cmd(UPLOAD))
        stop.set()
        assert finished(thread)
        ((response, exc),) = _results
        assert response is None and isinstance(exc, Interrupted)
        _response, exc = client.post(UPLOAD, {}, stop=stop)
        assert isinstance(exc, Interrupted), "a call made after the stop must not be sent"


def test_a_dripping_grant_is_bounded_and_does_not_hold_the_token_lock(fake: FakeUuApp, tmp_path: Path) -> None:
    config = fake.config(str(tmp_path / "tok"))
    config["oidcGrantToken"]["timeout"] = 0.5
    with UuAppClient(config) as client:
        fake.fault("drip", "oidc/grantToken")
        threads = [in_thread(lambda: client.post(UPLOAD, {})) for _ in range(3)]
        for thread, _ in threads:
            assert finished(thread), "a dripping grant held the token lock (and every uuApp module) too long"
        for _, ((response, exc),) in threads:
            assert response is None and isinstance(exc, TokenError)
        _response, exc = client.post(UPLOAD, {})
        assert exc is None, "the next grant works"


def test_gateway_stop_interrupts_an_upload_waiting_on_a_dripping_server(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = upload_config(fake, tmp_path, period=0.01)
    config["uuApp"]["timeout"] = 600
    config["gateway"]["stopTimeout"] = 20
    with caplog.at_level(logging.WARNING), running(config, start=False) as (gateway, sensor, _upload):
        sensor.storage.extend([{"n": 1}])
        gateway.uuapp_client.refresh_token()  # type: ignore[union-attr]
        fake.fault("drip", UPLOAD)
        gateway.start()
        wait_for(lambda: fake.for_cmd(UPLOAD))
        gateway.stop()
        assert len(sensor.storage) == 1
    assert "abandoned" not in caplog.text, "stop() had to abandon the upload tick"
