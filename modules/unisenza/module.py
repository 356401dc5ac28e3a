"""The built-in gateway module ``unisenza``: Unisenza Plus thermostats as readings and setpoints.

Config ``gateway.unisenza`` (see :data:`CONFIG_SCHEMA`): ``username`` plus ``password`` or
``passwordFile``; optional ``endpoints`` (tests point them at loopback), timeouts, and
``setpoints`` (``{"<device code|id|name>": {"temperature": 21.5, "mode": "heat"}}``).

Threads: the start handler is the module's worker for its whole life: it logs in (with
backoff; a refused password waits ``authRetryDelay`` instead of hammering Cognito),
discovers, connects, applies setpoints and re-discovers. The tick only copies the cached
state into :attr:`storage` (never waits on the network). The update handler only records the
new setpoints and wakes the worker, so a remote config update never blocks on the cloud.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from uun_gateway import Backoff, Module, StateLog, iso_utc, on, read_secret_file
from uun_gateway import Reading as PointReading

from .auth import CognitoAuth
from .client import Client, ClientOptions
from .endpoints import Endpoints
from .errors import AuthenticationError, ClientError
from .models import HvacDevice, enum_name, parse_system_mode
from .schema import CONFIG_SCHEMA

log = logging.getLogger(__name__)
_IDLE_WAIT = 60.0  # the worker is woken by ticks and config updates; this only bounds re-discovery lag


def read_password(section: Mapping[str, Any], base: Path | None = None) -> str:
    """The password from ``passwordFile`` (first line, trailing newline removed; relative paths
    are taken from ``base``) or else ``password``. Raises ClientError when neither gives one;
    the message never contains the password."""
    path = section.get("passwordFile")
    if path:
        file = Path(path)
        if base is not None and not file.is_absolute():
            file = base / file
        try:
            if file.stat().st_mode & 0o077:
                log.warning("the password file %s is readable by other users; chmod 600 it", file)
            text = read_secret_file(file)
        except OSError as exc:
            raise ClientError(f"cannot read the password file {file}: {exc.strerror}") from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise ClientError(f"the password file {file} is empty")
        return password
    if section.get("password"):
        return str(section["password"])
    raise ClientError("no password configured (gateway.unisenza.password or passwordFile)")


def client_options(section: Mapping[str, Any]) -> ClientOptions:
    """ClientOptions from a ``gateway.unisenza`` section (defaults for missing keys)."""
    defaults = ClientOptions()
    delay = section.get("reconnectDelay", {})
    return ClientOptions(
        request_timeout=float(section.get("requestTimeout", defaults.request_timeout)),
        unavailable_after=float(section.get("unavailableAfter", defaults.unavailable_after)),
        things_per_connection=int(section.get("thingsPerConnection", defaults.things_per_connection)),
        reconnect_min_delay=float(delay.get("min", defaults.reconnect_min_delay)),
        reconnect_max_delay=float(delay.get("max", defaults.reconnect_max_delay)),
        connect_timeout=float(section.get("connectTimeout", defaults.connect_timeout)),
    )


def build_client(section: Mapping[str, Any], base: Path | None = None) -> Client:
    """A not yet logged-in Client configured from a ``gateway.unisenza`` section."""
    endpoints = Endpoints.from_config(section.get("endpoints"))
    auth = CognitoAuth(
        str(section["username"]),
        read_password(section, base),
        endpoints,
        timeout=float(section.get("httpTimeout", 10.0)),
    )
    return Client(auth, client_options(section))


def reading(gateway_code: str, device: HvacDevice) -> dict[str, Any]:
    """The stored record of one thermostat's current (cached) state."""
    a = device.get_attributes()
    record: dict[str, Any] = {
        "deviceId": a.device_code,
        "id": a.id,
        "name": a.name,
        "gateway": gateway_code,
        "currentTemperature": a.current_temperature,
        "targetTemperature": a.target_temperature,
        "mode": enum_name(a.system_mode),
        "runningState": enum_name(a.running_state),
        "available": a.available,
        "timestamp": iso_utc(timespec="seconds"),
    }
    for key, value in (
        ("humidity", a.humidity),
        ("floorTemperature", a.floor_temperature),
        ("batteryLevel", a.battery_level),
    ):
        if value is not None:
            record[key] = value
    return record


POINT_UNITS = {
    "currentTemperature": "°C",
    "targetTemperature": "°C",
    "floorTemperature": "°C",
    "humidity": "%",
    "batteryLevel": "%",
}
"""The numeric fields of a record that are published as points (for alarm rules), with their units."""


def points(module_id: str, records: list[dict[str, Any]]) -> list[PointReading]:
    """The typed readings of stored records: device = ``deviceId``, point = the field name; an
    unavailable thermostat's cached values are ``bad``."""
    now = time.time()
    return [
        PointReading(
            module_id,
            str(record["deviceId"]),
            field,
            record[field],
            now,
            unit,
            "good" if record.get("available", True) else "bad",
        )
        for record in records
        for field, unit in POINT_UNITS.items()
        if isinstance(record.get(field), (int, float)) and not isinstance(record.get(field), bool)
    ]


class Unisenza(Module):
    """Reads Unisenza Plus thermostats into storage and applies configured setpoints.

    Promises: start-up never waits on the cloud (the gateway keeps running while it is
    unreachable); a refused password is retried only every ``authRetryDelay`` seconds; each
    tick appends one reading per thermostat known to the client (cached state, including
    ``available``); setpoints from the config (and from a remote config update) are sent once
    per change, retried until the cloud accepts them, and a value outside the device's range is
    logged and dropped. The password is never logged.
    """

    id: ClassVar[str] = "unisenza"
    config_schema: ClassVar[dict[str, Any] | None] = CONFIG_SCHEMA
    timer_defaults: ClassVar[Mapping[str | None, float]] = {None: 60.0}

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._client: Client | None = None
        self._connecting: Client | None = None  # while logging in and discovering: stop closes it
        self._stopping = False
        self._reconnect = False
        self._refresh_due = False
        self._ticks = 0
        self._min_delay = 5.0
        self._backoff = Backoff(5.0, 300.0)
        self._link = StateLog(self.logger, "Unisenza cloud")
        self._discovery_log = StateLog(self.logger, "re-discovery")
        self._refresh_log = StateLog(self.logger, "refresh")
        self._next_discovery = 0.0
        self._section_seen: Mapping[str, Any] = self._section()
        self._pending: dict[str, dict[str, Any]] = dict(self._c("setpoints", {}))
        self.last_error: str | None = None

    def _section(self) -> Mapping[str, Any]:
        return dict(self._config.get(self.id, {}))

    @property
    def client(self) -> Client | None:
        """The connected client, or None while logging in / after stop."""
        return self._client

    # -- worker (the start handler) ----------------------------------------------------------------

    @on("start")
    def _run(self, evs: tuple[threading.Event, threading.Event]) -> None:
        runev, stopev = evs
        retry = self._c("retryDelay", {})
        self._min_delay = float(retry.get("min", 5.0))
        self._backoff = Backoff(self._min_delay, max(self._min_delay, float(retry.get("max", 300.0))))
        while runev.is_set() and not stopev.is_set() and not self._stopping:
            self._wake.clear()
            try:
                wait = self._cycle()
            except Exception:
                self.logger.exception("unisenza worker: unexpected error")
                wait = self._backoff.maximum
            self._wake.wait(wait)

    def _cycle(self) -> float:
        """One round of the worker: (re)connect, re-discover, refresh, setpoints. Returns how long
        to sleep unless woken (by a tick that wants a refresh, a config update or stop)."""
        wait = _IDLE_WAIT
        if self._reconnect:
            self._drop_client()
        if self._client is None:
            try:
                self._connect()
                self._backoff.succeeded()
                self._next_discovery = time.monotonic() + float(self._c("rediscoverEvery", 6 * 3600.0))
                self.last_error = None
                self._link.ok("connected again")
            except AuthenticationError as exc:
                self._note_error(f"login refused: {exc}", "refused")
                return float(self._c("authRetryDelay", 900.0))
            except ClientError as exc:
                if self._stopping:  # stop cut the login or discovery short
                    return 0.0
                self._note_error(f"cloud unreachable: {exc}", "unreachable")
                return self._backoff.failed()
        client = self._client
        if client is None:
            return wait
        if time.monotonic() >= self._next_discovery:
            self._next_discovery = time.monotonic() + float(self._c("rediscoverEvery", 6 * 3600.0))
            try:
                client.populate_devices()
                self._discovery_log.ok()
            except ClientError as exc:
                self._discovery_log.failed(f"failed: {exc}")
        if self._refresh_due:
            self._refresh_due = False
            try:
                client.refresh_all_devices()
                self._refresh_log.ok()
            except ClientError as exc:
                self._refresh_log.failed(str(exc))
        if not self._apply_setpoints(client):
            wait = min(wait, self._min_delay)
        return wait

    def _note_error(self, message: str, state: str) -> None:
        """Logged once per change of state (and summarised while it lasts), kept in last_error."""
        self._link.failed(message, state=state)
        self.last_error = message

    def _connect(self) -> None:
        client = build_client(self._section())
        with self._lock:
            if self._stopping:
                client.close()
                return
            self._connecting = client
        try:
            client.login()
            client.populate_devices()
            client.connect(timeout=0)
        except BaseException:
            client.close()
            raise
        finally:
            with self._lock:
                self._connecting = None
        with self._lock:
            if self._stopping:
                client.close()
                return
            self._client = client
        self.logger.info(
            "Unisenza cloud: %d gateway(s), %d thermostat(s)",
            len(client.get_gateways()),
            sum(len(g.get_children()) for g in client.get_gateways()),
        )

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._reconnect = False
        if client is not None:
            client.close()

    def _apply_setpoints(self, client: Client) -> bool:
        """Send pending setpoints; True when none is left pending."""
        with self._lock:
            pending = dict(self._pending)
        if pending and not client.is_connected():
            return False
        for key, wanted in pending.items():
            try:
                gateway, device = client.find_device(key)
            except KeyError:
                self.logger.warning("setpoint for unknown device %r ignored", key)
                self._done(key, wanted)
                continue
            if not isinstance(device, HvacDevice):
                self.logger.warning("setpoint for %r ignored: not a thermostat", key)
                self._done(key, wanted)
                continue
            changes: dict[str, Any] = {}
            try:
                if "temperature" in wanted:
                    changes["target_temperature"] = device.validate_target_temperature(wanted["temperature"])
                if "mode" in wanted:
                    changes["system_mode"] = parse_system_mode(wanted["mode"])
            except ValueError as exc:
                self.logger.error("setpoint for %r dropped: %s", key, str(exc))
                self._done(key, wanted)
                continue
            current = device.get_attributes()
            changes = {k: v for k, v in changes.items() if getattr(current, k) != v}
            try:
                if changes:
                    client.update_device_state(gateway, device, changes)
                    self.logger.info("setpoint for %r sent: %s", key, wanted)
                self._done(key, wanted)
            except ClientError as exc:
                self.logger.warning("setpoint for %r not applied yet: %s", key, str(exc))
        with self._lock:
            return not self._pending

    def _done(self, key: str, wanted: dict[str, Any]) -> None:
        with self._lock:
            if self._pending.get(key) == wanted:
                del self._pending[key]

    # -- timer, update, stop -----------------------------------------------------------------------

    @on("tick")
    def _tick(self) -> None:
        """Append one reading per thermostat (cached state; no network I/O)."""
        client = self._client
        if client is None:
            return
        self._ticks += 1
        every = int(self._c("refreshEvery", 10))
        if every and self._ticks % every == 0:
            self._refresh_due = True
            self._wake.set()
        records = [reading(gw.get_device_code(), dev) for gw in client.get_gateways() for dev in gw.get_children()]
        if records:
            self.publish(points(self.id, records), entries=records)

    @on("update")
    def _on_update(self) -> None:
        """Take new setpoints (and, when the account or endpoints changed, reconnect) from the
        replaced config; the worker applies them. Never blocks on the cloud."""
        section = self._section()
        old = self._section_seen
        self._section_seen = section
        connection_keys = (
            "username", "password", "passwordFile", "endpoints", "requestTimeout", "unavailableAfter",
            "thingsPerConnection", "reconnectDelay", "httpTimeout", "connectTimeout",
        )  # fmt: skip
        with self._lock:
            if any(old.get(k) != section.get(k) for k in connection_keys):
                self._reconnect = True
                self._pending = dict(section.get("setpoints", {}))
            else:
                old_setpoints = old.get("setpoints", {})
                for key, wanted in section.get("setpoints", {}).items():
                    if old_setpoints.get(key) != wanted:
                        self._pending[key] = dict(wanted)
        self._wake.set()

    @on("stop")
    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
            client, self._client = self._client, None
            connecting = self._connecting
        self._wake.set()
        for c in (client, connecting):
            if c is not None:
                c.close()  # cuts a login, discovery or connection attempt in progress short
