"""The bounds config values keep, shared by the core's schema and every module's.

A duration beyond them validates as a number but cannot be waited for (Python's waits raise
``OverflowError: timestamp out of range`` past about 292 years), and is a typo anyway.
"""

from __future__ import annotations

from typing import Any

YEAR = 365 * 24 * 3600
DAY = 24 * 3600
MAX_INTEGER = 2**63 - 1
"""What SQLite and every sane setting fit in."""


def seconds_schema(what: str = "seconds", *, maximum: float = DAY, zero: bool = False) -> dict[str, Any]:
    """JSON Schema of a duration in seconds: a number > 0 (``zero``: >= 0) and at most ``maximum``
    (a day by default; :data:`YEAR` for periods). ``what`` ends the description that an error
    message gives as what was expected."""
    low: dict[str, Any] = {"minimum": 0} if zero else {"exclusiveMinimum": 0}
    return {
        "type": "number",
        **low,
        "maximum": maximum,
        "description": f"a number {'>=' if zero else '>'} 0, at most {maximum:.15g} ({what})",
    }
