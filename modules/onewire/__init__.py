"""Built-in module ``onewire``: 1-Wire sensors through owserver (pyownet).

Entry point: ``onewire = uun_gateway.modules.onewire:OneWire``.
"""

from .connection import OwServer, OwSession, ServerAddress, ServerUnavailable
from .inventory import (
    Device,
    DeviceAdded,
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

__all__ = [
    "Device",
    "DeviceAdded",
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
    "ReadTarget",
    "Reader",
    "Reading",
    "ScanResult",
    "ServerAddress",
    "ServerConnected",
    "ServerDisconnected",
    "ServerUnavailable",
    "scan",
]
