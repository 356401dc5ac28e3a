"""What to read from each 1-Wire family: property paths, parsing and units.

The table covers the common families served by owserver (and emulated by ``--tester``):
temperature sensors 10/22/28/3B/42, DS2438 (26/A6) temperature, humidity and voltages, DS2423
(1D) counters and the PIO states of 05/12/29/3A. Other families (couplers 1F, ID-only 01, ...)
are listed by scans but have nothing read unless configured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

TEMPERATURE_FAMILIES = frozenset({"10", "22", "28", "3B", "42"})
# DS18S20 (10) has a fixed 9-bit conversion with interpolation; owserver ignores temperatureNN there.
RESOLUTION_FAMILIES = frozenset({"22", "28", "3B", "42"})

# Datasheet maximum conversion time (DS18B20) by resolution, plus margin: owserver computes the
# remaining wait in whole seconds, so 12 bit needs a full second (1.2 s as asyncowfs uses).
CONVERSION_DELAY = {9: 0.15, 10: 0.25, 11: 0.45, 12: 1.2}
DEFAULT_CONVERSION_DELAY = 1.2

TEMP_MIN, TEMP_MAX = -55.0, 125.0
POWER_ON_VALUE = 85.0


def _bool(raw: bytes) -> bool:
    return int(raw) == 1


def _float(raw: bytes) -> float:
    """A finite float; ``nan``/``inf`` (which no storage or JSON peer accepts) raise ValueError."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


@dataclass(frozen=True)
class PropertySpec:
    """One readable property: its name in storage entries, the owserver path below the device,
    how to parse the raw bytes, and its unit (None for counts and states)."""

    name: str
    path: str
    parse: Callable[[bytes], float | int | bool | str]
    unit: str | None = None

    @property
    def is_temperature(self) -> bool:
        return self.name == "temperature"


def _parse_auto(raw: bytes) -> float | int | str:
    text = raw.decode("ascii", "replace").strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


_KNOWN: dict[str, tuple[Callable[[bytes], float | int | bool | str], str | None]] = {
    "temperature": (_float, "°C"),
    "humidity": (_float, "%"),
    "VAD": (_float, "V"),
    "VDD": (_float, "V"),
    "vis": (_float, "V"),
    "counter.A": (int, None),
    "counter.B": (int, None),
    "PIO": (_bool, None),
    "PIO.A": (_bool, None),
    "PIO.B": (_bool, None),
    "sensed": (_bool, None),
    "sensed.A": (_bool, None),
    "sensed.B": (_bool, None),
    "latch.A": (_bool, None),
    "latch.B": (_bool, None),
    "PIO.BYTE": (int, None),
    "sensed.BYTE": (int, None),
    "latch.BYTE": (int, None),
}

DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    **{fam: ("temperature",) for fam in TEMPERATURE_FAMILIES},
    "26": ("temperature", "humidity", "VAD", "VDD"),
    "A6": ("temperature", "humidity", "VAD", "VDD"),
    "1D": ("counter.A", "counter.B"),
    "05": ("PIO",),
    "12": ("PIO.A", "PIO.B"),
    "3A": ("PIO.A", "PIO.B"),
    "29": ("PIO.BYTE",),
}


def property_spec(name: str, family: str, resolution: int | None = None) -> PropertySpec:
    """The spec for ``name`` on a device of ``family``.

    ``temperature`` on a family that supports it reads ``temperatureNN`` when a resolution is
    given (always the same path per sensor: mixing resolutions forces owserver to reconvert).
    Unknown names are read as-is and parsed as int, float or text.
    """
    parse, unit = _KNOWN.get(name, (_parse_auto, None))
    path = name
    if name == "temperature" and resolution is not None and family in RESOLUTION_FAMILIES:
        path = f"temperature{resolution}"
    return PropertySpec(name, path, parse, unit)


def properties_for(
    family: str,
    configured: Iterable[str] | None = None,
    family_overrides: Mapping[str, Iterable[str]] | None = None,
    resolution: int | None = None,
) -> tuple[PropertySpec, ...]:
    """Properties to read for one device: per-sensor config, else per-family config, else defaults."""
    if configured is not None:
        names = tuple(configured)
    elif family_overrides is not None and family in family_overrides:
        names = tuple(family_overrides[family])
    else:
        names = DEFAULT_PROPERTIES.get(family, ())
    return tuple(property_spec(n, family, resolution) for n in names)


def conversion_delay(resolution: int | None) -> float:
    """Seconds to wait after a simultaneous conversion at ``resolution`` (None = 12 bit default)."""
    if resolution is None:
        return DEFAULT_CONVERSION_DELAY
    return CONVERSION_DELAY[resolution]
