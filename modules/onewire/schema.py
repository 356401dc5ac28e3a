"""JSON Schema of ``gateway.onewire`` and the typed settings read from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .connection import ServerAddress
from .families import conversion_delay

DEVICE_ID_PATTERN = "^[0-9A-F]{2}\\.[0-9A-F]{12}$"
_RESOLUTION = {"enum": [9, 10, 11, 12], "description": "a DS18B20 resolution in bits: 9, 10, 11 or 12"}
_PROPERTIES = {
    "type": "array",
    "items": {"type": "string", "minLength": 1},
    "description": 'a list of owserver property names, e.g. ["temperature"] or ["counter.A"]',
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the 1-wire module settings (an object)",
    "properties": {
        "servers": {
            "type": "array",
            "minItems": 1,
            "description": 'a non-empty list of owservers [{"host": "127.0.0.1", "port": 4304}]',
            "items": {
                "type": "object",
                "properties": {
                    "host": {"type": "string", "minLength": 1, "description": "a host name or address"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port"},
                },
                "additionalProperties": False,
            },
        },
        "simultaneous": {
            "type": "boolean",
            "description": "true to convert all temperatures of a bus at once (default true)",
        },
        "resolution": _RESOLUTION,
        "conversionDelay": {
            "type": "number",
            "minimum": 0,
            "maximum": 10,
            "description": "seconds to wait after a simultaneous conversion (default from resolution)",
        },
        "missedScans": {
            "type": "integer",
            "minimum": 1,
            "description": "consecutive scans a device may be missing before it is 'not found' (default 3)",
        },
        "maxCouplerDepth": {
            "type": "integer",
            "minimum": 0,
            "maximum": 8,
            "description": "how many nested DS2409 couplers are walked (default 3)",
        },
        "persistent": {
            "type": "boolean",
            "description": "keep one owserver connection per cycle (true, default) or one per request",
        },
        "backoffMax": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "longest pause in seconds after owserver timeouts (default 30)",
        },
        "readUnlisted": {
            "type": "boolean",
            "description": "read devices that are not listed under 'sensors' (default true)",
        },
        "families": {
            "type": "object",
            "description": 'properties to read per family code, e.g. {"26": ["temperature", "humidity"]}',
            "patternProperties": {"^[0-9A-F]{2}$": _PROPERTIES},
            "additionalProperties": False,
        },
        "sensors": {
            "type": "object",
            "description": 'per-device settings keyed by id, e.g. {"28.000028D70000": {"alias": "boiler"}}',
            "patternProperties": {
                DEVICE_ID_PATTERN: {
                    "type": "object",
                    "properties": {
                        "alias": {"type": "string", "minLength": 1, "description": "a display name"},
                        "properties": _PROPERTIES,
                        "resolution": _RESOLUTION,
                        "ignore": {"type": "boolean", "description": "true to never read this device"},
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class SensorSettings:
    alias: str | None = None
    properties: tuple[str, ...] | None = None
    resolution: int | None = None
    ignore: bool = False


@dataclass(frozen=True)
class Settings:
    """``gateway.onewire`` with defaults applied. Assumes the section passed :data:`SCHEMA`."""

    servers: tuple[ServerAddress, ...] = (ServerAddress(),)
    simultaneous: bool = True
    resolution: int | None = None
    conversion_delay: float | None = None
    missed_scans: int = 3
    max_coupler_depth: int = 3
    persistent: bool = True
    backoff_max: float = 30.0
    read_unlisted: bool = True
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sensors: Mapping[str, SensorSettings] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Settings:
        section = section or {}
        servers = tuple(
            ServerAddress(s.get("host", "127.0.0.1"), int(s.get("port", 4304))) for s in section.get("servers", [])
        )
        sensors = {
            dev_id: SensorSettings(
                alias=s.get("alias"),
                properties=tuple(s["properties"]) if "properties" in s else None,
                resolution=s.get("resolution"),
                ignore=bool(s.get("ignore", False)),
            )
            for dev_id, s in section.get("sensors", {}).items()
        }
        return cls(
            servers=servers or (ServerAddress(),),
            simultaneous=bool(section.get("simultaneous", True)),
            resolution=section.get("resolution"),
            conversion_delay=section.get("conversionDelay"),
            missed_scans=int(section.get("missedScans", 3)),
            max_coupler_depth=int(section.get("maxCouplerDepth", 3)),
            persistent=bool(section.get("persistent", True)),
            backoff_max=float(section.get("backoffMax", 30.0)),
            read_unlisted=bool(section.get("readUnlisted", True)),
            families={fam: tuple(props) for fam, props in section.get("families", {}).items()},
            sensors=sensors,
        )

    def effective_conversion_delay(self) -> float:
        """The configured delay, else the longest one any configured resolution needs."""
        if self.conversion_delay is not None:
            return float(self.conversion_delay)
        resolutions = {self.resolution} | {s.resolution for s in self.sensors.values() if s.resolution is not None}
        return max(conversion_delay(r) for r in resolutions)
