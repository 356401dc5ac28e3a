"""What a running gateway reports about itself: its health summary and the reasons it is stalled.

Both read counters the modules and timers keep; neither blocks nor does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .timestamps import iso_utc

if TYPE_CHECKING:
    from .alarmservice import AlarmService
    from .loading import LoadedModule, TimerKey
    from .timers import RepeatTimer


def health(
    modules: Iterable[LoadedModule],
    timers: Mapping[TimerKey, RepeatTimer],
    uptime: float,
    config_error: str | None,
    alarms: AlarmService | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary: uptime, the last config error; per module its stored entries (None when
    its storage was not opened), last successful send (ISO 8601 UTC), handler errors, send
    failures, skipped timer ticks, last error and the problem it reported; per timer its period,
    runs, skipped ticks and errors; with alarm rules, ``alarms``: every alarm that is not normal."""
    summary: dict[str, Any] = {
        "uptime": round(uptime, 1),
        "configError": config_error,
        "modules": {
            loaded.id: {
                "stored": loaded.stored_count(),
                "lastSendOk": iso_utc(stats.last_send_ok, "seconds") if stats.last_send_ok is not None else None,
                "handlerErrors": stats.handler_errors,
                "sendFailures": stats.send_failures,
                "timerOverruns": sum(t.skipped for (mid, _), t in timers.items() if mid == loaded.id),
                "lastError": stats.last_error,
                "problem": stats.problem,
            }
            for loaded in modules
            for stats in (loaded.stats,)
        },
        "timers": {
            t.name: {"period": t.period, "runs": t.runs, "skipped": t.skipped, "errors": t.errors}
            for t in timers.values()
        },
    }
    if alarms is not None:
        summary["alarms"] = [alarm.to_dict() for alarm in alarms.alarms()]
    return summary


def stalled(
    modules: Iterable[LoadedModule], timers: Mapping[TimerKey, RepeatTimer], handler_timeout: float, now: float
) -> list[str]:
    """Reasons a running gateway is not making progress (empty when it is): timers whose thread
    died or whose handler has run longer than ``handler_timeout`` seconds or whose run is overdue,
    and problems modules reported (:meth:`ModuleStats.report_problem
    <uun_gateway.module.ModuleStats.report_problem>`)."""
    reasons = [reason for timer in timers.values() if (reason := timer.stalled(handler_timeout, now))]
    return reasons + [f"module {m.id}: {m.stats.problem}" for m in modules if m.stats.problem]
