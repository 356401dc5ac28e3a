"""Unisenza client pieces without the network: SRP and SigV4 against published vectors, shadow
document mapping, models, endpoints, and the websocket header callable's error conversion."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from uun_gateway.modules.unisenza import (
    DeviceType,
    Endpoints,
    HvacAttributes,
    HvacDevice,
    RunningState,
    SystemMode,
    mapping,
    sigv4,
    srp,
)
from uun_gateway.modules.unisenza.shadow import ShadowConnection

UTC = dt.UTC

# -- SRP ----------------------------------------------------------------------------------------

# Regression vector computed with pycognito 2024.5.1 (see notes/unisenza.md, section 2.4).
SRP_POOL = "eu-central-1_TestPool1"
SRP_USER_ID = "user-id-1"
SRP_PASSWORD = "P@ssw0rd!"
SRP_A_SECRET = int("e0b107f9f96f69a2b6165a2ac7ae551643a4240881e2c14a01e8e9a56212a39a", 16)
SRP_B_SECRET = int("2ba8c445a8ffa6c4f024af5300867d7ea7d5c99b6e564fd8335aab70a36b9af8", 16)
SRP_SALT = "5a1759f1e0a1b2c3d4e5f60718293a4b"
SRP_SECRET_BLOCK = "c2VjcmV0LWJsb2NrLWJ5dGVz"
SRP_TIMESTAMP = "Fri Jan 5 09:04:07 UTC 2024"


def server_b(password: str, b: int, user_id: str = SRP_USER_ID, salt: str = SRP_SALT) -> tuple[int, int]:
    """The server side of Cognito's SRP: verifier v and B = k*v + g^b."""
    x = srp.password_hash(SRP_POOL.split("_")[1], user_id, password, salt)
    v = pow(srp.G, x, srp.N)
    return v, (srp.K * v + pow(srp.G, b, srp.N)) % srp.N


def test_srp_group_is_the_rfc5054_3072_bit_group() -> None:
    assert srp.N.bit_length() == 3072
    assert srp.N_HEX.startswith("FFFFFFFFFFFFFFFFC90FDAA22168C234") and srp.N_HEX.endswith("FFFFFFFFFFFFFFFF")
    assert pow(2, srp.N - 1, srp.N) == 1  # Fermat: N is (probably) prime
    assert pow(2, (srp.N - 1) // 2, srp.N) in (1, srp.N - 1)  # consistent with a safe prime
    assert format(srp.K, "x").startswith("538282c4354742d7")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0x7F, "7f"), (0x80, "0080"), (0xABC, "0abc"), (0x1234, "1234"), (0xFF00, "00ff00"), (1, "01")],
)
def test_pad_hex_is_even_and_positive(value: int, expected: str) -> None:
    assert srp.pad_hex(value) == expected


def test_srp_password_claim_matches_the_published_vector() -> None:
    big_a = srp.public_a(SRP_A_SECRET)
    _, big_b = server_b(SRP_PASSWORD, SRP_B_SECRET)
    assert hashlib.sha256(format(big_a, "x").encode()).hexdigest() == (
        "ef4021200a728f59913143c2f85d795a3f568879670fe6327babd6f871ab8e85"
    )
    assert hashlib.sha256(format(big_b, "x").encode()).hexdigest() == (
        "74760ee86d34c607340620677d425d4a7c092c50df4fbca75c57a014342c86a9"
    )
    claim = srp.password_claim(
        SRP_A_SECRET, "TestPool1", SRP_USER_ID, SRP_PASSWORD, SRP_SALT, format(big_b, "x"), SRP_SECRET_BLOCK,
        SRP_TIMESTAMP,
    )  # fmt: skip
    assert claim == "anpHOhno4HoXOAFc5l8WwnIvgape5eYVXgjMLsmCR00="


@pytest.mark.parametrize(("password", "agrees"), [(SRP_PASSWORD, True), ("wrong", False)])
def test_srp_client_and_server_keys_agree_only_with_the_right_password(password: str, agrees: bool) -> None:
    a, b = srp.generate_private(), secrets.randbits(256)
    big_a = srp.public_a(a)
    v, big_b = server_b(SRP_PASSWORD, b)
    client_key = srp.client_session_key(a, big_a, big_b, "TestPool1", SRP_USER_ID, password, SRP_SALT)
    u = srp.hash_int(big_a, big_b)
    server_key = srp.session_key(pow(big_a * pow(v, u, srp.N), b, srp.N), u)
    assert (client_key == server_key) is agrees


def test_srp_rejects_a_degenerate_server_value() -> None:
    with pytest.raises(ValueError, match="B is 0"):
        srp.password_claim(5, "P", "u", "p", "00", format(srp.N, "x"), SRP_SECRET_BLOCK, SRP_TIMESTAMP)


def test_cognito_timestamp_is_english_unpadded_utc() -> None:
    cest = dt.timezone(dt.timedelta(hours=2))
    assert srp.cognito_timestamp(dt.datetime(2024, 1, 5, 9, 4, 7, tzinfo=UTC)) == SRP_TIMESTAMP
    assert srp.cognito_timestamp(dt.datetime(2026, 11, 23, 0, 30, 0, tzinfo=cest)) == "Sun Nov 22 22:30:00 UTC 2026"


# -- SigV4 ----------------------------------------------------------------------------------------

SUITE_CREDS = sigv4.AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_TIME = dt.datetime(2015, 8, 30, 12, 36, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "method", "path", "signature"),
    [
        ("get-vanilla", "GET", "/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        ("post-vanilla", "POST", "/", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ],
)
def test_sigv4_matches_the_aws_test_suite(name: str, method: str, path: str, signature: str) -> None:
    signed = sigv4.sign_headers(
        method, path, {"Host": "example.amazonaws.com"}, SUITE_CREDS, "us-east-1", "service", SUITE_TIME
    )
    assert signed["X-Amz-Date"] == "20150830T123600Z"
    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )


def test_sigv4_string_to_sign_of_get_vanilla() -> None:
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    canonical = sigv4.canonical_request("GET", "/", "", headers, ["host", "x-amz-date"], sigv4.EMPTY_SHA256)
    assert canonical == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    to_sign = sigv4.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", canonical)
    assert to_sign.endswith("\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")


def test_sigv4_matches_the_s3_documentation_example() -> None:
    creds = sigv4.AwsCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = {
        "Host": "examplebucket.s3.amazonaws.com",
        "Range": "bytes=0-9",
        "x-amz-content-sha256": sigv4.EMPTY_SHA256,
    }
    when = dt.datetime(2013, 5, 24, tzinfo=UTC)
    signed = sigv4.sign_headers("GET", "/test.txt", headers, creds, "us-east-1", "s3", when)
    assert signed["Authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_sigv4_websocket_upgrade_matches_awscrt() -> None:
    host = "a1b4blxx3o9kj3-ats.iot.eu-central-1.amazonaws.com"
    creds = sigv4.AwsCredentials(
        "ASIAEXAMPLEEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzEXAMPLE+/=token"
    )
    paho_headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Origin": f"https://{host}",
        "Sec-WebSocket-Key": "3E+rqpFnTXS2/NqcLTd5+Q==",
        "Sec-Websocket-Version": "13",
        "Sec-Websocket-Protocol": "mqtt",
    }
    when = dt.datetime(2025, 3, 9, 18, 33, 20, tzinfo=UTC)
    signed = sigv4.sign_ws_headers(paho_headers, "/mqtt", creds, "eu-central-1", when)
    assert signed["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE+/=token"
    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE/20250309/eu-central-1/iotdevicegateway/aws4_request, "
        "SignedHeaders=connection;host;origin;x-amz-date;x-amz-security-token, "
        "Signature=0ff8f80865a4d2d9d3a9bffbaf3288d70a79c9283353fdb3dd5d0ba25c32e0ef"
    )
    parsed = sigv4.parse_authorization(signed["Authorization"])
    assert (parsed.access_key_id, parsed.region, parsed.service) == (
        "ASIAEXAMPLEEXAMPLE",
        "eu-central-1",
        "iotdevicegateway",
    )
    assert "wJalr" not in repr(creds) and "FwoG" not in repr(creds)


def test_parse_authorization_rejects_other_schemes() -> None:
    with pytest.raises(ValueError):
        sigv4.parse_authorization("Bearer abc")
    with pytest.raises(ValueError):
        sigv4.parse_authorization("AWS4-HMAC-SHA256 Credential=x/y, Signature=z")


# -- mapping -----------------------------------------------------------------------------------------


def test_parse_document_accepts_strings_and_ints_and_skips_bad_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    doc = {
        "state": {
            "reported": {
                "connected": "false",
                "11": {
                    "properties": {
                        "ep1:sTherS:HeatingSetpoint_x100": "2050",
                        "ep1:sTherS:LocalTemperature_x100": 2135,
                        "ep1:sTherS:RunningMode": "4",
                        "ep1:sTherS:RunningState": 7,
                        "ep1:sHumiS:MeasuredValue_x100": "not a number",
                        "ep1:sPowerS:BatteryRemaining": "80",
                        "ep1:sZDO:EUID": "0011",
                    }
                },
            }
        }
    }
    with caplog.at_level(logging.WARNING):
        changes = mapping.parse_document(doc, DeviceType.HVAC)
    assert changes == {
        "available": False,
        "target_temperature": 20.5,
        "current_temperature": 21.35,
        "system_mode": SystemMode.HEAT,
        "running_state": 7,
        "battery_level": 80,
        "euid": "0011",
    }
    assert "not a number" in caplog.text and "unknown running state 7" in caplog.text


def test_parse_document_reads_the_gateway_section_and_ignores_desired_echoes() -> None:
    doc = {"state": {"reported": {"000000000001": {"properties": {"ep0:sGateway:NetworkLANIP": "10.0.0.2"}}}}}
    assert mapping.parse_document(doc, DeviceType.GATEWAY) == {"ip_address": "10.0.0.2"}
    assert mapping.parse_document({"state": {"desired": {"11": {}}}}, DeviceType.HVAC) == {}


def test_parse_document_skips_null_properties_silently(caplog: pytest.LogCaptureFixture) -> None:
    # before: str(None) gave the serial number, EUID and IP "None", a null number a warning per document
    doc = json.loads(
        '{"state": {"reported": {"connected": null, "11": {"properties": {'
        '"ep1:sPowerMS:RadSerialNum": null, "ep1:sZDO:EUID": null, "ep1:sBasicS:ManufactureName": null,'
        '"ep1:sTherS:LocalTemperature_x100": null, "ep1:sPowerS:BatteryRemaining": null,'
        '"ep1:sTherS:RunningMode": null, "ep1:sTherS:HeatingSetpoint_x100": 2100}}}}}'
    )
    with caplog.at_level(logging.DEBUG, logger="uun_gateway.modules.unisenza"):
        assert mapping.parse_document(doc, DeviceType.HVAC) == {"target_temperature": 21.0}
        gateway_doc = {"state": {"reported": {"000000000001": {"properties": {"ep0:sGateway:NetworkLANIP": None}}}}}
        assert mapping.parse_document(gateway_doc, DeviceType.GATEWAY) == {}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_null_value_keeps_the_attribute_it_would_replace() -> None:
    device = HvacDevice(
        HvacAttributes(id="1", type=DeviceType.HVAC, device_code="d", model="m", name="n", serial_number="S1"),
        lambda d: None,
        lambda d, c: None,
    )
    doc = {"state": {"reported": {"11": {"properties": {"ep1:sPowerMS:RadSerialNum": None}}}}}
    device.set_attributes(mapping.parse_document(doc, DeviceType.HVAC))
    assert device.get_serial_number() == "S1"


def test_update_document_uses_the_write_keys() -> None:
    doc = mapping.update_document({"target_temperature": 21.5, "system_mode": SystemMode.OFF})
    assert doc == {
        "state": {
            "desired": {
                "11": {"properties": {"ep1:sTherS:SetHeatingSetpoint_x100": 2150, "ep1:sTherS:SetSystemMode": 0}}
            }
        }
    }
    with pytest.raises(ValueError):
        mapping.update_document({"name": "x"})
    with pytest.raises(ValueError):
        mapping.update_document({"system_mode": 1})


# -- models ------------------------------------------------------------------------------------------


def hvac(**attrs: Any) -> HvacDevice:
    base = HvacAttributes(id="u1", type=DeviceType.HVAC, device_code="T1", model="m", name="Living room")
    sent: list[Any] = []
    device = HvacDevice(base, lambda d: None, lambda d, changes: sent.append(dict(changes)))
    device.apply_changes(attrs)
    device.sent = sent  # type: ignore[attr-defined,unused-ignore]
    return device


def test_target_temperature_is_rounded_and_checked_against_the_device_range() -> None:
    device = hvac(min_temp=7.0, max_temp=28.0)
    assert device.validate_target_temperature(21.26) == 21.5
    assert device.validate_target_temperature("7") == 7.0
    for bad in (6.5, 28.5, float("nan"), "warm"):
        with pytest.raises(ValueError):
            device.validate_target_temperature(bad)
    device.update_target_temperature(22.24)
    device.update_system_mode("off")
    assert device.sent == [{"target_temperature": 22.0}, {"system_mode": SystemMode.OFF}]  # type: ignore[attr-defined,unused-ignore]
    with pytest.raises(ValueError, match="unknown system mode"):
        device.update_system_mode("auto")
    assert hvac().validate_target_temperature(30) == 30.0  # default range 5..30
    with pytest.raises(ValueError):
        hvac().validate_target_temperature(4.5)


def test_subscribers_get_actual_changes_and_a_failing_one_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = hvac(current_temperature=20.0)
    seen: list[dict[str, Any]] = []

    def broken(dev: Any, changes: Any) -> None:
        raise RuntimeError("boom")

    def good(dev: Any, changes: Any) -> None:
        seen.append(dict(changes))

    device.subscribe(broken)
    device.subscribe(good)
    device.set_attributes({"current_temperature": 20.0, "running_state": RunningState.HEATING})
    device.unsubscribe(good)
    device.set_attributes({"current_temperature": 21.0})
    assert seen == [{"running_state": RunningState.HEATING}]
    assert "boom" in caplog.text
    assert device.get_current_temperature() == 21.0


# -- endpoints and the header callable -------------------------------------------------------------------


def test_endpoints_from_config_round_trip_and_unknown_keys() -> None:
    endpoints = Endpoints.from_config({"iotHost": "127.0.0.1", "iotPort": 8883, "caFile": "/x/ca.pem"})
    assert endpoints.iot_host == "127.0.0.1" and endpoints.tls_verify == "/x/ca.pem"
    assert Endpoints.from_config(endpoints.to_config()) == endpoints
    assert Endpoints().logins_key == "cognito-idp.eu-central-1.amazonaws.com/eu-central-1_HfciXliKM"
    assert Endpoints().pool_name == "HfciXliKM"
    with pytest.raises(ValueError, match="iotHots"):
        Endpoints.from_config({"iotHots": "x"})


def test_any_signer_error_becomes_oserror_so_paho_retries() -> None:
    calls: list[bool] = []

    def signer(headers: dict[str, str], fresh: bool) -> dict[str, str]:
        calls.append(fresh)
        raise KeyError("no credentials")

    conn = ShadowConnection(["T1"], Endpoints(), signer, lambda thing, doc: None, client_id="GW1-x")
    try:
        for _ in range(2):
            with pytest.raises(OSError, match="signing the websocket upgrade failed"):
                conn._ws_headers({"Host": "h"})
    finally:
        conn.stop()
    assert calls == [False, True]  # the second attempt asks for fresh credentials


def test_a_refused_subscription_keeps_the_connection_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    # mosquitto grants ACL-denied subscriptions on MQTT 3.1.1, so the SUBACK failure is fed in directly.
    ready: list[object] = []
    conn = ShadowConnection(
        ["GW1", "T3"], Endpoints(), lambda h, f: h, lambda thing, doc: None, client_id="GW1-x", on_ready=ready.append
    )
    try:
        conn._suback_pending.update({1: "GW1", 2: "T3"})
        conn._handle_subscribe(conn._mqtt, None, 1, [ReasonCode(PacketTypes.SUBACK, identifier=0)], None)
        conn._handle_subscribe(conn._mqtt, None, 2, [ReasonCode(PacketTypes.SUBACK, identifier=0x80)], None)
        assert not conn.ready and ready == []
        assert "subscription for T3 refused" in caplog.text
        conn._suback_pending.update({3: "GW1", 4: "T3"})  # after a reconnect, all granted
        conn._subscribe_failed = False
        for mid in (3, 4):
            conn._handle_subscribe(conn._mqtt, None, mid, [ReasonCode(PacketTypes.SUBACK, identifier=0)], None)
        assert conn.ready and ready == [conn]
    finally:
        conn.stop()
