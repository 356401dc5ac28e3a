"""The module set: finding installed modules, constructing them, one typed adapter per loaded
module, the composed config schema, and the checks of config keys against the loaded modules.

:func:`adapt` is the one place that knows a :class:`~uun_gateway.module.Module` from a plain class
(uun-iot's ``IModule``: any object with an ``id`` and ``@on`` handlers); everything after loading
sees a :class:`LoadedModule`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import CORE_GATEWAY_SCHEMA, compose_schema, lenient_schema, suggest, validate
from .errors import ConfigError, ModuleLoadError
from .events import Handler, declared_handlers, find_handlers
from .host import SERVICE_IDS, ModuleHost
from .module import Module, ModuleStats
from .plugins import available_module_ids, load_module_class
from .priority import class_priority
from .storage import state_directory, storage_location_errors, storage_setting_key

if TYPE_CHECKING:
    from .uuapp import UuAppClient

logger = logging.getLogger(__name__)

ModuleInit = Callable[..., Any]  # (config, uuclient), or uun-iot 0.11's (ev, config, uuclient)
TimerKey = tuple[str, str | None]


def _document_schema(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema of the top-level keys besides ``gateway`` (uuApp's). A config with no other key
    validates the same without it, and then the uuApp client (and requests) is never imported."""
    if not any(key != "gateway" for key in config):
        return None
    from .uuapp import UUAPP_SCHEMA

    return UUAPP_SCHEMA


def configured_module_ids(config: Mapping[str, Any], *, strict: bool = True) -> list[str]:
    """Ids the config enables: keys of ``gateway.moduleTimers`` and module sections of ``gateway``
    (not ``strict``: only keys whose value is an object; others are an application's settings)."""
    gateway = config.get("gateway", {})
    timers = gateway.get("moduleTimers", {}) if isinstance(gateway, Mapping) else {}
    ids = list(timers) if isinstance(timers, Mapping) else []
    if isinstance(gateway, Mapping):
        ids += [
            key
            for key, value in gateway.items()
            if key not in CORE_GATEWAY_SCHEMA and (strict or isinstance(value, Mapping))
        ]
    return list(dict.fromkeys(ids))


class LoadedModule:
    """A loaded module as the host sees it, whatever its class.

    ``instance`` is the module object itself (what ``Gateway.modules`` lists); ``handlers`` its
    ``@on`` handlers; ``stats`` its counters; ``config_schema``, ``timer_defaults`` and ``priority``
    (see :mod:`~uun_gateway.priority`) what it declares. ``updates_in_place``: whether a changed
    section of its own is applied to the running module (its ``@on("update")`` handlers) rather than
    by restarting it; the class attribute ``updates_in_place`` when it sets one, else whether it has
    ``@on("update")`` handlers (a module given by ``module_init``, which cannot be constructed again:
    True). ``carries_remote_config``: the class attribute of that name, True for a module that
    brings remote configs (``config``, ``mqtt``); a remote config may not remove the last of them.
    ``given``: it came from ``module_init``. The methods are what the host does with a module; this
    base class is the adapter of a plain class, which has no storage the host manages and keeps its
    config itself.
    """

    def __init__(
        self,
        instance: object,
        module_id: str,
        *,
        stats: ModuleStats | None = None,
        config_schema: dict[str, Any] | None = None,
        timer_defaults: Mapping[str | None, float] | None = None,
    ) -> None:
        self.instance = instance
        self.id = module_id
        self.handlers: list[Handler] = find_handlers(instance)
        self.stats = stats if stats is not None else ModuleStats()
        self.config_schema = config_schema
        self.timer_defaults: Mapping[str | None, float] = dict(timer_defaults or {})
        self.priority = class_priority(instance)
        self.given = False
        self.carries_remote_config = getattr(instance, "carries_remote_config", False) is True
        declared = getattr(instance, "updates_in_place", None)
        self._declared_in_place = declared if isinstance(declared, bool) else None

    @property
    def updates_in_place(self) -> bool:
        if self._declared_in_place is not None:
            return self._declared_in_place
        return self.given or bool(self.of("update"))

    def of(self, event: str) -> list[Handler]:
        """The handlers of ``event``, in class definition order."""
        return [h for h in self.handlers if h.event == event]

    @property
    def has_storage(self) -> bool:
        """Whether the host manages a storage for this module (its location is checked at load)."""
        return False

    def attach(self, host: ModuleHost) -> None:
        """Hand the module its host (before start)."""

    def replace_config(self, gateway_section: Mapping[str, Any]) -> None:
        """Give the module the new ``gateway`` section of an update (before its update handlers)."""

    def stored_count(self) -> int | None:
        """Entries waiting in its storage; None when it has none or it was not opened."""
        return None

    def close(self) -> None:
        """Release what the host opened for the module (its storage), after its stop handlers."""


class _NativeModule(LoadedModule):
    """The adapter of a :class:`~uun_gateway.module.Module`."""

    def __init__(self, module: Module) -> None:
        super().__init__(
            module,
            module.id,
            stats=module.stats,
            config_schema=module.config_schema,
            timer_defaults=module.timer_defaults,
        )
        self.module = module

    @property
    def has_storage(self) -> bool:
        return self.module.has_storage

    def attach(self, host: ModuleHost) -> None:
        self.module.attach(host)

    def replace_config(self, gateway_section: Mapping[str, Any]) -> None:
        self.module.replace_config(gateway_section)

    def stored_count(self) -> int | None:
        return self.module.stored_count()

    def close(self) -> None:
        self.module.close_storage()


class _PlainModule(LoadedModule):
    """The adapter of a plain class (uun-iot's ``IModule``): its optional attributes are read once here."""

    def __init__(self, instance: object, module_id: str) -> None:
        stats = getattr(instance, "stats", None)
        schema = getattr(instance, "config_schema", None)
        super().__init__(
            instance,
            module_id,
            stats=stats if isinstance(stats, ModuleStats) else None,
            config_schema=schema if isinstance(schema, dict) else None,
            timer_defaults=getattr(instance, "timer_defaults", None) or {},
        )
        self._keeps_config = hasattr(instance, "_config")

    def replace_config(self, gateway_section: Mapping[str, Any]) -> None:
        if self._keeps_config:
            self.instance._config = gateway_section  # type: ignore[attr-defined]


def adapt(instance: object, source: str = "module_init") -> LoadedModule:
    """The adapter of a constructed module; raises :class:`ModuleLoadError` when it has no id."""
    if isinstance(instance, Module):
        return _NativeModule(instance)
    module_id = getattr(instance, "id", None)
    if not isinstance(module_id, str) or not module_id:
        raise ModuleLoadError(f"{source} returned {instance!r}, which has no string 'id' attribute")
    return _PlainModule(instance, module_id)


# -- the timers of a module -------------------------------------------------------------------------


def _periods(setting: Any) -> dict[str | None, Any]:
    """``gateway.moduleTimers.<id>`` as {timer id (None for a plain tick): period}."""
    if isinstance(setting, Mapping):
        return dict(setting)
    return {} if setting is None else {None: setting}


def _tick(timer_id: str | None) -> str:
    return "@on('tick')" if timer_id is None else f"@on('tick', {timer_id!r})"


def timer_errors(
    mid: str, tick_ids: list[str | None], timer_defaults: Mapping[str | None, float], setting: Any
) -> list[str]:
    """Tick handlers (``tick_ids``: their timer ids) without a period in ``setting``
    (``gateway.moduleTimers.<mid>``) or ``timer_defaults``, periods without a handler, duplicate
    tick handlers."""
    where = f"gateway.moduleTimers.{mid}"
    periods = _periods(setting)
    errors = [f"{where}: module {mid!r} has two {_tick(t)} handlers" for t in set(tick_ids) if tick_ids.count(t) > 1]
    for timer_id in dict.fromkeys(tick_ids):
        if timer_id not in periods and timer_id not in timer_defaults:
            expected = "a period in seconds" if timer_id is None else f'{{"{timer_id}": seconds}}'
            errors.append(f"{where}: module {mid!r} has {_tick(timer_id)} but no period; expected {expected}")
    named = [t for t in tick_ids if t is not None]
    for timer_id in periods:
        if timer_id not in tick_ids:
            at = where if timer_id is None else f"{where}.{timer_id}"
            hint = suggest(timer_id, named) if timer_id else ""
            errors.append(f"{at}: module {mid!r} has no {_tick(timer_id)} handler{hint}")
    return errors


@dataclass(frozen=True)
class TimerSpec:
    """One tick timer a config asks for: its module, handler, name and period in seconds."""

    loaded: LoadedModule
    handler: Handler
    name: str
    period: float


# -- the set of loaded modules ----------------------------------------------------------------------


class ModuleSet:
    """The loaded modules in start order, with what checking a config against them needs.

    ``installed`` are the ids of every installed module (loaded or not), for hints. Unless ``strict``
    (an application brought its own modules, as uun-iot applications do), what is the application's
    business is a warning, not an error: keys no loaded module has, non-object values and unknown
    top-level keys, a missing ``uuThing.uuIdentity``, a tick handler without a period (it does not
    run). :attr:`warnings` holds those of the last :meth:`check`, :attr:`idle_timers` the problems
    of its timers without a period. Not thread-safe on its own: the gateway serialises its use.
    """

    def __init__(
        self, modules: list[LoadedModule], installed: set[str], uuclient: UuAppClient | None, *, strict: bool = True
    ) -> None:
        self.modules = modules
        self.installed = installed
        self.uuclient = uuclient
        self.strict = strict
        self.warnings: list[str] = []
        self.idle_timers: list[str] = []

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.modules]

    def schema(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON Schema of a whole config (``config``, whose top-level keys decide whether the
        uuApp part is needed) for these modules."""
        return compose_schema({m.id: m.config_schema for m in self.modules}, _document_schema(config))

    def check(
        self,
        config: Mapping[str, Any],
        *,
        valid_for: dict[str, Any] | None = None,
        trusted: Mapping[str, Any] | None = None,
        state_dir: Path | None = None,
    ) -> list[str]:
        """Every problem ``config`` (normalized) would have for these modules, schema errors and
        load-time errors (ids, timers, storage locations) together; empty when valid.
        ``valid_for``: a schema ``config`` was just validated against; when it is this set's own,
        the config is not validated a second time. ``trusted``, ``state_dir``: see
        :func:`load_time_errors`. Warnings (not ``strict``) are logged and kept in :attr:`warnings`."""
        schema = self.schema(config)
        schema_errors: list[str] = []
        warnings: list[str] = []
        idle: list[str] = []
        if valid_for != schema:
            schema_errors, warnings = validate_leniently(config, schema, self.strict, module_ids=self.ids)
        unknown = unknown_id_errors(config, set(self.ids), self.installed, strict=self.strict)
        errors = schema_errors + (unknown if self.strict else [])
        warnings += [] if self.strict else unknown
        gateway = config.get("gateway")
        services: list[Declared] = (
            [("alarms", [], {}, True)] if isinstance(gateway, Mapping) and gateway.get("alarms") else []
        )
        for problem in load_time_errors(
            config,
            [(m.id, [h.timer_id for h in m.of("tick")], m.timer_defaults, m.has_storage) for m in self.modules]
            + services,
            schema_errors,
            trusted=trusted,
            state_dir=state_dir,
        ):
            if not self.strict and "but no period" in problem:
                idle.append(problem)
                warnings.append(problem + "; it does not run")
            else:
                errors.append(problem)
        if isinstance(config.get("gateway"), Mapping) and config["gateway"].get("alarms") and not schema_errors:
            from .alarms import rule_errors

            errors += rule_errors(config["gateway"]["alarms"])
        self.warnings = warnings
        self.idle_timers = idle
        for warning in warnings:
            logger.warning("config: %s", warning)
        return errors

    def timers(self, config: Mapping[str, Any]) -> dict[TimerKey, TimerSpec]:
        """The tick timers of a checked ``config``, keyed by (module id, timer id or None)."""
        settings = config["gateway"].get("moduleTimers", {})
        specs: dict[TimerKey, TimerSpec] = {}
        for loaded in self.modules:
            periods = _periods(settings.get(loaded.id))
            for handler in loaded.of("tick"):
                tid = handler.timer_id
                if tid not in periods and tid not in loaded.timer_defaults:
                    continue  # allowed only when not strict (a warning): the handler does not run
                period = float(periods[tid] if tid in periods else loaded.timer_defaults[tid])
                name = loaded.id if tid is None else f"{loaded.id}.{tid}"
                specs[(loaded.id, tid)] = TimerSpec(loaded, handler, name, period)
        return specs


#: What the load-time checks need of a module: id, its tick handlers' timer ids, its default
#: periods, whether the host manages its storage. Known before construction for an installed class.
Declared = tuple[str, list[str | None], Mapping[str | None, float], bool]


def declared(module_id: str, cls: type) -> Declared:
    """What class ``cls`` declares, for checking a config before (or without) constructing it."""
    ticks = [timer_id for event, timer_id, _ in declared_handlers(cls) if event == "tick"]
    defaults = getattr(cls, "timer_defaults", None)
    return module_id, ticks, defaults if isinstance(defaults, Mapping) else {}, issubclass(cls, Module)


def load_time_errors(
    config: Mapping[str, Any],
    modules: list[Declared],
    schema_errors: list[str],
    *,
    trusted: Mapping[str, Any] | None = None,
    state_dir: Path | None = None,
) -> list[str]:
    """Timer and storage-location problems of ``config`` for ``modules``. Works on a config that
    failed its schema (``schema_errors``) too: a setting the schema found wrong is not judged again.
    With ``trusted`` (the config in effect), ``config`` is a remote one: its new storage locations
    must stay inside ``state_dir`` (default: :func:`~uun_gateway.storage.state_directory`)."""
    gateway = config.get("gateway", {})
    if not isinstance(gateway, Mapping):
        return []
    timers = gateway.get("moduleTimers", {})
    errors: list[str] = []
    for mid, ticks, defaults, _ in modules:
        errors += timer_errors(mid, ticks, defaults, timers.get(mid) if isinstance(timers, Mapping) else None)
    for mid, _, _, has_storage in modules:
        key = storage_setting_key(gateway, mid) if isinstance(gateway.get("moduleBackupStorage", {}), Mapping) else ""
        if has_storage and key and not any(e.startswith((f"{key}:", f"{key}.", f"{key}[")) for e in schema_errors):
            try:
                errors += storage_location_errors(
                    gateway,
                    [mid],
                    confine_to=None if trusted is None else (state_dir or state_directory()),
                    trusted=None if trusted is None else trusted.get("gateway", {}),
                )
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # a storage setting of the wrong shape: a schema error names it
    return errors


def validate_leniently(
    config: Mapping[str, Any], schema: dict[str, Any], strict: bool, *, module_ids: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``config`` against ``schema``; not ``strict``, what only the strict
    schema refuses (see :func:`~uun_gateway.config.lenient_schema`) is a warning."""
    errors = validate(config, schema if strict else lenient_schema(schema), module_ids=module_ids)
    if strict:
        return errors, []
    return errors, [e for e in validate(config, schema, module_ids=module_ids) if e not in errors]


def unknown_id_errors(
    config: Mapping[str, Any], loaded: set[str], installed: set[str], *, strict: bool = True
) -> list[str]:
    """Keys of ``moduleTimers``, ``moduleBackupStorage`` and ``gateway`` that name no loaded module."""
    gateway = config.get("gateway", {})
    if not isinstance(gateway, Mapping):
        return []
    timers = gateway.get("moduleTimers", {})
    known = loaded | installed
    errors: list[str] = []
    for mid in configured_module_ids(config, strict=strict):
        if mid not in loaded:
            where = "moduleTimers." if isinstance(timers, Mapping) and mid in timers else ""
            hint = suggest(mid, known - {mid}) or (" (installed, but not loaded)" if mid in known else "")
            errors.append(f"gateway.{where}{mid}: no module has the id {mid!r}{hint}")
    for key in ("moduleBackupStorage", "modulePriority"):
        settings = gateway.get(key, {})
        for mid in settings if isinstance(settings, Mapping) else ():
            if mid not in loaded and not (key == "moduleBackupStorage" and mid in SERVICE_IDS):
                errors.append(f"gateway.{key}.{mid}: no module has the id {mid!r}{suggest(mid, known)}")
    return errors


def load_modules(
    config: dict[str, Any], module_init: ModuleInit | None, source: str, *, strict: bool | None = None
) -> ModuleSet:
    """Import, construct and check the modules of a normalized ``config``: the user's (from
    ``module_init(config, uuclient)``, one module, a list or None) first, then every installed module
    the config names that the user did not give. ``strict`` (see :class:`ModuleSet`) defaults to
    True without a ``module_init`` and False with one.

    Raises :class:`ConfigError` (every problem, ``source`` naming the config) or
    :class:`ModuleLoadError` (naming the module). Never waits on the network.
    """
    strict = module_init is None if strict is None else strict
    installed = set(available_module_ids())
    classes = {mid: load_module_class(mid) for mid in configured_module_ids(config, strict=strict) if mid in installed}
    schemas = {m: getattr(c, "config_schema", None) for m, c in classes.items()}
    schema = compose_schema(schemas, _document_schema(config))
    errors, warnings = validate_leniently(
        config, schema, strict, module_ids=list(classes) if module_init is None else None
    )
    if errors:
        if module_init is None:  # without the user's modules, every module is known: check all now
            modules = [declared(mid, cls) for mid, cls in classes.items()]
            unknown = unknown_id_errors(config, set(classes), installed, strict=strict)
            errors += unknown if strict else []
            warnings += [] if strict else unknown
            errors += load_time_errors(config, modules, errors)
        raise ConfigError(errors, source, warnings)
    uuclient = _uuapp_client(config)
    given = _user_modules(module_init, config, uuclient)
    given_ids = {m.id for m in given}
    plugins = [
        adapt(_construct(mid, cls, config["gateway"], uuclient), mid)
        for mid, cls in classes.items()
        if mid not in given_ids
    ]
    module_set = ModuleSet(given + plugins, installed, uuclient, strict=strict)
    errors = module_set.check(config, valid_for=schema if module_init is None and strict else None)
    if errors:
        raise ConfigError(errors, source)
    return module_set


def _uuapp_client(config: dict[str, Any]) -> UuAppClient | None:
    if "uuApp" not in config:
        return None
    from .uuapp import UuAppClient

    return UuAppClient(config)


def _user_modules(
    module_init: ModuleInit | None, config: dict[str, Any], uuclient: UuAppClient | None
) -> list[LoadedModule]:
    if module_init is None:
        return []
    if _positional_parameters(module_init) == 3:  # uun-iot 0.11: module_init(ev, config, uuclient)
        from .compat.events import EventRegister

        result = _construct("module_init", module_init, EventRegister(), config, uuclient)
    else:
        result = _construct("module_init", module_init, config, uuclient)
    instances = list(result) if isinstance(result, (list, tuple)) else ([] if result is None else [result])
    modules = [adapt(instance) for instance in instances]
    for loaded in modules:
        loaded.given = True
    seen: set[str] = set()
    for loaded in modules:
        if loaded.id in seen:
            raise ModuleLoadError(f"module_init returned two modules with the id {loaded.id!r}")
        seen.add(loaded.id)
    return modules


def _positional_parameters(func: Callable[..., Any]) -> int | None:
    """How many positional parameters ``func`` takes (None when it takes any number or is opaque)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return None
    return sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)


def _construct(name: str, factory: Callable[..., Any], *args: Any) -> Any:
    try:
        return factory(*args)
    except (ConfigError, ModuleLoadError):
        raise
    except Exception as exc:
        name = _raising_module_id(exc) or name
        raise ModuleLoadError(f"module {name!r} failed to initialise: {type(exc).__name__}: {exc}") from exc


def _raising_module_id(exc: BaseException) -> str | None:
    """The id of the outermost Module whose method is on ``exc``'s traceback (its constructor)."""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Module):
            return owner.id
        tb = tb.tb_next
    return None
