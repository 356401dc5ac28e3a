"""uun-iot's ``BaseHealthCheck``: a module that watches other modules' diagnostic events.

Modules call ``notify(mid, DiagnosticEvent.DATA_SEND_ATTEMPTED)`` (or a :meth:`notifier`); the
application's subclass checks in a tick whether each module sent within its ``leeway`` with
:meth:`_act_if_data_not_sent`. The first miss starts a diagnostic log; a second one is a failure.
Where uun-iot then sent itself SIGUSR1, here the failure is reported to the gateway: it shows in
``Gateway.health()`` (and so in the heartbeat and systemd STATUS) and in ``Gateway.stalled()``, so
systemd's watchdog restarts a supervised service. Config (``gateway.<id>``): ``diagnosticsPath``,
``modules.<mid>.leeway`` seconds.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..module import Module
from .diagnostic import DiagnosticEvent, GatewayDiagnosticEvent, GeneralDiagnosticEvent

logger = logging.getLogger(__name__)
_FILE_DATE = "%Y-%m-%d %H.%M.%S.%f %Z"


class BaseHealthCheck(Module):
    """Collects diagnostic events per module; thread-safe (one lock per module)."""

    def __init__(self, gconfig: Mapping[str, Any], on_stop: bool = True, on_update: bool = True) -> None:
        super().__init__(config=gconfig)
        self._diagnostics_save_path = str(self._c("diagnosticsPath")).rstrip("/")
        mids = list(self._c("modules"))
        self._diagnostic_lock = {mid: threading.Lock() for mid in mids}
        self._diagnostic_active = {mid: threading.Event() for mid in mids}
        self._diagnostic_log: dict[str, list[tuple[datetime.datetime, str, Any]]] = {mid: [] for mid in mids}
        self._event_dates: dict[str, dict[GeneralDiagnosticEvent, datetime.datetime]] = {mid: {} for mid in mids}
        self._event_dates["gateway"] = {}
        self.notify("gateway", GatewayDiagnosticEvent.GATEWAY_START)
        self._start_date = self._event_dates["gateway"][GatewayDiagnosticEvent.GATEWAY_START]
        self._init_module_config()
        self._stop_diagnostic: Callable[[str], None] = self.save_diagnostic
        self._unhealthy: set[str] = set()

    def _init_module_config(self) -> None:
        self._leeways = {
            mid: datetime.timedelta(seconds=float(self._c(f"modules/{mid}/leeway"))) for mid in self._c("modules")
        }

    def notifier(self, mid: str) -> Callable[..., None]:
        """A function that notifies events of module ``mid``."""
        return lambda *args, **kwargs: self.notify(mid, *args, **kwargs)

    def notify(self, mid: str, event: GeneralDiagnosticEvent, *args: Any, **kwargs: Any) -> None:
        """Record that ``event`` happened in module ``mid`` now. Raises :class:`ValueError` for a
        module not listed in ``gateway.<id>.modules`` or an event that is not a diagnostic event."""
        now = datetime.datetime.now()
        if mid not in self._event_dates:
            raise ValueError(f"module {mid!r} is not listed in gateway.{self.id}.modules; add it there first")
        if not isinstance(event, GeneralDiagnosticEvent):
            raise ValueError("the event must be a uun_gateway.diagnostic.GeneralDiagnosticEvent")
        self._event_dates[mid][event] = now
        if mid in self._diagnostic_active and self._diagnostic_active[mid].is_set():
            with self._diagnostic_lock[mid]:
                self._diagnostic_log[mid].append((now, event.name, (args, kwargs)))

    def start_diagnostic(self, mid: str) -> None:
        self._event_dates[mid][DiagnosticEvent.DIAGNOSTICS_START] = datetime.datetime.now()
        self._diagnostic_active[mid].set()

    def save_all_diagnostics(self) -> None:
        for mid in self._c("modules"):
            self.save_diagnostic(mid)

    def save_diagnostic(self, mid: str) -> None:
        """Write the diagnostic log of ``mid`` (if one is being collected) under ``diagnosticsPath``
        and end it. Raises :class:`OSError` when it cannot be written (the log is dropped)."""
        with self._diagnostic_lock[mid]:
            if not self._diagnostic_active[mid].is_set():
                return
            try:
                stop = datetime.datetime.now()
                self._event_dates[mid][DiagnosticEvent.DIAGNOSTICS_STOP] = stop
                start = self._event_dates[mid].get(DiagnosticEvent.DIAGNOSTICS_START, stop)
                folder = os.path.join(self._diagnostics_save_path, mid)
                os.makedirs(folder, exist_ok=True)
                base = os.path.join(folder, f"{mid}_diagnostic_{stop.strftime('%Y-%m-%d_%H-%M-%S')}")
                path, n = f"{base}.log", 0
                while os.path.exists(path):
                    n += 1
                    path = f"{base}.{n}.log"
                lines = [
                    f"Diagnostics of module {mid}",
                    f"Starts at: {start.strftime(_FILE_DATE)}",
                    f"Ends at:   {stop.strftime(_FILE_DATE)}",
                    "",
                ]
                if not self._diagnostic_log[mid]:
                    lines.append("No data were collected (HealthCheck notifiers were not reached in target code)")
                for when, event, (args, kwargs) in self._diagnostic_log[mid]:
                    detail = "; ".join(
                        filter(None, (", ".join(map(str, args)), ", ".join(f"{k}={v}" for k, v in kwargs.items())))
                    )
                    lines.append(f"{when.strftime(_FILE_DATE)}: {event}" + (f" - {detail}" if detail else ""))
                with open(path, "w", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                logger.info("saved the diagnostic of module %s to %s", mid, path)
            finally:
                self._diagnostic_log[mid] = []
                self._diagnostic_active[mid].clear()

    def _exit_app(self) -> None:
        """A module failed its check twice: report it to the gateway (health, stalled, watchdog)."""
        self.notify("gateway", GatewayDiagnosticEvent.GATEWAY_SIGNAL, "unhealthy")
        failing = ", ".join(sorted(self._unhealthy)) or "a monitored module"
        self.stats.report_problem(f"health check: {failing} sent no data twice within its leeway")

    def _act_if_data_not_sent(self, mid: str, send_leeway: datetime.timedelta, now: datetime.datetime) -> None:
        start = self._event_dates["gateway"][GatewayDiagnosticEvent.GATEWAY_START]
        last = self._event_dates[mid].get(DiagnosticEvent.DATA_SEND_ATTEMPTED, start)
        if last + send_leeway < now:
            if self._diagnostic_active[mid].is_set():
                logger.error("module %s again did not send any data; reporting the gateway unhealthy", mid)
                self.save_diagnostic(mid)
                self._unhealthy.add(mid)
                self._exit_app()
            else:
                logger.warning("health check: module %s sends no data; collecting diagnostics", mid)
                self.start_diagnostic(mid)
        else:
            self._stop_diagnostic(mid)
            self._unhealthy.discard(mid)
            if not self._unhealthy:
                self.stats.clear_problem()


__all__ = ["BaseHealthCheck"]
