"""Device inventory keyed by 1-Wire id (never by path), and the events it emits.

A scan result is merged with :meth:`Inventory.apply_scan`; the returned events say what changed:

- :class:`DeviceAdded` - first time this id is seen (once per process),
- :class:`DeviceLocated` - the device is now at a known location (after being added or lost),
- :class:`DeviceMoved` - seen at another server or bus path than before,
- :class:`DeviceNotFound` - missing from ``missed_scans`` consecutive complete scans.

Server state changes are :class:`ServerConnected` / :class:`ServerDisconnected`; readings are
:class:`DeviceValue`; a device entering or leaving its alarm state (conditional search) is
:class:`DeviceAlarm` / :class:`DeviceAlarmCleared`. Listeners are called in the thread that
produced the event, without any inventory lock held; a listener's exception is logged and does not affect others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .reader import Reading
from .scanner import ScanResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Location:
    """Where a device answers: owserver ``host:port`` and bus path (``/bus.0/`` or a coupler branch)."""

    server: str
    bus_path: str

    def __str__(self) -> str:
        return f"{self.server}{self.bus_path}"


@dataclass(frozen=True)
class Device:
    """Snapshot of one device. ``location`` is None while the device is not found."""

    id: str
    family: str
    type: str | None = None
    location: Location | None = None
    missed: int = 0
    read_errors: int = 0
    consecutive_errors: int = 0
    last_values: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str | None:
        """Full owserver path of the device (e.g. ``/bus.0/28.000028D70000/``), or None."""
        return None if self.location is None else f"{self.location.bus_path}{self.id}/"


@dataclass(frozen=True)
class Event:
    """Base class of all 1-Wire events."""


@dataclass(frozen=True)
class ServerConnected(Event):
    server: str


@dataclass(frozen=True)
class ServerDisconnected(Event):
    server: str
    reason: str


@dataclass(frozen=True)
class DeviceAdded(Event):
    device: Device


@dataclass(frozen=True)
class DeviceLocated(Event):
    device: Device
    location: Location


@dataclass(frozen=True)
class DeviceMoved(Event):
    device: Device
    old: Location
    new: Location


@dataclass(frozen=True)
class DeviceNotFound(Event):
    device: Device
    last: Location


@dataclass(frozen=True)
class DeviceValue(Event):
    """One accepted reading (``reading.entry()`` is what was stored)."""

    reading: Reading


@dataclass(frozen=True)
class DeviceAlarm(Event):
    """A device answers the conditional search (``/alarm``): e.g. a temperature above its
    ``temphigh`` or below its ``templow``. ``reason`` says which, ``values`` what was read."""

    device_id: str
    alias: str | None
    server: str
    reason: str
    values: dict[str, Any]
    timestamp: float

    def entry(self) -> dict[str, Any]:
        """The storage entry for this alarm (JSON serialisable)."""
        return {
            "event": "alarm",
            "alarm": True,
            "deviceId": self.device_id,
            "alias": self.alias,
            "reason": self.reason,
            "values": self.values,
            "timestamp": self.timestamp,
            "server": self.server,
        }


@dataclass(frozen=True)
class DeviceAlarmCleared(Event):
    """A device that was in alarm no longer answers the conditional search."""

    device_id: str
    alias: str | None
    server: str
    timestamp: float

    def entry(self) -> dict[str, Any]:
        return {
            "event": "alarm",
            "alarm": False,
            "deviceId": self.device_id,
            "alias": self.alias,
            "reason": "cleared",
            "values": {},
            "timestamp": self.timestamp,
            "server": self.server,
        }


Listener = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out of events to listeners. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add ``listener``; returns a function that removes it again (idempotent)."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def emit(self, events: Iterable[Event]) -> None:
        """Deliver each event to every listener, in order. Never raises for listener errors."""
        for event in events:
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("1-wire event listener %r failed on %s", listener, type(event).__name__)


class Inventory:
    """All devices ever seen, keyed by id. Thread-safe; returns immutable snapshots."""

    def __init__(self, missed_scans: int = 3) -> None:
        if missed_scans < 1:
            raise ValueError("missed_scans must be >= 1")
        self.missed_scans = missed_scans
        self._lock = threading.Lock()
        self._devices: dict[str, Device] = {}

    def get(self, dev_id: str) -> Device | None:
        with self._lock:
            return self._devices.get(dev_id)

    def devices(self) -> list[Device]:
        """Snapshot of all devices, sorted by id."""
        with self._lock:
            return [self._devices[k] for k in sorted(self._devices)]

    def located(self, server: str | None = None) -> list[Device]:
        """Devices with a known location (optionally on one server), sorted by id."""
        return [d for d in self.devices() if d.location is not None and (server is None or d.location.server == server)]

    def known_types(self) -> dict[str, str]:
        with self._lock:
            return {k: d.type for k, d in self._devices.items() if d.type is not None}

    def apply_scan(self, server: str, result: ScanResult) -> list[Event]:
        """Merge one complete scan of ``server``; returns the events it causes, in order.

        Devices located on ``server`` but absent from ``result`` get one more miss; at
        ``missed_scans`` misses they lose their location (``DeviceNotFound``). A device found on
        another server or bus path is moved there (``DeviceMoved``), never duplicated.
        """
        events: list[Event] = []
        with self._lock:
            for dev_id, found in result.devices.items():
                new_loc = Location(server, found.bus_path)
                dev = self._devices.get(dev_id)
                if dev is None:
                    dev = Device(dev_id, found.family, found.type)
                    events.append(DeviceAdded(dev))
                dev_type = found.type or dev.type
                if dev.location is None:
                    dev = replace(dev, type=dev_type, location=new_loc, missed=0)
                    events.append(DeviceLocated(dev, new_loc))
                elif dev.location != new_loc:
                    old = dev.location
                    dev = replace(dev, type=dev_type, location=new_loc, missed=0)
                    events.append(DeviceMoved(dev, old, new_loc))
                else:
                    dev = replace(dev, type=dev_type, missed=0)
                self._devices[dev_id] = dev
            for dev_id, dev in list(self._devices.items()):
                if dev.location is None or dev.location.server != server or dev_id in result.devices:
                    continue
                missed = dev.missed + 1
                if missed >= self.missed_scans:
                    last = dev.location
                    dev = replace(dev, location=None, missed=missed)
                    events.append(DeviceNotFound(dev, last))
                else:
                    dev = replace(dev, missed=missed)
                self._devices[dev_id] = dev
        return events

    def record_read(self, dev_id: str, values: dict[str, Any], errors: int) -> tuple[bool, bool]:
        """Record one read cycle's outcome for a device.

        Returns ``(started_failing, recovered)`` so the caller can log once per state change.
        """
        with self._lock:
            dev = self._devices.get(dev_id)
            if dev is None:
                return False, False
            was_failing = dev.consecutive_errors > 0
            merged = {**dev.last_values, **values}
            if errors:
                dev = replace(
                    dev,
                    read_errors=dev.read_errors + errors,
                    consecutive_errors=dev.consecutive_errors + errors,
                    last_values=merged,
                )
            else:
                dev = replace(dev, consecutive_errors=0, last_values=merged)
            self._devices[dev_id] = dev
            return (not was_failing and errors > 0), (was_failing and errors == 0)
