"""Built-in module ``onewire``: 1-Wire sensors through owserver (pyownet) or the kernel w1 bus (sysfs).

Entry point: ``onewire = uun_gateway.modules.onewire:OneWire``.
"""

from .connection import OwServer, OwSession, ServerAddress, ServerUnavailable
from .errors import PathError
from .inventory import (
    Device,
    DeviceAdded,
    DeviceAlarm,
    DeviceAlarmCleared,
    DeviceLocated,
    DeviceMoved,
    DeviceNotFound,
    DeviceValue,
    Event,
    Inventory,
    Location,
    ServerConnected,
    ServerDisconnected,
)
from .module import OneWire
from .reader import Reader, Reading, ReadTarget
from .scanner import FoundDevice, ScanResult, scan
from .sysfs import SysfsAddress, SysfsBus
from .writer import UnknownDevice, WriteFailed, WriteResult

__all__ = [
    "Device",
    "DeviceAdded",
    "DeviceAlarm",
    "DeviceAlarmCleared",
    "DeviceLocated",
    "DeviceMoved",
    "DeviceNotFound",
    "DeviceValue",
    "Event",
    "FoundDevice",
    "Inventory",
    "Location",
    "OneWire",
    "OwServer",
    "OwSession",
    "PathError",
    "ReadTarget",
    "Reader",
    "Reading",
    "ScanResult",
    "ServerAddress",
    "ServerConnected",
    "ServerDisconnected",
    "ServerUnavailable",
    "SysfsAddress",
    "SysfsBus",
    "UnknownDevice",
    "WriteFailed",
    "WriteResult",
    "scan",
]
