"""Which answers count as success: redirects are failures never followed, a 2xx reporting an error
in its uuAppErrorMap is a failure, huge and deeply nested answers are failures; what the server
chose is logged escaped and bounded. Against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_uuapp import DEEP_LEVELS, FakeUuApp
from tests.uuapp_modules import UPLOAD, delivered, running, upload_config
from uun_gateway import TokenError
from uun_gateway.httpcall import AnswerTooDeep, AnswerTooLarge, json_depth_exceeds, parse_json
from uun_gateway.uuapp import RedirectError, UuAppClient, UuAppErrorMapError

pytest_plugins = ["tests.uuapp_fixtures"]


@pytest.fixture
def elsewhere() -> Iterator[FakeUuApp]:
    """A second uuApp on another loopback port: where redirects point."""
    with FakeUuApp(require_auth=False) as other:
        yield other


def client_for(fake: FakeUuApp, tmp_path: Path) -> UuAppClient:
    return UuAppClient(fake.config(str(tmp_path / "oidc-token")))


@pytest.mark.parametrize("status", ["302", "307"])
def test_a_redirect_is_a_failure_and_is_not_followed(
    fake: FakeUuApp, elsewhere: FakeUuApp, tmp_path: Path, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.redirect_to = elsewhere.url
    fake.fault(status, UPLOAD)
    with client_for(fake, tmp_path) as client, caplog.at_level(logging.WARNING):
        response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
    assert isinstance(exc, RedirectError) and response is not None and response.status_code == int(status)
    assert exc.location == f"{elsewhere.url}/{fake.app}/{fake.awid}/{UPLOAD}"
    assert elsewhere.records == []
    assert f"HTTP {status} redirect to {elsewhere.url}/" in caplog.text


@pytest.mark.parametrize("status", ["302", "307"])
def test_a_redirected_upload_keeps_every_entry(
    fake: FakeUuApp, elsewhere: FakeUuApp, tmp_path: Path, status: str
) -> None:
    fake.redirect_to = elsewhere.url
    fake.fault(status, UPLOAD, count=2)  # both batches of the round (in flight together)
    with running(upload_config(fake, tmp_path, period=3600), start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(101)])
        upload.drain()
        assert len(sensor.storage) == 101 and upload.state["sensor"].failures == 1
        assert elsewhere.records == []
        upload.state["sensor"].backoff.succeeded()
        upload.drain()
        assert len(sensor.storage) == 0
    assert sorted(set(delivered(fake))) == ids


@pytest.mark.parametrize("status", ["302", "307"])
def test_a_redirected_grant_sends_no_credentials_elsewhere(
    fake: FakeUuApp, elsewhere: FakeUuApp, tmp_path: Path, status: str
) -> None:
    fake.redirect_to = elsewhere.url
    fake.fault(status, "oidc/grantToken")
    with client_for(fake, tmp_path) as client, pytest.raises(TokenError, match=f"HTTP {status} redirect to"):
        client.refresh_token()
    assert elsewhere.records == [] and elsewhere.grant_dtos == []


def test_a_2xx_reporting_an_error_accepts_nothing_and_is_logged_safely(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fault("errormap", UPLOAD)
    with (
        caplog.at_level(logging.DEBUG),
        running(upload_config(fake, tmp_path, period=3600), start=False) as (
            _,
            sensor,
            upload,
        ),
    ):
        sensor.storage.extend([{"n": i} for i in range(10)])
        upload.drain()
        assert len(sensor.storage) == 10 and upload.state["sensor"].failures == 1
        with client_for(fake, tmp_path) as client:
            fake.fault("errormap", UPLOAD)
            response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
            assert isinstance(exc, UuAppErrorMapError) and response is not None and response.status_code == 200
    records = [r for r in caplog.records if r.name.startswith("uun_gateway")]
    assert any("uuAppErrorMap" in r.getMessage() for r in records)
    for record in records:
        text = record.getMessage()
        assert "\nERROR forged" not in text, "a server-chosen key forged a log line"
        assert len(text) < 2000, f"{len(text)} characters logged from one error map"


def test_a_2xx_with_warnings_only_is_a_success(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.upload_handler = lambda dto: (200, {"accepted": [1], "uuAppErrorMap": {"w": {"type": "warning"}}})
    with client_for(fake, tmp_path) as client:
        _response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
    assert exc is None


def test_a_huge_answer_is_cut_without_growing_memory(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.fault("huge", UPLOAD)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with client_for(fake, tmp_path) as client:
        response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert response is None and isinstance(exc, AnswerTooLarge)
    assert grown_mb < 30, f"peak RSS grew {grown_mb:.0f} MB reading a 100 MB answer"


def test_a_deep_answer_is_a_failed_answer_not_a_recursion_error(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running(upload_config(fake, tmp_path, period=3600), start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": 1}])
        for _ in range(2):
            fake.fault("deep", UPLOAD)
            upload.drain()
            assert len(sensor.storage) == 1 and upload.state["sensor"].failures == 1
            upload.state["sensor"].backoff.succeeded()
        with client_for(fake, tmp_path) as client:
            fake.fault("deep", UPLOAD)
            _response, exc = client.post(UPLOAD, {})
            assert isinstance(exc, AnswerTooDeep)
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


def test_json_depth_bound() -> None:
    assert parse_json(b'{"a": [[1], {"b": "[[[[[[["}]}', max_depth=3) == {"a": [[1], {"b": "[[[[[[["}]}
    assert not json_depth_exceeds(b'"[[[[[[" ' * 10, 2)
    assert json_depth_exceeds(b"[" * 5 + b"]" * 5, 4)
    with pytest.raises(AnswerTooDeep):
        parse_json(b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS)
