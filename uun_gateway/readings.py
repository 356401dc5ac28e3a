"""Typed readings: one measured value of one data point, and what is known about that point.

A *point* is one measurable property of one device of one module: module ``onewire``, device
``28.8A0B2C000000`` (or its alias), point ``temperature``. A :class:`Reading` is one value of a point
at one time; :class:`PointInfo` is the point's metadata (unit, valid range, limits, description).
Alarm rules (:mod:`uun_gateway.alarms`) select readings by module, device and point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Quality = Literal["good", "uncertain", "bad"]
"""How far a reading can be trusted: ``good``; ``uncertain``, a value the module flags as doubtful
(e.g. the first reading after a sensor's power-on); ``bad``, outside the point's valid ``min``/``max``
range or flagged by the module as wrong. A value beyond the ``hi``/``lo`` limits is still ``good``:
it is real, just worth attention. Alarm conditions see ``good`` and ``uncertain`` readings only."""

QUALITIES: tuple[Quality, ...] = ("good", "uncertain", "bad")

Limit = Literal["hi", "lo"]


@dataclass(frozen=True, slots=True)
class PointInfo:
    """Metadata of one point. Immutable, so safe to share between threads.

    ``min``/``max``: the valid range; a value outside it is physically impossible for the sensor and
    makes a reading ``bad``. ``hi``/``lo``: operating limits; a value beyond them is real but worth
    attention (:meth:`limit`). Each bound is inclusive and optional. Raises :class:`ValueError` at
    construction when the bounds contradict each other (``min > max``, ``lo > hi``, a limit outside
    the valid range) or are not finite numbers.
    """

    unit: str | None = None
    description: str = ""
    min: float | None = None
    max: float | None = None
    hi: float | None = None
    lo: float | None = None

    def __post_init__(self) -> None:
        for name in ("min", "max", "hi", "lo"):
            bound = getattr(self, name)
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound)
            ):
                raise ValueError(f"PointInfo.{name}: expected a finite number or None, got {bound!r}")
        pairs = (("min", "max"), ("lo", "hi"), ("min", "lo"), ("hi", "max"), ("min", "hi"), ("lo", "max"))
        for low, high in pairs:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"PointInfo: {low} ({a}) is above {high} ({b}); expected {low} <= {high}")

    def in_range(self, value: float) -> bool:
        """True when ``value`` lies in the valid range (and is a finite number)."""
        if not math.isfinite(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def limit(self, value: float) -> Limit | None:
        """``"hi"`` at or above ``hi``, ``"lo"`` at or below ``lo``, else None."""
        if self.hi is not None and value >= self.hi:
            return "hi"
        if self.lo is not None and value <= self.lo:
            return "lo"
        return None

    def quality(self, value: Any) -> Quality:
        """``bad`` for a number outside the valid range (or not finite), else ``good``; values that are
        not numbers (text, objects) are ``good``: the range says nothing about them."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "good"
        return "good" if self.in_range(float(value)) else "bad"

    def to_dict(self) -> dict[str, Any]:
        """The set fields, JSON serialisable (for a module's point catalogue)."""
        fields: dict[str, Any] = {"unit": self.unit, "description": self.description or None}
        fields.update(min=self.min, max=self.max, hi=self.hi, lo=self.lo)
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point. Immutable, so safe to hand to several threads.

    ``timestamp`` is seconds since the epoch (when the value was measured, not when it was handled).
    ``module`` is the id of the module that produced it. ``value`` is usually a number; alarm
    conditions treat ``True``/``False`` as 1/0 and skip readings whose value is not a finite number.
    """

    module: str
    device: str
    point: str
    value: Any
    timestamp: float
    unit: str | None = None
    quality: Quality = "good"

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise ValueError(f"Reading.quality: expected one of {', '.join(QUALITIES)}, got {self.quality!r}")
        for name in ("module", "device", "point"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Reading.{name}: expected a non-empty string, got {getattr(self, name)!r}")

    @classmethod
    def of(
        cls,
        module: str,
        device: str,
        point: str,
        value: Any,
        info: PointInfo | None = None,
        *,
        timestamp: float | None = None,
        quality: Quality | None = None,
    ) -> Reading:
        """A reading taking its unit from ``info`` and its quality from ``info``'s valid range (unless
        ``quality`` is given); ``timestamp`` defaults to now."""
        info = info or PointInfo()
        return cls(
            module,
            device,
            point,
            value,
            time.time() if timestamp is None else timestamp,
            info.unit,
            quality if quality is not None else info.quality(value),
        )

    @property
    def number(self) -> float | None:
        """The value as a finite float (booleans as 1.0/0.0), or None when it is not one."""
        value = self.value
        if isinstance(value, (int, float)):
            number = float(value)
            return number if math.isfinite(number) else None
        return None

    @property
    def source(self) -> str:
        """``module/device/point``: how logs and alarm records name the point."""
        return f"{self.module}/{self.device}/{self.point}"

    def with_quality(self, quality: Quality) -> Reading:
        return replace(self, quality=quality)

    def entry(self) -> dict[str, Any]:
        """The storage entry for this reading (JSON serialisable)."""
        return {
            "module": self.module,
            "device": self.device,
            "point": self.point,
            "value": self.value,
            "unit": self.unit,
            "timestamp": self.timestamp,
            "quality": self.quality,
        }

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Reading:
        """The reading :meth:`entry` produced. Raises :class:`ValueError` naming a missing or bad key."""
        try:
            return cls(
                str(entry["module"]),
                str(entry["device"]),
                str(entry["point"]),
                entry["value"],
                float(entry["timestamp"]),
                entry.get("unit"),
                entry.get("quality", "good"),
            )
        except KeyError as exc:
            raise ValueError(f"reading entry: required key {exc.args[0]!r} is missing") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"reading entry: {exc}") from exc
