"""Typed readings and point metadata."""

from __future__ import annotations

import math
from typing import Any

import pytest

from uun_gateway.readings import PointInfo, Reading


def test_point_info_range_and_limits() -> None:
    info = PointInfo(unit="°C", description="boiler", min=-55, max=125, lo=5, hi=80)
    assert info.quality(20.0) == "good"
    assert info.quality(125) == "good"
    assert info.quality(125.5) == "bad"
    assert info.quality(-60) == "bad"
    assert info.quality(math.nan) == "bad"
    assert info.quality("on") == "good"
    assert info.limit(80.0) == "hi"
    assert info.limit(5.0) == "lo"
    assert info.limit(50.0) is None
    assert info.to_dict() == {"unit": "°C", "description": "boiler", "min": -55, "max": 125, "hi": 80, "lo": 5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min": 10, "max": 0}, r"min \(10\) is above max \(0\)"),
        ({"lo": 10, "hi": 0}, r"lo \(10\) is above hi \(0\)"),
        ({"min": 0, "max": 10, "hi": 20}, r"hi \(20\) is above max \(10\)"),
        ({"min": 0, "lo": -1}, r"min \(0\) is above lo \(-1\)"),
        ({"max": math.inf}, "PointInfo.max: expected a finite number or None"),
        ({"hi": True}, "PointInfo.hi: expected a finite number or None"),
    ],
)
def test_point_info_rejects_contradictions(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PointInfo(**kwargs)


def test_reading_of_takes_unit_and_quality_from_the_point() -> None:
    info = PointInfo(unit="°C", min=-55, max=125)
    good = Reading.of("onewire", "28.A", "temperature", 21.5, info, timestamp=100.0)
    assert (good.unit, good.quality, good.timestamp, good.number) == ("°C", "good", 100.0, 21.5)
    bad = Reading.of("onewire", "28.A", "temperature", 200.0, info, timestamp=100.0)
    assert bad.quality == "bad"
    flagged = Reading.of("onewire", "28.A", "temperature", 85.0, info, timestamp=1.0, quality="uncertain")
    assert flagged.quality == "uncertain"
    assert good.source == "onewire/28.A/temperature"


def test_reading_number() -> None:
    assert Reading("m", "d", "p", True, 0.0).number == 1.0
    assert Reading("m", "d", "p", 3, 0.0).number == 3.0
    assert Reading("m", "d", "p", "3", 0.0).number is None
    assert Reading("m", "d", "p", math.inf, 0.0).number is None
    assert Reading("m", "d", "p", None, 0.0).number is None


def test_reading_entry_round_trip() -> None:
    reading = Reading("onewire", "28.A", "temperature", 21.5, 100.0, "°C", "uncertain")
    assert reading.entry() == {
        "module": "onewire",
        "device": "28.A",
        "point": "temperature",
        "value": 21.5,
        "unit": "°C",
        "timestamp": 100.0,
        "quality": "uncertain",
    }
    assert Reading.from_entry(reading.entry()) == reading
    with pytest.raises(ValueError, match="required key 'point' is missing"):
        Reading.from_entry({"module": "m", "device": "d", "value": 1, "timestamp": 0})
    with pytest.raises(ValueError, match=r"Reading\.quality: expected one of good, uncertain, bad"):
        Reading.from_entry({"module": "m", "device": "d", "point": "p", "value": 1, "timestamp": 0, "quality": "x"})


def test_reading_validates_names() -> None:
    with pytest.raises(ValueError, match=r"Reading\.device: expected a non-empty string"):
        Reading("m", "", "p", 1, 0.0)
