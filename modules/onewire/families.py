"""What to read from each 1-Wire family: property paths, types, units, volatility and writes.

The table covers the common families served by owserver (and emulated by ``--tester``):
temperature sensors 10/22/28/3B/42, DS2438 (26/A6) temperature and voltages, DS2423 (1D)
counters, DS2450 (20) voltages, DS2760 (30) temperature/voltage/current, the inputs of
05/12/29/3A (``sensed.*``, the pin, plus ``latch.*`` where the chip has one) and the EDS0065/
EDS0068 environmental sensors (7E). Other families (couplers 1F, ID-only 01, ...) are listed by
scans but have nothing read unless configured.

A property's type, unit and volatility come from its name (the OWFS naming): ``PIO``/``sensed``/
``latch``/``power`` are booleans (``.ALL`` is one read of all channels, expanded into one reading
per channel; ``.BYTE`` is an integer bitmask), ``volt*``/``VAD``/``VDD``/``vis`` volts,
``*temperature*`` and ``temphigh``/``templow`` °C, ``humidity`` %, ``pressure`` mbar,
``illuminance``/``light`` lx, ``counter*`` integers. A name not known here is typed from owserver's
``/structure`` (see :func:`spec_from_structure`), else parsed as int, float or text.

Volatile properties (inputs, counters, analogue values) are read through ``/uncached``: owserver
caches them for 15 s (PIO for 300 s) by default, so a cached read would store old values as new.
A DS18x20 ``temperature`` after a simultaneous conversion is the exception: it must be read cached,
or owserver starts a new conversion per sensor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

TEMPERATURE_FAMILIES = frozenset({"10", "22", "28", "3B", "42"})
# DS18S20 (10) has a fixed 9-bit conversion with interpolation; owserver ignores temperatureNN there.
RESOLUTION_FAMILIES = frozenset({"22", "28", "3B", "42"})

# Datasheet maximum conversion time (DS18B20) by resolution, plus margin: owserver computes the
# remaining wait in whole seconds, so 12 bit needs a full second (1.2 s as asyncowfs uses).
CONVERSION_DELAY = {9: 0.15, 10: 0.25, 11: 0.45, 12: 1.2}
DEFAULT_CONVERSION_DELAY = 1.2

TEMP_MIN, TEMP_MAX = -55.0, 125.0
POWER_ON_VALUE = 85.0

Value = float | int | bool | str

BOOL, INT, FLOAT, TEXT = "bool", "int", "float", "text"


def _bool(raw: bytes) -> bool:
    text = raw.strip()
    if text not in (b"0", b"1"):
        raise ValueError(f"not 0 or 1: {raw!r}")
    return text == b"1"


def _float(raw: bytes) -> float:
    """A finite float (owserver prints whole numbers without a point: ``b'  25'`` is 25.0);
    ``nan``/``inf`` (which no storage or JSON peer accepts) raise ValueError."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _int(raw: bytes) -> int:
    return int(raw)


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


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip()


_PARSERS: dict[str, Callable[[bytes], Value]] = {BOOL: _bool, INT: _int, FLOAT: _float, TEXT: _text}


@dataclass(frozen=True)
class PropertySpec:
    """One property of a device: its name in storage entries, the path below the device, its
    type (``kind``: bool/int/float/text, or None when unknown), unit, whether it is volatile
    (read ``/uncached``) and writable. ``channels`` is set for ``.ALL`` paths: the names of the
    readings one read gives (``sensed.ALL`` of a DS2408 -> ``sensed.0`` ... ``sensed.7``)."""

    name: str
    path: str
    kind: str | None
    unit: str | None = None
    volatile: bool = False
    writable: bool = False
    channels: tuple[str, ...] = ()
    converts: bool = False

    @property
    def is_temperature(self) -> bool:
        return self.name == "temperature" or self.name.endswith("/temperature")

    def parse(self, raw: bytes) -> Value:
        """The value of one raw answer; raises ValueError when it is not of the property's kind."""
        if self.kind is None:
            return _parse_auto(raw)
        return _PARSERS[self.kind](raw)

    def parse_channels(self, raw: bytes) -> list[tuple[str, Value]]:
        """For a ``.ALL`` property: one ``(name, value)`` per channel; raises ValueError when the
        answer has another number of values."""
        parts = raw.split(b",")
        if len(parts) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} comma-separated values: {raw!r}")
        return [(name, self.parse(part)) for name, part in zip(self.channels, parts, strict=True)]

    def encode(self, value: object, family: str) -> bytes:
        """The bytes to write for ``value``; raises ValueError naming what was expected."""
        if not self.writable:
            hint = ""
            if self.name.startswith("sensed"):
                hint = f"; it is the input pin: write {self.name.replace('sensed', 'PIO', 1)} to switch the output"
            raise ValueError(f"{self.name} is read-only{hint}")
        leaf = self.name.rsplit("/", 1)[-1]
        base = leaf.partition(".")[0]
        if base == "latch":
            if value is not False:
                raise ValueError(f"{self.name} can only be cleared: write false")
            return b"1"
        if self.kind == BOOL:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} expects true or false, not {value!r}")
            return b"1" if value else b"0"
        if self.kind == INT:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name} expects a whole number, not {value!r}")
            if leaf == "tempres" and value not in CONVERSION_DELAY:
                raise ValueError(f"{self.name} expects a resolution of 9, 10, 11 or 12 bits, not {value}")
            if leaf.endswith(".BYTE") and not 0 <= value <= 255:
                raise ValueError(f"{self.name} expects a bitmask from 0 to 255, not {value}")
            return str(value).encode()
        if self.kind == FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{self.name} expects a number, not {value!r}")
            if leaf in ("temphigh", "templow"):
                if not TEMP_MIN <= value <= TEMP_MAX:
                    raise ValueError(f"{self.name} expects a temperature from -55 to 125 °C, not {value}")
                if family in TEMPERATURE_FAMILIES and value != int(value):
                    raise ValueError(f"{self.name} expects a whole number of °C (the sensor stores whole degrees)")
            return repr(float(value)).encode() if value != int(value) else str(int(value)).encode()
        if self.kind == TEXT:
            if not isinstance(value, str):
                raise ValueError(f"{self.name} expects text, not {value!r}")
            return value.encode("ascii", "strict")
        if isinstance(value, bool):
            return b"1" if value else b"0"
        if isinstance(value, int | float | str):
            return str(value).encode()
        raise ValueError(f"{self.name}: cannot write {value!r}")

    def same(self, written: object, read_back: Value) -> bool:
        """Whether a read-back shows ``written`` (latches read false once cleared)."""
        if self.name.rsplit("/", 1)[-1].startswith("latch"):
            return read_back is False
        if isinstance(written, bool) or isinstance(read_back, bool):
            return written is read_back or (not isinstance(written, bool) and written == int(read_back))
        if isinstance(written, int | float) and isinstance(read_back, int | float):
            return math.isclose(float(written), float(read_back), abs_tol=1e-6)
        return written == read_back


_CHANNEL = re.compile(r"^(?P<base>[A-Za-z_0-9]+)\.(?P<index>[0-9A-H]|ALL|BYTE)$")
_TEMPERATURE_LEAVES = re.compile(r"^(temperature(9|10|11|12)?|fasttemp|latesttemp|dew_point|heat_index)$")
_BOOL_BASES = {"PIO", "sensed", "latch", "power", "IAD", "strobe"}
_WRITABLE = {"PIO", "latch", "IAD", "strobe", "temphigh", "templow", "tempres"}
_VOLATILE_BOOLS = {"PIO", "sensed", "latch"}
#: Channel names of ``.ALL`` paths per family (owserver's numbering of that chip).
_ALL_CHANNELS: dict[str, tuple[str, ...]] = {
    "29": tuple(str(i) for i in range(8)),
    "12": ("A", "B"),
    "3A": ("A", "B"),
    "20": ("A", "B", "C", "D"),
}


def _classify(leaf: str) -> tuple[str | None, str | None, bool, bool]:
    """(kind, unit, volatile, writable) of a property from its last path element."""
    match = _CHANNEL.match(leaf)
    base, index = (match["base"], match["index"]) if match else (leaf, None)
    writable = base in _WRITABLE
    if base in _BOOL_BASES:
        return (INT if index == "BYTE" else BOOL), None, base in _VOLATILE_BOOLS, writable
    if _TEMPERATURE_LEAVES.match(base):
        return FLOAT, "°C", True, False
    if base in ("temphigh", "templow"):
        return FLOAT, "°C", False, True
    if base == "tempres":
        return INT, "bit", False, True
    if base.startswith("humidity") or base.endswith("humidity"):
        return FLOAT, "%", True, False
    if base.startswith(("volt", "latestvolt")) or base in ("VAD", "VDD", "vis", "vbias"):
        return FLOAT, "V", True, False
    if base == "current":
        return FLOAT, "A", True, False
    if base == "pressure":
        return FLOAT, "mbar", True, False
    if base in ("illuminance", "light"):
        return FLOAT, "lx", True, False
    if base.startswith("counter"):
        return INT, None, True, False
    return None, None, False, False


DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    **{fam: ("temperature",) for fam in TEMPERATURE_FAMILIES},
    # humidity is off: a DS2438 reads a "humidity" whether or not an HIH sensor is wired to VAD
    "26": ("temperature", "VAD", "VDD"),
    "A6": ("temperature", "VAD", "VDD"),
    "1D": ("counter.A", "counter.B"),
    "05": ("sensed",),
    "12": ("sensed.ALL", "latch.ALL"),
    "3A": ("sensed.ALL",),
    "29": ("sensed.ALL", "latch.ALL"),
    "20": ("volt.ALL",),
    "30": ("temperature", "volt", "current"),
}
#: EDS devices (family 7E) by the ``device_type`` owserver reads from them.
EDS_PROPERTIES: dict[str, tuple[str, ...]] = {
    "EDS0065": ("EDS0065/temperature", "EDS0065/humidity"),
    "EDS0066": ("EDS0066/temperature", "EDS0066/pressure"),
    "EDS0068": ("EDS0068/temperature", "EDS0068/humidity", "EDS0068/pressure", "EDS0068/light"),
}


def property_spec(name: str, family: str, resolution: int | None = None) -> PropertySpec:
    """The spec for ``name`` on a device of ``family``.

    ``temperature`` on a family that supports it reads ``temperatureNN`` when a resolution is
    given (always the same path per sensor: mixing resolutions forces owserver to reconvert).
    Unknown names are read as-is (type from :func:`spec_from_structure` when owserver has it).
    """
    leaf = name.rsplit("/", 1)[-1]
    kind, unit, volatile, writable = _classify(leaf)
    path = name
    converts = name == "temperature" and family in TEMPERATURE_FAMILIES
    if converts and resolution is not None and family in RESOLUTION_FAMILIES:
        path = f"temperature{resolution}"
    channels: tuple[str, ...] = ()
    match = _CHANNEL.match(leaf)
    if match and match["index"] == "ALL":
        prefix = name[: -len("ALL")]
        channels = tuple(prefix + c for c in _ALL_CHANNELS.get(family, ()))
        if not channels:
            kind = TEXT  # channel names unknown for this chip: keep owserver's "1,0,..." as text
    return PropertySpec(name, path, kind, unit, volatile, writable, channels, converts)


_STRUCTURE_KINDS = {"f": FLOAT, "g": FLOAT, "p": FLOAT, "t": FLOAT, "i": INT, "u": INT, "y": BOOL, "a": TEXT}
_STRUCTURE_UNITS = {"t": "°C", "p": "mbar"}


def spec_from_structure(spec: PropertySpec, structure: bytes) -> PropertySpec:
    """``spec`` typed from owserver's ``/structure/<FAMILY>/<name>`` answer, e.g.
    ``b't,000000,000001,ro,000012,v,'`` (type letter, index, elements, ro/rw, size, volatility).
    Keeps ``spec`` unchanged when the answer does not parse."""
    fields = structure.decode("ascii", "replace").split(",")
    if len(fields) < 6 or fields[0] not in _STRUCTURE_KINDS:
        return spec
    letter, access, volatility = fields[0], fields[3], fields[5]
    return replace(
        spec,
        kind=_STRUCTURE_KINDS[letter],
        unit=spec.unit or _STRUCTURE_UNITS.get(letter),
        volatile=volatility == "v",
        writable=access in ("rw", "wo"),
    )


def needs_structure(spec: PropertySpec) -> bool:
    """True when only owserver's ``/structure`` can tell the property's type."""
    return spec.kind is None


def default_names(family: str, device_type: str | None = None) -> tuple[str, ...]:
    """The properties read when nothing is configured for a device."""
    if family == "7E" and device_type in EDS_PROPERTIES:
        return EDS_PROPERTIES[device_type]
    return DEFAULT_PROPERTIES.get(family, ())


def properties_for(
    family: str,
    configured: Iterable[str] | None = None,
    family_overrides: Mapping[str, Iterable[str]] | None = None,
    resolution: int | None = None,
    device_type: str | None = None,
) -> tuple[PropertySpec, ...]:
    """Properties to read for one device: per-sensor config, else per-family config, else defaults."""
    if configured is not None:
        names = tuple(configured)
    elif family_overrides is not None and family in family_overrides:
        names = tuple(family_overrides[family])
    else:
        names = default_names(family, device_type)
    return tuple(property_spec(n, family, resolution) for n in names)


def reading_names(spec: PropertySpec) -> tuple[str, ...]:
    """The names of the readings one read of ``spec`` gives."""
    return spec.channels or (spec.name,)


def conversion_delay(resolution: int | None) -> float:
    """Seconds to wait after a simultaneous conversion at ``resolution`` (None = 12 bit default)."""
    if resolution is None:
        return DEFAULT_CONVERSION_DELAY
    return CONVERSION_DELAY[resolution]


def check_write(name: str, family: str, value: Any) -> PropertySpec:
    """The spec of ``name`` after checking that ``value`` can be written to it; raises ValueError.

    Unknown names pass (owserver's ``/structure`` decides when the write is made)."""
    spec = property_spec(name, family)
    if spec.kind is not None:
        spec.encode(value, family)
    return spec
