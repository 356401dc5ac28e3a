"""One read cycle over located devices, with simultaneous temperature conversion.

Per cycle: for every bus holding temperature sensors, write ``<bus>simultaneous/temperature``
(one SKIP ROM + CONVERT T for the whole bus), wait the conversion time once, then read each
sensor's *cached* ``temperature`` path, which owserver answers from that conversion. Reading
``/uncached/.../temperature`` would start a new conversion per sensor, so it is never used.
N sensors on a bus cost one conversion time plus N short reads instead of N conversion times.

Volatile properties (inputs, counters, analogue values; see :mod:`.families`) are read through
``/uncached`` so each reading is fresh, not owserver's copy of up to 15 s (PIO: 300 s) ago.

Values are checked: temperatures outside -55..125 degC are rejected, and the DS18B20 power-on
value 85.0 degC is rejected unless the previous accepted value was already close to 85; a sensor
that keeps reading 85.0 (a power fault) keeps being rejected until it reads something else.

Sessions are duck-typed (:class:`Session`): an owserver session or a kernel sysfs session.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .connection import ServerUnavailable
from .errors import PathError
from .families import POWER_ON_VALUE, TEMP_MAX, TEMP_MIN, TEMPERATURE_FAMILIES, PropertySpec, Value

log = logging.getLogger(__name__)

# A previous accepted value within this distance makes 85.0 plausible.
POWER_ON_PLAUSIBLE = 10.0
UNCACHED = "/uncached"


class Session(Protocol):
    """What a read cycle needs of a backend session (one server or kernel bus, one thread).

    ``read``/``write`` take owserver-style paths (``[/uncached]<bus path><id>/<property>``) and
    raise :class:`~.errors.PathError` for one path, :class:`~.connection.ServerUnavailable` for
    the whole backend."""

    round_trips: int

    @property
    def name(self) -> str: ...

    def read(self, path: str) -> bytes: ...

    def write(self, path: str, data: bytes) -> None: ...

    def convert_temperatures(self, bus_path: str) -> None: ...


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
        return any(p.converts for p in self.properties)


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

    85.0 is accepted only when the previous accepted value of that sensor was within 10 degC of
    it (a boiler near 85 degC). Otherwise it is the DS18B20's power-on value: rejected, and while
    the sensor keeps reading 85.0 (a power fault: a brown-out on every conversion) every further
    85.0 is rejected too, counted in ``rejected``, and logged once when the run starts and once
    when it ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._stuck: dict[tuple[str, str], int] = {}
        self.rejected = 0

    def accept(self, key: tuple[str, str], value: float) -> bool:
        with self._lock:
            if value != POWER_ON_VALUE:
                ended = self._stuck.pop(key, 0)
                self._last[key] = value
            else:
                prev = self._last.get(key)
                if prev is not None and abs(prev - value) <= POWER_ON_PLAUSIBLE and key not in self._stuck:
                    self._last[key] = value
                    return True
                run = self._stuck.get(key, 0) + 1
                self._stuck[key] = run
                self.rejected += 1
        if value != POWER_ON_VALUE:
            if ended:
                log.info(
                    "1-wire device %s: %s reads %s again after %d rejected 85.0 °C reading(s)",
                    key[0],
                    key[1],
                    value,
                    ended,
                )
            return True
        if run == 1:
            log.warning(
                "1-wire device %s: %s reads 85.0 °C, the power-on value: rejected, and rejected "
                "again until it reads something else (a sensor that stays at 85.0 loses power "
                "during conversions: check VDD or parasitic power)",
                key[0],
                key[1],
            )
        return False

    def stuck(self, key: tuple[str, str]) -> int:
        """How many 85.0 readings in a row have been rejected for ``key`` (0 when none)."""
        with self._lock:
            return self._stuck.get(key, 0)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


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

    def read(self, jobs: Sequence[tuple[Session, Sequence[ReadTarget]]]) -> CycleResult:
        """Read all ``targets`` through their sessions (one session per server or kernel bus).

        Server failures end that server's part of the cycle and are listed in ``unavailable``;
        per-device failures and rejected values are listed in ``errors``. A conversion is
        triggered (and waited for) only when a target reads a converted temperature. Never
        raises for backend errors.
        """
        result = CycleResult()
        start_trips = sum(s.round_trips for s, _ in jobs)
        trigger_time: dict[int, float] = {}
        converted: dict[int, set[str]] = {}
        last_trigger: float | None = None
        if self.simultaneous:
            for index, (session, targets) in enumerate(jobs):
                buses = sorted({t.bus_path for t in targets if t.converts})
                try:
                    for bus_path in buses:
                        try:
                            session.convert_temperatures(bus_path)
                        except PathError as err:
                            log.debug("simultaneous conversion on %s%s failed: %s", session.name, bus_path, err)
                            continue
                        result.triggers += 1
                        converted.setdefault(index, set()).add(bus_path)
                        last_trigger = self._monotonic()
                        trigger_time.setdefault(index, self._clock())
                except ServerUnavailable as err:
                    result.unavailable[session.name] = err.reason
        if last_trigger is not None:
            remaining = self.conversion_delay - (self._monotonic() - last_trigger)
            if remaining > 0:
                result.waited = remaining
                if not self._wait(remaining):
                    result.interrupted = True
                    result.round_trips = sum(s.round_trips for s, _ in jobs) - start_trips
                    return result
        for index, (session, targets) in enumerate(jobs):
            server = session.name
            if server in result.unavailable:
                continue
            converted_buses = converted.get(index, set())
            try:
                for target in targets:
                    self._read_target(
                        session, target, trigger_time.get(index), target.bus_path in converted_buses, result
                    )
            except ServerUnavailable as err:
                result.unavailable[server] = err.reason
        result.round_trips = sum(s.round_trips for s, _ in jobs) - start_trips
        return result

    def _read_target(
        self, session: Session, target: ReadTarget, trigger: float | None, converted: bool, result: CycleResult
    ) -> None:
        server = session.name
        for spec in target.properties:
            # A converted temperature is read cached (owserver answers from the conversion);
            # other volatile values uncached so they are fresh.
            uncached = spec.volatile and not (spec.converts and converted)
            path = f"{UNCACHED if uncached else ''}{target.bus_path}{target.device_id}/{spec.path}"
            try:
                raw = session.read(path)
            except PathError as err:
                result.errors.append(ReadError(target.device_id, spec.name, err.kind, err.detail))
                continue
            now = self._clock()
            try:
                values: list[tuple[str, Value]] = (
                    spec.parse_channels(raw) if spec.channels else [(spec.name, spec.parse(raw))]
                )
            except ValueError:
                result.errors.append(ReadError(target.device_id, spec.name, "parse", repr(raw)))
                continue
            timestamp = now
            first = values[0][1]
            if spec.is_temperature and isinstance(first, float):
                value = first
                if not TEMP_MIN <= value <= TEMP_MAX:
                    result.errors.append(ReadError(target.device_id, spec.name, "range", str(value)))
                    continue
                if target.family in TEMPERATURE_FAMILIES and not self.power_on.accept(
                    (target.device_id, spec.name), value
                ):
                    result.errors.append(
                        ReadError(target.device_id, spec.name, "power-on", "85.0 °C, the power-on value")
                    )
                    continue
                if spec.converts and converted and trigger is not None:
                    timestamp = trigger
            for name, channel_value in values:
                result.readings.append(
                    Reading(target.device_id, target.alias, name, channel_value, spec.unit, timestamp, server)
                )
