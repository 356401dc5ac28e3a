"""The ``heartbeat`` module: tells uuApp on every tick that the gateway is alive and how it is doing.

It POSTs to ``gateway.heartbeat.uuCmd``, else ``uuApp.uuCmdList.gatewayHeartbeat``, else
``gateway/heartbeat`` (uun-iot's default), a dto with the time, boot time, system and gateway
uptime, load, memory, free disk space under the storage directory, the framework version, the last
config error and, per module, stored entries, the last successful send, errors and timer overruns
since the last heartbeat the server accepted. Everything comes from ``/proc`` and ``os``.

Online state: it logs once per transition (online, server error, offline), never per tick
(:class:`~uun_gateway.StateLog`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from uun_gateway import Module, StateLog, UuAppClient, __version__, describe_failure, iso_utc, on

DEFAULT_UUCMD = "gateway/heartbeat"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def boot_time() -> float | None:
    """Boot time (epoch seconds) from ``/proc/stat``; None where it cannot be read."""
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def system_uptime() -> float | None:
    """Seconds since boot from ``/proc/uptime``."""
    text = _read("/proc/uptime")
    return float(text.split()[0]) if text else None


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``."""
    text = _read("/proc/stat")
    if not text or not text.startswith("cpu "):
        return None
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def memory() -> dict[str, int | float | None]:
    """Total and available memory (kB) from ``/proc/meminfo``, used percent, and this process's RSS."""
    info: dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            info[key] = int(rest.split()[0])
    rss = None
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    used = round(100.0 * (total - available) / total, 1) if total and available is not None else None
    return {"totalKb": total, "availableKb": available, "usedPercent": used, "processRssKb": rss}


def disk_free(path: str) -> int | None:
    """Bytes available to this user on the file system holding ``path`` (or its nearest parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Heartbeat(Module):
    """Periodic heartbeat to uuApp (id ``heartbeat``; default period 60 s).

    Needs a configured ``uuApp`` (without one it logs that once and does nothing). The tick blocks for
    at most the client's timeout. ``online`` is None before the first attempt, then True/False.
    """

    id = "heartbeat"
    timer_defaults: ClassVar[Mapping[str | None, float]] = {None: 60.0}
    config_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "description": "heartbeat settings",
        "properties": {
            "uuCmd": {"type": "string", "minLength": 1, "description": "the uuCmd to POST to"},
        },
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.online: bool | None = None
        self.sent = 0
        self.last_dto: dict[str, Any] | None = None
        self.link = StateLog(self.logger, "uuApp")
        self._reported: dict[str, tuple[int, int]] = {}
        self._pending: dict[str, tuple[int, int]] = {}
        self._cpu: tuple[int, int] | None = cpu_times()
        self._warned_no_client = False

    @property
    def uucmd(self) -> str:
        """The heartbeat uuCmd (own config, then ``uuApp.uuCmdList.gatewayHeartbeat``, then the default)."""
        own = self._c("uuCmd", None)
        if own:
            return str(own)
        if self.uuclient is not None:
            return self.uuclient.uucmd_list.get("gatewayHeartbeat", DEFAULT_UUCMD)
        return DEFAULT_UUCMD

    def dto(self) -> dict[str, Any]:
        """The heartbeat dto as it would be sent now; the counts become "reported" once one is accepted."""
        now = time.time()
        health = self.gateway.health() if self.gateway is not None else {"uptime": None, "modules": {}}
        boot = boot_time()
        cpu = cpu_times()
        cpu_usage = None
        if cpu is not None and self._cpu is not None and cpu[1] > self._cpu[1]:
            cpu_usage = round(100.0 * (cpu[0] - self._cpu[0]) / (cpu[1] - self._cpu[1]), 1)
        mem = memory()
        try:
            load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            load = None
        modules = {}
        self._pending = {}
        for mid, m in health.get("modules", {}).items():
            errors = int(m.get("handlerErrors", 0)) + int(m.get("sendFailures", 0))
            overruns = int(m.get("timerOverruns", 0))
            self._pending[mid] = (errors, overruns)
            seen_errors, seen_overruns = self._reported.get(mid, (0, 0))
            modules[mid] = {
                "stored": m.get("stored"),
                "lastSendOk": m.get("lastSendOk"),
                "errors": errors - seen_errors,
                "timerOverruns": overruns - seen_overruns,
                "lastError": m.get("lastError"),
            }
        return {
            "timestamp": iso_utc(now),
            "bootTimestamp": iso_utc(boot) if boot is not None else None,
            "uptime": system_uptime(),
            "gatewayUptime": health.get("uptime"),
            "load": load,
            "cpuUsage": cpu_usage,
            "ramUsage": mem["usedPercent"],
            "memory": mem,
            "diskFree": disk_free(str(self._config.get("storageDir", "storage"))),
            "version": __version__,
            "configError": health.get("configError"),
            "modules": modules,
        }

    @on("tick")
    def beat(self) -> None:
        """Send one heartbeat; a failure is counted and logged on the transition only."""
        if self.uuclient is None:
            if not self._warned_no_client:
                self._warned_no_client = True
                self.logger.warning("no uuApp configured; heartbeats are not sent")
            return
        dto = self.dto()
        stop = self.stop_event
        response, exc = self.uuclient.post(self.uucmd, dto, log_level=logging.DEBUG, stop=stop)
        if exc is None:
            self.online = True
            self.link.ok("online again", first="online")
            self.sent += 1
            self.last_dto = dto
            self._cpu = cpu_times()
            self._reported.update(self._pending)
            self.stats.record_send(True)
            return
        self.online = False
        problem = describe_failure(exc)
        if response is not None:
            self.link.failed(f"server error: {problem}", state="error")
        else:
            self.link.failed(f"unreachable: {problem}", state="offline")
        self.stats.record_send(False, f"heartbeat failed: {problem}")
