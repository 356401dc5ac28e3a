"""The built-in ``onewire`` module: 1-Wire sensors through owserver (pyownet), thread-based.

Timers (``gateway.moduleTimers.onewire``): ``scan`` walks every server's buses and updates the
inventory; ``read`` runs one read cycle and stores each accepted value as an entry
``{deviceId, alias, property, value, unit, timestamp, server}`` in the module's storage, from
where the upload module delivers it.

Outages never escape the handlers: an unreachable, restarted or frozen owserver is logged once
per state change, retried every cycle (with a capped backoff after timeouts), and picked up again
by the next tick after it is back; the first read tick after a (re)connection scans first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, ClassVar

from uun_gateway import Module, on
from uun_gateway import Reading as PointReading

from .connection import OwnetError, OwServer, OwSession, ServerAddress, ServerUnavailable
from .families import properties_for
from .inventory import (
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
from .reader import CycleResult, Reader, ReadTarget
from .scanner import ScanResult, scan
from .schema import SCHEMA, Settings

log = logging.getLogger(__name__)

_LOG_VALUES = 8


class OneWire(Module):
    """1-Wire sensors via one or more owservers.

    Other modules (or user code) can follow what happens with :meth:`subscribe`, which delivers
    :mod:`~.inventory` events (server connected/disconnected, device added/located/moved/not
    found, values). Handlers are safe to run concurrently (scan and read ticks run in different
    timer threads; each thread uses its own owserver connection).
    """

    id = "onewire"
    config_schema: ClassVar[dict[str, Any] | None] = SCHEMA
    timer_defaults: ClassVar[dict[str | None, float]] = {"scan": 60.0, "read": 10.0}

    def __init__(self, config: Any = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient)
        self.events = EventBus()
        self._state_lock = threading.Lock()
        self._servers: dict[ServerAddress, OwServer] = {}
        self._needs_scan: set[ServerAddress] = set()
        self._warned_simulated: set[tuple[ServerAddress, str]] = set()
        self.settings = self._load_settings()
        self.inventory = Inventory(self.settings.missed_scans)
        self.reader = Reader(wait=self._wait)
        self._apply_settings()

    # -- configuration ----------------------------------------------------------------------------

    def _load_settings(self) -> Settings:
        section = self._config.get(self.id, {})
        return Settings.from_config(section)

    def _apply_settings(self) -> None:
        settings = self.settings
        with self._state_lock:
            servers: dict[ServerAddress, OwServer] = {}
            for address in settings.servers:
                server = self._servers.get(address)
                if server is None or server.persistent != settings.persistent:
                    server = OwServer(address, persistent=settings.persistent, on_state=self._on_server_state)
                    self._needs_scan.add(address)
                server.backoff_max = settings.backoff_max
                servers[address] = server
            self._servers = servers
        self.inventory.missed_scans = settings.missed_scans
        self.reader.simultaneous = settings.simultaneous
        self.reader.conversion_delay = settings.effective_conversion_delay()

    @on("update")
    def on_update(self) -> None:
        """Re-read ``gateway.onewire`` after a configuration update; the inventory is kept."""
        self.settings = self._load_settings()
        self._apply_settings()

    @on("stop")
    def on_stop(self) -> None:
        """Interrupt a conversion wait in progress."""
        self.request_stop()

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

    def _on_server_state(self, address: ServerAddress, connected: bool, reason: str) -> None:
        if connected:
            with self._state_lock:
                self._needs_scan.add(address)
            event: Event = ServerConnected(str(address))
        else:
            event = ServerDisconnected(str(address), reason)
        self.events.emit([event])

    @property
    def servers(self) -> list[OwServer]:
        with self._state_lock:
            return list(self._servers.values())

    # -- scanning ---------------------------------------------------------------------------------

    @on("tick", "scan")
    def scan_tick(self) -> None:
        """Scan every configured server."""
        self.scan_all()

    def scan_all(self) -> dict[str, ScanResult | None]:
        """Scan each server; returns its result, or None when it was unavailable. Never raises for
        owserver outages."""
        return {str(server.address): self._scan(server) for server in self.servers}

    def _scan(self, server: OwServer) -> ScanResult | None:
        try:
            with server.session() as session:
                return self._scan_in(server, session)
        except ServerUnavailable:
            return None
        except OwnetError as err:
            log.warning("owserver %s: scan failed: %s", server.address, err)
            return None

    def _scan_in(self, server: OwServer, session: OwSession) -> ScanResult:
        result = scan(session, max_depth=self.settings.max_coupler_depth, known_types=self.inventory.known_types())
        with self._state_lock:
            self._needs_scan.discard(server.address)
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
        events = self.inventory.apply_scan(str(server.address), result)
        for event in events:
            dev = getattr(event, "device", None)
            label = f"{dev.id} ({dev.type or 'unknown type'})" if dev is not None else ""
            if isinstance(event, DeviceNotFound):
                log.warning("1-wire device %s not found (last seen at %s)", label, event.last)
            elif isinstance(event, DeviceLocated):
                log.info("1-wire device %s found at %s", label, event.location)
            elif isinstance(event, DeviceMoved):
                log.info("1-wire device %s moved from %s to %s", label, event.old, event.new)
        self.events.emit(events)
        return result

    # -- reading ----------------------------------------------------------------------------------

    def _targets(self, server: OwServer) -> list[ReadTarget]:
        settings = self.settings
        targets = []
        for dev in self.inventory.located(str(server.address)):
            sensor = settings.sensors.get(dev.id)
            if sensor is None and not settings.read_unlisted:
                continue
            if sensor is not None and sensor.ignore:
                continue
            resolution = sensor.resolution if sensor and sensor.resolution is not None else settings.resolution
            props = properties_for(dev.family, sensor.properties if sensor else None, settings.families, resolution)
            if props and dev.location is not None:
                targets.append(ReadTarget(dev.id, sensor.alias if sensor else None, dev.location.bus_path, props))
        return targets

    @on("tick", "read")
    def read_tick(self) -> None:
        """Run one read cycle and store the readings."""
        self.read_cycle()

    def read_cycle(self) -> CycleResult:
        """Scan servers that need it, read every located device, store accepted values.

        Returns the cycle's result. Blocks for the conversion time when simultaneous conversion
        is on (ends early on stop). Never raises for owserver outages; a storage failure raises.
        """
        with ExitStack() as stack:
            jobs: list[tuple[OwSession, list[ReadTarget]]] = []
            for server in self.servers:
                try:
                    session = stack.enter_context(server.session())
                    with self._state_lock:
                        needs_scan = server.address in self._needs_scan
                    if needs_scan:
                        self._scan_in(server, session)
                except ServerUnavailable:
                    continue
                except OwnetError as err:
                    log.warning("owserver %s: scan failed: %s", server.address, err)
                targets = self._targets(server)
                if targets:
                    jobs.append((session, targets))
            result = self.reader.read(jobs)
        self._record(result)
        return result

    def _record(self, result: CycleResult) -> None:
        entries = [r.entry() for r in result.readings]
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
        for error in result.errors:
            errors.setdefault(error.device_id, []).append(f"{error.property}: {error.kind} ({error.detail})")
        for dev_id in sorted(set(values) | set(errors)):
            started, recovered = self.inventory.record_read(dev_id, values.get(dev_id, {}), len(errors.get(dev_id, [])))
            if started:
                log.warning("1-wire device %s: read failed: %s", dev_id, "; ".join(errors[dev_id]))
            elif recovered:
                log.info("1-wire device %s: reads again", dev_id)
        if result.readings:
            shown = ", ".join(
                f"{r.alias or r.device_id}/{r.property}={r.value}{' ' + r.unit if r.unit else ''}"
                for r in result.readings[:_LOG_VALUES]
            )
            more = len(result.readings) - _LOG_VALUES
            log.info(
                "1-wire: stored %d reading(s): %s%s",
                len(result.readings),
                shown,
                f" (+{more} more)" if more > 0 else "",
            )
        self.events.emit(DeviceValue(reading) for reading in result.readings)
