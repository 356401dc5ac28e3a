"""The live module set: adding, removing and restarting modules of a running gateway on a config change.

A new configuration enables the installed modules it names (keys of ``gateway.moduleTimers`` and
module sections of ``gateway``). Against the modules loaded now, :func:`plan_change` works out a
:class:`Plan`:

- *add*: an installed module (entry point) the new config enables and that is not loaded;
- *remove*: a loaded installed module the new config no longer enables;
- *restart*: a loaded installed module whose section ``gateway.<id>`` changed and that does not
  update in place (:attr:`LoadedModule.updates_in_place`: the class attribute ``updates_in_place``,
  by default whether it has ``@on("update")`` handlers);
- *in place*: a module whose changed section its ``@on("update")`` handlers apply.

Modules given by ``module_init`` are never added or removed live (the application constructs them
together, once); a change that would need one of them removed (strict config checks) or restarted
is refused with an error saying so.

:class:`LiveSet` carries a plan out on its gateway: the modules that go are stopped in descending
priority (their timers, then their stop handlers, then their storage is closed — the file and its
entries stay), the new ones are constructed before anything stops (an import, constructor or config
error refuses the whole config, nothing changed) and started in ascending priority after the others
got the new config (their start handlers, then their timers). A blocking start handler that raises
or an update handler that fails makes the gateway roll back: the same plan the other way, with the
instances that were stopped started again (not constructed again).

Each module's start handlers get ``(runev, stopev)`` events of its own, cleared and set when the
module stops, whether the whole gateway stops or only that module goes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from .errors import ConfigError, ModuleLoadError
from .handlers import HandlerRunner
from .host import ModuleHost
from .loading import LoadedModule, ModuleSet, TimerKey, _construct, adapt, configured_module_ids
from .plugins import available_module_ids, load_module_class
from .priority import describe_order, in_start_order
from .storage import state_directory
from .timers import RepeatTimer

if TYPE_CHECKING:
    from .alarmservice import AlarmService
    from .uuapp import UuAppClient

logger = logging.getLogger("uun_gateway.gateway")

Events = tuple[threading.Event, threading.Event]


class _Gateway(Protocol):
    """What :class:`LiveSet` changes of its :class:`~uun_gateway.gateway.Gateway` (its internals)."""

    config: dict[str, Any]
    config_path: Path | None
    runev: threading.Event
    uuapp_client: UuAppClient | None
    alarms: AlarmService | None
    _set: ModuleSet
    _modules: list[LoadedModule]
    _timers: dict[TimerKey, RepeatTimer]
    _runner: HandlerRunner


@dataclass(frozen=True)
class Plan:
    """What a config change does to the module set (module ids, each in config order)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    in_place: tuple[str, ...] = ()

    @property
    def changes_modules(self) -> bool:
        """Whether modules are added, removed or restarted."""
        return bool(self.add or self.remove or self.restart)

    def describe(self) -> str:
        """``"added: onewire; removed: heartbeat"``, or ``"no module changed"``."""
        parts = [
            f"{label}: {', '.join(ids)}"
            for label, ids in (
                ("added", self.add),
                ("removed", self.remove),
                ("restarted", self.restart),
                ("updated in place", self.in_place),
            )
            if ids
        ]
        return "; ".join(parts) or "no module changed"


def plan_change(
    modules: Sequence[LoadedModule],
    installed: set[str],
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    strict: bool,
) -> tuple[Plan, list[str]]:
    """The :class:`Plan` from the loaded ``modules`` under the normalized config ``old`` to ``new``,
    and the errors that refuse it (changes a module given by ``module_init`` cannot take live)."""
    enabled = [mid for mid in configured_module_ids(new, strict=strict) if mid in installed]
    was_enabled = set(configured_module_ids(old, strict=strict))
    loaded = {m.id for m in modules}
    errors: list[str] = []
    remove: list[str] = []
    for module in modules:
        if module.id in enabled:
            continue
        if not module.given:
            remove.append(module.id)
        elif strict and module.id in was_enabled and module.id not in configured_module_ids(new, strict=strict):
            errors.append(
                f"gateway.{module.id}: module {module.id!r} was given by module_init, so it cannot be removed while "
                "the gateway runs (only installed modules can); restart the gateway without it"
            )
    restart: list[str] = []
    in_place: list[str] = []
    old_sections, new_sections = old.get("gateway", {}), new.get("gateway", {})
    for module in modules:
        if module.id in remove or old_sections.get(module.id) == new_sections.get(module.id):
            continue
        if module.updates_in_place:
            in_place.append(module.id)
        elif module.given:
            errors.append(
                f"gateway.{module.id}: module {module.id!r} does not update in place (updates_in_place = False) and "
                "was given by module_init, so it cannot be restarted while the gateway runs; restart the gateway "
                "to apply this section"
            )
        else:
            restart.append(module.id)
    add = [mid for mid in enabled if mid not in loaded]
    return Plan(tuple(add), tuple(remove), tuple(restart), tuple(in_place)), errors


@dataclass
class _Prepared:
    """A checked config with the module set it runs on; ``fresh`` are the modules it starts."""

    config: dict[str, Any]
    plan: Plan
    module_set: ModuleSet
    fresh: list[LoadedModule]


class LiveSet:
    """The module set of one :class:`~uun_gateway.gateway.Gateway`, changed while it runs.

    The gateway calls :meth:`check` and :meth:`apply` under its own lock (updates are serialised);
    :meth:`events`, :meth:`begin` and :meth:`end` are thread-safe. It orders the gateway's modules by
    priority when it is created.
    """

    def __init__(self, gateway: _Gateway, default_stop_timeout: float) -> None:
        self._gateway = gateway
        self._default_stop_timeout = default_stop_timeout
        self._given_order = [m.id for m in gateway._set.modules if m.given]
        self._events: dict[LoadedModule, Events] = {}
        self._events_lock = threading.Lock()
        self._prepared: _Prepared | None = None
        self._retired: dict[str, LoadedModule] = {}
        self._unsubscribe: dict[LoadedModule, list[Callable[[], None]]] = {}
        self.last_change = "no change"
        gateway._set.modules = self._ordered(gateway._set.modules, gateway.config)

    # -- per-module start events -----------------------------------------------------------------

    def events(self, module: LoadedModule) -> Events:
        """The ``(runev, stopev)`` handed to ``module``'s start handlers."""
        with self._events_lock:
            pair = self._events.get(module)
            if pair is None:
                pair = self._events[module] = (threading.Event(), threading.Event())
                pair[1].set()
            return pair

    def begin(self, module: LoadedModule) -> Events:
        """Mark ``module`` running (runev set, stopev clear); returns its events."""
        runev, stopev = self.events(module)
        stopev.clear()
        runev.set()
        return runev, stopev

    def end(self, module: LoadedModule) -> None:
        """Mark ``module`` stopped (runev clear, stopev set)."""
        runev, stopev = self.events(module)
        runev.clear()
        stopev.set()

    def end_all(self) -> None:
        """Mark every module stopped: the gateway is stopping."""
        with self._events_lock:
            pairs = list(self._events.values())
        for runev, stopev in pairs:
            runev.clear()
            stopev.set()

    def apply_alarms(self, gateway_section: Mapping[str, Any]) -> None:
        """Make the alarm rules of ``gateway_section`` the ones in effect: replace the rules of the
        gateway's alarm service, or open the service (warning about rules that watch a module not
        loaded, handing transitions to every module's ``@on("alarm")`` handlers) and start it if the
        gateway runs. Raises :class:`~uun_gateway.errors.ConfigError` for rules that do not compile."""
        gateway = self._gateway
        if gateway.alarms is not None:
            gateway.alarms.replace_rules(gateway_section)
            return
        if not gateway_section.get("alarms"):
            return
        from .alarmservice import AlarmService  # only a gateway with alarm rules pays for them

        service = gateway.alarms = AlarmService(gateway_section)
        ids = {m.id for m in gateway._modules}
        for rule in service.rules:
            if rule.module not in ids:
                logger.warning("alarm rule %s watches module %r, which is not loaded", rule.name, rule.module)
        for module in gateway._modules:
            self.subscribe_alarms(module)
        if gateway.runev.is_set():
            service.start()

    def subscribe_alarms(self, module: LoadedModule) -> None:
        """Hand the gateway's alarm transitions to ``module``'s ``@on("alarm")`` handlers until it
        stops (a module removed live gets none after)."""
        gateway = self._gateway
        if gateway.alarms is None:
            return
        for handler in module.of("alarm"):
            listener = functools.partial(gateway._runner.call, module, handler)
            self._unsubscribe.setdefault(module, []).append(gateway.alarms.subscribe(listener))

    # -- checking and applying a config ----------------------------------------------------------

    def check(self, config: dict[str, Any], *, remote: bool = False) -> list[str]:
        """Every problem the normalized ``config`` has for the module set it would run on (the
        modules it adds constructed, nothing started); empty when valid. The constructed modules
        are kept for :meth:`apply` of the same config. A ``remote`` config may place storages only
        inside the state directory (see :meth:`ModuleSet.check
        <uun_gateway.loading.ModuleSet.check>`), and may not remove the last modules that bring
        remote configs nor leave a running timer without a period (what an application's lenient
        config check lets pass at start)."""
        prepared, errors = self._prepare(config, {}, remote=remote)
        self._prepared = prepared
        return errors

    def apply(self, config: dict[str, Any], *, rollback: bool = False) -> str | None:
        """Carry out the change to the normalized, checked ``config``; None, or what failed (the
        gateway then rolls back with ``rollback=True``, which starts the modules this change stopped
        again instead of constructing new ones)."""
        reuse, self._retired = (self._retired if rollback else {}), {}
        prepared = self._prepared if self._prepared is not None and self._prepared.config == config else None
        self._prepared = None
        if prepared is None or rollback:
            prepared, errors = self._prepare(config, reuse)
            if prepared is None:
                return "; ".join(errors)
        return self._execute(prepared)

    def _ordered(self, modules: Sequence[LoadedModule], config: Mapping[str, Any]) -> list[LoadedModule]:
        """``modules`` in start order: by priority; ties in load order (module_init's, then config order)."""
        given = [m for mid in self._given_order for m in modules if m.id == mid and m.given]
        ids = configured_module_ids(config, strict=self._gateway._set.strict)
        plugins = sorted(
            (m for m in modules if not m.given), key=lambda m: ids.index(m.id) if m.id in ids else len(ids)
        )
        return in_start_order(given + plugins, config["gateway"])

    def _prepare(
        self,
        config: dict[str, Any],
        reuse: Mapping[str, LoadedModule],
        *,
        remote: bool = False,
    ) -> tuple[_Prepared | None, list[str]]:
        gateway = self._gateway
        current = gateway._set
        installed = set(available_module_ids())
        plan, errors = plan_change(current.modules, installed, gateway.config, config, strict=current.strict)
        if errors:
            return None, errors
        fresh: list[LoadedModule] = []
        for mid in (*plan.add, *plan.restart):
            if mid in reuse:
                fresh.append(reuse[mid])
                continue
            try:
                instance = _construct(mid, load_module_class(mid), config["gateway"], gateway.uuapp_client)
                fresh.append(adapt(instance, mid))
            except ConfigError as exc:
                errors.extend(exc.errors)
            except ModuleLoadError as exc:
                errors.append(f"gateway.{mid}: {exc}")
        if errors:
            return None, errors
        going = {*plan.remove, *plan.restart}
        kept = [m for m in current.modules if m.id not in going]
        module_set = ModuleSet(self._ordered(kept + fresh, config), installed, current.uuclient, strict=current.strict)
        if remote:
            errors = module_set.check(config, trusted=gateway.config, state_dir=state_directory(gateway.config_path))
            errors += _remote_losses(current, module_set, plan)
        else:
            errors = module_set.check(config)
        if errors:
            return None, errors
        return _Prepared(config, plan, module_set, [m for m in module_set.modules if _among(m, fresh)]), []

    def _execute(self, prepared: _Prepared) -> str | None:
        gateway, config, plan = self._gateway, prepared.config, prepared.plan
        running = gateway.runev.is_set()
        deadline = time.monotonic() + float(config["gateway"].get("stopTimeout", self._default_stop_timeout))
        old_timers = gateway._timers
        going = {*plan.remove, *plan.restart}
        for module in reversed(gateway._modules):
            if module.id in going:
                self._stop_module(module, old_timers, deadline, running)
                self._retired[module.id] = module

        timers: dict[TimerKey, RepeatTimer] = {}
        kept_new_timers: list[RepeatTimer] = []  # a kept module's timer the old config did not run
        retimed: list[str] = []
        for key, spec in prepared.module_set.timers(config).items():
            timer = None if _among(spec.loaded, prepared.fresh) else old_timers.get(key)
            if timer is None:
                timer = RepeatTimer(spec.period, gateway._runner.call, (spec.loaded, spec.handler), name=spec.name)
                if not _among(spec.loaded, prepared.fresh):
                    kept_new_timers.append(timer)
            elif spec.period != timer.period:
                logger.info("timer %s: period %gs -> %gs", timer.name, timer.period, spec.period)
                retimed.append(f"{timer.name} {timer.period:g}s -> {spec.period:g}s")
                timer.period = spec.period
            timers[key] = timer
        for key, timer in old_timers.items():
            if timers.get(key) is not timer and not timer.stop(timeout=max(0.0, deadline - time.monotonic())):
                logger.error("timer %s: handler still running at stop; abandoned", timer.name)

        gateway.config = config
        gateway._set = prepared.module_set
        gateway._modules = prepared.module_set.modules
        gateway._timers = timers
        section = config["gateway"]
        for module in gateway._modules:
            if _among(module, prepared.fresh):
                module.attach(cast(ModuleHost, gateway))  # the Gateway is a ModuleHost
                self.subscribe_alarms(module)
            module.replace_config(section)
        failures = [
            f"{handler.name} failed"
            for module in gateway._modules
            if not _among(module, prepared.fresh)
            for handler in module.of("update")
            if not gateway._runner.call(module, handler, *((section,) if handler.with_config else ()))
        ]
        if running:
            failures += self._start_modules(prepared.fresh, timers)
            for timer in kept_new_timers:
                timer.start()
        self.last_change = plan.describe() + (f"; timers re-timed: {', '.join(retimed)}" if retimed else "")
        if plan.changes_modules:
            order = describe_order(gateway._modules, section)
            logger.info("module set changed (%s); start order now: %s", plan.describe(), order)
        return "; ".join(failures) or None

    def _stop_module(
        self, module: LoadedModule, timers: Mapping[TimerKey, RepeatTimer], deadline: float, running: bool
    ) -> None:
        """Stop one module of a running gateway: its timers, its start handlers' events, its stop
        handlers (each until ``deadline``), then close its storage (the file stays)."""
        gateway = self._gateway
        own = [timer for (mid, _), timer in timers.items() if mid == module.id]
        for timer in own:
            timer.stop(block=False)
        for timer in own:
            if not timer.stop(timeout=max(0.0, deadline - time.monotonic())):
                logger.error("timer %s: handler still running at stop; abandoned", timer.name)
        self.end(module)
        for unsubscribe in self._unsubscribe.pop(module, []):
            unsubscribe()
        if running:
            gateway._runner.run_each_in_thread(((module, h) for h in module.of("stop")), deadline)
        module.close()
        logger.info("module %s stopped", module.id)

    def _start_modules(self, fresh: Sequence[LoadedModule], timers: Mapping[TimerKey, RepeatTimer]) -> list[str]:
        """Start ``fresh`` modules in order: start handlers, then their timers; what failed."""
        gateway = self._gateway
        failures: list[str] = []
        for module in fresh:
            evs = self.begin(module)
            ok = True
            for handler in module.of("start"):
                if handler.blocking:
                    if not gateway._runner.call(module, handler, evs):
                        failures.append(f"{handler.name} failed to start")
                        ok = False
                else:
                    gateway._runner.start_in_thread(module, handler, evs)
            if ok:
                for (mid, _), timer in timers.items():
                    if mid == module.id:
                        timer.start()
            logger.info("module %s started", module.id)
        return failures


def _remote_losses(current: ModuleSet, new: ModuleSet, plan: Plan) -> list[str]:
    """What a remote config would switch off that could not be switched on again remotely, or that
    an application's lenient check lets pass: removing the last modules that bring remote configs,
    and leaving a running timer without a period."""
    losses: list[str] = []
    carriers = {m.id for m in current.modules if m.carries_remote_config}
    if carriers and not any(m.carries_remote_config for m in new.modules):
        losses += [
            f"gateway.moduleTimers.{mid}: a remote config cannot remove module {mid!r}: no module that brings "
            "remote configs would be left (it could not be undone remotely); remove it in the config file"
            for mid in plan.remove
            if mid in carriers
        ]
    losses += [
        f"{problem}; a remote config may not stop a timer that runs now"
        for problem in new.idle_timers
        if problem not in current.idle_timers
    ]
    return losses


def _among(module: LoadedModule, modules: Sequence[LoadedModule]) -> bool:
    return any(module is other for other in modules)
