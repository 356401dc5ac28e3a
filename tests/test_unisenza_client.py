"""The Unisenza client against the local double: real paho-mqtt over TLS websockets signed with
SigV4, a real mosquitto broker, the fake cloud process (Cognito with a real SRP check, REST API,
SigV4-verifying front, shadow service). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.unisenza import (
    AuthenticationError,
    Client,
    ClientError,
    ClientOptions,
    CognitoAuth,
    Device,
    HvacDevice,
    RunningState,
    SystemMode,
    create_client,
    sigv4,
)
from uun_gateway.modules.unisenza.shadow import ShadowConnection

from tests.conftest import wait_for
from tests.unisenza_fakes import PASSWORD, USERNAME, CertFiles, CloudEnv, FakeCloud, fixtures

# The double's fixtures, shared with the other unisenza test module.
ca, shared_env, cloud = fixtures.ca, fixtures.shared_env, fixtures.cloud


FAST = ClientOptions(request_timeout=5.0, reconnect_min_delay=0.1, reconnect_max_delay=0.5)


@pytest.fixture
def make_client(cloud: FakeCloud) -> Iterator[Callable[..., Client]]:
    """Build connected clients against the fake; all are closed at the end of the test."""
    clients: list[Client] = []

    def make(
        password: str = PASSWORD, options: ClientOptions = FAST, connect: bool = True, clock: Any = time.time
    ) -> Client:
        auth = CognitoAuth(USERNAME, password, cloud.endpoints(), timeout=5, clock=clock)
        client = Client(auth, options)
        clients.append(client)
        if connect:
            client.login()
            client.populate_devices()
            assert client.connect(10)
        return client

    yield make
    for client in clients:
        client.close()


class Recorder:
    """Collects (device code, changes, thread name) from subscriptions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, dict[str, Any], str]] = []

    def __call__(self, device: Device[Any], changes: Any) -> None:
        with self.lock:
            self.events.append((device.get_device_code(), dict(changes), threading.current_thread().name))

    def seen(self, code: str, **expected: Any) -> bool:
        with self.lock:
            return any(
                c == code and all(ch.get(k) == v for k, v in expected.items()) and set(expected) <= set(ch)
                for c, ch, _ in self.events
            )


# -- login -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        (USERNAME, "wrong password", "Incorrect username or password"),
        ("nobody@example.com", PASSWORD, "UserNotFoundException"),
        ("mfa@example.com", PASSWORD, "unsupported login challenge 'SOFTWARE_TOKEN_MFA'"),
    ],
)
def test_login_failures_raise_authentication_error_once(
    cloud: FakeCloud, username: str, password: str, message: str
) -> None:
    auth = CognitoAuth(username, password, cloud.endpoints(), timeout=5)
    try:
        with pytest.raises(AuthenticationError, match=message) as info:
            auth.login()
    finally:
        auth.close()
    assert password not in str(info.value)
    stats = cloud.stats()
    assert stats["logins"] == 0
    assert stats["failed_logins"] == (0 if username.startswith("mfa") else 1)


def test_tls_verification_stays_on(cloud: FakeCloud) -> None:
    endpoints = dataclasses.replace(cloud.endpoints(), ca_file=None)  # system store: the test CA is unknown
    auth = CognitoAuth(USERNAME, PASSWORD, endpoints, timeout=5)
    try:
        with pytest.raises(ClientError, match="certificate verify failed"):
            auth.login()
    finally:
        auth.close()


def test_tokens_refresh_before_expiry_and_fall_back_to_the_password(cloud: FakeCloud) -> None:
    now = [time.time()]
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5, clock=lambda: now[0])
    try:
        first = auth.login()
        assert auth.tokens() is first  # fresh: no network
        now[0] += 3600 - 299  # within the 5-minute margin of the 1-hour lifetime
        second = auth.tokens()
        assert second.id_token != first.id_token and second.refresh_token == first.refresh_token
        assert cloud.stats()["refreshes"] == 1
        cloud.control("revoke_refresh")
        now[0] += 3600
        third = auth.tokens()
        assert third.refresh_token != first.refresh_token
        stats = cloud.stats()
        assert (stats["logins"], stats["refreshes"]) == (2, 1)
    finally:
        auth.close()


def test_credentials_are_cached_until_shortly_before_expiration(cloud: FakeCloud) -> None:
    now = [time.time()]
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5, clock=lambda: now[0])
    identity = "eu-central-1:11111111-1111-1111-1111-111111111111"
    try:
        first = auth.credentials(identity)
        assert auth.credentials(identity) is first
        assert first.expiration is not None
        now[0] = first.expiration - 10
        assert auth.credentials(identity).access_key_id != first.access_key_id
        assert cloud.stats()["credentials_issued"] == 2
        with pytest.raises(AuthenticationError, match="forbidden"):
            auth.credentials("eu-central-1:99999999-0000-0000-0000-000000000000")
    finally:
        auth.close()


# -- discovery and state ---------------------------------------------------------------------------------


def test_populate_and_refresh_all(make_client: Callable[..., Client], cloud: FakeCloud) -> None:
    client = make_client()
    gateways = client.get_gateways()
    assert [g.get_device_code() for g in gateways] == ["GW1", "GW2"]
    assert [c.get_name() for c in gateways[0].get_children()] == ["Living room", "Kitchen", "Bedroom"]
    assert gateways[0].get_identity_id() != gateways[1].get_identity_id()
    assert [d.get_device_code() for _, d in client.get_devices()] == ["GW1", "T1", "T2", "T3", "GW2", "T4"]
    client.refresh_all_devices()
    _, living = client.find_device("Living room")
    assert isinstance(living, HvacDevice)
    assert living.is_available()
    assert (living.get_current_temperature(), living.get_target_temperature()) == (21.35, 20.5)
    assert (living.get_min_temp(), living.get_max_temp()) == (5.0, 30.0)
    assert living.get_system_mode() is SystemMode.HEAT and living.get_running_state() is RunningState.IDLE
    assert living.get_euid() == "EUID-T1" and living.get_manufacturer() == "Purmo"
    assert gateways[0].get_ip_address() == "192.168.1.20" and gateways[0].is_available()
    assert client.find_device("T4")[0] is gateways[1]
    with pytest.raises(KeyError):
        client.find_device("Garage")
    assert cloud.stats()["front_accepted"] == 2  # one connection per gateway


def test_rediscovery_keeps_devices_and_connections_of_unchanged_gateways(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client()
    devices = [device for _, device in client.get_devices()]
    connections = client.connections()
    client.populate_devices()
    assert [device for _, device in client.get_devices()] == devices
    assert all(a is b for a, b in zip(client.connections(), connections, strict=True))
    assert cloud.stats()["front_accepted"] == 2


def test_rediscovery_adds_a_new_thermostat_and_reconnects_its_gateway(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client()
    old_gw1, old_gw2 = client.connections()
    _, living = client.find_device("T1")
    properties = {"ep1:sTherS:LocalTemperature_x100": "2400", "ep1:sTherS:RunningMode": 0}
    cloud.control(
        "add_thermostat",
        gateway="GW1",
        thermostat={"id": "new-id", "device_code": "T5", "name": "Attic", "properties": properties},
    )
    client.populate_devices()
    assert [d.get_device_code() for _, d in client.get_devices()] == ["GW1", "T1", "T2", "T3", "T5", "GW2", "T4"]
    assert client.find_device("T1")[1] is living  # existing objects (and their subscribers) are kept
    new_gw1, new_gw2 = client.connections()
    assert new_gw2 is old_gw2 and new_gw1 is not old_gw1 and "T5" in new_gw1.things
    wait_for(client.is_connected, timeout=10)
    _, attic = client.find_device("Attic")
    attic.refresh()
    assert isinstance(attic, HvacDevice)
    assert attic.get_current_temperature() == 24.0 and attic.get_system_mode() is SystemMode.OFF


def test_an_account_without_gateways(cloud: FakeCloud) -> None:
    with create_client("empty@example.com", PASSWORD, cloud.endpoints(), FAST, connect_timeout=5) as client:
        assert client.get_gateways() == [] and list(client.get_devices()) == []
        client.refresh_all_devices()
    assert cloud.stats()["front_accepted"] == 0


def test_a_refused_rest_token_is_an_authentication_error(cloud: FakeCloud) -> None:
    endpoints = dataclasses.replace(cloud.endpoints(), company="someone-else")
    auth = CognitoAuth(USERNAME, PASSWORD, endpoints, timeout=5)
    client = Client(auth, FAST)
    try:
        with pytest.raises(AuthenticationError, match="HTTP 401"):
            client.populate_devices()
    finally:
        client.close()
    assert cloud.stats()["rest_refused"] == 2  # retried once with refreshed tokens


def test_update_accepted_then_applied_report_reaches_subscribers(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client()
    client.refresh_all_devices()
    _, kitchen = client.find_device("Kitchen")
    assert isinstance(kitchen, HvacDevice)
    recorder = Recorder()
    kitchen.subscribe(recorder)
    kitchen.update_target_temperature(22.74)  # rounded to 22.5
    shadow = cloud.control("shadow", thing="T2")
    assert shadow["desired"]["11"]["properties"]["ep1:sTherS:SetHeatingSetpoint_x100"] == 2250
    wait_for(lambda: recorder.seen("T2", target_temperature=22.5), timeout=5)
    assert kitchen.get_target_temperature() == 22.5
    assert {name for _, _, name in recorder.events} == {"unisenza-worker"}
    kitchen.update_system_mode(SystemMode.OFF)
    wait_for(lambda: kitchen.get_system_mode() is SystemMode.OFF, timeout=5)


def test_update_rejected_and_invalid_values(make_client: Callable[..., Client], cloud: FakeCloud) -> None:
    client = make_client()
    client.refresh_all_devices()
    gateway, bedroom = client.find_device("T3")
    assert isinstance(bedroom, HvacDevice)
    cloud.control("reject_update", thing="T3", code=400, message="Invalid JSON")
    with pytest.raises(ClientError, match=r"Message rejected.*400 Invalid JSON"):
        bedroom.update_target_temperature(19)
    assert bedroom.get_target_temperature() == 18.0
    with pytest.raises(ValueError, match="outside the range"):
        bedroom.update_target_temperature(35)
    with pytest.raises(ValueError, match="unknown system mode"):
        bedroom.update_system_mode("auto")
    with pytest.raises(ValueError, match="cannot be updated"):
        client.update_device_state(gateway, bedroom, {"name": "x"})
    assert cloud.stats()["updates"] == {"T3": 1}  # the invalid ones were never sent


def test_cloud_pushes_reach_subscribers(make_client: Callable[..., Client], cloud: FakeCloud) -> None:
    client = make_client()
    client.refresh_all_devices()
    _, living = client.find_device("T1")
    recorder = Recorder()
    living.subscribe(recorder)
    cloud.control("push", thing="T1", properties={"ep1:sTherS:LocalTemperature_x100": "2250"})
    wait_for(lambda: recorder.seen("T1", current_temperature=22.5), timeout=5)
    cloud.control("push", thing="T1", properties={"ep1:sTherS:RunningState": 1})
    wait_for(lambda: recorder.seen("T1", running_state=RunningState.HEATING), timeout=5)
    cloud.control("push", thing="T1", connected="false")
    wait_for(lambda: recorder.seen("T1", available=False), timeout=5)
    assert not living.is_available()
    living.unsubscribe(recorder)
    count = len(recorder.events)
    cloud.control("push", thing="T1", connected="true")
    wait_for(living.is_available, timeout=5)
    assert len(recorder.events) == count


def test_no_reply_times_out_and_missing_shadow_is_rejected(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client()
    gateway, bedroom = client.find_device("T3")
    cloud.control("silence", thing="T3")
    began = time.monotonic()
    with pytest.raises(ClientError, match=r"no reply to get of T3 within 0\.5 s"):
        client.refresh_device_state(gateway, bedroom, timeout=0.5)
    assert time.monotonic() - began < 3
    with pytest.raises(ClientError, match="Unable to refresh: Bedroom"):
        client.refresh_all_devices(timeout=0.5)
    cloud.control("delete_shadow", thing="T2")
    _, kitchen = client.find_device("T2")
    with pytest.raises(ClientError, match="404 No shadow exists"):
        kitchen.refresh()


def test_close_fails_a_pending_request_at_once(make_client: Callable[..., Client], cloud: FakeCloud) -> None:
    client = make_client()
    gateway, living = client.find_device("T1")
    cloud.control("silence", thing="T1")
    errors: list[BaseException] = []

    def refresh() -> None:
        try:
            client.refresh_device_state(gateway, living, timeout=30)
        except ClientError as exc:
            errors.append(exc)

    thread = threading.Thread(target=refresh)
    thread.start()
    wait_for(lambda: cloud.stats()["gets"].get("T1", 0) >= 2, timeout=5)  # after-connect get + ours
    began = time.monotonic()
    client.close()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - began < 5
    assert len(errors) == 1 and "closed" in str(errors[0])


# -- connections ----------------------------------------------------------------------------------------


def test_gateways_with_many_things_are_split_over_connections(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client(options=dataclasses.replace(FAST, things_per_connection=2))
    connections = client.connections()
    assert [c.things for c in connections] == [("GW1", "T1"), ("T2", "T3"), ("GW2", "T4")]
    assert [c.client_id.split("-")[0] for c in connections] == ["GW1", "GW1", "GW2"]
    assert cloud.stats()["front_accepted"] == 3
    client.refresh_all_devices()
    assert all(device.is_available() for _, device in client.get_devices())


def test_forged_signature_is_refused_and_retried_with_fresh_credentials(cloud: FakeCloud) -> None:
    auth = CognitoAuth(USERNAME, PASSWORD, cloud.endpoints(), timeout=5)
    identity = "eu-central-1:11111111-1111-1111-1111-111111111111"
    fresh_flags: list[bool] = []

    def forged(headers: dict[str, str], fresh: bool) -> dict[str, str]:
        fresh_flags.append(fresh)
        real = auth.credentials(identity)
        fake = sigv4.AwsCredentials(real.access_key_id, "not-the-secret", real.session_token, real.expiration)
        when = dt.datetime.now(dt.UTC)
        signed: dict[str, str] = sigv4.sign_ws_headers(headers, "/mqtt", fake, "eu-central-1", when)
        return signed

    conn = ShadowConnection(
        ["GW1"],
        cloud.endpoints(),
        forged,
        lambda t, d: None,
        client_id="GW1-forged",
        reconnect_delay=(0.05, 0.1),
    )
    try:
        conn.start()
        wait_for(lambda: cloud.stats()["front_rejected"] >= 2, timeout=10)
        assert not conn.ready
        assert fresh_flags[:2] == [False, True]
    finally:
        conn.stop()
        auth.close()


def test_a_failing_signer_does_not_kill_the_network_thread(cloud: FakeCloud) -> None:
    attempts = threading.Semaphore(0)

    def broken(headers: dict[str, str], fresh: bool) -> dict[str, str]:
        attempts.release()
        raise ValueError("no credentials at all")

    conn = ShadowConnection(
        ["GW1"],
        cloud.endpoints(),
        broken,
        lambda t, d: None,
        client_id="GW1-broken",
        reconnect_delay=(0.05, 0.1),
    )
    try:
        conn.start()
        for _ in range(3):  # paho keeps retrying: its thread survived the error
            assert attempts.acquire(timeout=5)
    finally:
        conn.stop()


def test_dropped_connection_reconnects_with_new_credentials_and_refreshes(
    make_client: Callable[..., Client], cloud: FakeCloud
) -> None:
    client = make_client()
    connections = client.connections()
    gets_before = cloud.stats()["gets"]
    cloud.control("revoke_credentials")  # the cached ones are now refused: a 403 then fresh ones
    assert cloud.control("drop")["dropped"] == 2
    wait_for(lambda: all(c.connects == 2 for c in connections) and client.is_connected(), timeout=15)
    stats = cloud.stats()
    assert stats["front_rejected"] >= 2
    assert stats["credentials_issued"] >= 4
    wait_for(lambda: cloud.stats()["gets"].get("T4", 0) > gets_before.get("T4", 0), timeout=5)
    client.refresh_all_devices()  # resubscribed: replies arrive again


def test_create_client_is_ready_and_closes_on_exit(cloud: FakeCloud) -> None:
    with create_client(USERNAME, PASSWORD, cloud.endpoints(), FAST, connect_timeout=10) as client:
        assert client.is_connected()
        client.refresh_all_devices()
    assert not client.is_connected()
    with pytest.raises(AuthenticationError):
        create_client(USERNAME, "wrong", cloud.endpoints(), FAST, connect_timeout=10)


def test_broker_restart_marks_unavailable_then_reconnects_and_resubscribes(ca: CertFiles, tmp_path: Path) -> None:
    env = CloudEnv(ca, tmp_path)
    options = dataclasses.replace(FAST, unavailable_after=0.3, request_timeout=2.0)
    auth = CognitoAuth(USERNAME, PASSWORD, env.cloud.endpoints(), timeout=5)
    client = Client(auth, options)
    try:
        client.login()
        client.populate_devices()
        assert client.connect(10)
        client.refresh_all_devices()
        gateway, living = client.find_device("T1")
        assert isinstance(living, HvacDevice)
        recorder = Recorder()
        living.subscribe(recorder)
        env.broker.stop()
        wait_for(lambda: recorder.seen("T1", available=False), timeout=10)
        began = time.monotonic()
        with pytest.raises(ClientError, match="not connected"):
            client.refresh_device_state(gateway, living)
        assert time.monotonic() - began < 1  # fails fast, not after the request timeout
        env.broker.start()
        wait_for(lambda: client.is_connected() and env.cloud.stats()["service_connects"] >= 2, timeout=20)
        client.refresh_all_devices()  # resubscribed: the replies reach us again
        wait_for(lambda: recorder.seen("T1", available=True), timeout=5)
        env.cloud.control("push", thing="T1", properties={"ep1:sTherS:LocalTemperature_x100": "1950"})
        wait_for(lambda: living.get_current_temperature() == 19.5, timeout=5)
    finally:
        client.close()
        env.close()
