"""The ``unisenza`` commands' input edges: config files, arguments and malformed cloud
replies (a tiny plain-HTTP stand-in on loopback; the full cloud double is not needed here)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from uun_gateway.cli import main

GOOD_CHALLENGE = {
    "ChallengeName": "PASSWORD_VERIFIER",
    "ChallengeParameters": {"USER_ID_FOR_SRP": "u", "SECRET_BLOCK": "QUJD", "SALT": "ab", "SRP_B": "abcdef"},
}
NULL_CODE_GATEWAY = {
    "id": "g1",
    "device_code": None,
    "occupants_permissions": {"receiver_occupant": {"id": "o1", "identity_id": "eu-central-1:x"}},
}
TOKENS = {"AuthenticationResult": {"IdToken": "id", "AccessToken": "access", "ExpiresIn": 3600}}


class Replies(BaseHTTPRequestHandler):
    """Answers Cognito calls by their ``X-Amz-Target`` action and REST GETs by path, from
    ``server.replies`` (``key -> (status, JSON value or raw bytes)``); one request per connection."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, key: str) -> None:
        status, body = self.server.replies.get(key, (404, {"message": "not found"}))
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1])

    def do_GET(self) -> None:
        self._reply(self.path.split("?", 1)[0])


@pytest.fixture
def http_cloud() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Replies)
    server.daemon_threads = True
    server.replies = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="fake-http-cloud")
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def write_config(tmp_path: Path, config: Any) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def section_for(server: Any, **extra: Any) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    endpoints = {"idpUrl": url, "identityUrl": url, "serviceUrl": url + "api", "iotHost": "127.0.0.1"}
    return {"username": "user@example.com", "password": "pw", "httpTimeout": 5, "endpoints": endpoints, **extra}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"gateway": []}, "gateway: [] has the wrong type; expected an object"),
        ({}, "(root): required key 'gateway' is missing"),
        ({"gateway": {}}, "gateway: required key 'unisenza' is missing"),
        (
            {"gateway": {"unisenza": {"username": "a", "password": "b", "endpoints": "x"}}},
            'gateway.unisenza.endpoints: "x" has the wrong type; expected an object',
        ),
        (
            {"gateway": {"unisenza": {"username": "a", "password": "b", "httpTimeout": "x"}}},
            'gateway.unisenza.httpTimeout: "x" has the wrong type; expected a number > 0',
        ),
        (
            {"gateway": {"unisenza": {"username": "a"}}},
            "gateway.unisenza: required key 'password' or 'passwordFile' is missing",
        ),
    ],
)
def test_unusable_config_is_exit_78_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: Any, message: str
) -> None:
    # before: tracebacks (AttributeError, ValueError) with exit 1, or exit 1 for a missing password
    path = write_config(tmp_path, config)
    assert main(["unisenza", "list", "-c", path]) == 78
    err = capsys.readouterr().err
    assert f"uun-gateway unisenza: {path}: {message}" in err, err


def test_an_unreadable_password_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"gateway": {"unisenza": {"username": "a", "passwordFile": "missing.password"}}}
    path = write_config(tmp_path, config)
    assert main(["unisenza", "set", "Kitchen", "-t", "21", "-c", path]) == 78
    err = capsys.readouterr().err
    # relative to the working directory, as for the service (and as storage paths are)
    assert "gateway.unisenza: cannot read the password file missing.password: No such file" in err, err


def test_a_password_file_that_is_a_fifo_is_refused_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "pipe.password")
    config = {"gateway": {"unisenza": {"username": "a", "passwordFile": str(tmp_path / "pipe.password")}}}
    assert main(["unisenza", "list", "-c", write_config(tmp_path, config)]) == 78
    assert "pipe.password: not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf"])
def test_bad_timeout_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str) -> None:
    path = write_config(tmp_path, {"gateway": {"unisenza": {"username": "a", "password": "b"}}})
    with pytest.raises(SystemExit) as info:
        main(["unisenza", "list", "-c", path, "--timeout", timeout])
    assert info.value.code == 2
    assert (
        f"argument --timeout: invalid timeout {timeout!r}: expected a number of seconds > 0" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("replies", "message"),
    [
        (
            {"InitiateAuth": (200, {**GOOD_CHALLENGE, "ChallengeParameters": "x"})},
            "malformed PASSWORD_VERIFIER challenge: ChallengeParameters is a str, not an object",
        ),
        ({"InitiateAuth": (200, ["x"])}, "InitiateAuth: unexpected reply (HTTP 200 without a JSON object)"),
        (
            {
                "InitiateAuth": (200, GOOD_CHALLENGE),
                "RespondToAuthChallenge": (200, TOKENS),
                "/api/occupants/slider_list": (200, {"data": "gateways"}),
            },
            "Failed to populate devices: unexpected reply",
        ),
        (
            {
                "InitiateAuth": (200, GOOD_CHALLENGE),
                "RespondToAuthChallenge": (200, TOKENS),
                "/api/occupants/slider_list": (200, {"data": [{"type": "gateway", "gateway": NULL_CODE_GATEWAY}]}),
            },
            "Failed to populate devices: unexpected reply (ValueError('device_code is null'))",
        ),
    ],
)
def test_malformed_cloud_replies_are_reported_not_crashed_on_or_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http_cloud: Any, replies: dict[str, Any], message: str
) -> None:
    # before: a TypeError traceback; "InitiateAuth failed: HTTP 200"; an empty listing with exit 0
    http_cloud.replies.update(replies)
    path = write_config(tmp_path, {"gateway": {"unisenza": section_for(http_cloud)}})
    assert main(["unisenza", "list", "-c", path, "--timeout", "2"]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == "", captured


def test_non_finite_shadow_values_are_skipped_so_readings_stay_storable(caplog: pytest.LogCaptureFixture) -> None:
    # json.loads turns 1e999 into inf and float("nan") parses: before, such a value reached the
    # tick's record, the storage refused it (not JSON) and every thermostat's reading was lost
    from uun_gateway.modules.unisenza import mapping
    from uun_gateway.modules.unisenza.models import DeviceType

    doc = json.loads(
        '{"state": {"reported": {"11": {"properties": {'
        '"ep1:sTherS:HeatingSetpoint_x100": "nan", "ep1:sTherS:LocalTemperature_x100": 1e999,'
        '"ep1:sHumiS:MeasuredValue_x100": "-inf", "ep1:sTherS:MinHeatSetpoint_x100": 500}}}}}'
    )
    assert mapping.parse_document(doc, DeviceType.HVAC) == {"min_temp": 5.0}
    for attribute in ("target_temperature", "current_temperature", "humidity"):
        assert f"for {attribute} (" in caplog.text and "skipped" in caplog.text
