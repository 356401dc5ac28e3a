"""Device models of the Unisenza client: enums, attribute records and device handles.

Attribute records are frozen dataclasses (a consistent snapshot); a :class:`Device` holds the
current record and replaces it atomically under a lock. Names follow the pyupgw client
(``current_temperature``, ``target_temperature``, ``min_temp``, ``max_temp``, ``system_mode``,
``running_state``, ``available``, ...).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

DEFAULT_MIN_TEMP = 5.0
DEFAULT_MAX_TEMP = 30.0
TEMPERATURE_STEP = 0.5


class DeviceType(enum.Enum):
    """Kind of device."""

    GATEWAY = "gateway"
    HVAC = "hvac"


class SystemMode(enum.IntEnum):
    """Thermostat system mode (the ZCL values the cloud uses)."""

    OFF = 0
    HEAT = 4


class RunningState(enum.IntEnum):
    """What the thermostat is doing."""

    IDLE = 0
    HEATING = 1


def enum_name(value: enum.Enum | int | None) -> str | None:
    """Lowercase name of an enum value, ``'unknown(N)'`` for a raw int the enum lacks, None for None."""
    if value is None:
        return None
    if isinstance(value, enum.Enum):
        return value.name.lower()
    return f"unknown({value})"


def parse_system_mode(value: str | int | SystemMode) -> SystemMode:
    """A SystemMode from its name (``'heat'``, case-insensitive) or number. Raises ValueError."""
    if isinstance(value, SystemMode):
        return value
    if isinstance(value, int):
        return SystemMode(value)
    text = str(value).strip()
    if text.isdigit():
        return SystemMode(int(text))
    try:
        return SystemMode[text.upper()]
    except KeyError:
        choices = ", ".join(m.name.lower() for m in SystemMode)
        raise ValueError(f"unknown system mode {value!r} (expected one of: {choices})") from None


@dataclass(frozen=True)
class Occupant:
    """The cloud occupant owning a gateway; ``identity_id`` selects the AWS credentials."""

    id: str
    identity_id: str


@dataclass(frozen=True)
class DeviceAttributes:
    """Attributes every device has. ``id`` is the cloud's UUID (as text)."""

    id: str
    type: DeviceType
    device_code: str
    model: str
    name: str
    euid: str | None = None
    firmware_version: str | None = None
    available: bool = False


@dataclass(frozen=True)
class GatewayAttributes(DeviceAttributes):
    """Attributes of a cloud gateway."""

    occupant: Occupant | None = None
    ip_address: str | None = None
    mac_address: str | None = None


@dataclass(frozen=True)
class HvacAttributes(DeviceAttributes):
    """Attributes of a thermostat. Temperatures in °C; ``system_mode``/``running_state`` keep a
    raw int when the device reports a value outside the enum."""

    manufacturer: str | None = None
    serial_number: str | None = None
    system_mode: SystemMode | int | None = None
    running_state: RunningState | int | None = None
    target_temperature: float | None = None
    current_temperature: float | None = None
    min_temp: float | None = None
    max_temp: float | None = None
    humidity: float | None = None
    floor_temperature: float | None = None
    battery_level: int | None = None


A = TypeVar("A", bound=DeviceAttributes)
Callback = Callable[["Device[Any]", Mapping[str, Any]], None]


class Device(Generic[A]):
    """A live handle of one device, updated by the client as the cloud reports changes.

    Thread-safe. Subscribers are called with ``(device, changes)`` after each change, from the
    client's worker thread (never from the MQTT network thread); an exception in a subscriber
    is logged and does not affect other subscribers.
    """

    def __init__(
        self,
        attributes: A,
        dispatch_refresh: Callable[[Device[Any]], None],
        dispatch_update: Callable[[Device[Any], Mapping[str, Any]], None],
    ) -> None:
        self._attributes = attributes
        self._lock = threading.Lock()
        self._subscribers: list[Callback] = []
        self._dispatch_refresh = dispatch_refresh
        self._dispatch_update = dispatch_update

    def __repr__(self) -> str:
        a = self._attributes
        return f"{type(self).__name__}({a.device_code!r}, name={a.name!r})"

    def get_attributes(self) -> A:
        """A consistent snapshot of all attributes."""
        return self._attributes

    def get_id(self) -> str:
        """The cloud's UUID of the device."""
        return self._attributes.id

    def get_type(self) -> DeviceType:
        """Gateway or HVAC."""
        return self._attributes.type

    def get_device_code(self) -> str:
        """The device code (MQTT thing name)."""
        return self._attributes.device_code

    def get_model(self) -> str:
        """The model name."""
        return self._attributes.model

    def get_name(self) -> str:
        """The user-given name."""
        return self._attributes.name

    def get_euid(self) -> str | None:
        """The Zigbee EUID, when reported."""
        return self._attributes.euid

    def get_firmware_version(self) -> str | None:
        """The firmware version, when reported."""
        return self._attributes.firmware_version

    def is_available(self) -> bool:
        """True when the cloud reports the device connected and the client's link is up
        (or was lost less than the unavailability timeout ago)."""
        return self._attributes.available

    def apply_changes(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the attributes named in ``changes`` without notifying; return the subset that
        actually changed value. Unknown names raise TypeError. Never blocks beyond the lock."""
        with self._lock:
            current = self._attributes
            actual = {k: v for k, v in changes.items() if getattr(current, k) != v}
            if actual:
                self._attributes = dataclasses.replace(current, **actual)
            return actual

    def notify(self, changes: Mapping[str, Any]) -> None:
        """Call every subscriber with ``(self, changes)`` in the calling thread."""
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(self, changes)
            except Exception:
                log.exception("subscriber %r of %r failed", callback, self)

    def set_attributes(self, changes: Mapping[str, Any]) -> None:
        """Change attributes in memory only (nothing is sent) and notify subscribers of the
        actual changes, in the calling thread."""
        actual = self.apply_changes(changes)
        if actual:
            self.notify(actual)

    def subscribe(self, callback: Callback) -> None:
        """Register ``callback(device, changes)`` for state changes."""
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Callback) -> None:
        """Remove a callback registered with :meth:`subscribe`. Raises ValueError if absent."""
        with self._lock:
            self._subscribers.remove(callback)

    def refresh(self) -> None:
        """Fetch the state from the cloud and wait for it (see ``Client.refresh_device_state``)."""
        self._dispatch_refresh(self)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Send changes to the cloud (see ``Client.update_device_state``)."""
        self._dispatch_update(self, changes)


class Gateway(Device[GatewayAttributes]):
    """A cloud gateway, parent of thermostats."""

    def __init__(
        self,
        attributes: GatewayAttributes,
        dispatch_refresh: Callable[[Device[Any]], None],
        dispatch_update: Callable[[Device[Any], Mapping[str, Any]], None],
    ) -> None:
        super().__init__(attributes, dispatch_refresh, dispatch_update)
        self.children: list[HvacDevice] = []

    def get_children(self) -> list[HvacDevice]:
        """The thermostats behind this gateway (a copy of the list)."""
        return list(self.children)

    def get_ip_address(self) -> str | None:
        """The gateway's LAN IP address, when reported."""
        return self._attributes.ip_address

    def get_mac_address(self) -> str | None:
        """The gateway's LAN MAC address, when reported."""
        return self._attributes.mac_address

    def get_identity_id(self) -> str | None:
        """The Cognito identity whose credentials open this gateway's MQTT connection."""
        occupant = self._attributes.occupant
        return occupant.identity_id if occupant else None


class HvacDevice(Device[HvacAttributes]):
    """A thermostat."""

    def get_current_temperature(self) -> float | None:
        """Measured temperature, °C."""
        return self._attributes.current_temperature

    def get_target_temperature(self) -> float | None:
        """Setpoint, °C."""
        return self._attributes.target_temperature

    def get_min_temp(self) -> float | None:
        """Lowest allowed setpoint, °C (None when the device did not report it)."""
        return self._attributes.min_temp

    def get_max_temp(self) -> float | None:
        """Highest allowed setpoint, °C (None when the device did not report it)."""
        return self._attributes.max_temp

    def get_system_mode(self) -> SystemMode | int | None:
        """The system mode."""
        return self._attributes.system_mode

    def get_running_state(self) -> RunningState | int | None:
        """Idle or heating."""
        return self._attributes.running_state

    def get_manufacturer(self) -> str | None:
        """The manufacturer name, when reported."""
        return self._attributes.manufacturer

    def get_serial_number(self) -> str | None:
        """The serial number, when reported (some models lack it: use the EUID)."""
        return self._attributes.serial_number

    def validate_target_temperature(self, value: float | str) -> float:
        """``value`` rounded to the 0.5 °C step; raises ValueError outside [min_temp, max_temp]
        (5-30 °C when the device did not report limits) or when not a finite number."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"temperature {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"temperature {value!r} is not finite")
        a = self._attributes
        low = a.min_temp if a.min_temp is not None else DEFAULT_MIN_TEMP
        high = a.max_temp if a.max_temp is not None else DEFAULT_MAX_TEMP
        rounded = round(number / TEMPERATURE_STEP) * TEMPERATURE_STEP
        if not low <= rounded <= high:
            raise ValueError(f"temperature {number} outside the range {low}..{high} of {a.name!r}")
        return rounded

    def update_target_temperature(self, value: float) -> None:
        """Validate (see :meth:`validate_target_temperature`) and send a new setpoint.
        Raises ValueError for a bad value, ClientError when the cloud does not accept it."""
        self.update({"target_temperature": self.validate_target_temperature(value)})

    def update_system_mode(self, mode: SystemMode | str | int) -> None:
        """Send a new system mode (name or number of :class:`SystemMode`). Raises ValueError for
        a value outside the enum, ClientError when the cloud does not accept it."""
        self.update({"system_mode": parse_system_mode(mode)})
