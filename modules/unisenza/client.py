"""Thread-based Unisenza Plus client: devices, refresh, update, change notifications.

Threads: one paho network thread per :class:`~.shadow.ShadowConnection` (one per cloud
gateway, more when a gateway has more things than ``things_per_connection``), plus one worker
thread that runs subscriber callbacks, the refresh after every (re)connect and the
availability timeout. Public methods are thread-safe and may be called from any thread,
subscriber callbacks included (a blocking call there only delays later notifications); every
blocking call is bounded by the request timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

from . import mapping, sigv4
from .api import ServiceApi
from .auth import CognitoAuth
from .endpoints import Endpoints
from .errors import ClientError
from .models import Device, DeviceType, Gateway, GatewayAttributes, HvacAttributes, HvacDevice
from .shadow import ShadowConnection, ShadowRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientOptions:
    """Tunables. Times in seconds.

    - ``request_timeout``: the longest any shadow request waits for its reply;
    - ``unavailable_after``: devices of a lost connection become unavailable after this;
    - ``things_per_connection``: at most this many things (4 subscriptions each) share one MQTT
      connection (AWS IoT allows 50 subscriptions per connection by default);
    - ``reconnect_min_delay``/``reconnect_max_delay``: the exponential reconnect backoff;
    - ``connect_timeout``: the longest one MQTT connection attempt (TCP, TLS, websocket upgrade,
      CONNACK) may take before it is cut short and retried.
    """

    request_timeout: float = 30.0
    unavailable_after: float = 60.0
    things_per_connection: int = 12
    keepalive: int = 30
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 120.0
    connect_timeout: float = 10.0


class Client:
    """The Unisenza Plus cloud client (the thread-based counterpart of pyupgw's ``Client``).

    Life: ``populate_devices()`` (discovery over HTTP) -> ``connect()`` (MQTT, background) ->
    ``refresh_*``/``update_*`` -> ``close()``. Usable as a context manager (closes on exit).
    Errors: ClientError (AuthenticationError for refused credentials); ValueError for bad
    arguments (unknown attribute, value out of range).
    """

    def __init__(self, auth: CognitoAuth, options: ClientOptions | None = None, api: ServiceApi | None = None) -> None:
        self._auth = auth
        self.options = options or ClientOptions()
        self._api = api or ServiceApi(auth, timeout=min(self.options.request_timeout, 30.0))
        self._lock = threading.RLock()
        self._gateways: dict[str, Gateway] = {}
        self._devices: dict[str, tuple[Gateway, Device[Any]]] = {}
        self._connections: dict[str, list[ShadowConnection]] = {}
        self._thing_connection: dict[str, ShadowConnection] = {}
        self._connecting = False
        self._closed = False
        self._events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="unisenza-worker", daemon=True)
        self._worker.start()

    @property
    def endpoints(self) -> Endpoints:
        """The endpoints of the underlying auth session."""
        return self._auth.endpoints

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- devices ---------------------------------------------------------------------------

    def login(self) -> None:
        """Log in with the password now (otherwise the first request does). Raises
        AuthenticationError or ClientError."""
        self._auth.login()

    def populate_devices(self) -> None:
        """Fetch the user's gateways and thermostats (HTTP) and build or update the device
        objects. Existing device objects are kept (subscribers stay); a gateway whose set of
        things changed gets new connections. Raises AuthenticationError or ClientError."""
        trees = self._api.discover()
        with self._lock:
            if self._closed:
                raise ClientError("client is closed")
            seen: set[str] = set()
            for gw_attrs, children in trees:
                seen.add(gw_attrs.device_code)
                self._merge_gateway(gw_attrs, children)
            for code in [c for c in self._gateways if c not in seen]:
                log.info("gateway %s disappeared from the account", code)
                self._drop_connections(code)
                gateway = self._gateways.pop(code)
                self._devices.pop(code, None)
                for child in gateway.children:
                    self._devices.pop(child.get_device_code(), None)

    def _merge_gateway(self, gw_attrs: GatewayAttributes, children: list[HvacAttributes]) -> None:
        code = gw_attrs.device_code
        gateway = self._gateways.get(code)
        static = ("id", "model", "name", "occupant")
        if gateway is None:
            gateway = Gateway(gw_attrs, self._dispatch_refresh, self._dispatch_update)
            self._gateways[code] = gateway
            self._devices[code] = (gateway, gateway)
        else:
            gateway.apply_changes({k: getattr(gw_attrs, k) for k in static})
        old_things = [gateway.get_device_code(), *(c.get_device_code() for c in gateway.children)]
        new_children: list[HvacDevice] = []
        for attrs in children:
            existing = self._devices.get(attrs.device_code)
            if existing is not None and isinstance(existing[1], HvacDevice):
                device = existing[1]
                device.apply_changes({k: getattr(attrs, k) for k in ("id", "model", "name")})
            else:
                device = HvacDevice(attrs, self._dispatch_refresh, self._dispatch_update)
            self._devices[attrs.device_code] = (gateway, device)
            new_children.append(device)
        for old in gateway.children:
            if old not in new_children:
                self._devices.pop(old.get_device_code(), None)
        gateway.children = new_children
        new_things = [code, *(c.get_device_code() for c in new_children)]
        if code not in self._connections or old_things != new_things:
            self._drop_connections(code, keep_slot=True)
            self._create_connections(gateway, new_things)

    def _create_connections(self, gateway: Gateway, things: list[str]) -> None:
        identity_id = gateway.get_identity_id()
        if identity_id is None:
            raise ClientError(f"gateway {gateway.get_device_code()} has no identity id")
        size = max(1, self.options.things_per_connection)
        conns = []
        for start in range(0, len(things), size):
            conn = ShadowConnection(
                things[start : start + size],
                self.endpoints,
                self._make_signer(identity_id),
                self._on_document,
                client_id=f"{gateway.get_device_code()}-{uuid.uuid4()}",
                on_ready=lambda c: self._events.put(("ready", c, None)),
                on_lost=lambda c: self._events.put(("lost", c, None)),
                keepalive=self.options.keepalive,
                reconnect_delay=(self.options.reconnect_min_delay, self.options.reconnect_max_delay),
                connect_timeout=self.options.connect_timeout,
            )
            conns.append(conn)
            for thing in conn.things:
                self._thing_connection[thing] = conn
            if self._connecting:
                conn.start()
        self._connections[gateway.get_device_code()] = conns

    def _drop_connections(self, gateway_code: str, keep_slot: bool = False) -> None:
        conns = self._connections.get(gateway_code, [])
        if keep_slot:
            self._connections[gateway_code] = []  # keeps the gateway's place in the order
        else:
            self._connections.pop(gateway_code, None)
        for conn in conns:
            for thing in conn.things:
                if self._thing_connection.get(thing) is conn:
                    del self._thing_connection[thing]
            conn.stop()

    def _make_signer(self, identity_id: str) -> Any:
        auth = self._auth
        endpoints = self.endpoints

        def sign(headers: dict[str, str], fresh: bool) -> dict[str, str]:
            if fresh:
                auth.invalidate_credentials(identity_id)
            credentials = auth.credentials(identity_id)
            now = dt.datetime.now(dt.UTC)
            return sigv4.sign_ws_headers(headers, endpoints.iot_path, credentials, endpoints.region, now)

        return sign

    def get_gateways(self) -> list[Gateway]:
        """The known gateways (after :meth:`populate_devices`)."""
        with self._lock:
            return list(self._gateways.values())

    def get_devices(self) -> Iterator[tuple[Gateway, Device[Any]]]:
        """``(gateway, device)`` pairs; a gateway appears as ``(gateway, gateway)`` followed by its
        thermostats."""
        for gateway in self.get_gateways():
            yield gateway, gateway
            for child in gateway.get_children():
                yield gateway, child

    def find_device(self, key: str) -> tuple[Gateway, Device[Any]]:
        """The device whose device code, id or name equals ``key`` (in that order of
        preference). Raises KeyError when none matches."""
        with self._lock:
            pairs = list(self.get_devices())
        for attr in ("device_code", "id", "name"):
            for gateway, device in pairs:
                if getattr(device.get_attributes(), attr) == key:
                    return gateway, device
        raise KeyError(f"no device with code, id or name {key!r}")

    # -- connections -------------------------------------------------------------------------

    def connect(self, timeout: float | None = 0.0) -> bool:
        """Start every MQTT connection (background; later gateways start when discovered) and
        wait up to ``timeout`` seconds (None: forever) until all are ready. Returns True when
        all are ready. Never raises for network problems: connections keep retrying."""
        with self._lock:
            if self._closed:
                raise ClientError("client is closed")
            self._connecting = True
            conns = [c for cs in self._connections.values() for c in cs]
        for conn in conns:
            conn.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for conn in conns:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not conn.wait_ready(remaining):
                return False
        return True

    def is_connected(self) -> bool:
        """True when every connection is ready."""
        with self._lock:
            conns = [c for cs in self._connections.values() for c in cs]
        return bool(conns) and all(c.ready for c in conns)

    def connections(self) -> list[ShadowConnection]:
        """The current MQTT connections (for diagnostics)."""
        with self._lock:
            return [c for cs in self._connections.values() for c in cs]

    def _connection_for(self, device: Device[Any]) -> ShadowConnection:
        with self._lock:
            conn = self._thing_connection.get(device.get_device_code())
        if conn is None:
            raise ClientError(f"{device!r} is not managed by this client")
        return conn

    # -- refresh and update ------------------------------------------------------------------

    def refresh_device_state(self, gateway: Gateway, device: Device[Any], timeout: float | None = None) -> None:
        """Ask the cloud for the device's shadow and wait until the reply has been applied to
        the model. Raises ClientError (not connected, rejected, no reply within the timeout)."""
        limit = self.options.request_timeout if timeout is None else timeout
        try:
            self._connection_for(device).request(device.get_device_code(), "get", None, limit)
        except ClientError as exc:
            raise ClientError(f"Unable to request state for {device.get_name()}: {exc}") from exc

    def refresh_all_devices(self, timeout: float | None = None) -> None:
        """Refresh every device: all requests are sent first, then awaited together (the
        whole call takes at most about one timeout). Raises ClientError naming the devices that
        failed, after trying all of them."""
        limit = self.options.request_timeout if timeout is None else timeout
        failures = self._refresh_things([d for _, d in self.get_devices()], limit)
        if failures:
            raise ClientError("Unable to refresh: " + "; ".join(failures))

    def _refresh_things(self, devices: list[Device[Any]], limit: float) -> list[str]:
        failures: list[str] = []
        requests: list[tuple[Device[Any], ShadowRequest]] = []
        for device in devices:
            try:
                conn = self._connection_for(device)
                requests.append((device, conn.start_request(device.get_device_code(), "get")))
            except ClientError as exc:
                failures.append(f"{device.get_name()}: {exc}")
        deadline = time.monotonic() + limit
        for device, request in requests:
            try:
                request.result(max(0.0, deadline - time.monotonic()))
            except ClientError as exc:
                failures.append(f"{device.get_name()}: {exc}")
        return failures

    def update_device_state(
        self, gateway: Gateway, device: Device[Any], changes: Mapping[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send changes (``target_temperature`` °C, ``system_mode``) to the device's shadow and
        wait until the cloud accepted them (the device applies them later; its report updates
        the model and notifies subscribers). Returns the accepted document.

        Raises ValueError for unsupported attributes; ClientError when not connected,
        rejected, or no reply within the timeout."""
        if device.get_type() is not DeviceType.HVAC:
            raise ValueError(f"{device!r} has no writable attributes")
        document = mapping.update_document(changes)
        limit = self.options.request_timeout if timeout is None else timeout
        try:
            return self._connection_for(device).request(device.get_device_code(), "update", document, limit)
        except ClientError as exc:
            raise ClientError(f"Unable to update {device.get_name()}: {exc}") from exc

    def _dispatch_refresh(self, device: Device[Any]) -> None:
        gateway, _ = self._devices[device.get_device_code()]
        self.refresh_device_state(gateway, device)

    def _dispatch_update(self, device: Device[Any], changes: Mapping[str, Any]) -> None:
        gateway, _ = self._devices[device.get_device_code()]
        self.update_device_state(gateway, device, changes)

    # -- events (paho thread -> worker) --------------------------------------------------------

    def _on_document(self, thing: str, doc: dict[str, Any]) -> None:
        pair = self._devices.get(thing)
        if pair is None:
            return
        device = pair[1]
        actual = device.apply_changes(mapping.parse_document(doc, device.get_type()))
        if actual:
            self._events.put(("notify", device, actual))

    def _work(self) -> None:
        deadlines: dict[ShadowConnection, float] = {}
        while True:
            wait = None
            if deadlines:
                wait = max(0.0, min(deadlines.values()) - time.monotonic())
            try:
                kind, subject, payload = self._events.get(timeout=wait)
            except queue.Empty:
                kind, subject, payload = "tick", None, None
            try:
                if kind == "stop":
                    return
                if kind == "notify":
                    subject.notify(payload)
                elif kind == "lost":
                    deadlines[subject] = time.monotonic() + self.options.unavailable_after
                elif kind == "ready":
                    deadlines.pop(subject, None)
                    self._refresh_after_connect(subject)
                now = time.monotonic()
                for conn in [c for c, t in deadlines.items() if t <= now]:
                    del deadlines[conn]
                    self._mark_unavailable(conn)
            except Exception:
                log.exception("unisenza worker: handling %s failed", kind)

    def _refresh_after_connect(self, conn: ShadowConnection) -> None:
        with self._lock:
            devices = [self._devices[t][1] for t in conn.things if t in self._devices]
        failures = self._refresh_things(devices, self.options.request_timeout)
        if failures:
            log.warning("refresh after connect failed: %s", "; ".join(failures))

    def _mark_unavailable(self, conn: ShadowConnection) -> None:
        if conn.ready:
            return
        log.warning("%s: still disconnected; marking its devices unavailable", conn.client_id)
        for thing in conn.things:
            pair = self._devices.get(thing)
            if pair is not None:
                pair[1].set_attributes({"available": False})

    # -- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop all connections (pending requests fail with ClientError), the worker thread and
        the HTTP sessions. Idempotent; any thread. HTTP calls and MQTT connection attempts in
        progress are cut short (they fail with ClientError), so it returns promptly after every
        thread of the client has ended (called from a subscriber callback it does not wait for
        the worker thread itself)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = [c for cs in self._connections.values() for c in cs]
            self._connections.clear()
            self._thing_connection.clear()
        self._auth.http.cancel()  # a signer in paho's thread may be waiting on a credentials call
        for conn in conns:
            conn.stop()
        self._events.put(("stop", None, None))
        if threading.current_thread() is not self._worker:
            self._worker.join()
        self._api.close()
        self._auth.close()


def create_client(
    username: str,
    password: str,
    endpoints: Endpoints | None = None,
    options: ClientOptions | None = None,
    connect_timeout: float = 30.0,
) -> Client:
    """Log in, discover devices, connect and wait until every connection is ready.

    Returns a ready :class:`Client` (close it, or use it as a context manager). Raises
    AuthenticationError, or ClientError when discovery fails or the connections are not ready
    within ``connect_timeout`` seconds (the client is then closed)."""
    auth = CognitoAuth(username, password, endpoints, timeout=min(connect_timeout, 30.0))
    client = Client(auth, options)
    try:
        client.login()
        client.populate_devices()
        if not client.connect(connect_timeout):
            raise ClientError(f"not connected to the cloud within {connect_timeout:g} s")
    except BaseException:
        client.close()
        raise
    return client
