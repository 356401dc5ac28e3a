"""When each property is due: per-sensor and per-property intervals on the module's read timer.

No thread per sensor: the ``read`` timer ticks at its period (set it to the shortest interval),
and each tick reads only what is due. A property read at ``t`` with interval ``i`` is due again
from ``t + i - slack``, ``slack`` being half a tick (at most half the interval), so a 60 s
interval on a 1 s timer is read every 60 s, not every 61 s because of a tick a millisecond early.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable


class Schedule:
    """Next due times by key, on a monotonic clock (injectable). Thread-safe; never blocks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._next: dict[Hashable, float] = {}
        self.tick = 0.0

    def due(self, key: Hashable, interval: float | None, now: float) -> bool:
        """Whether ``key`` should be read at ``now``; None (no interval) is always due."""
        if interval is None:
            return True
        with self._lock:
            return now >= self._next.get(key, float("-inf"))

    def done(self, key: Hashable, interval: float | None, now: float) -> None:
        """Record that ``key`` was read at ``now``."""
        if interval is None:
            return
        slack = min(self.tick, interval) / 2
        with self._lock:
            self._next[key] = now + interval - slack

    def forget(self, keys: Callable[[Hashable], bool]) -> None:
        """Make the keys matching ``keys`` due at once (a device re-located, a config update)."""
        with self._lock:
            for key in [k for k in self._next if keys(k)]:
                del self._next[key]
