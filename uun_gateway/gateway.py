"""Gateway: loads the config and the modules, runs their handlers and timers, stops them cleanly."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from .config import (
    CORE_GATEWAY_SCHEMA,
    compose_schema,
    load_config,
    normalized,
    save_config_atomically,
    saved_update_path,
    suggest,
    validate,
)
from .errors import ConfigApplyError, ConfigError, ModuleLoadError
from .events import Handler, find_handlers
from .module import Module, ModuleStats, storage_location
from .plugins import available_module_ids, load_module_class
from .timers import RepeatTimer
from .uuapp import UUAPP_SCHEMA, UuAppClient

logger = logging.getLogger(__name__)

ModuleInit = Callable[[dict[str, Any], UuAppClient | None], Any]
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_HANDLER_TIMEOUT = 300.0
CLOSE_GRACE = 2.0  # beyond the stop bound, what a second stop() caller allows for closing storages


def configured_module_ids(config: Mapping[str, Any]) -> list[str]:
    """Ids the config enables: keys of ``gateway.moduleTimers`` and module sections of ``gateway``."""
    gateway = config.get("gateway", {})
    timers = gateway.get("moduleTimers", {}) if isinstance(gateway, Mapping) else {}
    ids = list(timers) if isinstance(timers, Mapping) else []
    if isinstance(gateway, Mapping):
        ids += [key for key in gateway if key not in CORE_GATEWAY_SCHEMA]
    return list(dict.fromkeys(ids))


@dataclass
class _LoadedModule:
    module: Any
    handlers: list[Handler]
    stats: ModuleStats

    @property
    def id(self) -> str:
        return str(self.module.id)

    def of(self, event: str) -> list[Handler]:
        return [h for h in self.handlers if h.event == event]


class Gateway(AbstractContextManager["Gateway"]):
    """Runs modules: ``with Gateway("config.json", module_init) as g: ...``.

    ``config`` is a path to a JSON file or a dict. ``module_init(config, uuclient)`` returns the user's
    modules (one or a list); besides those, every installed module (entry-point group
    ``uun_gateway.modules``) whose id is a key of ``gateway.moduleTimers`` or of ``gateway`` is loaded.

    The constructor validates everything before anything starts and raises :class:`ConfigError`
    listing every problem (JSON path, value, what was expected), or :class:`ModuleLoadError` naming
    a module that cannot be imported or constructed. It never waits on the network.

    Lifecycle promises: :meth:`start` runs the start handlers (each in its own thread, in module
    order) before any timer ticks; :meth:`stop` stops the timers, then runs the stop handlers in
    reverse module order and returns within ``gateway.stopTimeout`` seconds (default 10). Both are
    idempotent and thread-safe. A handler exception is logged with its traceback and counted; it never
    stops the gateway or its timer.
    """

    def __init__(self, config: str | os.PathLike[str] | Mapping[str, Any], module_init: ModuleInit | None = None):
        if isinstance(config, Mapping):
            self.config_path: Path | None = None
            self._source = "config"
            raw: Mapping[str, Any] = config
        else:
            self.config_path = Path(config)
            self._source = str(config)
            raw = load_config(config)
        self.config: dict[str, Any] = normalized(raw)
        self.saved_update_path = saved_update_path(self.config_path) if self.config_path else None
        self.runev = threading.Event()
        self.stopev = threading.Event()
        self.started_at: float | None = None
        self.config_error: str | None = None
        self._lock = threading.RLock()
        self._stopping = False
        self._stop_done = threading.Event()
        self._stop_bound = 0.0
        self._stopper: threading.Thread | None = None
        self._handler_threads: set[threading.Thread] = set()
        self._signalled = False
        self._start_threads: list[threading.Thread] = []
        self._timers: dict[tuple[str, str | None], RepeatTimer] = {}

        installed = available_module_ids()
        plugin_classes = {mid: load_module_class(mid) for mid in configured_module_ids(self.config) if mid in installed}
        self._modules: list[_LoadedModule] = []
        self._known_ids = set(installed)
        errors = validate(
            self.config,
            compose_schema({m: getattr(c, "config_schema", None) for m, c in plugin_classes.items()}, UUAPP_SCHEMA),
        )
        if errors and module_init is None:
            errors += self._unknown_id_errors(self.config, set(plugin_classes))
        self._raise(errors)

        self.uuapp_client = UuAppClient(self.config) if "uuApp" in self.config else None
        given = self._construct_user_modules(module_init)
        given_ids = {m.id for m in given}
        constructed = given + [
            self._construct(mid, cls, self.config["gateway"], self.uuapp_client)
            for mid, cls in plugin_classes.items()
            if mid not in given_ids
        ]
        self._modules = [_LoadedModule(m, find_handlers(m), self._stats_of(m)) for m in constructed]
        self._raise(self.check(self.config))
        for module in constructed:
            if isinstance(module, Module):
                module.gateway = self
        self._timers = self._build_timers(self.config)
        if self.saved_update_path not in (None, self.config_path) and self.saved_update_path.exists():
            self._apply_saved_update(self.saved_update_path)
        logger.info(
            "loaded %d module(s): %s",
            len(self._modules),
            ", ".join(f"{m.id} ({len(m.handlers)} handlers)" for m in self._modules) or "none",
        )

    def _apply_saved_update(self, path: Path) -> None:
        """Lay the ``gateway`` section of a remote update saved at ``path`` over the config file's.
        An unreadable, invalid or failing saved update is reported and ignored."""
        try:
            saved = load_config(path)
            if not isinstance(saved.get("gateway"), dict):
                raise ConfigError(["gateway: expected an object"], str(path))
            self.reconfigure({**self.config, "gateway": saved["gateway"]}, save=False)
        except ConfigError as exc:
            self.config_error = f"ignored the saved remote config {path}: {exc}"
            logger.warning("ignoring the saved remote config %s: %s", path, exc)
            return
        logger.info("using the remote config saved at %s over %s", path, self.config_path)

    # -- loading ---------------------------------------------------------------------------------

    def _construct_user_modules(self, module_init: ModuleInit | None) -> list[Any]:
        if module_init is None:
            return []
        result = self._construct("module_init", module_init, self.config, self.uuapp_client)
        modules = list(result) if isinstance(result, (list, tuple)) else ([] if result is None else [result])
        seen: set[str] = set()
        for module in modules:
            mid = getattr(module, "id", None)
            if not isinstance(mid, str) or not mid:
                raise ModuleLoadError(f"module_init returned {module!r}, which has no string 'id' attribute")
            if mid in seen:
                raise ModuleLoadError(f"module_init returned two modules with the id {mid!r}")
            seen.add(mid)
        return modules

    @staticmethod
    def _construct(name: str, factory: Callable[..., Any], *args: Any) -> Any:
        try:
            return factory(*args)
        except (ConfigError, ModuleLoadError):
            raise
        except Exception as exc:
            name = _raising_module_id(exc) or name
            raise ModuleLoadError(f"module {name!r} failed to initialise: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _stats_of(module: Any) -> ModuleStats:
        stats = getattr(module, "stats", None)
        return stats if isinstance(stats, ModuleStats) else ModuleStats()

    def _module_schemas(self) -> dict[str, dict[str, Any] | None]:
        return {m.id: getattr(m.module, "config_schema", None) for m in self._modules}

    def _raise(self, errors: list[str]) -> None:
        if errors:
            raise ConfigError(errors, self._source)

    def _unknown_id_errors(self, config: Mapping[str, Any], loaded: set[str]) -> list[str]:
        """Keys of ``moduleTimers``, ``moduleBackupStorage`` and ``gateway`` that name no loaded module."""
        gateway = config.get("gateway", {})
        if not isinstance(gateway, Mapping):
            return []
        timers = gateway.get("moduleTimers", {})
        known = loaded | self._known_ids
        errors: list[str] = []
        for mid in configured_module_ids(config):
            if mid not in loaded:
                where = "moduleTimers." if isinstance(timers, Mapping) and mid in timers else ""
                hint = suggest(mid, known - {mid}) or (
                    " (installed, but loading a module needs a restart)" if mid in known else ""
                )
                errors.append(f"gateway.{where}{mid}: no module has the id {mid!r}{hint}")
        storages = gateway.get("moduleBackupStorage", {})
        for mid in storages if isinstance(storages, Mapping) else ():
            if mid not in loaded:
                errors.append(f"gateway.moduleBackupStorage.{mid}: no module has the id {mid!r}{suggest(mid, known)}")
        return errors

    def _module_errors(self, config: Mapping[str, Any]) -> list[str]:
        """Config keys that name no module, and tick handlers without a period (or vice versa)."""
        timers = config.get("gateway", {}).get("moduleTimers", {})
        errors = self._unknown_id_errors(config, {m.id for m in self._modules})
        errors += self._storage_errors(config["gateway"])
        for loaded_module in self._modules:
            errors += self._timer_errors(loaded_module, timers.get(loaded_module.id))
        return errors

    def _storage_errors(self, gateway: Mapping[str, Any]) -> list[str]:
        """Storage locations the gateway could not create or write (checked before anything starts)."""
        errors = []
        for loaded in self._modules:
            if not isinstance(loaded.module, Module):
                continue
            path, _ = storage_location(gateway, loaded.id)
            where = f"gateway.moduleBackupStorage.{loaded.id}"
            if loaded.id not in gateway.get("moduleBackupStorage", {}):
                where = "gateway.storageDir"
            existing = next(p for p in (path, *path.absolute().parents) if p.exists())
            if existing == path and path.is_dir():
                errors.append(f"{where}: {str(path)!r} is a directory; expected a storage file path")
            elif existing != path and not existing.is_dir():
                errors.append(f"{where}: cannot create {str(path)!r}: {str(existing)!r} is not a directory")
            elif not os.access(existing if existing != path else path.parent, os.W_OK | os.X_OK):
                errors.append(f"{where}: cannot write {str(path)!r}: no write access to {str(existing)!r}")
        return errors

    @staticmethod
    def _periods(setting: Any) -> dict[str | None, Any]:
        """``gateway.moduleTimers.<id>`` as {timer id (None for a plain tick): period}."""
        if isinstance(setting, Mapping):
            return dict(setting)
        return {} if setting is None else {None: setting}

    @classmethod
    def _timer_errors(cls, loaded: _LoadedModule, setting: Any) -> list[str]:
        """Tick handlers without a period, periods without a handler, duplicate tick handlers."""
        mid, where = loaded.id, f"gateway.moduleTimers.{loaded.id}"
        defaults = getattr(loaded.module, "timer_defaults", {}) or {}
        tick_ids = [h.timer_id for h in loaded.of("tick")]
        periods = cls._periods(setting)
        errors = [
            f"{where}: module {mid!r} has two {_tick(t)} handlers" for t in set(tick_ids) if tick_ids.count(t) > 1
        ]
        for timer_id in dict.fromkeys(tick_ids):
            if timer_id not in periods and timer_id not in defaults:
                expected = "a period in seconds" if timer_id is None else f'{{"{timer_id}": seconds}}'
                errors.append(f"{where}: module {mid!r} has {_tick(timer_id)} but no period; expected {expected}")
        named = [t for t in tick_ids if t is not None]
        for timer_id in periods:
            if timer_id not in tick_ids:
                at = where if timer_id is None else f"{where}.{timer_id}"
                hint = suggest(timer_id, named) if timer_id else ""
                errors.append(f"{at}: module {mid!r} has no {_tick(timer_id)} handler{hint}")
        return errors

    @classmethod
    def _period(cls, loaded: _LoadedModule, timer_id: str | None, setting: Any) -> float:
        periods = cls._periods(setting)
        if timer_id in periods:
            return float(periods[timer_id])
        return float(loaded.module.timer_defaults[timer_id])

    def _build_timers(self, config: Mapping[str, Any]) -> dict[tuple[str, str | None], RepeatTimer]:
        timers: dict[tuple[str, str | None], RepeatTimer] = {}
        settings = config["gateway"].get("moduleTimers", {})
        for loaded in self._modules:
            for handler in loaded.of("tick"):
                period = self._period(loaded, handler.timer_id, settings.get(loaded.id))
                name = loaded.id if handler.timer_id is None else f"{loaded.id}.{handler.timer_id}"
                timers[(loaded.id, handler.timer_id)] = RepeatTimer(period, self._call, (loaded, handler), name=name)
        return timers

    # -- running handlers ------------------------------------------------------------------------

    @property
    def modules(self) -> list[Any]:
        """The loaded modules, in start order."""
        return [m.module for m in self._modules]

    @property
    def timers(self) -> dict[tuple[str, str | None], RepeatTimer]:
        """The repeat timers, keyed by (module id, timer id or None)."""
        return dict(self._timers)

    def _call(self, loaded: _LoadedModule, handler: Handler, *args: Any) -> bool:
        try:
            handler.func(*args)
            return True
        except BaseException as exc:
            logger.exception("module %s: %s handler %s raised", loaded.id, handler.event, handler.name)
            loaded.stats.record_handler_error(f"{handler.name}: {type(exc).__name__}: {exc}")
            return False

    def _run_in_threads(self, calls: Iterable[tuple[_LoadedModule, Handler]], deadline: float) -> None:
        """Run each handler in a thread of its own, one after another, each until ``deadline``."""
        for loaded, handler in calls:
            thread = threading.Thread(
                target=self._call, args=(loaded, handler), name=f"{handler.event}:{handler.name}", daemon=True
            )
            self._handler_threads.add(thread)
            thread.start()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error(
                    "module %s: %s handler %s did not return in time; abandoned", loaded.id, handler.event, handler.name
                )

    def start(self) -> None:
        """Run the start handlers (each in its own thread), then start the timers. Idempotent."""
        with self._lock:
            if self.runev.is_set():
                return
            self.stopev.clear()
            self.runev.set()
            self._signalled = False
            self.started_at = time.monotonic()
            evs = (self.runev, self.stopev)
            for loaded in self._modules:
                for handler in loaded.of("start"):
                    began = threading.Event()

                    def run(
                        loaded: _LoadedModule = loaded, handler: Handler = handler, began: threading.Event = began
                    ) -> None:
                        began.set()
                        self._call(loaded, handler, evs)

                    thread = threading.Thread(target=run, name=f"start:{handler.name}", daemon=True)
                    thread.start()
                    began.wait()
                    self._start_threads.append(thread)
            for timer in self._timers.values():
                timer.start()
            logger.info("gateway started: %d module(s), %d timer(s)", len(self._modules), len(self._timers))

    def stop(self) -> None:
        """Stop timers, run stop handlers (reverse module order), close storages and the uuApp
        client's connections. Idempotent.

        Returns within ``gateway.stopTimeout`` seconds (plus the storage close); a handler still
        running then is logged and abandoned (its thread is a daemon). Called while another thread
        is stopping the gateway, it waits for that stop to finish (within the same bound), unless it
        is called from a thread that stop is itself waiting for (a handler, a timer).
        """
        with self._lock:
            if not self._stopping and not self.runev.is_set():
                return
            joining = self._stopping
            if joining:
                wait = not self._stop_waits_for(threading.current_thread())
            else:
                self._stopping = True
                self._stop_done.clear()
                self._stopper = threading.current_thread()
                self._stop_bound = time.monotonic() + float(
                    self.config["gateway"].get("stopTimeout", DEFAULT_STOP_TIMEOUT)
                )
            deadline = self._stop_bound
        if joining:
            if wait:
                self._stop_done.wait(max(0.0, deadline - time.monotonic()) + CLOSE_GRACE)
            return
        try:
            logger.info("gateway stopping")
            self.runev.clear()
            self.stopev.set()
            for timer in self._timers.values():
                timer.stop(block=False)
            for timer in self._timers.values():
                if not timer.stop(timeout=max(0.0, deadline - time.monotonic())):
                    logger.error("timer %s: handler still running at stop; abandoned", timer.name)
            self._run_in_threads(((m, h) for m in reversed(self._modules) for h in m.of("stop")), deadline)
            for thread in self._start_threads:
                if thread is threading.current_thread():
                    continue  # a start handler stopping the gateway: it goes on when stop() returns
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.error("%s is still running at stop; abandoned", thread.name)
            self._start_threads.clear()
            for loaded in self._modules:
                if isinstance(loaded.module, Module):
                    loaded.module.close_storage()
            if self.uuapp_client is not None:
                self.uuapp_client.close()
            logger.info("gateway stopped")
        finally:
            with self._lock:
                self._stopping = False
                self._stopper = None
                self._handler_threads.clear()
            self._stop_done.set()

    def _stop_waits_for(self, thread: threading.Thread) -> bool:
        """Whether a running :meth:`stop` waits for ``thread`` (so ``thread`` must not wait for it)."""
        return (
            thread is self._stopper
            or thread in self._handler_threads
            or thread in self._start_threads
            or any(timer.in_own_thread() for timer in self._timers.values())
        )

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def signal_handler(
        self, sig: int, frame: FrameType | None, additional_cleanup: Callable[[Gateway], None] | None = None
    ) -> None:
        """uun-iot's signal handler: SIGINT, SIGTERM, SIGUSR2 stop and exit 0; SIGUSR1 stops and exits 1.

        Install it with ``signal.signal(signal.SIGTERM, g.signal_handler)``. A second signal while the
        first one is being handled is logged and ignored: stop handlers never run twice.
        """
        name = signal.Signals(sig).name
        if self._signalled:
            logger.warning("%s received while stopping; already stopping", name)
            return
        self._signalled = True
        logger.info("%s received", name)
        self.stop()
        if additional_cleanup is not None:
            additional_cleanup(self)
        sys.exit(1 if sig == signal.SIGUSR1 else 0)

    # -- status ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """A JSON-ready summary: uptime, the last config error, and per module: stored entries (None
        when its storage was not opened), last successful send (ISO 8601 UTC), handler errors, send
        failures, skipped timer ticks and the last error."""
        modules: dict[str, Any] = {}
        for loaded in self._modules:
            module, stats = loaded.module, loaded.stats
            opened = getattr(module, "_storage_obj", None)
            modules[loaded.id] = {
                "stored": len(opened) if opened is not None and not opened.closed else None,
                "lastSendOk": _iso(stats.last_send_ok),
                "handlerErrors": stats.handler_errors,
                "sendFailures": stats.send_failures,
                "timerOverruns": sum(t.skipped for (mid, _), t in self._timers.items() if mid == loaded.id),
                "lastError": stats.last_error,
            }
        uptime = time.monotonic() - self.started_at if self.started_at is not None else 0.0
        return {"uptime": round(uptime, 1), "configError": self.config_error, "modules": modules}

    def stalled(self, handler_timeout: float | None = None) -> list[str]:
        """Reasons the running gateway is not making progress (empty when it is): timer threads that
        died, handlers running longer than ``handler_timeout`` (default ``gateway.handlerTimeout``,
        300 s). A stopped gateway is never stalled."""
        if not self.runev.is_set():
            return []
        limit = handler_timeout or float(self.config["gateway"].get("handlerTimeout", DEFAULT_HANDLER_TIMEOUT))
        now = time.monotonic()
        return [reason for timer in self._timers.values() if (reason := timer.stalled(limit, now))]

    # -- configuration updates -------------------------------------------------------------------

    def check(self, config: Mapping[str, Any]) -> list[str]:
        """Every problem ``config`` would have for the loaded modules (empty when valid)."""
        errors = validate(config, compose_schema(self._module_schemas(), UUAPP_SCHEMA))
        return errors or self._module_errors(normalized(config))

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool = True) -> bool:
        """Validate, apply and (``save``) persist a new configuration; return False if it equals the
        current one.

        Applying replaces every module's ``_config``, re-times the timers whose period changed (a
        handler may reconfigure its own timer) and runs the ``@on("update")`` handlers in module order.
        The config is then saved atomically (when the gateway was given a path): over the config file,
        or under systemd its ``gateway`` section to ``$STATE_DIRECTORY/remote-config.json``, which
        is laid over the config file at the next start (see :func:`~uun_gateway.config.saved_update_path`).
        If validation fails nothing changes; if an update handler or the save fails, the previous
        config is applied again and :class:`ConfigApplyError` (a :class:`ConfigError`) is raised;
        otherwise :class:`ConfigError`. :attr:`config_error` records it until a later update succeeds.
        Thread-safe; updates are serialised.
        """
        with self._lock:
            errors = self.check(new_config)
            if errors:
                self.config_error = "; ".join(errors)
                raise ConfigError(errors, "remote config")
            new = normalized(new_config)
            if new == self.config:
                return False
            old = self.config
            failure = self._apply(new)
            target = self.saved_update_path if save else None
            if failure is None and target is not None:
                try:
                    save_config_atomically(target, new if target == self.config_path else {"gateway": new["gateway"]})
                except OSError as exc:
                    failure = f"saving {target} failed: {exc}"
            if failure is not None:
                logger.error("config update failed (%s); rolling back to the previous config", failure)
                self._apply(old)
                self.config_error = failure
                raise ConfigApplyError([f"{failure}; rolled back to the previous config"], "remote config")
            self.config_error = None
            logger.info("config updated%s", f" and saved to {target}" if target else "")
            return True

    def _apply(self, config: dict[str, Any]) -> str | None:
        self.config = config
        settings = config["gateway"].get("moduleTimers", {})
        for loaded in self._modules:
            if hasattr(loaded.module, "_config"):
                loaded.module._config = config["gateway"]
            for handler in loaded.of("tick"):
                timer = self._timers[(loaded.id, handler.timer_id)]
                period = self._period(loaded, handler.timer_id, settings.get(loaded.id))
                if period != timer.period:
                    logger.info("timer %s: period %gs -> %gs", timer.name, timer.period, period)
                    timer.period = period
        failures = [f"{h.name} failed" for m in self._modules for h in m.of("update") if not self._call(m, h)]
        return "; ".join(failures) or None


def _raising_module_id(exc: BaseException) -> str | None:
    """The id of the outermost Module whose method is on ``exc``'s traceback (its constructor)."""
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, Module):
            return owner.id
        tb = tb.tb_next
    return None


def _tick(timer_id: str | None) -> str:
    return "@on('tick')" if timer_id is None else f"@on('tick', {timer_id!r})"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
