"""Alarms on readings: rules (``gateway.alarms``), their state machine, its persistence, and
``uun-gateway alarms test``.

A rule watches the readings of one module whose device and point names match glob patterns, and
either has a ``condition`` (an :mod:`expression <uun_gateway.expressions>` over ``value``,
``previous``, ``age``) or is a *stale* rule (``staleAfter``: no reading for that many seconds).

Each rule has one state per watched point (module, device, point)::

    normal --trip--> active --ack--> acknowledged --release--> normal
                       |
                       +--release--> cleared --ack--> normal
                       |             (autoAck: release goes straight to normal)
    cleared --trip--> active

- *trip*: the condition held for ``tripDelay`` seconds (on the engine's monotonic clock, checked on
  each reading and on each :meth:`AlarmEngine.tick`), or a stale rule's point went ``staleAfter``
  seconds without a reading;
- *release*: the ``releaseCondition`` (default: the condition is false) is true on a reading, or a
  stale rule's point has a reading again;
- *ack*: :meth:`AlarmEngine.acknowledge`. A *cleared* alarm (gone, never acknowledged) stays listed
  until acknowledged, so an operator sees an alarm that came and went at night; ``autoAck`` rules
  skip that state.

Every transition produces an :class:`AlarmTransition`: one log line, an entry for the ``alarms``
storage (the engine's ``sink``), and an event for each subscriber. States that are not normal, and
transitions not yet handed to the sink, are saved in a JSON state file before anything is delivered,
so after a crash an active alarm is still active (and not raised again) and no transition is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .alarmschema import ALARMS_SCHEMA, PRIORITIES, Priority
from .config import load_config, validate
from .errors import EX_CONFIG, ConfigError, UunGatewayError
from .expressions import Expression, ExpressionError
from .files import atomic_write
from .outage import StateLog, describe_failure
from .plugins import Commands
from .readings import Reading
from .timestamps import iso_utc

logger = logging.getLogger("uun_gateway.alarms")

State = Literal["normal", "active", "acknowledged", "cleared"]
STATES: tuple[State, ...] = ("normal", "active", "acknowledged", "cleared")
_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}

STATE_FILE_VERSION = 1


class AlarmError(UunGatewayError):
    """Misuse of the alarm API: an unknown rule name, a bad state file path."""


def _has_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """One compiled rule (see the module docstring). Immutable; :func:`compile_rules` builds it."""

    name: str
    module: str
    device: str = "*"
    point: str = "*"
    condition: Expression | None = None
    release: Expression | None = None
    stale_after: float | None = None
    priority: Priority = "warning"
    trip_delay: float = 0.0
    auto_ack: bool = False
    description: str = ""
    evaluate: Callable[[float, float, float], bool] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluate", self.condition.evaluate if self.condition is not None else None)

    @property
    def kind(self) -> str:
        """``stale`` or ``condition``."""
        return "stale" if self.stale_after is not None else "condition"

    def matches(self, module: str, device: str, point: str) -> bool:
        return (
            module == self.module
            and fnmatch.fnmatchcase(device, self.device)
            and fnmatch.fnmatchcase(point, self.point)
        )

    def describe(self) -> str:
        """The rule in one line, for logs and ``alarms test``."""
        what = f"no reading for {self.stale_after:g} s" if self.condition is None else self.condition.text
        delay = f" for {self.trip_delay:g} s" if self.trip_delay else ""
        release = f", release on {self.release.text}" if self.release is not None else ""
        return f"{self.name} ({self.priority}): {self.module}/{self.device}/{self.point}: {what}{delay}{release}"


def compile_rules(rules: Any, path: str = "gateway.alarms") -> list[AlarmRule]:
    """Check ``rules`` (the value of ``gateway.alarms``) against :data:`ALARMS_SCHEMA` and compile
    their expressions. Raises :class:`ConfigError` listing every problem, each naming its key, e.g.
    ``gateway.alarms[2].condition: column 9: expected a number, ...; in "value > "``."""
    if rules is None:
        return []
    errors = validate(_nest(path, rules), _at_path(path, ALARMS_SCHEMA))
    if errors:
        raise ConfigError(errors)
    compiled: list[AlarmRule] = []
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        where = f"{path}[{index}]"
        name = rule["name"]
        if name in seen:
            errors.append(f"{where}.name: {name!r} is also the name of {path}[{seen[name]}]; expected unique names")
        seen.setdefault(name, index)
        expressions: dict[str, Expression | None] = {}
        for key in ("condition", "releaseCondition"):
            text = rule.get(key)
            try:
                expressions[key] = Expression(text) if text is not None else None
            except ExpressionError as exc:
                expressions[key] = None
                errors.append(f"{where}.{key}: {exc}; in {json.dumps(text)}")
        stale = rule.get("staleAfter")
        if stale is not None:
            for key in ("condition", "releaseCondition", "tripDelay"):
                if key in rule:
                    errors.append(
                        f"{where}.{key}: a stale rule (staleAfter) takes no {key}; "
                        "expected either staleAfter or condition"
                    )
        watch = rule["watch"]
        compiled.append(
            AlarmRule(
                name=name,
                module=watch["module"],
                device=watch.get("device", "*"),
                point=watch.get("point", "*"),
                condition=expressions["condition"],
                release=expressions["releaseCondition"],
                stale_after=float(stale) if stale is not None else None,
                priority=rule.get("priority", "warning"),
                trip_delay=float(rule.get("tripDelay", 0)),
                auto_ack=bool(rule.get("autoAck", False)),
                description=rule.get("description", ""),
            )
        )
    if errors:
        raise ConfigError(errors)
    return compiled


def rule_errors(rules: Any, path: str = "gateway.alarms") -> list[str]:
    """What :func:`compile_rules` would raise for ``rules``, as a list (empty when they compile)."""
    try:
        compile_rules(rules, path)
    except ConfigError as exc:
        return exc.errors
    return []


def _at_path(path: str, schema: dict[str, Any]) -> dict[str, Any]:
    wrapped = schema
    for part in reversed(path.split(".")):
        wrapped = {"type": "object", "properties": {part: wrapped}}
    return wrapped


def _nest(path: str, value: Any) -> dict[str, Any]:
    for part in reversed(path.split(".")):
        value = {part: value}
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class AlarmTransition:
    """One change of one alarm's state. Immutable.

    ``event``: ``trip``, ``release`` or ``ack``; ``at``: wall-clock epoch seconds; ``value``: the
    value of the reading that caused it (the last one seen for ``tick`` and ``ack``); ``id``: unique,
    sent with the storage entry so a server can drop a duplicate delivered after a crash.
    """

    rule: str
    priority: Priority
    module: str
    device: str
    point: str
    previous_state: State
    state: State
    event: str
    reason: str
    at: float
    value: float | None = None
    by: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def source(self) -> str:
        return f"{self.module}/{self.device}/{self.point}"

    def entry(self) -> dict[str, Any]:
        """The ``alarms`` storage entry (JSON serialisable)."""
        entry: dict[str, Any] = {
            "id": self.id,
            "rule": self.rule,
            "priority": self.priority,
            "module": self.module,
            "device": self.device,
            "point": self.point,
            "from": self.previous_state,
            "state": self.state,
            "event": self.event,
            "reason": self.reason,
            "value": self.value,
            "timestamp": iso_utc(self.at),
        }
        if self.by is not None:
            entry["by"] = self.by
        return entry

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], at: float) -> AlarmTransition:
        return cls(
            rule=str(entry["rule"]),
            priority=entry["priority"],
            module=str(entry["module"]),
            device=str(entry["device"]),
            point=str(entry["point"]),
            previous_state=entry["from"],
            state=entry["state"],
            event=str(entry["event"]),
            reason=str(entry["reason"]),
            at=at,
            value=entry.get("value"),
            by=entry.get("by"),
            id=str(entry["id"]),
        )

    def log_line(self) -> str:
        by = f" by {self.by}" if self.by else ""
        value = f", value {self.value:g}" if self.value is not None else ""
        return (
            f"alarm {self.rule} ({self.priority}) {self.source}: {self.previous_state} -> {self.state}"
            f"{by}: {self.reason}{value}"
        )


@dataclass(frozen=True)
class AlarmStatus:
    """A snapshot of one alarm that is not normal (:meth:`AlarmEngine.alarms`)."""

    rule: str
    priority: Priority
    module: str
    device: str
    point: str
    state: State
    since: float
    value: float | None
    acknowledged_by: str | None

    @property
    def source(self) -> str:
        return f"{self.module}/{self.device}/{self.point}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "priority": self.priority,
            "module": self.module,
            "device": self.device,
            "point": self.point,
            "state": self.state,
            "since": iso_utc(self.since),
            "value": self.value,
            "acknowledgedBy": self.acknowledged_by,
        }


@dataclass
class _Track:
    """The mutable state of one rule on one point; guarded by the engine's lock."""

    state: State = "normal"
    since: float = 0.0  # wall clock, when ``state`` was entered
    value: float | None = None
    pending_since: float | None = None  # monotonic, when the condition started to hold
    last_seen: float = 0.0  # monotonic, the last usable reading (stale rules)
    acknowledged_by: str | None = None


Key = tuple[str, str, str]
Listener = Callable[[AlarmTransition], object]
Sink = Callable[[list[dict[str, Any]]], object]


class AlarmEngine:
    """Evaluates readings against rules and keeps each alarm's state.

    ``state_path``: the JSON file the states are saved to (None: kept in memory only). ``sink``: called
    with a list of transition entries (e.g. ``storage.extend``); a transition stays queued, and saved
    in the state file, until a call returned, and is retried at the next :meth:`evaluate`/:meth:`tick`
    when it raised. ``clock``: the monotonic clock of trip delays and stale rules; ``wall``: the clock
    of timestamps and ``age``.

    Thread-safe: every method may be called from any thread. The state is changed and saved under
    one lock; the sink and the listeners are called after it is released, in transition order, by one
    thread at a time (a listener may call :meth:`acknowledge`; its transition is delivered after the
    current batch). The state file is written (and fsynced) on each call that changes a state, so such
    a call blocks on the disk, and once more at the next :meth:`tick` to drop the transitions the sink
    took; calls that change nothing do no I/O. Delivery is at least once: after a crash between the
    sink taking a transition and that second write, it is handed to the sink again, with the same
    ``id``. A missing or corrupt state file
    is logged (:attr:`load_problem`; a corrupt one is renamed ``*.corrupt``) and every alarm starts
    normal; a state file that cannot be written is logged and the states are kept in memory.
    """

    def __init__(
        self,
        rules: Sequence[AlarmRule],
        *,
        state_path: str | os.PathLike[str] | None = None,
        sink: Sink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: logging.Logger = logger,
    ) -> None:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise AlarmError(f"alarm rule names must be unique; repeated: {', '.join(duplicates)}")
        self.rules: dict[str, AlarmRule] = {rule.name: rule for rule in rules}
        self._by_module: dict[str, list[AlarmRule]] = {}
        for rule in rules:
            self._by_module.setdefault(rule.module, []).append(rule)
        self.state_path = Path(state_path) if state_path is not None else None
        self._sink = sink
        self._clock = clock
        self._wall = wall
        self._log = log
        self._lock = threading.Lock()
        self._tracks: dict[Key, dict[str, _Track]] = {}  # point -> rule name -> state
        self._last: dict[Key, float] = {}
        self._matching: dict[Key, tuple[AlarmRule, ...]] = {}
        self._listeners: list[Listener] = []
        self._outbox: list[AlarmTransition] = []
        self._events: list[AlarmTransition] = []
        self._delivering = False
        self._eval_errors: dict[str, StateLog] = {}
        self._save_log = StateLog(log, "alarm state file", clock=clock)
        self._sink_log = StateLog(log, "alarm transitions to storage", clock=clock)
        self._stored_unsaved = False  # the state file still lists transitions the sink has taken
        self.skipped = 0
        """Readings a matching rule could not use (not a finite number, or quality ``bad``)."""
        self.load_problem: str | None = None
        """Why the saved state could not be used at start (None: it was, or there was none)."""
        start = clock()
        self._load(start)
        for rule in rules:
            if rule.stale_after is not None and not _has_glob(rule.device) and not _has_glob(rule.point):
                # a point named exactly is watched from the start, even if it never sends a reading
                point = self._tracks.setdefault((rule.module, rule.device, rule.point), {})
                point.setdefault(rule.name, _Track(last_seen=start))

    # -- API -------------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(transition)`` for every later transition; returns the function that
        unsubscribes it. A listener's exception is logged with traceback and does not stop delivery."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def evaluate(self, reading: Reading) -> list[AlarmTransition]:
        """Apply one reading to every rule that watches its point; return the transitions it caused
        (already saved; delivered to the sink and listeners before this returns unless another
        thread is delivering)."""
        key = (reading.module, reading.device, reading.point)
        rules = self._matching.get(key)
        if rules is None:
            rules = self._match(key)
        if not rules:
            return []
        transitions: list[AlarmTransition] = []
        with self._lock:
            self._apply_locked(reading, key, rules, self._clock(), transitions)
            if transitions:
                self._commit_locked(transitions)
        self._deliver()
        return transitions

    def evaluate_many(self, readings: Iterable[Reading]) -> list[AlarmTransition]:
        """:meth:`evaluate` for several readings in order, saving the state file once."""
        transitions: list[AlarmTransition] = []
        with self._lock:
            now = self._clock()
            for reading in readings:
                key = (reading.module, reading.device, reading.point)
                rules = self._matching.get(key)
                if rules is None:
                    rules = self._match_locked(key)
                if rules:
                    self._apply_locked(reading, key, rules, now, transitions)
            if transitions:
                self._commit_locked(transitions)
        self._deliver()
        return transitions

    def tick(self, now: float | None = None) -> list[AlarmTransition]:
        """Trip the alarms whose condition has held for their ``tripDelay`` and the stale rules whose
        point had no reading for ``staleAfter`` seconds, as of ``now`` (default: the engine's clock);
        retry delivering queued transitions. Call it periodically (the gateway does, once a second)."""
        transitions: list[AlarmTransition] = []
        with self._lock:
            now = self._clock() if now is None else now
            for name, key, track in self._all_tracks():
                rule = self.rules[name]
                if track.state not in ("normal", "cleared"):
                    continue
                if rule.stale_after is not None:
                    silent = now - track.last_seen
                    if silent >= rule.stale_after:
                        reason = f"no reading for {silent:.0f} s (staleAfter {rule.stale_after:g} s)"
                        transitions.append(self._change(rule, key, track, "active", "trip", reason))
                elif track.pending_since is not None and now - track.pending_since >= rule.trip_delay:
                    transitions.append(self._trip(rule, key, track, now))
            if transitions:
                self._commit_locked(transitions)
        self._deliver()
        with self._lock:
            if self._stored_unsaved:
                self._save_locked()
        return transitions

    def acknowledge(self, rule: str, *, device: str = "*", point: str = "*", by: str = "api") -> list[AlarmTransition]:
        """Acknowledge rule ``rule``'s active and cleared alarms on points matching the ``device`` and
        ``point`` globs; return the transitions (none when nothing needed it). ``by`` names who
        acknowledged (logged and stored). Raises :class:`AlarmError` for an unknown rule."""
        transitions: list[AlarmTransition] = []
        with self._lock:
            found = self.rules.get(rule)
            if found is None:
                known = ", ".join(sorted(self.rules)) or "none"
                raise AlarmError(f"no alarm rule named {rule!r}; rules: {known}")
            for name, key, track in self._all_tracks():
                if name != rule or not (fnmatch.fnmatchcase(key[1], device) and fnmatch.fnmatchcase(key[2], point)):
                    continue
                if track.state == "active":
                    target: State = "acknowledged"
                elif track.state == "cleared":
                    target = "normal"
                else:
                    continue
                track.acknowledged_by = by
                transitions.append(self._change(found, key, track, target, "ack", "acknowledged", by=by))
            if transitions:
                self._commit_locked(transitions)
        self._deliver()
        return transitions

    def alarms(self) -> list[AlarmStatus]:
        """Every alarm that is not normal, most severe first, then oldest first."""
        with self._lock:
            found = [
                AlarmStatus(
                    name,
                    self.rules[name].priority,
                    *key,
                    track.state,
                    track.since,
                    track.value,
                    track.acknowledged_by,
                )
                for name, key, track in self._all_tracks()
                if track.state != "normal"
            ]
        return sorted(found, key=lambda a: (-PRIORITIES.index(a.priority), a.since, a.rule, a.source))

    def _all_tracks(self) -> list[tuple[str, Key, _Track]]:
        return [(name, key, track) for key, point in self._tracks.items() for name, track in point.items()]

    def pending(self) -> int:
        """Transitions not yet accepted by the sink."""
        with self._lock:
            return len(self._outbox)

    def flush(self) -> bool:
        """Hand queued transitions to the sink now and save the state file if that changed it; True
        when none is left queued. Call it before dropping the engine (at stop)."""
        self._deliver()
        with self._lock:
            if self._stored_unsaved:
                self._save_locked()
            return not self._outbox

    # -- evaluation ------------------------------------------------------------------------------

    def _match(self, key: Key) -> tuple[AlarmRule, ...]:
        with self._lock:
            return self._match_locked(key)

    def _match_locked(self, key: Key) -> tuple[AlarmRule, ...]:
        rules = tuple(rule for rule in self._by_module.get(key[0], ()) if rule.matches(*key))
        if len(self._matching) >= 100_000:  # bounded: a module inventing device names cannot fill memory
            self._matching.clear()
        self._matching[key] = rules
        return rules

    def _apply_locked(
        self, reading: Reading, key: Key, rules: tuple[AlarmRule, ...], now: float, out: list[AlarmTransition]
    ) -> None:
        number = reading.number
        if number is None or reading.quality == "bad":
            self.skipped += 1
            return
        previous = self._last.get(key, number)
        self._last[key] = number
        age = max(0.0, self._wall() - reading.timestamp)
        tracks = self._tracks.get(key)
        failing = self._eval_errors
        for rule in rules:
            condition = rule.evaluate
            track = tracks.get(rule.name) if tracks is not None else None
            if track is None and condition is not None and not failing:
                # the common case, nothing remembered for this rule and point: only a true condition matters
                try:
                    if not condition(number, previous, age):
                        continue
                except ExpressionError:
                    pass  # evaluated again below, where failures are handled
            if condition is None:
                if track is None:
                    track = self._track(key, rule.name)
                track.last_seen = now
                track.value = number
                if track.state in ("active", "acknowledged"):
                    out.append(self._release(rule, key, track, "a reading arrived again"))
                continue
            try:
                holds = condition(number, previous, age)
            except ExpressionError as exc:
                self._eval_failed(rule, reading, exc)
                continue
            if self._eval_errors:
                self._eval_ok(rule)
            if track is None:
                if not holds:
                    continue
                track = self._track(key, rule.name)
                tracks = self._tracks[key]
            track.value = number
            if track.state in ("normal", "cleared"):
                if not holds:
                    track.pending_since = None
                    if track.state == "normal":
                        self._forget(key, rule.name)  # only points with something to remember keep a track
                    continue
                if track.pending_since is None:
                    track.pending_since = now
                if now - track.pending_since >= rule.trip_delay:
                    out.append(self._trip(rule, key, track, now))
            else:
                try:
                    released = rule.release(number, previous, age) if rule.release is not None else not holds
                except ExpressionError as exc:
                    self._eval_failed(rule, reading, exc)
                    continue
                if released:
                    text = rule.release.text if rule.release is not None else f"not ({rule.condition.text})"  # type: ignore[union-attr]
                    out.append(self._release(rule, key, track, text))

    def _track(self, key: Key, name: str) -> _Track:
        track = _Track()
        self._tracks.setdefault(key, {})[name] = track
        return track

    def _forget(self, key: Key, name: str) -> None:
        point = self._tracks.get(key)
        if point is not None:
            point.pop(name, None)
            if not point:
                del self._tracks[key]

    def _eval_failed(self, rule: AlarmRule, reading: Reading, exc: ExpressionError) -> None:
        log = self._eval_errors.get(rule.name)
        if log is None:
            log = self._eval_errors[rule.name] = StateLog(self._log, f"alarm {rule.name}", clock=self._clock)
        log.failed(f"cannot evaluate on {reading.source} value {reading.value!r}: {exc}")

    def _eval_ok(self, rule: AlarmRule) -> None:
        log = self._eval_errors.get(rule.name)
        if log is not None:
            log.ok("evaluates again")

    def _trip(self, rule: AlarmRule, key: Key, track: _Track, now: float) -> AlarmTransition:
        held = now - (track.pending_since if track.pending_since is not None else now)
        track.pending_since = None
        text = rule.condition.text if rule.condition is not None else ""
        return self._change(rule, key, track, "active", "trip", f"{text} held for {held:.0f} s" if held else text)

    def _release(self, rule: AlarmRule, key: Key, track: _Track, reason: str) -> AlarmTransition:
        if track.state == "acknowledged" or rule.auto_ack:
            target: State = "normal"
        else:
            target = "cleared"
        return self._change(rule, key, track, target, "release", reason)

    def _change(
        self, rule: AlarmRule, key: Key, track: _Track, state: State, event: str, reason: str, by: str | None = None
    ) -> AlarmTransition:
        transition = AlarmTransition(
            rule=rule.name,
            priority=rule.priority,
            module=key[0],
            device=key[1],
            point=key[2],
            previous_state=track.state,
            state=state,
            event=event,
            reason=reason,
            at=self._wall(),
            value=track.value,
            by=by,
        )
        track.state = state
        track.since = transition.at
        if state == "active":
            track.acknowledged_by = None
        if state == "normal" and rule.condition is not None and track.pending_since is None:
            self._forget(key, rule.name)
        return transition

    # -- saving and delivery ---------------------------------------------------------------------

    def _commit_locked(self, transitions: list[AlarmTransition]) -> None:
        if self._sink is not None:
            self._outbox.extend(transitions)
        self._events.extend(transitions)
        self._save_locked()
        for t in transitions:
            level = _LOG_LEVEL[t.priority] if t.state == "active" else logging.INFO
            self._log.log(level, "%s", t.log_line())

    def _save_locked(self) -> None:
        self._stored_unsaved = False
        if self.state_path is None:
            return
        document = {
            "version": STATE_FILE_VERSION,
            "alarms": [
                {
                    "rule": name,
                    "module": module,
                    "device": device,
                    "point": point,
                    "state": track.state,
                    "since": track.since,
                    "value": track.value,
                    "acknowledgedBy": track.acknowledged_by,
                }
                for name, (module, device, point), track in self._all_tracks()
                if track.state != "normal"
            ],
            "outbox": [dict(t.entry(), at=t.at) for t in self._outbox],
        }
        try:
            atomic_write(self.state_path, json.dumps(document, separators=(",", ":")) + "\n")
        except OSError as exc:
            self._save_log.failed(
                f"cannot save {self.state_path} ({describe_failure(exc)}); alarm states are kept in memory",
                level=logging.ERROR,
            )
        else:
            self._save_log.ok("saved again")

    def _load(self, start: float) -> None:
        path = self.state_path
        if path is None:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._log.info("no saved alarm state at %s; every alarm starts normal", path)
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(path, f"cannot read it ({describe_failure(exc)})", move=isinstance(exc, UnicodeDecodeError))
            return
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("version") != STATE_FILE_VERSION:
                raise ValueError(f"expected a JSON object with version {STATE_FILE_VERSION}")
            saved = [self._restore(item) for item in document.get("alarms", [])]
            outbox = [AlarmTransition.from_entry(e, float(e["at"])) for e in document.get("outbox", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._refuse(path, f"it is not a valid alarm state file ({type(exc).__name__}: {exc})", move=True)
            return
        restored = 0
        for item in saved:
            if item is None:
                continue
            tkey, track = item
            track.last_seen = start
            self._tracks.setdefault((tkey[1], tkey[2], tkey[3]), {})[tkey[0]] = track
            restored += 1
            self._log.warning(
                "alarm %s (%s) %s: still %s since %s (restored)",
                tkey[0],
                self.rules[tkey[0]].priority,
                "/".join(tkey[1:]),
                track.state,
                iso_utc(track.since),
            )
        if self._sink is not None:
            self._outbox.extend(outbox)
        elif outbox:
            self._log.warning("%d saved alarm transition(s) are dropped: this engine has no storage", len(outbox))
        self._log.info(
            "alarm state loaded from %s: %d alarm(s) not normal, %d transition(s) to store",
            path,
            restored,
            len(self._outbox),
        )

    def _restore(self, item: Any) -> tuple[tuple[str, str, str, str], _Track] | None:
        name, module, device, point = (str(item[k]) for k in ("rule", "module", "device", "point"))
        state = item["state"]
        if state not in STATES or state == "normal":
            raise ValueError(f"alarm {name}: unknown state {state!r}")
        rule = self.rules.get(name)
        if rule is None or not rule.matches(module, device, point):
            self._log.warning(
                "alarm %s %s/%s/%s was %s, but no configured rule watches that point any more; forgotten",
                name,
                module,
                device,
                point,
                state,
            )
            return None
        value = item.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"alarm {name}: value {value!r} is not a number")
        by = item.get("acknowledgedBy")
        return (name, module, device, point), _Track(
            state=state, since=float(item["since"]), value=value, acknowledged_by=str(by) if by else None
        )

    def _refuse(self, path: Path, why: str, *, move: bool) -> None:
        aside = path.with_name(path.name + ".corrupt")
        if move:
            try:
                os.replace(path, aside)
                why += f"; moved aside to {aside}"
            except OSError as exc:
                why += f"; could not move it aside ({describe_failure(exc)})"
        self.load_problem = f"{path}: {why}"
        self._log.error("alarm state %s: %s; every alarm starts normal", path, why)

    def _deliver(self) -> None:
        with self._lock:
            if self._delivering or not (self._outbox or self._events):
                return
            self._delivering = True
        sink_failed = False
        try:
            while True:
                with self._lock:
                    batch = [] if sink_failed else list(self._outbox)
                    events, self._events = self._events, []
                    listeners = list(self._listeners)
                    if not batch and not events:
                        self._delivering = False
                        return
                if batch and self._sink is not None:
                    try:
                        self._sink([t.entry() for t in batch])
                    except Exception as exc:
                        sink_failed = True
                        self._sink_log.failed(
                            f"{len(batch)} transition(s) not stored ({describe_failure(exc)}); kept and retried"
                        )
                    else:
                        self._sink_log.ok("stored again")
                        with self._lock:
                            del self._outbox[: len(batch)]
                            self._stored_unsaved = True
                for transition in events:
                    for listener in listeners:
                        try:
                            listener(transition)
                        except Exception:
                            self._log.exception("alarm listener %r failed on %s", listener, transition.log_line())
        except BaseException:
            with self._lock:
                self._delivering = False
            raise


# -- ``uun-gateway alarms test`` -------------------------------------------------------------------


def _test_value(text: str) -> tuple[float, float | None]:
    """An argparse type: ``VALUE`` or ``VALUE@SECONDS``."""
    value_text, _, at_text = text.partition("@")
    words = {"true": 1.0, "false": 0.0}
    try:
        value = words[value_text.lower()] if value_text.lower() in words else float(value_text)
        at = float(at_text) if at_text else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, true/false, or NUMBER@SECONDS (e.g. 81.5@60), got {text!r}"
        ) from None
    if not math.isfinite(value) or (at is not None and (not math.isfinite(at) or at < 0)):
        raise argparse.ArgumentTypeError(f"expected finite numbers and SECONDS >= 0, got {text!r}")
    return value, at


def register(commands: Commands) -> None:
    """Add ``uun-gateway alarms test`` (the ``uun_gateway.commands`` entry point ``alarms``)."""
    alarms = commands.add("alarms", help="alarm rules: try them offline")
    actions = alarms.add_subparsers(dest="alarms_command", metavar="ACTION", required=True)
    test = actions.add_parser(
        "test",
        help="run readings through the rules of a config file and print each alarm transition",
        description=(
            "Feed a series of values to the alarm rules of a config file (gateway.alarms), on a simulated "
            "clock, and print what each rule does. Nothing is stored or saved."
        ),
    )
    test.add_argument("-c", "--config", required=True, help="the JSON config file")
    test.add_argument(
        "--value",
        action="append",
        required=True,
        type=_test_value,
        metavar="V[@SECONDS]",
        help="a reading's value, optionally at SECONDS since the first; repeat for a series",
    )
    test.add_argument("--rule", help="test only this rule (default: every rule)")
    test.add_argument("--module", help="the readings' module (default: the rule's)")
    test.add_argument("--device", help="the readings' device (default: the rule's, or 'test' for a pattern)")
    test.add_argument("--point", help="the readings' point (default: the rule's, or 'test' for a pattern)")
    test.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="seconds between values without @ (1)"
    )
    test.set_defaults(func=cmd_alarms_test)


def cmd_alarms_test(args: argparse.Namespace) -> int:
    """Run ``args.value`` through the selected rules; print each step and transition. Returns 0,
    ``EX_CONFIG`` for a config whose rules are invalid, 2 for an unknown rule or a bad series."""
    try:
        config = load_config(args.config)
        section = config.get("gateway", {})
        rules = compile_rules(section.get("alarms") if isinstance(section, dict) else None)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"{args.config}: {line}")
        return EX_CONFIG
    if not rules:
        print(f"{args.config}: gateway.alarms has no rules")
        return 2
    if args.rule is not None:
        rules = [rule for rule in rules if rule.name == args.rule]
        if not rules:
            print(f"{args.config}: no rule named {args.rule!r}")
            return 2
    if not (args.interval > 0 and math.isfinite(args.interval)):
        print("--interval: expected a number of seconds > 0")
        return 2
    times: list[float] = []
    for _value, at in args.value:
        t = at if at is not None else (times[-1] + args.interval if times else 0.0)
        if times and t < times[-1]:
            print(f"--value ...@{t:g}: the times must not decrease")
            return 2
        times.append(t)
    for rule in rules:
        _run_test(rule, args, times)
    return 0


def _example(pattern: str) -> str:
    """A name ``pattern`` matches, for ``alarms test`` readings: ``28.*`` -> ``28.test``."""
    example = pattern.replace("*", "test").replace("?", "x")
    return example if fnmatch.fnmatchcase(example, pattern) else "test"


def _run_test(rule: AlarmRule, args: argparse.Namespace, times: list[float]) -> None:
    module = args.module or rule.module
    device = args.device or _example(rule.device)
    point = args.point or _example(rule.point)
    print(f"rule {rule.describe()}")
    if not rule.matches(module, device, point):
        print(f"  does not watch {module}/{device}/{point}")
        return
    now = [0.0]
    base = 1_700_000_000.0
    quiet = logging.getLogger("uun_gateway.alarms.test")  # the printed lines say it all
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    engine = AlarmEngine([rule], clock=lambda: now[0], wall=lambda: base + now[0], log=quiet)

    for (value, _at), t in zip(args.value, times):
        now[0] = t
        changes = engine.tick(t)
        changes += engine.evaluate(Reading(module, device, point, value, base + t))
        states = [a.state for a in engine.alarms()] or ["normal"]
        line = f"  t={t:8g} s  value {value:<10g} -> {states[0]}"
        if rule.condition is not None and states[0] in ("normal", "cleared"):
            track = engine._tracks.get((module, device, point), {}).get(rule.name)
            if track is not None and track.pending_since is not None:
                line += f" (condition holds since t={track.pending_since:g} s; trips after {rule.trip_delay:g} s)"
        print(line)
        for change in changes:
            print(f"      {change.previous_state} -> {change.state} ({change.event}): {change.reason}")
