"""AlarmService: the gateway's one alarm engine, its ``alarms`` storage, its tick, and the fan-out
of published readings and alarm transitions to listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .alarms import AlarmEngine, AlarmRule, AlarmStatus, AlarmTransition, compile_rules
from .readings import Reading
from .storage import Storage, storage_location
from .timers import RepeatTimer

logger = logging.getLogger("uun_gateway.alarms")

STORAGE_ID = "alarms"
STATE_FILE = "alarms-state.json"
TICK_PERIOD = 1.0
"""Seconds between the checks of trip delays and stale rules."""

ReadingListener = Callable[[Reading], object]
AlarmListener = Callable[[AlarmTransition], object]


class AlarmService:
    """The alarm rules of one gateway (``gateway.alarms``) applied to every published reading.

    Transitions are stored in the ``alarms`` storage (``<storageDir>/alarms.sqlite``, a
    :class:`Storage` like any module's, opened at the first transition) and the engine's state in
    ``alarms-state.json`` next to it. :meth:`start` starts a 1 s timer that checks trip delays and
    stale rules; :meth:`stop` stops it, hands queued transitions to the storage and closes it.

    Thread-safe: the engine is used by one thread at a time (it serialises its work anyway).
    :meth:`publish` runs the rules in the calling thread (a module's handler), which also delivers
    the transitions, and then calls the reading listeners there; a listener's exception is logged
    and does not reach the publisher. Raises :class:`~uun_gateway.errors.ConfigError` at construction for rules that do
    not compile.
    """

    id = STORAGE_ID
    """The upload source name of the transitions (``gateway.upload.sources.alarms``)."""

    def __init__(self, gateway_section: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()  # the listener lists
        # held around every use of the engine, so none runs on an engine replace_rules dropped;
        # reentrant: an @on("alarm") handler may acknowledge
        self._engine_lock = threading.RLock()
        self._storage_lock = threading.Lock()
        self.storage_path, self._limit = storage_location(gateway_section, STORAGE_ID)
        self.state_path = self.storage_path.parent / STATE_FILE
        self._storage: Storage | None = None
        self._reading_listeners: list[ReadingListener] = []
        self._alarm_listeners: list[AlarmListener] = []
        self.engine = self._engine(compile_rules(gateway_section.get("alarms")))
        self._timer = RepeatTimer(TICK_PERIOD, self._tick, name="alarms")

    def _engine(self, rules: list[AlarmRule]) -> AlarmEngine:
        engine = AlarmEngine(rules, state_path=self.state_path, sink=self._store)
        engine.subscribe(self._notify)
        return engine

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start checking trip delays and stale rules every second. Raises OSError when the storage
        directory cannot be created."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._timer.start()

    def stop(self) -> None:
        """Stop the checks, store queued transitions, close the storage. Idempotent."""
        self._timer.stop()
        with self._engine_lock:
            if not self.engine.flush():
                logger.error(
                    "%d alarm transition(s) could not be stored at stop; kept in %s for the next start",
                    self.engine.pending(),
                    self.state_path,
                )
        with self._storage_lock:
            if self._storage is not None:
                try:
                    self._storage.close()
                except Exception:
                    logger.exception("closing the alarms storage %s failed", self.storage_path)

    def replace_rules(self, gateway_section: Mapping[str, Any]) -> None:
        """Apply a new ``gateway.alarms``: alarms of rules that stay keep their state (through the
        state file); those of removed rules are forgotten (logged). Raises ConfigError."""
        rules = compile_rules(gateway_section.get("alarms"))
        with self._engine_lock:
            self.engine.flush()
            self.engine = self._engine(rules)
        logger.info("alarm rules updated: %d rule(s)", len(rules))

    # -- readings and alarms ---------------------------------------------------------------------

    def publish(self, readings: Iterable[Reading]) -> list[AlarmTransition]:
        """Apply ``readings`` to the rules, then hand each to the reading listeners; returns the
        transitions they caused."""
        batch = list(readings)
        with self._engine_lock:
            transitions = self.engine.evaluate_many(batch)
        with self._lock:
            listeners = list(self._reading_listeners)
        for listener in listeners:
            for reading in batch:
                try:
                    listener(reading)
                except Exception:
                    logger.exception("reading listener %r failed on %s", listener, reading.source)
        return transitions

    def subscribe_readings(self, listener: ReadingListener) -> Callable[[], None]:
        """Call ``listener(reading)`` for every published reading; returns the unsubscribe function."""
        return self._add(self._reading_listeners, listener)

    def subscribe(self, listener: AlarmListener) -> Callable[[], None]:
        """Call ``listener(transition)`` for every alarm transition; returns the unsubscribe function."""
        return self._add(self._alarm_listeners, listener)

    def _add(self, listeners: list[Any], listener: Any) -> Callable[[], None]:
        with self._lock:
            listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in listeners:
                    listeners.remove(listener)

        return unsubscribe

    def acknowledge(self, rule: str, *, device: str = "*", point: str = "*", by: str = "api") -> list[AlarmTransition]:
        """See :meth:`AlarmEngine.acknowledge`."""
        with self._engine_lock:
            return self.engine.acknowledge(rule, device=device, point=point, by=by)

    def alarms(self) -> list[AlarmStatus]:
        """Every alarm that is not normal (see :meth:`AlarmEngine.alarms`)."""
        with self._engine_lock:
            return self.engine.alarms()

    def _tick(self) -> None:
        with self._engine_lock:
            self.engine.tick()

    def _notify(self, transition: AlarmTransition) -> None:
        with self._lock:
            listeners = list(self._alarm_listeners)
        for listener in listeners:
            try:
                listener(transition)
            except Exception:
                logger.exception("alarm listener %r failed on %s", listener, transition.log_line())

    def _store(self, entries: list[dict[str, Any]]) -> None:
        self.storage.extend(entries)

    @property
    def storage(self) -> Storage:
        """The ``alarms`` storage (opened on first use)."""
        with self._storage_lock:
            if self._storage is None or self._storage.closed:
                self._storage = Storage(STORAGE_ID, self.storage_path, self._limit)
            return self._storage
