"""ISO 8601 timestamps in UTC, the form uuApp servers and logs expect: ``2026-12-01T12:00:00.250Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso_utc(epoch: float | None = None, timespec: str = "milliseconds") -> str:
    """``epoch`` (seconds since 1970; default now) as ISO 8601 UTC with a ``Z``.
    ``timespec`` is :meth:`datetime.isoformat`'s (``seconds``, ``milliseconds`` …)."""
    when = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(when, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 timestamp (``Z`` or an offset) as an aware :class:`datetime`; one without an offset
    is taken as UTC. Raises :class:`ValueError` naming the text."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
