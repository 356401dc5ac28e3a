"""JSON Schema of ``gateway.onewire`` and the typed settings read from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uun_gateway.bounds import YEAR, seconds_schema

from .connection import DEFAULT_REQUEST_TIMEOUT, ServerAddress
from .families import check_write, conversion_delay
from .sysfs import SysfsAddress

DEVICE_ID_PATTERN = "^[0-9A-F]{2}\\.[0-9A-F]{12}$"
_RESOLUTION = {"enum": [9, 10, 11, 12], "description": "a DS18B20 resolution in bits: 9, 10, 11 or 12"}
_INTERVAL = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": YEAR,
    "description": "seconds between reads (more than 0, at most a year)",
}
_UNCACHED = {
    "type": "object",
    "additionalProperties": {"type": "boolean"},
    "description": 'per property: true to read it /uncached (fresh), false through the cache, e.g. {"VAD": false}',
}
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
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {
                            "host": {"type": "string", "minLength": 1, "description": "a host name or address"},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port"},
                        },
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "sysfs": {
                                "type": "string",
                                "minLength": 1,
                                "description": "the kernel's 1-wire devices directory, e.g. /sys/bus/w1/devices",
                            }
                        },
                        "required": ["sysfs"],
                        "additionalProperties": False,
                    },
                ],
                "description": 'an owserver {"host", "port"} or the kernel bus {"sysfs": "/sys/bus/w1/devices"}',
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
        "backoffMax": seconds_schema("longest pause in seconds after owserver timeouts (default 30)"),
        "requestTimeout": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 300,
            "description": "total seconds one owserver request may take, keep-alive pings included (default 10)",
        },
        "interval": {**_INTERVAL, "description": "seconds between reads of each property (default: every read tick)"},
        "alarmInterval": {
            "type": "number",
            "minimum": 0,
            "maximum": YEAR,
            "description": "seconds between polls of each bus's /alarm directory (default 10; 0: never)",
        },
        "uncached": _UNCACHED,
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
                        "interval": _INTERVAL,
                        "intervals": {
                            "type": "object",
                            "additionalProperties": _INTERVAL,
                            "description": 'seconds between reads per property, e.g. {"sensed.A": 1}',
                        },
                        "uncached": _UNCACHED,
                        "set": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": ["boolean", "number", "string"]},
                            "description": 'outputs kept at a value, e.g. {"PIO.A": true, "temphigh": 30}',
                        },
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
    interval: float | None = None
    intervals: Mapping[str, float] = field(default_factory=dict)
    uncached: Mapping[str, bool] = field(default_factory=dict)
    outputs: Mapping[str, bool | int | float | str] = field(default_factory=dict)


Address = ServerAddress | SysfsAddress


@dataclass(frozen=True)
class Settings:
    """``gateway.onewire`` with defaults applied. Assumes the section passed :data:`SCHEMA`."""

    servers: tuple[Address, ...] = (ServerAddress(),)
    simultaneous: bool = True
    resolution: int | None = None
    conversion_delay: float | None = None
    missed_scans: int = 3
    max_coupler_depth: int = 3
    persistent: bool = True
    backoff_max: float = 30.0
    read_unlisted: bool = True
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    interval: float | None = None
    alarm_interval: float = 10.0
    uncached: Mapping[str, bool] = field(default_factory=dict)
    families: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sensors: Mapping[str, SensorSettings] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Settings:
        section = section or {}
        servers = tuple(
            SysfsAddress(s["sysfs"])
            if "sysfs" in s
            else ServerAddress(s.get("host", "127.0.0.1"), int(s.get("port", 4304)))
            for s in section.get("servers", [])
        )
        sensors = {
            dev_id: SensorSettings(
                alias=s.get("alias"),
                properties=tuple(s["properties"]) if "properties" in s else None,
                resolution=s.get("resolution"),
                ignore=bool(s.get("ignore", False)),
                interval=s.get("interval"),
                intervals=dict(s.get("intervals", {})),
                uncached=dict(s.get("uncached", {})),
                outputs=dict(s.get("set", {})),
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
            request_timeout=float(section.get("requestTimeout", DEFAULT_REQUEST_TIMEOUT)),
            interval=section.get("interval"),
            alarm_interval=float(section.get("alarmInterval", 10.0)),
            uncached=dict(section.get("uncached", {})),
            families={fam: tuple(props) for fam, props in section.get("families", {}).items()},
            sensors=sensors,
        )

    def errors(self) -> list[str]:
        """What the schema cannot check: ``set`` values of the wrong type for their property, and
        aliases used twice. Each message names the key."""
        problems = []
        aliases: dict[str, str] = {}
        for dev_id, sensor in self.sensors.items():
            for prop, value in sensor.outputs.items():
                try:
                    check_write(prop, dev_id[:2], value)
                except ValueError as err:
                    problems.append(f"gateway.onewire.sensors.{dev_id}.set.{prop}: {err}")
            if sensor.alias is not None:
                other = aliases.setdefault(sensor.alias, dev_id)
                if other != dev_id:
                    problems.append(
                        f"gateway.onewire.sensors.{dev_id}.alias: {sensor.alias!r} is already the alias of {other}"
                    )
        return problems

    def interval_for(self, dev_id: str, prop: str, *channels: str) -> float | None:
        """Seconds between reads of one property (None: every read tick). For a ``.ALL`` read the
        shortest interval configured for it or any of its ``channels`` applies."""
        sensor = self.sensors.get(dev_id)
        if sensor is not None:
            given = [sensor.intervals[n] for n in (prop, *channels) if n in sensor.intervals]
            if given:
                return min(given)
            if sensor.interval is not None:
                return sensor.interval
        return self.interval

    def uncached_for(self, dev_id: str, prop: str) -> bool | None:
        """The configured override of reading ``prop`` /uncached (None: the property's default)."""
        sensor = self.sensors.get(dev_id)
        if sensor is not None and prop in sensor.uncached:
            return sensor.uncached[prop]
        return self.uncached.get(prop)

    def effective_conversion_delay(self) -> float:
        """The configured delay, else the longest one any configured resolution needs."""
        if self.conversion_delay is not None:
            return float(self.conversion_delay)
        resolutions = {self.resolution} | {s.resolution for s in self.sensors.values() if s.resolution is not None}
        return max(conversion_delay(r) for r in resolutions)
