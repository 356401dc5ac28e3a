"""Gateway: the lifecycle of a loaded module set: start, stop, signals, health (updates: configupdates.py)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from . import status
from .config import load_config, normalized, saved_update_path
from .configupdates import ConfigUpdates
from .handlers import HandlerRunner
from .liveset import LiveSet
from .loading import LoadedModule, ModuleInit, TimerKey, load_modules
from .priority import describe_order
from .signals import StopRequest, exit_code_for
from .timers import RepeatTimer

if TYPE_CHECKING:
    from .alarmservice import AlarmService
    from .host import HostService
    from .readings import Reading

logger = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_HANDLER_TIMEOUT = 300.0
CLOSE_GRACE = 2.0  # beyond the stop bound, what a second stop() caller allows for closing storages


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

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        module_init: ModuleInit | None = None,
        *,
        config_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
    ):
        if config_file is not None:  # uun-iot's keyword
            if config is not None:
                raise TypeError("Gateway() takes config or config_file, not both")
            config = config_file
        if config is None:
            config = {}
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
        self.stopev.set()  # set whenever the gateway is not running, as in uun-iot 0.12
        self.stopping = threading.Event()
        self.started_at: float | None = None
        self.config_error: str | None = None
        self._lock = threading.RLock()
        self._stopping = False
        self._stop_done = threading.Event()
        self._stop_bound = 0.0
        self._stopper: threading.Thread | None = None
        self._signals = StopRequest()
        self._runner = HandlerRunner()

        self._set = load_modules(self.config, module_init, self._source, strict=strict)
        self._live = LiveSet(self, DEFAULT_STOP_TIMEOUT)  # orders the modules by priority
        self._modules: list[LoadedModule] = self._set.modules
        self.uuapp_client = self._set.uuclient
        for loaded in self._modules:
            loaded.attach(self)
        self._timers = {
            key: RepeatTimer(spec.period, self._runner.call, (spec.loaded, spec.handler), name=spec.name)
            for key, spec in self._set.timers(self.config).items()
        }
        self.alarms: AlarmService | None = None
        """The alarm rules of ``gateway.alarms`` (None when there are none); see :meth:`publish`."""
        self._live.apply_alarms(self.config["gateway"])
        self._updates = ConfigUpdates(self, self._live)
        self._updates.apply_saved()
        logger.info(
            "loaded %d module(s): %s",
            len(self._modules),
            ", ".join(f"{m.id} ({len(m.handlers)} handlers)" for m in self._modules) or "none",
        )

    def publish(self, readings: Sequence[Reading]) -> None:
        """Hand readings a module has stored to the alarm rules and the reading listeners (see
        :meth:`Module.publish <uun_gateway.module.Module.publish>`). Thread-safe."""
        if self.alarms is not None:
            self.alarms.publish(readings)

    # -- running handlers ------------------------------------------------------------------------

    @property
    def modules(self) -> list[Any]:
        """The loaded modules, in start order."""
        return [m.instance for m in self._modules]

    @property
    def services(self) -> list[HostService]:
        """The gateway's own parts addressed like modules (see :class:`~uun_gateway.host.HostService`):
        the alarm service while ``gateway.alarms`` has rules. A snapshot; thread-safe."""
        alarms = self.alarms
        return [alarms] if alarms is not None else []

    @property
    def config_warnings(self) -> list[str]:
        """What the last config check let pass but reported (see :class:`~uun_gateway.loading.ModuleSet`)."""
        return list(self._set.warnings)

    @property
    def timers(self) -> dict[TimerKey, RepeatTimer]:
        """The repeat timers, keyed by (module id, timer id or None)."""
        return dict(self._timers)

    def start(self) -> None:
        """Run the start handlers (each in its own thread), then start the timers. Idempotent."""
        with self._lock:
            if self.runev.is_set():
                return
            self.stopev.clear()
            self.stopping.clear()
            self.runev.set()
            self._signals.reset()
            self.started_at = time.monotonic()
            logger.info("module start order (priority): %s", describe_order(self._modules, self.config["gateway"]))
            for loaded in self._modules:
                evs = self._live.begin(loaded)
                for handler in loaded.of("start"):
                    if handler.blocking:
                        self._runner.call(loaded, handler, evs)
                    else:
                        self._runner.start_in_thread(loaded, handler, evs)
            for timer in self._timers.values():
                timer.start()
            if self.alarms is not None:
                self.alarms.start()
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
            self.stopping.set()
            self.stopev.set()
            self._live.end_all()
            for timer in self._timers.values():
                timer.stop(block=False)
            for timer in self._timers.values():
                if not timer.stop(timeout=max(0.0, deadline - time.monotonic())):
                    logger.error("timer %s: handler still running at stop; abandoned", timer.name)
            self._runner.run_each_in_thread(((m, h) for m in reversed(self._modules) for h in m.of("stop")), deadline)
            self._runner.join_started(deadline)
            if self.alarms is not None:
                self.alarms.stop()
            for loaded in self._modules:
                loaded.close()
            if self.uuapp_client is not None:
                self.uuapp_client.close()
            logger.info("gateway stopped")
        finally:
            with self._lock:
                self._stopping = False
                self._stopper = None
                self._runner.forget_threads()
            self._stop_done.set()

    def _stop_waits_for(self, thread: threading.Thread) -> bool:
        """Whether a running :meth:`stop` waits for ``thread`` (so ``thread`` must not wait for it)."""
        return (
            thread is self._stopper
            or self._runner.owns(thread)
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
        if not self._signals.receive_in_handler(sig, logger):
            return
        self.stop()
        if additional_cleanup is not None:
            additional_cleanup(self)
        sys.exit(exit_code_for(sig))

    # -- status ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """A JSON-ready summary (see :func:`~uun_gateway.status.health`). Thread-safe."""
        uptime = time.monotonic() - self.started_at if self.started_at is not None else 0.0
        return status.health(self._modules, self._timers, uptime, self.config_error, self.alarms)

    def stalled(self, handler_timeout: float | None = None) -> list[str]:
        """Reasons the running gateway is not making progress, empty when it is (see
        :func:`~uun_gateway.status.stalled`); the default ``handler_timeout`` is
        ``gateway.handlerTimeout`` (300 s). A stopped gateway is never stalled."""
        if not self.runev.is_set():
            return []
        limit = handler_timeout or float(self.config["gateway"].get("handlerTimeout", DEFAULT_HANDLER_TIMEOUT))
        return status.stalled(self._modules, self._timers, limit, time.monotonic())

    # -- configuration updates -------------------------------------------------------------------

    def check(self, config: Mapping[str, Any], *, remote: bool = False) -> list[str]:
        """Every problem ``config`` would have for the loaded modules (empty when valid); what a
        ``remote`` one may not do: see :meth:`LiveSet.check <uun_gateway.liveset.LiveSet.check>`."""
        return self._updates.check(config, remote=remote)

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool = True, remote: bool = True) -> bool:
        """Validate, apply and (``save``) persist a new configuration; return False if it equals the
        current one.

        Applying replaces every module's section, re-times the timers and runs the ``@on("update")``
        handlers in module order; modules the change enables, disables, or whose section changed
        and who do not update in place are added, removed or restarted while the others keep running
        (see :mod:`~uun_gateway.liveset`); then the config is saved atomically (see
        :func:`~uun_gateway.config.save_update`). All or nothing: if validation fails nothing
        changes (:class:`ConfigError`); if any step of applying or the save fails, the previous
        config is applied again and :class:`ConfigApplyError` is raised. :attr:`config_error`
        records either until a later update succeeds. A ``remote`` config (the default: remote
        updates and their saved copy) may place storages only inside the state directory.
        Thread-safe; updates are serialised.
        """
        return self._updates.reconfigure(new_config, save=save, remote=remote)

    def reload(self) -> str:
        """Re-read the config file (and the saved remote update over it, as at start) and apply it
        like :meth:`reconfigure` (not saved again). Returns what changed ("no change" when nothing
        did); raises :class:`ConfigError` listing the file's problems, or :class:`ConfigApplyError`
        when applying failed and the previous config is back. Thread-safe."""
        return self._updates.reload()
