"""One owserver: address, up/down state with backoff, and per-thread pyownet sessions.

pyownet's persistent proxies are not thread-safe, so every thread gets its own clone
(``threading.local``). A session keeps one TCP connection for the length of one scan or read
cycle and closes it on exit: owserver does not exit on SIGTERM while a persistent client is
connected, and a connection left idle is closed by owserver anyway.

Failure classes:

- per-path errors (``OwnetError``: errno 1 "path does not resolve", 22 "bus/CRC error", ...) are
  raised to the caller unchanged; they concern one device.
- server-level errors (connection refused/reset, timeout, ``ShortRead`` and other protocol errors)
  are retried once when a retry can help (a persistent connection broken by an owserver restart
  fails exactly once with ``ShortRead``), then reported as :class:`ServerUnavailable`; the session
  refuses further calls so one frozen owserver costs one timeout per cycle, not one per sensor.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from pyownet import protocol  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Per-path error from owserver (``.errno``: 1 = path does not resolve, 22 = bus/CRC failure).
OwnetError: type[Exception] = protocol.OwnetError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4304


@dataclass(frozen=True, order=True)
class ServerAddress:
    """Host and TCP port of one owserver; ``str()`` gives ``host:port``."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        """Parse ``HOST``, ``HOST:PORT``, ``:PORT`` or an IPv6 ``[ADDRESS]:PORT`` (a bare IPv6
        address gets the default port); raise ``ValueError`` with a clear message."""
        spec = text.strip()
        if not spec:
            raise ValueError(f"invalid owserver address {text!r}: expected HOST, HOST:PORT or :PORT")
        if spec.startswith("["):
            host, bracket, rest = spec[1:].partition("]")
            if not bracket or not host or rest[:1] not in ("", ":"):
                raise ValueError(f"invalid owserver address {text!r}: expected [IPv6 ADDRESS]:PORT")
            port_text = rest[1:] if rest else str(DEFAULT_PORT)
        elif spec.count(":") > 1:
            host, port_text = spec, str(DEFAULT_PORT)
        else:
            host, sep, port_text = spec.rpartition(":")
            if not sep:
                host, port_text = spec, str(DEFAULT_PORT)
        host = host or DEFAULT_HOST
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"invalid owserver address {text!r}: port must be a number")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"invalid owserver address {text!r}: port out of range (expected 1 to 65535)")
        return cls(host, port)


class ServerUnavailable(Exception):
    """The owserver could not be used: down, frozen, in backoff, or speaking garbage.

    ``timed_out`` is True when the server accepted the connection but did not answer in time.
    """

    def __init__(self, server: ServerAddress, reason: str, timed_out: bool = False) -> None:
        super().__init__(f"owserver {server}: {reason}")
        self.server = server
        self.reason = reason
        self.timed_out = timed_out


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, protocol.OwnetTimeout):
        return True
    if isinstance(err, protocol.ConnError):
        return getattr(err, "errno", None) in (None, errno.ETIMEDOUT) and "timed out" in str(err)
    return False


def _describe(err: BaseException) -> str:
    if isinstance(err, protocol.ShortRead):
        return f"connection closed by owserver ({err})"
    if isinstance(err, protocol.ConnError):
        return f"connection failed ({err})"
    if isinstance(err, UnicodeError):
        return f"garbled reply, not owserver's ASCII ({err})"
    return f"{type(err).__name__}: {err}"


StateListener = Callable[[ServerAddress, bool, str], None]


class OwServer:
    """State and access for one owserver. Thread-safe; cheap to create (no network I/O).

    ``connected`` is None until the first attempt, then True/False. Each change of state is logged
    once (at DEBUG only with ``log_transitions=False``) and reported to
    ``on_state(server, connected, reason)`` (called without internal locks
    held, from the thread that noticed the change).

    Backoff: a refused connection costs nothing, so the next cycle simply tries again; a timeout
    (frozen owserver: 2 s per call) starts a capped exponential backoff during which
    :meth:`session` fails at once with :class:`ServerUnavailable`.
    """

    def __init__(
        self,
        address: ServerAddress,
        *,
        persistent: bool = True,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        on_state: StateListener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        log_transitions: bool = True,
    ) -> None:
        self.address = address
        self.persistent = persistent
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._on_state = on_state
        self._log_level = logging.WARNING if log_transitions else logging.DEBUG
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._base: Any = None  # pyownet non-persistent proxy; needs a live server to create
        self._local = threading.local()
        self._connected: bool | None = None
        self._timeouts = 0
        self._retry_at = 0.0
        self.failures = 0

    def __str__(self) -> str:
        return str(self.address)

    @property
    def connected(self) -> bool | None:
        """Last known state: None (never tried), True or False."""
        with self._lock:
            return self._connected

    def in_backoff(self) -> bool:
        """True while a timeout backoff is running (no attempt will be made)."""
        with self._lock:
            return self._monotonic() < self._retry_at

    def mark_up(self) -> None:
        """Record a successful exchange; logs and notifies on the down->up transition."""
        with self._lock:
            changed = self._connected is not True
            self._connected = True
            self._timeouts = 0
            self._retry_at = 0.0
        if changed:
            log.log(min(logging.INFO, self._log_level), "owserver %s connected", self.address)
            self._notify(True, "connected")

    def mark_down(self, reason: str, timed_out: bool = False) -> None:
        """Record a server-level failure; logs and notifies on the up->down transition only."""
        with self._lock:
            changed = self._connected is not False
            self._connected = False
            self.failures += 1
            if timed_out:
                self._timeouts += 1
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (self._timeouts - 1))
                self._retry_at = self._monotonic() + delay
            else:
                self._timeouts = 0
                self._retry_at = 0.0
        if changed:
            log.log(
                self._log_level,
                "owserver %s unavailable: %s; retrying every cycle with backoff",
                self.address,
                reason,
            )
            self._notify(False, reason)
        else:
            log.debug("owserver %s still unavailable: %s", self.address, reason)

    def _notify(self, connected: bool, reason: str) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(self.address, connected, reason)
        except Exception:
            log.exception("owserver state listener failed")

    def _base_proxy(self) -> Any:
        with self._lock:
            base = self._base
        if base is not None:
            return base
        # pyownet's factory pings and loads the error table: two round trips, may block 2 s.
        base = protocol.proxy(self.address.host, self.address.port)
        with self._lock:
            if self._base is None:
                self._base = base
            return self._base

    def _proxy(self) -> Any:
        base = self._base_proxy()
        if not self.persistent:
            return base
        clone = getattr(self._local, "proxy", None)
        if clone is None:
            clone = protocol.clone(base, persistent=True)
            self._local.proxy = clone
        return clone

    @contextmanager
    def session(self) -> Iterator[OwSession]:
        """Open a session for one cycle in the calling thread; closes its connection on exit.

        Raises :class:`ServerUnavailable` when the server is in backoff or cannot be reached.
        Blocks at most about 2 s (pyownet's socket timeout) when the server is frozen.
        """
        if self.in_backoff():
            raise ServerUnavailable(self.address, "in backoff after a timeout", timed_out=True)
        try:
            proxy = self._proxy()
        except (protocol.Error, OSError, AssertionError, UnicodeError) as err:
            timed_out = _is_timeout(err)
            self.mark_down(_describe(err), timed_out)
            raise ServerUnavailable(self.address, _describe(err), timed_out) from err
        session = OwSession(self, proxy)
        try:
            yield session
        finally:
            session.close()


class OwSession:
    """Calls on one server within one cycle, in one thread. Not thread-safe (by design).

    ``dir``/``read``/``write`` raise ``pyownet.protocol.OwnetError`` for per-path errors and
    :class:`ServerUnavailable` for server-level ones; after the latter every further call fails
    at once with the same exception.
    """

    def __init__(self, server: OwServer, proxy: Any) -> None:
        self.server = server
        self._proxy = proxy
        self.broken: ServerUnavailable | None = None
        self.round_trips = 0

    def close(self) -> None:
        """Close the persistent connection, if any. Never raises."""
        closer = getattr(self._proxy, "close_connection", None)
        if closer is None:
            return
        with suppress(OSError, AssertionError):
            closer()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.broken is not None:
            raise self.broken
        last: BaseException | None = None
        for attempt in range(2):
            self.round_trips += 1
            try:
                result = fn(*args)
            except protocol.OwnetError:
                # The server answered: it is up, the path is the problem.
                self.server.mark_up()
                raise
            except (protocol.Error, OSError, AssertionError, UnicodeError) as err:
                last = err
                if _is_timeout(err):
                    break
                if attempt == 0:
                    log.debug("owserver %s: %s; retrying once", self.server.address, _describe(err))
                continue
            self.server.mark_up()
            return result
        assert last is not None
        timed_out = _is_timeout(last)
        self.server.mark_down(_describe(last), timed_out)
        self.broken = ServerUnavailable(self.server.address, _describe(last), timed_out)
        raise self.broken from last

    def dir(self, path: str, bus: bool = False) -> list[str]:
        """List ``path``; entries are full paths, directories end in ``/``."""
        return self._call(self._proxy.dir, path, True, bus)

    def read(self, path: str) -> bytes:
        """Read one property (raw bytes, space padded)."""
        return bytes(self._call(self._proxy.read, path))

    def write(self, path: str, data: bytes) -> None:
        """Write one property."""
        self._call(self._proxy.write, path, data)
