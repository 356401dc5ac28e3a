"""The built-in ``onewire`` module: 1-Wire sensors through owserver (pyownet) or the kernel's
w1 bus (sysfs), thread-based.

Timers (``gateway.moduleTimers.onewire``): ``scan`` walks every server's buses and updates the
inventory; ``read`` runs one read cycle: it applies configured outputs that are not yet
confirmed, polls the buses' ``/alarm`` directories when due, and reads the properties that are
due (per-sensor and per-property ``interval``; without one, every tick), storing each accepted
value as an entry ``{deviceId, alias, property, value, unit, timestamp, server}`` in the module's
storage, from where the upload module delivers it. Alarms are stored as
``{event: "alarm", alarm, deviceId, alias, reason, values, timestamp, server}`` entries.

Outages never escape the handlers: an unreachable, restarted or frozen owserver is logged once
per state change (and summarised every 5 minutes while it lasts), retried every cycle (with a
capped backoff after timeouts), and picked up again by the next tick after it is back; the first
read tick after a (re)connection scans first. Every owserver request ends within
``requestTimeout`` seconds, and at once when the gateway stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import replace
from typing import Any, ClassVar

from uun_gateway import ConfigError, Module, StateLog, on
from uun_gateway import Reading as PointReading

from .connection import OwServer, OwSession, ServerUnavailable
from .errors import PathError
from .families import TEMPERATURE_FAMILIES, PropertySpec, Value, check_write, properties_for, property_spec
from .inventory import (
    Device,
    DeviceAlarm,
    DeviceAlarmCleared,
    DeviceLocated,
    DeviceMoved,
    DeviceNotFound,
    DeviceValue,
    Event,
    EventBus,
    Inventory,
    Listener,
    ServerConnected,
    ServerDisconnected,
)
from .reader import UNCACHED, CycleResult, Reader, ReadTarget, Session
from .scanner import DEVICE_ID, ScanResult, scan
from .schedule import Schedule
from .schema import SCHEMA, Address, Settings
from .sysfs import SysfsAddress, SysfsBus, SysfsSession
from .writer import UnknownDevice, WriteFailed, WriteResult, typed, write_confirmed

log = logging.getLogger(__name__)

_LOG_VALUES = 8
#: A failing sensor is logged once, then summarised at most this often (seconds).
READ_LOG_SUMMARY = 300.0
Backend = OwServer | SysfsBus


class OneWire(Module):
    """1-Wire sensors via one or more owservers or kernel w1 buses.

    Other modules (or user code) can follow what happens with :meth:`subscribe`, which delivers
    :mod:`~.inventory` events (server connected/disconnected, device added/located/moved/not
    found, values, alarms), and switch outputs with :meth:`write`. Handlers are safe to run
    concurrently (scan and read ticks run in different timer threads; each thread uses its own
    owserver connection).
    """

    id = "onewire"
    config_schema: ClassVar[dict[str, Any] | None] = SCHEMA
    timer_defaults: ClassVar[dict[str | None, float]] = {"scan": 60.0, "read": 10.0}

    def __init__(self, config: Any = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient)
        self.events = EventBus()
        self._state_lock = threading.Lock()
        self._servers: dict[Address, Backend] = {}
        self._needs_scan: set[Address] = set()
        self._warned_simulated: set[tuple[Address, str]] = set()
        self._buses: dict[str, list[str]] = {}
        self._in_alarm: dict[str, set[str]] = {}
        self._pending: dict[tuple[str, str], Value] = {}
        self._output_logs: dict[tuple[str, str], StateLog] = {}
        self._read_logs: dict[str, StateLog] = {}
        self._read_failed_at: dict[str, float] = {}
        self._structure: dict[tuple[str, str, str], PropertySpec] = {}
        self.clock: Callable[[], float] = time.time
        self.schedule = Schedule()
        self.settings = self._load_settings()
        self.inventory = Inventory(self.settings.missed_scans)
        self.reader = Reader(wait=self._wait)
        self._apply_settings()

    # -- configuration ----------------------------------------------------------------------------

    def _load_settings(self) -> Settings:
        section = self._config.get(self.id, {})
        settings = Settings.from_config(section)
        problems = settings.errors()
        if problems:
            raise ConfigError(problems)
        return settings

    def _read_period(self) -> float:
        timers = self._c("moduleTimers", {}, scope="gateway")
        setting = timers.get(self.id) if isinstance(timers, dict) else None
        if isinstance(setting, dict) and isinstance(setting.get("read"), int | float):
            return float(setting["read"])
        return self.timer_defaults["read"]

    def _apply_settings(self) -> None:
        settings = self.settings
        with self._state_lock:
            servers: dict[Address, Backend] = {}
            for address in settings.servers:
                server = self._servers.get(address)
                if isinstance(address, SysfsAddress):
                    if server is None:
                        server = SysfsBus(address, on_state=self._on_server_state)
                        self._needs_scan.add(address)
                elif server is None or server.persistent != settings.persistent:
                    server = OwServer(
                        address,
                        persistent=settings.persistent,
                        on_state=self._on_server_state,
                        stopping=self._stopping,
                    )
                    self._needs_scan.add(address)
                server.backoff_max = settings.backoff_max
                server.request_timeout = settings.request_timeout
                servers[address] = server
            self._servers = servers
            self._pending = {
                (dev_id, prop): value for dev_id, s in settings.sensors.items() for prop, value in s.outputs.items()
            }
        self.inventory.missed_scans = settings.missed_scans
        self.reader.simultaneous = settings.simultaneous
        self.reader.conversion_delay = settings.effective_conversion_delay()
        tick = self._read_period()
        self.schedule.tick = tick
        for where, seconds in self._intervals(settings):
            if seconds < tick:
                log.warning(
                    "gateway.onewire.%s is %g s but the read timer ticks every %g s: it is read every %g s; "
                    "set gateway.moduleTimers.onewire.read to %g or less",
                    where,
                    seconds,
                    tick,
                    tick,
                    seconds,
                )

    @staticmethod
    def _intervals(settings: Settings) -> list[tuple[str, float]]:
        found = [("interval", settings.interval)] if settings.interval is not None else []
        for dev_id, sensor in settings.sensors.items():
            if sensor.interval is not None:
                found.append((f"sensors.{dev_id}.interval", sensor.interval))
            found.extend((f"sensors.{dev_id}.intervals.{p}", v) for p, v in sensor.intervals.items())
        return found

    @on("update")
    def on_update(self) -> None:
        """Re-read ``gateway.onewire`` after a configuration update; the inventory is kept, and
        configured outputs are checked (and set where needed) at the next read tick."""
        self.settings = self._load_settings()
        self._apply_settings()

    @on("stop")
    def on_stop(self) -> None:
        """Interrupt a conversion wait or an owserver request in progress."""
        self.request_stop()

    def _stopping(self) -> bool:
        return self.stop_event.is_set()

    def _wait(self, seconds: float) -> bool:
        # Under a gateway its stop event is set before the timers are joined, so a tick waiting
        # here ends at once on stop; standalone, on_stop() sets our own event.
        return not self.stop_event.wait(seconds)

    # -- events -----------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every future event; returns the unsubscribe function.

        The listener runs in the module's timer threads and must not block for long.
        """
        return self.events.subscribe(listener)

    def _on_server_state(self, address: Address, connected: bool, reason: str) -> None:
        if connected:
            with self._state_lock:
                self._needs_scan.add(address)
            event: Event = ServerConnected(str(address))
        else:
            event = ServerDisconnected(str(address), reason)
        self.events.emit([event])

    @property
    def servers(self) -> list[Backend]:
        with self._state_lock:
            return list(self._servers.values())

    def _server_named(self, name: str) -> Backend | None:
        return next((s for s in self.servers if s.name == name), None)

    # -- scanning ---------------------------------------------------------------------------------

    @on("tick", "scan")
    def scan_tick(self) -> None:
        """Scan every configured server."""
        self.scan_all()

    def scan_all(self) -> dict[str, ScanResult | None]:
        """Scan each server; returns its result, or None when it was unavailable. Never raises for
        backend outages."""
        return {server.name: self._scan(server) for server in self.servers}

    def _session(self, server: Backend) -> AbstractContextManager[OwSession | SysfsSession]:
        return server.session()

    def _scan(self, server: Backend) -> ScanResult | None:
        try:
            with self._session(server) as session:
                return self._scan_in(server, session)
        except ServerUnavailable:
            return None
        except PathError as err:
            log.warning("%s: scan failed: %s", server.name, err)
            return None

    def _scan_in(self, server: Backend, session: OwSession | SysfsSession) -> ScanResult:
        if isinstance(session, SysfsSession):
            result = session.scan()
        else:
            result = scan(session, max_depth=self.settings.max_coupler_depth, known_types=self.inventory.known_types())
        with self._state_lock:
            self._needs_scan.discard(server.address)
            self._buses[server.name] = list(result.buses)
            new_simulated = [
                (bus, name)
                for bus, name in result.simulated_buses.items()
                if (server.address, bus) not in self._warned_simulated
            ]
            self._warned_simulated.update((server.address, bus) for bus, _ in new_simulated)
        for bus, name in new_simulated:
            log.warning(
                "owserver %s%s is a simulated bus master (%s): values are not real; "
                "check the 'server:' lines of /etc/owfs.conf",
                server.address,
                bus,
                name,
            )
        for branch in result.depth_limited:
            log.warning("owserver %s: coupler %s not walked: deeper than maxCouplerDepth", server.address, branch)
        events = self.inventory.apply_scan(server.name, result)
        for event in events:
            dev = getattr(event, "device", None)
            label = f"{dev.id} ({dev.type or 'unknown type'})" if dev is not None else ""
            if isinstance(event, DeviceNotFound):
                log.warning("1-wire device %s not found (last seen at %s)", label, event.last)
            elif isinstance(event, DeviceLocated | DeviceMoved):
                if isinstance(event, DeviceLocated):
                    log.info("1-wire device %s found at %s", label, event.location)
                else:
                    log.info("1-wire device %s moved from %s to %s", label, event.old, event.new)
                self._device_back(event.device.id)
        self.events.emit(events)
        return result

    def _device_back(self, dev_id: str) -> None:
        """A device (re)appeared: its outputs may have been reset by a power cycle, check them;
        read it at the next tick."""
        sensor = self.settings.sensors.get(dev_id)
        if sensor is not None and sensor.outputs:
            with self._state_lock:
                for prop, value in sensor.outputs.items():
                    self._pending[(dev_id, prop)] = value
        self.schedule.forget(lambda key: isinstance(key, tuple) and key[0] == dev_id)

    # -- writing ----------------------------------------------------------------------------------

    def resolve(self, device: str) -> Device:
        """The inventory's device for an id (any case) or a configured alias; raises
        :class:`~.writer.UnknownDevice` naming what was asked."""
        wanted = device.strip()
        dev_id = wanted.upper() if DEVICE_ID.match(wanted.upper()) else None
        if dev_id is None:
            dev_id = next((i for i, s in self.settings.sensors.items() if s.alias == wanted), None)
        found = self.inventory.get(dev_id) if dev_id is not None else None
        if found is None:
            raise UnknownDevice(
                f"no 1-wire device {device!r}: expected an id like 28.000028D70000 or a configured alias"
                + (" (not seen on any bus yet)" if dev_id is not None else "")
            )
        return found

    def write(self, device: str, prop: str, value: bool | int | float | str) -> WriteResult:
        """Set ``prop`` of ``device`` (id or alias) to ``value`` and confirm it by a read-back.

        ``value`` must fit the property: ``true``/``false`` for ``PIO.*`` (``latch.*``: only
        ``false``, which clears it), a whole number 9-12 for ``tempres``, a temperature for
        ``temphigh``/``templow`` ... Blocks for at most a few owserver requests (each bounded by
        ``requestTimeout``); thread-safe (the calling thread uses its own connection).

        Raises :class:`~.writer.UnknownDevice`, ``ValueError`` (wrong property or value, named),
        or :class:`~.writer.WriteFailed` (refused, not confirmed, device not located, server
        unavailable; ``unknown`` when the write may have reached the device).
        """
        dev = self.resolve(device)
        spec = check_write(prop, dev.family, value)
        if dev.location is None:
            raise WriteFailed(f"1-wire {dev.id} {prop}: the device is not found on any bus")
        server = self._server_named(dev.location.server)
        if server is None:
            raise WriteFailed(f"1-wire {dev.id} {prop}: its server {dev.location.server} is no longer configured")
        try:
            with self._session(server) as session:
                return write_confirmed(session, dev.location.bus_path, dev.id, spec, value)
        except ServerUnavailable as err:
            raise WriteFailed(f"1-wire {dev.id} {prop}: {server.name} unavailable: {err.reason}") from None

    def _apply_outputs(self, server: Backend, session: Session) -> None:
        """Set the configured outputs not yet confirmed on this server's located devices: each
        attempt reads first and writes only what differs, then confirms by a read-back."""
        with self._state_lock:
            pending = dict(self._pending)
        for (dev_id, prop), value in sorted(pending.items()):
            dev = self.inventory.get(dev_id)
            if dev is None or dev.location is None or dev.location.server != server.name:
                continue
            key = (dev_id, prop)
            state = self._output_logs.setdefault(key, StateLog(log, f"1-wire {dev_id} {prop} output"))
            try:
                result = write_confirmed(
                    session, dev.location.bus_path, dev_id, property_spec(prop, dev.family), value, check_first=True
                )
            except (WriteFailed, ValueError) as err:
                state.failed(f"{err}; trying again at the next read tick")
                continue
            with self._state_lock:
                if self._pending.get(key) == value:
                    del self._pending[key]
            if not result.changed:
                log.info("1-wire %s %s is %r as configured", dev_id, prop, result.value)
            state.ok("confirmed")

    # -- alarms -----------------------------------------------------------------------------------

    def _poll_alarms(self, server: Backend, session: Session, now: float) -> list[Event]:
        """List each bus's ``/alarm`` (conditional search); events for devices entering or
        leaving their alarm state."""
        if not isinstance(session, OwSession):
            return []
        with self._state_lock:
            buses = list(self._buses.get(server.name, []))
        alarming: set[str] = set()
        for bus_path in buses:
            try:
                entries = session.dir(f"{UNCACHED}{bus_path}alarm")
            except PathError as err:
                log.debug("%s%s: alarm directory: %s", server.name, bus_path, err)
                continue
            for entry in entries:
                dev_id = entry.rstrip("/").rsplit("/", 1)[-1]
                if DEVICE_ID.match(dev_id):
                    alarming.add(dev_id)
        with self._state_lock:
            before = self._in_alarm.get(server.name, set())
            self._in_alarm[server.name] = alarming
        events: list[Event] = []
        for dev_id in sorted(alarming - before):
            dev = self.inventory.get(dev_id)
            reason, values = self._alarm_reason(session, dev, dev_id)
            alias = self._alias(dev_id)
            log.warning("1-wire device %s%s in alarm: %s", dev_id, f" ({alias})" if alias else "", reason)
            events.append(DeviceAlarm(dev_id, alias, server.name, reason, values, now))
        for dev_id in sorted(before - alarming):
            log.info("1-wire device %s: alarm cleared", dev_id)
            events.append(DeviceAlarmCleared(dev_id, self._alias(dev_id), server.name, now))
        return events

    def _alarm_reason(self, session: Session, dev: Device | None, dev_id: str) -> tuple[str, dict[str, Any]]:
        if dev is None or dev.location is None or dev.family not in TEMPERATURE_FAMILIES:
            return "alarm condition (conditional search)", {}
        values: dict[str, Any] = {}
        for prop in ("temperature", "temphigh", "templow"):
            with suppress(PathError, ValueError):
                values[prop] = property_spec(prop, dev.family).parse(
                    session.read(f"{dev.location.bus_path}{dev_id}/{prop}")
                )
        temp, high, low = values.get("temperature"), values.get("temphigh"), values.get("templow")
        if isinstance(temp, float) and isinstance(high, float) and temp >= high:
            return f"temperature {temp:g} °C at or above temphigh {high:g} °C", values
        if isinstance(temp, float) and isinstance(low, float) and temp <= low:
            return f"temperature {temp:g} °C at or below templow {low:g} °C", values
        return "temperature alarm (outside templow..temphigh)", values

    def _alias(self, dev_id: str) -> str | None:
        sensor = self.settings.sensors.get(dev_id)
        return sensor.alias if sensor else None

    # -- reading ----------------------------------------------------------------------------------

    def _spec(self, server: Backend, session: Session, family: str, spec: PropertySpec) -> PropertySpec:
        if spec.kind is not None or not isinstance(session, OwSession):
            return spec
        key = (server.name, family, spec.path)
        with self._state_lock:
            known = self._structure.get(key)
        if known is None:
            known = typed(session, family, spec)
            with self._state_lock:
                self._structure[key] = known
        return known

    def _targets(self, server: Backend, session: Session, now: float) -> list[ReadTarget]:
        """The due properties of the server's located devices (``now``: the schedule's clock)."""
        settings = self.settings
        targets = []
        for dev in self.inventory.located(server.name):
            sensor = settings.sensors.get(dev.id)
            if sensor is None and not settings.read_unlisted:
                continue
            if sensor is not None and sensor.ignore:
                continue
            resolution = sensor.resolution if sensor and sensor.resolution is not None else settings.resolution
            configured = sensor.properties if sensor else None
            props = []
            for spec in properties_for(dev.family, configured, settings.families, resolution, dev.type):
                interval = settings.interval_for(dev.id, spec.name, *spec.channels)
                if not self.schedule.due((dev.id, spec.name), interval, now):
                    continue
                spec = self._spec(server, session, dev.family, spec)
                override = settings.uncached_for(dev.id, spec.name)
                if override is not None:
                    spec = replace(spec, volatile=override)
                props.append(spec)
            if props and dev.location is not None:
                targets.append(
                    ReadTarget(dev.id, sensor.alias if sensor else None, dev.location.bus_path, tuple(props))
                )
        return targets

    @on("tick", "read")
    def read_tick(self) -> None:
        """Run one read cycle and store the readings."""
        self.read_cycle()

    def read_cycle(self) -> CycleResult:
        """Scan servers that need it, set pending outputs, poll alarms when due, read the due
        properties of every located device, store accepted values and alarms.

        Returns the cycle's result (``round_trips``: every request of the cycle, scans, outputs and
        alarm polls included). Blocks for the conversion time when a due property is a
        simultaneously converted temperature (ends early on stop). Never raises for backend
        outages; a storage failure raises.
        """
        now = self.schedule.clock()
        alarm_events: list[Event] = []
        issued: list[tuple[str, PropertySpec]] = []
        unavailable: dict[str, str] = {}
        sessions: list[Session] = []
        with ExitStack() as stack:
            jobs: list[tuple[Session, list[ReadTarget]]] = []
            for server in self.servers:
                try:
                    session = stack.enter_context(self._session(server))
                    sessions.append(session)
                    with self._state_lock:
                        needs_scan = server.address in self._needs_scan
                    if needs_scan:
                        self._scan_in(server, session)
                    self._apply_outputs(server, session)
                    alarm_key = ("alarm", server.name)
                    interval = self.settings.alarm_interval
                    if interval > 0 and self.schedule.due(alarm_key, interval, now):
                        self.schedule.done(alarm_key, interval, now)
                        alarm_events.extend(self._poll_alarms(server, session, self.clock()))
                    targets = self._targets(server, session, now)
                except ServerUnavailable as err:
                    unavailable[server.name] = err.reason
                    continue
                except PathError as err:
                    log.warning("%s: scan failed: %s", server.name, err)
                    continue
                if targets:
                    jobs.append((session, targets))
                    issued.extend((t.device_id, p) for t in targets for p in t.properties)
            result = self.reader.read(jobs)
        result.unavailable = {**unavailable, **result.unavailable}
        result.round_trips = sum(s.round_trips for s in sessions)
        if not result.interrupted:
            for dev_id, spec in issued:
                every = self.settings.interval_for(dev_id, spec.name, *spec.channels)
                self.schedule.done((dev_id, spec.name), every, now)
        self._record(result, alarm_events)
        return result

    def _record(self, result: CycleResult, alarm_events: list[Event]) -> None:
        entries: list[Any] = [r.entry() for r in result.readings]
        entries.extend(e.entry() for e in alarm_events if isinstance(e, DeviceAlarm | DeviceAlarmCleared))
        if entries:
            # stored in the module's own entry format; alarm rules see device ids and property names
            self.publish(
                [PointReading(self.id, r.device_id, r.property, r.value, r.timestamp, r.unit) for r in result.readings],
                entries=entries,
            )
        values: dict[str, dict[str, Any]] = {}
        for reading in result.readings:
            values.setdefault(reading.device_id, {})[reading.property] = reading.value
        errors: dict[str, list[str]] = {}
        counted: dict[str, int] = {}
        for error in result.errors:
            counted[error.device_id] = counted.get(error.device_id, 0) + 1
            if error.kind != "power-on":  # the power-on filter logs its own state changes
                errors.setdefault(error.device_id, []).append(f"{error.property}: {error.detail}")
        now = self.schedule.clock()
        for dev_id in sorted(set(values) | set(counted)):
            self.inventory.record_read(dev_id, values.get(dev_id, {}), counted.get(dev_id, 0))
            state = self._read_logs.get(dev_id)
            if dev_id in errors:
                if state is None:
                    state = self._read_logs[dev_id] = StateLog(
                        log, f"1-wire device {dev_id}", repeat_every=READ_LOG_SUMMARY, clock=self.schedule.clock
                    )
                self._read_failed_at[dev_id] = now
                state.failed(f"read failed: {'; '.join(errors[dev_id])}")
            elif (
                state is not None
                and state.failing
                # A flaky sensor (1 bad read in 3) must not log a failure and a recovery every few
                # cycles: it "reads again" only after a quiet summary period without failures.
                and now - self._read_failed_at.get(dev_id, now) >= READ_LOG_SUMMARY
            ):
                state.ok("reads again")
        if result.readings and log.isEnabledFor(logging.DEBUG):
            shown = ", ".join(
                f"{r.alias or r.device_id}/{r.property}={r.value}{' ' + r.unit if r.unit else ''}"
                for r in result.readings[:_LOG_VALUES]
            )
            more = len(result.readings) - _LOG_VALUES
            log.debug(
                "1-wire: stored %d reading(s): %s%s",
                len(result.readings),
                shown,
                f" (+{more} more)" if more > 0 else "",
            )
        self.events.emit([*alarm_events, *(DeviceValue(reading) for reading in result.readings)])
