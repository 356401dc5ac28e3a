"""One owserver: address, up/down state with backoff, and per-thread sessions with total deadlines.

pyownet's persistent proxies are not thread-safe, so every thread gets its own proxy
(``threading.local``). A session keeps one TCP connection for the length of one scan or read
cycle and closes it on exit: owserver does not exit on SIGTERM while a persistent client is
connected, and a connection left idle is closed by owserver anyway.

Deadlines: pyownet waits 2 s per ``recv`` and keeps waiting through owserver's keep-alive pings,
so a server that pings forever, or sends one byte every 1.5 s, would hold a call (and SIGTERM)
indefinitely. Our proxies give pyownet a socket that enforces, per call, a *total* deadline
(``request_timeout``, connect excluded: that is bounded by 2 s) and a silence limit of 2 s, and
that ends the call within about 0.1 s once the owner is stopping.

Failure classes:

- per-path errors (a device absent, a bus/CRC error, a read-only property) raise
  :class:`~.errors.PathError`, described by what happened (not by pyownet's errno texts);
  they concern one device.
- server-level errors (connection refused/reset, timeout, ``ShortRead`` and other protocol errors)
  are retried once when a retry can help (a persistent connection broken by an owserver restart
  fails exactly once with ``ShortRead``), then reported as :class:`ServerUnavailable`; the session
  refuses further calls so one frozen owserver costs one timeout per cycle, not one per sensor.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from pyownet import protocol  # type: ignore[import-untyped]

from uun_gateway import Backoff, StateLog

from .errors import PathError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4304
DEFAULT_REQUEST_TIMEOUT = 10.0
#: No byte for this long ends a call (pyownet's own per-recv timeout; owserver pings every 1.5 s).
SILENCE_TIMEOUT = 2.0
#: How often a blocked receive looks at the stop flag.
_POLL = 0.1


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

    ``timed_out`` is True when the server accepted the connection but did not answer in time;
    ``stopped`` when the call was abandoned because the owner is stopping.
    """

    def __init__(self, server: object, reason: str, timed_out: bool = False, stopped: bool = False) -> None:
        super().__init__(f"{server}: {reason}")
        self.server = server
        self.reason = reason
        self.timed_out = timed_out
        self.stopped = stopped


class _Stopping(OSError):
    """Raised inside a receive when the owner stops (pyownet wraps it in ConnError)."""


class _CallGuard:
    """The bounds of the call in progress on one proxy (one thread): deadline and stop flag."""

    def __init__(self, stopping: Callable[[], bool], monotonic: Callable[[], float]) -> None:
        self.stopping = stopping
        self.monotonic = monotonic
        self.deadline: float | None = None
        self.total = 0.0
        self.stopped = False

    def begin(self, seconds: float) -> None:
        self.total = seconds
        self.deadline = self.monotonic() + seconds
        self.stopped = False

    def end(self) -> None:
        self.deadline = None

    def slice(self, silent_since: float) -> float:
        """Seconds the next blocking socket step may take; raises when the call must end."""
        if self.stopping():
            self.stopped = True
            raise _Stopping(errno.EINTR, "interrupted: stopping")
        now = self.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise TimeoutError(errno.ETIMEDOUT, f"timed out: no complete answer within {self.total:g} s")
        if now - silent_since >= SILENCE_TIMEOUT:
            raise TimeoutError(errno.ETIMEDOUT, f"timed out: no answer for {SILENCE_TIMEOUT:g} s")
        left = SILENCE_TIMEOUT - (now - silent_since)
        if self.deadline is not None:
            left = min(left, self.deadline - now)
        return max(0.001, min(_POLL, left))


class _GuardedSocket:
    """A socket whose ``recv``/``send`` honour the guard; everything else is the socket's."""

    def __init__(self, sock: socket.socket, guard: _CallGuard) -> None:
        self._sock = sock
        self._guard = guard

    def recv(self, size: int) -> bytes:
        silent_since = self._guard.monotonic()
        while True:
            self._sock.settimeout(self._guard.slice(silent_since))
            try:
                return self._sock.recv(size)
            except TimeoutError:
                continue

    def send(self, data: bytes) -> int:
        self._sock.settimeout(SILENCE_TIMEOUT)
        return self._sock.send(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _GuardedConnection(protocol._OwnetConnection):  # type: ignore[misc]
    # pyownet 0.10 (unmaintained since 2019) has no hook for deadlines; its connection class and
    # the proxies' _new_connection are the narrowest place to add one.
    def __init__(self, sockaddr: Any, family: int, guard: _CallGuard) -> None:
        super().__init__(sockaddr, family)
        raw: socket.socket = self.socket
        self.socket: Any = _GuardedSocket(raw, guard)


class _GuardedProxy(protocol._Proxy):  # type: ignore[misc]
    guard: _CallGuard

    def _new_connection(self) -> Any:
        return _GuardedConnection(self._sockaddr, self._family, self.guard)


class _GuardedPersistentProxy(protocol._PersistentProxy):  # type: ignore[misc]
    guard: _CallGuard

    def _new_connection(self) -> Any:
        return _GuardedConnection(self._sockaddr, self._family, self.guard)


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, protocol.OwnetTimeout):
        return True
    if isinstance(err, protocol.ConnError):
        return getattr(err, "errno", None) in (None, errno.ETIMEDOUT) and "timed out" in str(err)
    return False


def _describe(err: BaseException) -> str:
    if isinstance(err, protocol.ShortRead):
        return "connection closed by owserver in the middle of an answer"
    if isinstance(err, protocol.MalformedHeader):
        return "garbled reply: not the ownet protocol"
    if isinstance(err, protocol.ConnError):
        code = getattr(err, "errno", None)
        text = err.strerror if getattr(err, "strerror", None) else str(err)
        if code == errno.ECONNREFUSED:
            return "connection refused (owserver not running?)"
        if code == errno.ECONNRESET:
            return "connection reset by owserver"
        if isinstance(err.args[0] if err.args else None, str) and len(err.args) == 1:
            text = err.args[0]
        if text == "timed out":
            return f"timed out: no answer for {SILENCE_TIMEOUT:g} s"
        if text.startswith(("timed out", "interrupted")):
            return str(text)
        return text if code is None else f"connection failed: {text}"
    if isinstance(err, UnicodeError):
        return "garbled reply: not owserver's ASCII"
    if isinstance(err, socket.gaierror):
        return "host name not found"
    return f"{type(err).__name__}: {err}"


StateListener = Callable[[ServerAddress, bool, str], None]


class OwServer:
    """State and access for one owserver. Thread-safe; cheap to create (no network I/O).

    ``connected`` is None until the first attempt, then True/False. Each change of state is logged
    once (at DEBUG only with ``log_transitions=False``), then a summary at most every 5 minutes
    while it stays down, and reported to ``on_state(server, connected, reason)`` (called without
    internal locks held, from the thread that noticed the change).

    Backoff: a refused connection costs nothing, so the next cycle simply tries again; a timeout
    (frozen owserver: 2 s per call) starts a capped exponential backoff during which
    :meth:`session` fails at once with :class:`ServerUnavailable`.

    ``request_timeout`` bounds each call in total; ``stopping()`` returning True ends a call in
    progress within about 0.1 s.
    """

    def __init__(
        self,
        address: ServerAddress,
        *,
        persistent: bool = True,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        on_state: StateListener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        log_transitions: bool = True,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.address = address
        self.persistent = persistent
        self.request_timeout = request_timeout
        self.stopping = stopping
        self._on_state = on_state
        self._log_level = logging.WARNING if log_transitions else logging.DEBUG
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._sockaddrs: list[tuple[int, Any]] | None = None
        self._local = threading.local()
        self._connected: bool | None = None
        self.backoff = Backoff(backoff_initial, max(backoff_initial, backoff_max), clock=monotonic)
        self._state_log = StateLog(log, f"owserver {address}")
        self.failures = 0

    def __str__(self) -> str:
        return str(self.address)

    @property
    def name(self) -> str:
        return str(self.address)

    @property
    def backoff_max(self) -> float:
        return self.backoff.maximum

    @backoff_max.setter
    def backoff_max(self, seconds: float) -> None:
        self.backoff.maximum = max(self.backoff.initial, seconds)

    @property
    def connected(self) -> bool | None:
        """Last known state: None (never tried), True or False."""
        with self._lock:
            return self._connected

    def in_backoff(self) -> bool:
        """True while a timeout backoff is running (no attempt will be made)."""
        return not self.backoff.ready()

    def mark_up(self) -> None:
        """Record a successful exchange; logs and notifies on the down->up transition."""
        self.backoff.succeeded()
        with self._lock:
            changed = self._connected is not True
            self._connected = True
        level = min(logging.INFO, self._log_level)
        self._state_log.ok("connected again", level=level, first="connected")
        if changed:
            self._notify(True, "connected")

    def mark_down(self, reason: str, timed_out: bool = False) -> None:
        """Record a server-level failure; logs and notifies on the up->down transition only."""
        if timed_out:
            self.backoff.failed()
        else:
            self.backoff.succeeded()
        with self._lock:
            changed = self._connected is not False
            self._connected = False
            self.failures += 1
        self._state_log.failed(f"unavailable: {reason}; retrying every cycle", level=self._log_level)
        if changed:
            self._notify(False, reason)

    def _notify(self, connected: bool, reason: str) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(self.address, connected, reason)
        except Exception:
            log.exception("owserver state listener failed")

    def _resolve(self) -> list[tuple[int, Any]]:
        with self._lock:
            if self._sockaddrs is not None:
                return self._sockaddrs
        infos = socket.getaddrinfo(self.address.host, self.address.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        addrs: list[tuple[int, Any]] = [(family, sockaddr) for family, _t, _p, _c, sockaddr in infos]
        with self._lock:
            self._sockaddrs = addrs
        return addrs

    def _proxy(self) -> Any:
        proxy = getattr(self._local, "proxy", None)
        if proxy is None or proxy.persistent_wanted != self.persistent:
            family, sockaddr = self._resolve()[0]
            cls = _GuardedPersistentProxy if self.persistent else _GuardedProxy
            proxy = cls(family, sockaddr)
            proxy.guard = _CallGuard(self.stopping, self._monotonic)
            proxy.persistent_wanted = self.persistent
            self._local.proxy = proxy
        return proxy

    @contextmanager
    def session(self) -> Iterator[OwSession]:
        """Open a session for one cycle in the calling thread; closes its connection on exit.

        Raises :class:`ServerUnavailable` when the server is in backoff or cannot be reached.
        Connecting blocks at most 2 s (a frozen owserver's backlog accepts at once).
        """
        if self.in_backoff():
            raise ServerUnavailable(self.address, "in backoff after a timeout", timed_out=True)
        try:
            proxy = self._proxy()
            if self.persistent and proxy.conn is None:
                proxy.conn = proxy._new_connection()
        except (protocol.Error, OSError, AssertionError, UnicodeError) as err:
            with self._lock:
                if isinstance(err, socket.gaierror):
                    self._sockaddrs = None
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

    ``dir``/``read``/``write`` raise :class:`~.errors.PathError` for per-path errors and
    :class:`ServerUnavailable` for server-level ones; after the latter every further call fails
    at once with the same exception. Each call ends within the server's ``request_timeout``.
    """

    def __init__(self, server: OwServer, proxy: Any) -> None:
        self.server = server
        self._proxy = proxy
        self.broken: ServerUnavailable | None = None
        self.round_trips = 0

    @property
    def name(self) -> str:
        return str(self.server.address)

    def close(self) -> None:
        """Close the persistent connection, if any. Never raises."""
        closer = getattr(self._proxy, "close_connection", None)
        if closer is None:
            return
        with suppress(OSError, AssertionError, protocol.Error):
            closer()

    def _call(self, fn: Callable[..., T], path: str, *args: Any, retry: bool = True) -> T:
        if self.broken is not None:
            raise self.broken
        guard: _CallGuard = self._proxy.guard
        last: BaseException | None = None
        for attempt in range(2 if retry else 1):
            self.round_trips += 1
            guard.begin(self.server.request_timeout)
            try:
                result = fn(path, *args)
            except protocol.OwnetError as err:
                # The server answered: it is up, the path is the problem.
                self.server.mark_up()
                raise PathError.from_owserver(err.errno, path) from None
            except (protocol.Error, OSError, AssertionError, UnicodeError) as err:
                last = err
                if guard.stopped:
                    self.broken = ServerUnavailable(self.server.address, "interrupted: stopping", stopped=True)
                    raise self.broken from err
                if _is_timeout(err):
                    break
                if attempt == 0:
                    log.debug("owserver %s: %s; retrying once", self.server.address, _describe(err))
                continue
            finally:
                guard.end()
            self.server.mark_up()
            return result
        assert last is not None
        timed_out = _is_timeout(last)
        if not retry and not timed_out:
            # Not repeated (a write may have reached the device); the next call reconnects.
            raise ServerUnavailable(self.server.address, _describe(last)) from last
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
        """Write one property. Never sent twice: when the answer is lost (a dropped connection)
        it raises :class:`ServerUnavailable` and the session stays usable for a read-back."""
        self._call(self._proxy.write, path, data, retry=False)

    def convert_temperatures(self, bus_path: str) -> None:
        """Start a simultaneous temperature conversion on one bus (SKIP ROM + CONVERT T)."""
        self.write(f"{bus_path}simultaneous/temperature", b"1")
