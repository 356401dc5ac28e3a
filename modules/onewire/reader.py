"""One read cycle over located devices, with simultaneous temperature conversion.

Per cycle: for every bus holding temperature sensors, write ``<bus>simultaneous/temperature``
(one SKIP ROM + CONVERT T for the whole bus), wait the conversion time once, then read each
sensor's *cached* ``temperature`` path, which owserver answers from that conversion. Reading
``/uncached/.../temperature`` would start a new conversion per sensor, so it is never used.
N sensors on a bus cost one conversion time plus N short reads instead of N conversion times.

Values are checked: temperatures outside -55..125 degC are rejected, and the DS18B20 power-on
value 85.0 degC is rejected unless a second read (next cycle) confirms it or the previous accepted
value was already close to 85.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .connection import OwnetError, OwSession, ServerUnavailable
from .families import POWER_ON_VALUE, TEMP_MAX, TEMP_MIN, TEMPERATURE_FAMILIES, PropertySpec

log = logging.getLogger(__name__)

# A previous accepted value within this distance makes 85.0 plausible without confirmation.
POWER_ON_PLAUSIBLE = 10.0


@dataclass(frozen=True)
class ReadTarget:
    """A device to read at ``bus_path`` with the given properties."""

    device_id: str
    alias: str | None
    bus_path: str
    properties: tuple[PropertySpec, ...]

    @property
    def family(self) -> str:
        return self.device_id[:2]

    @property
    def converts(self) -> bool:
        """True when a simultaneous conversion on its bus serves one of its properties."""
        return self.family in TEMPERATURE_FAMILIES and any(p.is_temperature for p in self.properties)


@dataclass(frozen=True)
class Reading:
    """One accepted value. ``timestamp`` (epoch s) is the conversion trigger time for
    simultaneously converted temperatures, else the time of the read."""

    device_id: str
    alias: str | None
    property: str
    value: Any
    unit: str | None
    timestamp: float
    server: str

    def entry(self) -> dict[str, Any]:
        """The storage entry for this reading (JSON serialisable)."""
        return {
            "deviceId": self.device_id,
            "alias": self.alias,
            "property": self.property,
            "value": self.value,
            "unit": self.unit,
            "timestamp": self.timestamp,
            "server": self.server,
        }


@dataclass(frozen=True)
class ReadError:
    """A failed or rejected read. ``kind``: missing, bus, owserver, parse, range, power-on."""

    device_id: str
    property: str
    kind: str
    detail: str


@dataclass
class CycleResult:
    readings: list[Reading] = field(default_factory=list)
    errors: list[ReadError] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    triggers: int = 0
    waited: float = 0.0
    round_trips: int = 0
    interrupted: bool = False


class PowerOnFilter:
    """Decides whether an 85.0 degC reading is believed. Thread-safe.

    85.0 is accepted when the previous accepted value of that sensor was within 10 degC of it,
    or when the read right before (previous cycle) was also 85.0; otherwise it is rejected and
    remembered as pending confirmation.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._pending: set[tuple[str, str]] = set()

    def accept(self, key: tuple[str, str], value: float) -> bool:
        with self._lock:
            if value != POWER_ON_VALUE:
                self._pending.discard(key)
                self._last[key] = value
                return True
            prev = self._last.get(key)
            if (prev is not None and abs(prev - value) <= POWER_ON_PLAUSIBLE) or key in self._pending:
                self._pending.discard(key)
                self._last[key] = value
                return True
            self._pending.add(key)
            return False


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


def _ownet_kind(err: Exception) -> str:
    code = getattr(err, "errno", None)
    if code == 1:
        return "missing"
    if code == 22:
        return "bus"
    return "owserver"


class Reader:
    """Runs read cycles. ``wait(seconds) -> bool`` sleeps and returns False when the caller is
    stopping (the cycle then ends without reading). Safe to use from one thread at a time per
    session; the power-on filter state is shared and thread-safe."""

    def __init__(
        self,
        *,
        simultaneous: bool = True,
        conversion_delay: float = 1.2,
        wait: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.simultaneous = simultaneous
        self.conversion_delay = conversion_delay
        self._wait = wait or _sleep
        self._clock = clock
        self._monotonic = monotonic
        self.power_on = PowerOnFilter()

    def read(self, jobs: Sequence[tuple[OwSession, Sequence[ReadTarget]]]) -> CycleResult:
        """Read all ``targets`` through their sessions (one session per server).

        Server failures end that server's part of the cycle and are listed in ``unavailable``;
        per-device failures and rejected values are listed in ``errors``. Never raises for
        owserver errors.
        """
        result = CycleResult()
        start_trips = sum(s.round_trips for s, _ in jobs)
        trigger_time: dict[int, float] = {}
        last_trigger: float | None = None
        if self.simultaneous:
            for index, (session, targets) in enumerate(jobs):
                buses = sorted({t.bus_path for t in targets if t.converts})
                try:
                    for bus_path in buses:
                        try:
                            session.write(f"{bus_path}simultaneous/temperature", b"1")
                        except OwnetError as err:
                            log.debug("simultaneous conversion on %s%s failed: %s", session.server, bus_path, err)
                            continue
                        result.triggers += 1
                        last_trigger = self._monotonic()
                        trigger_time.setdefault(index, self._clock())
                except ServerUnavailable as err:
                    result.unavailable[str(session.server)] = err.reason
        if last_trigger is not None:
            remaining = self.conversion_delay - (self._monotonic() - last_trigger)
            if remaining > 0:
                result.waited = remaining
                if not self._wait(remaining):
                    result.interrupted = True
                    result.round_trips = sum(s.round_trips for s, _ in jobs) - start_trips
                    return result
        for index, (session, targets) in enumerate(jobs):
            server = str(session.server)
            if server in result.unavailable:
                continue
            try:
                for target in targets:
                    self._read_target(session, target, trigger_time.get(index), result)
            except ServerUnavailable as err:
                result.unavailable[server] = err.reason
        result.round_trips = sum(s.round_trips for s, _ in jobs) - start_trips
        return result

    def _read_target(self, session: OwSession, target: ReadTarget, trigger: float | None, result: CycleResult) -> None:
        server = str(session.server.address)
        for spec in target.properties:
            path = f"{target.bus_path}{target.device_id}/{spec.path}"
            try:
                raw = session.read(path)
            except OwnetError as err:
                result.errors.append(ReadError(target.device_id, spec.name, _ownet_kind(err), str(err)))
                continue
            now = self._clock()
            try:
                value = spec.parse(raw)
            except ValueError:
                result.errors.append(ReadError(target.device_id, spec.name, "parse", repr(raw)))
                continue
            timestamp = now
            if spec.is_temperature and isinstance(value, float):
                if not TEMP_MIN <= value <= TEMP_MAX:
                    result.errors.append(ReadError(target.device_id, spec.name, "range", str(value)))
                    continue
                if not self.power_on.accept((target.device_id, spec.name), value):
                    result.errors.append(
                        ReadError(target.device_id, spec.name, "power-on", "85.0 awaiting confirmation")
                    )
                    continue
                if target.converts and trigger is not None:
                    timestamp = trigger
            result.readings.append(
                Reading(target.device_id, target.alias, spec.name, value, spec.unit, timestamp, server)
            )
