"""systemd integration: journald log priorities, sd_notify (READY, STATUS, STOPPING) and the
progress-gated watchdog."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import sdnotify  # type: ignore[import-untyped]

#: syslog priorities by logging level, as sd-daemon(3) reads them from a line's ``<N>`` prefix.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Formats a record as one journal line: ``<N>logger: message``, a traceback folded into the same
    line (newlines escaped) so journald keeps it as one entry with the record's priority."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return journal_line(record.levelno, super().format(record))


def journal_line(levelno: int, text: str) -> str:
    """``text`` as one journal line of a record of level ``levelno``: the ``<N>`` priority prefix,
    newlines escaped."""
    priority = next((p for level, p in _PRIORITIES if levelno >= level), 7)
    return f"<{priority}>" + text.replace("\n", "\\n")


logger = logging.getLogger(__name__)


# -- sd_notify: READY, STATUS, STOPPING and the progress-gated watchdog ---------------------------


class Supervised(Protocol):
    """What :class:`SystemdNotifier` needs from a gateway (:class:`~uun_gateway.gateway.Gateway` has it)."""

    def stalled(self, handler_timeout: float | None = None) -> list[str]: ...

    def health(self) -> dict[str, Any]: ...


#: Refresh STATUS at most this often (seconds); it is sent only when its text changed.
DEFAULT_STATUS_INTERVAL = 10.0

#: Control characters would end the STATUS= assignment and start another one (e.g. "\nWATCHDOG=1").
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _utc(iso: str) -> str:
    """``2026-11-23T10:41:05Z`` -> ``2026-11-23 10:41:05 UTC`` (other text unchanged)."""
    return iso.replace("T", " ", 1).removesuffix("Z") + " UTC" if iso.endswith("Z") else iso


def format_status(health: Mapping[str, Any], stalled: list[str] | None = None) -> str:
    """One line for ``systemctl status`` from :meth:`Gateway.health`: the modules, entries waiting in
    storage, the last successful upload, error counts, a failed config update and stall reasons.

    Example: ``3 modules (heartbeat, onewire, upload) · 12 entries stored · last upload
    2026-11-23 10:41:05 UTC · 2 handler errors``. Never raises on missing or odd fields.
    """
    modules = health.get("modules") or {}
    if not isinstance(modules, Mapping):
        modules = {}
    stats = [m for m in modules.values() if isinstance(m, Mapping)]
    parts = [f"{len(modules)} module{'' if len(modules) == 1 else 's'} ({', '.join(map(str, modules)) or 'none'})"]
    stored = [m["stored"] for m in stats if isinstance(m.get("stored"), int)]
    if stored:
        total = sum(stored)
        parts.append(f"{total} entr{'y' if total == 1 else 'ies'} stored")
    sends = [m["lastSendOk"] for m in stats if isinstance(m.get("lastSendOk"), str)]
    parts.append(f"last upload {_utc(max(sends))}" if sends else "no upload yet")
    for key, label in (("handlerErrors", "handler error"), ("sendFailures", "failed upload")):
        count = sum(m[key] for m in stats if isinstance(m.get(key), int))
        if count:
            parts.append(f"{count} {label}{'' if count == 1 else 's'}")
    if health.get("configError"):
        parts.append(f"config update failed: {health['configError']}")
    if stalled:
        parts.insert(0, "STALLED: " + "; ".join(stalled))
    return _one_line(" · ".join(parts))


class _Sender(sdnotify.SystemdNotifier):  # type: ignore[misc]
    """sdnotify's sender (``notify()``, raising on errors), connected to an explicit address.

    sdnotify's own constructor reads the address from the environment and leaks its socket when the
    connection fails; this one closes it and raises the ``OSError``.
    """

    def __init__(self, address: str) -> None:
        self.debug = True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
        except OSError:
            sock.close()
            raise
        self.socket = sock


class SystemdNotifier:
    """Tells systemd how the gateway is doing, through the sd_notify protocol (``sdnotify``).

    Promises:

    - Outside systemd (``NOTIFY_SOCKET`` unset or empty) every method is a no-op: no socket, no thread.
    - :meth:`ready` sends ``READY=1``, then a ``STATUS=`` line; call it once the modules have started.
    - After :meth:`ready`, one daemon thread (``systemd-notify``) wakes every ``WATCHDOG_USEC / 2``
      when systemd set ``WATCHDOG_USEC`` for this process (else every ``status_interval`` s), sends
      ``WATCHDOG=1`` **only while** ``gateway.stalled(handler_timeout)`` returns ``[]``. While stalled,
      STATUS shows the reasons and a warning is logged once; a gateway whose ``stalled()`` raises or
      blocks is treated as stalled. So a hung gateway stops pinging and systemd kills and restarts it.
      The thread refreshes ``STATUS=`` at most every ``status_interval`` s, only when the text changed,
      and at once when a stall starts or ends.
    - ``WATCHDOG=1`` always travels alone in its datagram: free text can never cost a ping.
    - STATUS text goes out as UTF-8 on one line (``sdnotify`` encodes latin-1, which would garble
      ``°`` and drop any datagram with text outside latin-1); control characters become spaces.
    - :meth:`stopping` sends ``STOPPING=1`` and ends the pings; :meth:`close` joins the thread and
      closes the socket. Both are idempotent.
    - A failed send never raises: it is logged once per streak of failures.

    All methods may be called from any thread.
    """

    def __init__(
        self,
        gateway: Supervised,
        sd: Any,
        watchdog_interval: float | None = None,
        handler_timeout: float | None = None,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
    ) -> None:
        """``sd`` is a connected ``sdnotify.SystemdNotifier(debug=True)`` (anything with a raising
        ``notify(str)`` and a ``socket``), or None when not under systemd. ``watchdog_interval`` is
        the ping period in seconds (None: no watchdog). Prefer :meth:`from_env`."""
        self.gateway = gateway
        self.handler_timeout = handler_timeout
        self.status_interval = status_interval
        self.watchdog_interval = watchdog_interval
        self.pings = 0
        self._sd = sd
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._send_failing = False
        self._last_status: str | None = None
        self._next_status = 0.0
        self._stalled_reasons: list[str] = []

    @classmethod
    def from_env(
        cls,
        gateway: Supervised,
        handler_timeout: float | None = None,
        status_interval: float = DEFAULT_STATUS_INTERVAL,
    ) -> SystemdNotifier:
        """The notifier systemd asks for through the environment: ``NOTIFY_SOCKET`` (a path, or
        ``@name`` for an abstract socket), and ``WATCHDOG_USEC`` (ignored when ``WATCHDOG_PID`` names
        another process). ``handler_timeout`` is passed to ``gateway.stalled()`` (None: the gateway's
        own ``gateway.handlerTimeout``). Without ``NOTIFY_SOCKET`` no socket is created."""
        sd = None
        address = os.environ.get("NOTIFY_SOCKET")
        if address:
            try:
                sd = _Sender(address)
            except OSError as exc:
                logger.warning("systemd notification socket %s unusable (%s); not reporting to systemd", address, exc)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        interval: float | None = None
        if sd is not None and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            interval = int(usec) / 2e6
        if sd is not None:
            logger.debug("reporting to systemd at %s; watchdog ping every %ss", address, interval)
        return cls(gateway, sd, interval, handler_timeout, status_interval)

    @property
    def enabled(self) -> bool:
        """True when connected to systemd's notification socket."""
        return self._sd is not None

    def _send(self, state: str, *, unless_done: bool = False) -> bool:
        with self._lock:
            # Checked under the lock: nothing from the thread follows STOPPING=1.
            if self._sd is None or (unless_done and self._done.is_set()):
                return False
            try:
                # sdnotify encodes with latin-1: hand it the UTF-8 bytes as latin-1 characters.
                self._sd.notify(state.encode("utf-8").decode("latin-1"))
            except OSError as exc:
                if not self._send_failing:
                    logger.warning("sending to systemd failed: %s", exc)
                self._send_failing = True
                return False
            if self._send_failing:
                logger.info("sending to systemd works again")
            self._send_failing = False
            return True

    def status(self, text: str) -> None:
        """Send ``STATUS=<text>`` (one line, UTF-8)."""
        self._status(text)

    def _status(self, text: str, unless_done: bool = False) -> None:
        text = _one_line(text)
        if self._send("STATUS=" + text, unless_done=unless_done):
            self._last_status = text

    def ready(self) -> None:
        """Send ``READY=1`` and the first STATUS; start the status/watchdog thread. Idempotent."""
        if self._sd is None or self._thread is not None or self._done.is_set():
            return
        self._send("READY=1", unless_done=True)
        self._beat()
        self._thread = threading.Thread(target=self._run, name="systemd-notify", daemon=True)
        self._thread.start()

    def stopping(self) -> None:
        """Send ``STOPPING=1`` and a STATUS saying so; no watchdog ping follows. Idempotent."""
        if self._sd is None or self._done.is_set():
            return
        self._done.set()
        self._send("STOPPING=1")
        self.status("stopping")

    def close(self, timeout: float = 5.0) -> None:
        """End the thread (waiting at most ``timeout`` s) and close the socket. Idempotent."""
        self._done.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.error("systemd notifier thread still blocked in the gateway's health check; abandoned")
        with self._lock:
            sd, self._sd = self._sd, None
        if sd is not None and getattr(sd, "socket", None) is not None:
            sd.socket.close()

    def _run(self) -> None:
        period = self.watchdog_interval or self.status_interval
        anchor, k = time.monotonic(), 1
        while not self._done.wait(max(0.0, anchor + k * period - time.monotonic())):
            self._beat()
            k = max(k + 1, int((time.monotonic() - anchor) / period) + 1)

    def _beat(self) -> None:
        """Ping if the gateway progresses; refresh STATUS when due and changed."""
        try:
            reasons = self.gateway.stalled(self.handler_timeout)
        except Exception as exc:  # a broken health check must fail closed: no ping
            reasons = [f"health check failed: {type(exc).__name__}: {exc}"]
        if self._done.is_set():
            return
        changed = bool(reasons) != bool(self._stalled_reasons)
        if changed and reasons:
            logger.warning("gateway stalled, withholding watchdog pings: %s", "; ".join(reasons))
        elif changed:
            logger.info("gateway progressing again; watchdog pings resume")
        self._stalled_reasons = reasons
        if not reasons and self.watchdog_interval is not None and self._send("WATCHDOG=1", unless_done=True):
            self.pings += 1
        now = time.monotonic()
        if changed or self._last_status is None or now >= self._next_status:
            self._next_status = now + self.status_interval
            try:
                text = format_status(self.gateway.health(), reasons)
            except Exception as exc:  # the status line must not kill the pinging thread
                text = format_status({}, [*reasons, f"health report failed: {type(exc).__name__}: {exc}"])
            if text != self._last_status:
                self._status(text, unless_done=True)
