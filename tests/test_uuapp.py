"""UuAppClient and UuCmdSession against a real HTTP server on 127.0.0.1 (tests/fake_uuapp.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from uun_gateway.errors import ConfigError
from uun_gateway.uuapp import (
    UUAPP_SCHEMA,
    TokenCommandError,
    TokenError,
    UuAppClient,
    UuCmdSession,
    base_url,
)

if TYPE_CHECKING:
    from tests.uuapp_fixtures import TokenClock

pytest_plugins = ["tests.uuapp_fixtures"]

UPLOAD = "gateway/upload"


def client_for(fake: FakeUuApp, tmp_path: Path, **kwargs: object) -> UuAppClient:
    return UuAppClient(fake.config(str(tmp_path / "token" / "oidc-token")), **kwargs)  # type: ignore[arg-type]


def auth_headers(fake: FakeUuApp, cmd: str) -> list[str]:
    return [r.headers.get("authorization", "") for r in fake.for_cmd(cmd)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- config and URLs
def test_base_url_accepts_host_or_scheme_and_port() -> None:
    assert base_url("uuapp.plus4u.net") == "https://uuapp.plus4u.net"
    assert base_url("uuapp.plus4u.net:8443/") == "https://uuapp.plus4u.net:8443"
    assert base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError):
        base_url("ftp://host")
    with pytest.raises(ValueError):
        base_url("https://host/path")
    assert base_url("http://[::1]:65535") == "http://[::1]:65535"
    for bad_port in ("127.0.0.1:99999", "https://host:0", "https://host:abc", "http://[::1]:65536"):
        with pytest.raises(ValueError, match="not a TCP port"):
            base_url(bad_port)


@pytest.mark.parametrize("section", ["uuApp", "oidcGrantToken"])
def test_a_server_port_out_of_range_is_a_config_error_not_a_failure_per_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str
) -> None:
    from uun_gateway.cli import main

    server = {"gateway": "127.0.0.1:99999", "uuAppName": "a", "awid": "b"}
    config: dict[str, Any] = {"gateway": {}, "uuApp": {**server, "gateway": "127.0.0.1:8080"}}
    config[section] = {**server, "uuCmd": "oidc/grantToken", "tokenPath": "t"} if section != "uuApp" else server
    if section != "uuApp":
        config["uuThing"] = {"uuIdentity": "1-1", "accessCode1": "x", "accessCode2": "y"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert f'{section}.gateway: "127.0.0.1:99999" is not valid; expected a host name' in err, err


def test_uucmd_url(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client:
        assert client.get_uucmd_url("gateway/heartbeat") == f"{fake.url}/uu-fake-app/awid0/gateway/heartbeat"
        assert client.get_uucmd_url("/x/y") == f"{fake.url}/uu-fake-app/awid0/x/y"


def test_missing_keys_raise_config_error_naming_them() -> None:
    with pytest.raises(ConfigError) as info:
        UuAppClient({"uuApp": {"gateway": "h"}, "oidcGrantToken": {"gateway": "h"}})
    text = str(info.value)
    for key in ("uuApp.uuAppName", "uuApp.awid", "oidcGrantToken.tokenPath", "uuThing"):
        assert key in text


def test_constructor_never_touches_the_network(tmp_path: Path) -> None:
    calls: list[object] = []
    port = free_port()
    cfg = FakeUuApp(access_codes=("a", "b")).config(str(tmp_path / "tok"))
    cfg["uuApp"]["gateway"] = cfg["oidcGrantToken"]["gateway"] = f"http://127.0.0.1:{port}"

    def grant(*args: object, **kwargs: object) -> requests.Response:
        calls.append(args)
        raise requests.ConnectionError("offline")

    started = time.monotonic()
    client = UuAppClient(cfg, fn_token_request=grant)
    assert time.monotonic() - started < 0.5
    assert calls == []
    response, exc = client.post(UPLOAD, {"a": 1})
    assert response is None and isinstance(exc, TokenError)
    assert len(calls) == 1
    client.close()


def test_plain_http_to_remote_host_warns_once_loopback_does_not(caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"uuApp": {"gateway": "http://uuapp.example.com", "uuAppName": "a", "awid": "w"}}
    with caplog.at_level(logging.WARNING, "uun_gateway.uuapp"):
        UuAppClient(cfg)
        assert [r.getMessage() for r in caplog.records] == [
            "plain http to http://uuapp.example.com: traffic and tokens are not encrypted"
        ]
        caplog.clear()
        UuAppClient({"uuApp": {**cfg["uuApp"], "gateway": "http://127.0.0.1:1"}})
        UuAppClient({"uuApp": {**cfg["uuApp"], "gateway": "uuapp.example.com"}})
        assert caplog.records == []


def test_schema_accepts_reference_config_and_rejects_bad_ones(fake: FakeUuApp) -> None:
    cfg = fake.config("tok")
    jsonschema.validate(cfg, UUAPP_SCHEMA)
    jsonschema.validate({"gateway": {}}, UUAPP_SCHEMA)
    jsonschema.validate({"uuApp": {"gateway": "uuapp.plus4u.net", "uuAppName": "a", "awid": "b"}}, UUAPP_SCHEMA)
    bad = [
        {**cfg, "uuApp": {**cfg["uuApp"], "gateway": "ftp://x"}},
        {**cfg, "uuApp": {**cfg["uuApp"], "timeout": 0}},
        {k: v for k, v in cfg.items() if k != "uuThing"},
        {**cfg, "oidcGrantToken": {**cfg["oidcGrantToken"], "verify": False}},
    ]
    for doc in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(doc, UUAPP_SCHEMA)


# ---------------------------------------------------------------------- tokens
def test_token_obtained_once_and_reused(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client:
        for i in range(5):
            response, exc = client.post(UPLOAD, {"data": [{"id": i}]})
            assert exc is None and response is not None and response.json()["accepted"] == [i]
    assert len(fake.grant_dtos) == 1
    headers = auth_headers(fake, UPLOAD)
    assert len(headers) == 5 and len(set(headers)) == 1 and headers[0].startswith("Bearer ey")
    grant = fake.grant_dtos[0]
    assert grant["grant_type"] == "password"
    assert grant["scope"] == f"openid {fake.url}/uu-fake-app/awid0"


def test_token_file_is_0600_atomic_and_holds_no_access_codes(fake: FakeUuApp, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with client_for(fake, tmp_path) as client:
            assert client.refresh_token() is True
    finally:
        os.umask(old)
    path = tmp_path / "token" / "oidc-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["oidc-token"]
    text = path.read_text()
    data = json.loads(text)
    assert set(data) == {"id_token", "expires_at", "expires_in"}
    assert fake.access_codes[0] not in text and fake.access_codes[1] not in text


def test_cached_token_reused_by_a_new_client(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as first:
        first.post(UPLOAD, {})
    with client_for(fake, tmp_path) as second:
        assert second.refresh_token() is False
        second.post(UPLOAD, {})
    assert len(fake.grant_dtos) == 1
    assert len(set(auth_headers(fake, UPLOAD))) == 1


def test_token_refreshed_token_leeway_before_expiry(fake: FakeUuApp, tmp_path: Path, token_clock: TokenClock) -> None:
    fake.token_ttl = 3600
    with client_for(fake, tmp_path, token_leeway=60) as client:
        client.post(UPLOAD, {})
        token_clock.advance(3600 - 60 - 5)
        assert not client.is_token_expired()
        client.post(UPLOAD, {})
        assert len(fake.grant_dtos) == 1
        token_clock.advance(10)
        assert client.is_token_expired()
        _response, exc = client.post(UPLOAD, {})
        assert exc is None
    assert len(fake.grant_dtos) == 2
    headers = auth_headers(fake, UPLOAD)
    assert headers[0] == headers[1] != headers[2]


@pytest.mark.parametrize("offset", [-7200.0, 7200.0])
def test_server_clock_skew_does_not_shorten_or_stretch_the_token(
    tmp_path: Path, offset: float, token_clock: TokenClock
) -> None:
    # Without expires_in the client has only the JWT exp, on the server's clock.
    with (
        FakeUuApp(clock_offset=offset, send_expires_in=False, token_ttl=600) as fake,
        client_for(fake, tmp_path, token_leeway=60) as client,
    ):
        assert client.refresh_token() is True
        assert client.refresh_token() is False
        token_clock.advance(600 - 60 - 5)
        assert client.refresh_token() is False
        token_clock.advance(10)
        assert client.refresh_token() is True


def test_cache_written_before_a_wall_clock_step_back_is_not_stretched(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.token_ttl = 600
    with client_for(fake, tmp_path) as client:
        client.refresh_token()
    path = tmp_path / "token" / "oidc-token"
    data = json.loads(path.read_text())
    data["expires_at"] += 10**6  # as if the clock was far ahead when the file was written
    path.write_text(json.dumps(data))
    with client_for(fake, tmp_path, token_leeway=60) as client:
        assert client.refresh_token() is False
        assert client._token is not None and client._token.remaining() <= 600


def test_corrupt_cache_is_replaced(fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token" / "oidc-token"
    path.parent.mkdir()
    path.write_text('{"id_token": "x", "expi')
    with client_for(fake, tmp_path) as client:
        assert client.refresh_token() is True
    assert "unreadable" in caplog.text
    assert json.loads(path.read_text())["id_token"].startswith("ey")


def test_a_token_cache_that_is_a_fifo_is_not_waited_on(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token" / "oidc-token"
    path.parent.mkdir()
    os.mkfifo(path)  # opened for reading, it would block until a writer came
    with client_for(fake, tmp_path) as client:
        assert client.refresh_token() is True
    assert "unreadable" in caplog.text
    assert json.loads(path.read_text())["id_token"].startswith("ey")


def test_concurrent_first_requests_grant_one_token(fake: FakeUuApp, tmp_path: Path) -> None:
    barrier = threading.Barrier(6)
    results: list[object] = []
    with client_for(fake, tmp_path) as client:

        def worker() -> None:
            barrier.wait()
            results.append(client.post(UPLOAD, {})[1])

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [None] * 6
    assert len(fake.grant_dtos) == 1


def test_401_from_app_invalidates_token_and_retries_once(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client:
        client.post(UPLOAD, {})
        fake.expire_tokens()
        response, exc = client.post(UPLOAD, {"data": [{"id": 7}]})
        assert exc is None and response is not None and response.json()["accepted"] == [7]
        assert len(fake.grant_dtos) == 2
        fake.fault("401", UPLOAD, count=2)
        response, exc = client.post(UPLOAD, {})
        assert response is not None and response.status_code == 401
        assert isinstance(exc, requests.HTTPError)
        assert len(fake.grant_dtos) == 3
        response, exc = client.post(UPLOAD, {})
        assert exc is None
        assert len(fake.grant_dtos) == 4


def test_refused_grant_raises_token_command_error_without_secrets(tmp_path: Path) -> None:
    with FakeUuApp(access_codes=("right1", "right2")) as fake:
        cfg = fake.config(str(tmp_path / "tok"))
        cfg["uuThing"]["accessCode1"] = "wrong-SECRET-1"
        with UuAppClient(cfg) as client:
            with pytest.raises(TokenCommandError) as info:
                client.refresh_token()
            assert info.value.status == 401
            assert "uu-oidc/invalid-credentials" in str(info.value)
            assert "wrong-SECRET-1" not in str(info.value)
            response, exc = client.post(UPLOAD, {})
            assert response is None and isinstance(exc, TokenCommandError)
    assert not (tmp_path / "tok").exists()


def test_no_oidc_section_means_no_authorization_header(tmp_path: Path) -> None:
    with FakeUuApp(require_auth=False) as fake:
        with UuAppClient(fake.config(auth=False)) as client:
            assert client.refresh_token() is False
            assert client.is_token_expired() is False
            assert "Authorization" not in client.get_auth_headers()
            _response, exc = client.post(UPLOAD, {"data": []})
            assert exc is None
        assert fake.grant_dtos == []
        assert [r.headers.get("authorization") for r in fake.for_cmd(UPLOAD)] == [None]


# ------------------------------------------------------------------ faults and the (response, exc) contract
def test_http_error_returns_response_and_exception(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.fault("5xx", UPLOAD)
    with client_for(fake, tmp_path) as client:
        response, exc = client.post(UPLOAD, {})
        assert response is not None and response.status_code == 503
        assert isinstance(exc, requests.HTTPError)
        assert client.post_ignore_http_err(UPLOAD, {}).status_code == 200
        fake.fault("5xx", UPLOAD)
        assert client.post_ignore_http_err(UPLOAD, {}).status_code == 503


def test_slow_server_times_out(tmp_path: Path) -> None:
    with FakeUuApp(slow_delay=5.0) as fake:
        fake.fault("slow", UPLOAD)
        with client_for(fake, tmp_path, timeout=0.3) as client:
            client.refresh_token()
            started = time.monotonic()
            response, exc = client.post(UPLOAD, {})
            assert time.monotonic() - started < 2.0
            assert response is None and isinstance(exc, requests.Timeout)
            response, exc = client.post(UPLOAD, {})
            assert exc is None


def test_connection_reset_and_lost_response(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client:
        client.refresh_token()
        for kind in ("reset", "lost"):
            fake.fault(kind, UPLOAD)
            response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
            assert response is None and isinstance(exc, requests.ConnectionError), kind
            with pytest.raises(requests.ConnectionError):
                fake.fault(kind, UPLOAD)
                client.post_ignore_http_err(UPLOAD, {})
        response, exc = client.post(UPLOAD, {})
        assert exc is None


def test_malformed_json_is_a_response_the_caller_must_check(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.fault("malformed", UPLOAD)
    with client_for(fake, tmp_path) as client:
        response, exc = client.post(UPLOAD, {})
        assert exc is None and response is not None
        with pytest.raises(ValueError):
            response.json()


def test_server_down_then_up(tmp_path: Path) -> None:
    fake = FakeUuApp().start()
    try:
        with client_for(fake, tmp_path) as client:
            fake.stop()
            response, exc = client.post(UPLOAD, {})
            assert response is None and isinstance(exc, TokenError)
            with pytest.raises(TokenError):
                client.get_ignore_http_err(UPLOAD)
            fake.start()
            response, exc = client.post(UPLOAD, {})
            assert exc is None
            fake.stop()
            response, exc = client.post(UPLOAD, {})
            assert response is None and isinstance(exc, requests.ConnectionError)
    finally:
        fake.stop()


# ---------------------------------------------------------------------- request shapes
def test_get_sends_dto_as_a_json_body_like_uun_iot(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.gateway_config = {"moduleTimers": {"heartbeat": 5}}
    with client_for(fake, tmp_path) as client:
        response, exc = client.get("gateway/getConfiguration", {"a": "x", "n": [1, 2]})
        assert exc is None and response is not None
        assert response.json()["moduleTimers"] == {"heartbeat": 5}
        client.get("gateway/getConfiguration")
        with UuCmdSession(client, "gateway/getConfiguration") as session:
            session.get({"s": 1})
    first, empty, on_session = fake.for_cmd("gateway/getConfiguration")
    assert first.method == "GET" and first.dto == {"a": "x", "n": [1, 2]}
    assert first.headers["content-type"] == "application/json"
    assert empty.dto == {} and on_session.dto == {"s": 1}


def test_get_sends_dto_in_the_query_string_when_told(fake: FakeUuApp, tmp_path: Path) -> None:
    fake.gateway_config = {"moduleTimers": {"heartbeat": 5}}
    with client_for(fake, tmp_path) as client:
        _response, exc = client.get("gateway/getConfiguration", {"a": "x", "n": [1, 2]}, query=True)
        assert exc is None
    (record,) = fake.for_cmd("gateway/getConfiguration")
    assert record.method == "GET" and record.dto == {"a": "x", "n": "[1, 2]"}
    assert "content-type" not in record.headers


def test_post_rejects_other_dto_types(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client, pytest.raises(ValueError):
        client.post(UPLOAD, "text")


def test_multipart_sends_bytes_as_file_parts(fake: FakeUuApp, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 4
    with client_for(fake, tmp_path) as client:
        response, exc = client.multipart(UPLOAD, {"id": 5, "name": "photo", "data": blob})
        assert exc is None and response is not None and response.json()["accepted"] == [5]
        encoder = MultipartEncoder(fields={"id": "6", "data": ("d", b"\x00\x01", "application/octet-stream")})
        response, exc = client.post(UPLOAD, encoder)
        assert exc is None
        fake.expire_tokens()
        response, exc = client.multipart(UPLOAD, {"id": 8, "data": blob})
        assert exc is None
    records = fake.for_cmd(UPLOAD, ok_only=True)
    assert [r.files["data"] for r in records] == [blob, b"\x00\x01", blob]
    assert records[0].dto == {"id": "5", "name": "photo"}
    assert records[0].headers["content-type"].startswith("multipart/form-data")


def test_uucmd_session_keeps_one_connection(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client, UuCmdSession(client, UPLOAD) as session:
        for i in range(5):
            _, exc = session.post({"data": [{"id": i}]})
            assert exc is None
        _response, exc = session.get({"q": "1"})
        assert exc is None
    peers = {r.peer for r in fake.for_cmd(UPLOAD)}
    assert len(peers) == 1
    assert len(fake.for_cmd(UPLOAD)) == 6


def test_client_requests_reuse_connections(fake: FakeUuApp, tmp_path: Path) -> None:
    with client_for(fake, tmp_path) as client:
        for _ in range(5):
            client.post(UPLOAD, {})
    assert len({r.peer for r in fake.for_cmd(UPLOAD)}) == 1


# ---------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_is_verified_and_a_custom_ca_bundle_works(tmp_path: Path, tls_cert: tuple[str, str]) -> None:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_cert)
    with FakeUuApp(ssl_context=ctx) as fake:
        cfg = fake.config(str(tmp_path / "tok"))
        with UuAppClient(cfg) as client:
            response, exc = client.post(UPLOAD, {})
            assert response is None and isinstance(exc, TokenError)
        cfg["uuApp"]["caBundle"] = tls_cert[0]
        with UuAppClient(cfg) as client:
            response, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
            assert exc is None and response is not None and response.json()["accepted"] == [1]


# ---------------------------------------------------------------------- secrets
def test_no_secret_in_logs_or_exceptions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = ["code-one-SECRET", "code-two-SECRET", "client-SECRET-x"]
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []
    with (
        FakeUuApp(client=("client-id", secrets[2]), access_codes=(secrets[0], secrets[1])) as fake,
        client_for(fake, tmp_path, timeout=0.3) as client,
    ):
        client.refresh_token()
        for kind in ("5xx", "401", "reset", "lost", "malformed", "slow"):
            fake.fault(kind, UPLOAD)
            _, exc = client.post(UPLOAD, {"data": [{"id": 1}]})
            messages.append(repr(exc))
            messages.append(str(exc))
        secrets.extend(fake.tokens)
        assert len(secrets) == 5  # two tokens: the 401 forced a second grant
        fake.expire_tokens()
        fake.fault("5xx", "oidc/grantToken")
        _, exc = client.post(UPLOAD, {})
        messages.append(str(exc))
        fake.stop()
        _, exc = client.post(UPLOAD, {})
        messages.append(str(exc))
    text = caplog.text + "\n".join(messages)
    assert "HTTP 503" in text  # the failures were logged at all
    for secret in secrets:
        assert secret not in text


def test_threads_waiting_on_a_failing_grant_share_its_failure(tmp_path: Path) -> None:
    with FakeUuApp(slow_delay=3.0) as fake:
        fake.fault("slow", "oidc/grantToken", count=10)
        barrier = threading.Barrier(4)
        results: list[object] = []
        with client_for(fake, tmp_path, timeout=0.4) as client:

            def worker() -> None:
                barrier.wait()
                results.append(client.post(UPLOAD, {})[1])

            started = time.monotonic()
            threads = [threading.Thread(target=worker) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
    assert all(isinstance(exc, TokenError) for exc in results) and len(results) == 4
    assert elapsed < 1.2  # one timeout, not four in a row


def test_a_late_401_for_an_old_token_keeps_the_renewed_one(tmp_path: Path) -> None:
    with FakeUuApp(slow_delay=1.0) as fake:
        client = UuAppClient(fake.config(str(tmp_path / "token")))
        try:
            assert client.post("gateway/warmup", {})[1] is None  # token 1
            fake.fault("slow", "gateway/slow")
            results: list[object] = []
            slow = threading.Thread(target=lambda: results.append(client.post("gateway/slow", {})[1]))
            slow.start()
            wait_for(lambda: not fake._faults.get("gateway/slow"))  # the slow request holds token 1
            fake.expire_tokens()
            assert client.post("gateway/other", {})[1] is None  # 401, token 2, retried
            assert client.grants == 2
            slow.join()  # its 401 for token 1 comes now: token 2 is still good
            assert results == [None]
            assert client.grants == 2, "a 401 for token 1 made the client drop token 2 and grant a third"
        finally:
            client.close()
