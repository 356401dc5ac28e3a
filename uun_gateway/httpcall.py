"""One HTTP exchange, bounded: a total deadline, a stop that interrupts it, a capped answer, no redirects.

``requests`` applies its ``timeout`` to each socket operation, so a server that sends one byte
a second keeps a call alive for ever. Here a call is bounded as a whole: :func:`exchange` sends a
request on a session from :func:`bounded_session` and returns only once the complete answer is in
memory, at most ``deadline`` after it began. A single watcher thread (running only while
exchanges are in flight) shuts down the socket of an exchange whose deadline passed or whose stop
event was set, which wakes the blocked read at once; the exchange then raises
:class:`DeadlineExceeded` or :class:`Interrupted`. Answers are read in chunks and abandoned as
soon as they exceed ``max_bytes`` (:class:`AnswerTooLarge`), so a huge answer never sits in
memory. Redirects are never followed: a 3xx is returned like any other answer and the caller
decides (uuCmd calls and the token grant treat it as a failure).

:func:`parse_json` parses an answer with a bound on its nesting depth (:class:`AnswerTooDeep`).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .outage import Deadline

DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 64
STOP_POLL = 0.05
"""How often (seconds) the watcher looks at the stop events of exchanges in flight."""
_LINGER = 0.5
_CHUNK = 64 * 1024


class BoundedExchangeError(requests.RequestException):
    """Base of the failures :func:`exchange` and :func:`parse_json` add to those of ``requests``."""


class DeadlineExceeded(BoundedExchangeError, requests.Timeout):
    """The complete answer did not arrive within the exchange's total deadline."""


class Interrupted(BoundedExchangeError):
    """The exchange was cut short because its stop event was set (the gateway is stopping)."""


class BadAnswer(BoundedExchangeError):
    """The answer cannot be used: too large, nested too deeply (see the subclasses)."""


class AnswerTooLarge(BadAnswer):
    """The answer is larger than the exchange allows; it was not read to its end."""


class AnswerTooDeep(BadAnswer):
    """The JSON answer is nested more deeply than allowed; it was not parsed."""


class _Watch:
    """One exchange in flight: its deadline, its stop event and the connections it used."""

    __slots__ = ("conns", "deadline", "fired", "stop")

    def __init__(self, deadline: Deadline, stop: threading.Event | None) -> None:
        self.deadline = deadline
        self.stop = stop
        self.conns: list[HTTPConnection] = []
        self.fired: str | None = None  # "deadline" or "stop" once the watcher cut it


class _Watcher:
    """Cuts the sockets of exchanges that ran out of time or were stopped. Its thread runs while
    exchanges are in flight and ends half a second after the last one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: set[_Watch] = set()
        self._running = False

    def add(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.add(watch)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()
            self._cond.notify()

    def remove(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.discard(watch)
            if not self._watches:
                self._cond.notify()

    def attach(self, watch: _Watch, conn: HTTPConnection) -> None:
        with self._cond:
            if conn not in watch.conns:
                watch.conns.append(conn)
            if watch.fired is not None:
                _cut(conn)

    def _run(self) -> None:
        with self._cond:
            idle_since: float | None = None
            while True:
                now = time.monotonic()
                wait = _LINGER
                for watch in list(self._watches):
                    if watch.fired is None:
                        if watch.stop is not None and watch.stop.is_set():
                            watch.fired = "stop"
                        elif watch.deadline.at <= now:
                            watch.fired = "deadline"
                    if watch.fired is not None:
                        for conn in watch.conns:
                            _cut(conn)
                        self._watches.discard(watch)
                        continue
                    wait = min(wait, watch.deadline.at - now, STOP_POLL if watch.stop is not None else wait)
                if self._watches:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= _LINGER:
                    self._running = False
                    return
                self._cond.wait(max(wait, 0.001))


_watcher = _Watcher()
_local = threading.local()


def _cut(conn: HTTPConnection) -> None:
    """Shut the connection's socket down: a read blocked on it in another thread returns at once."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw socket's, also under TLS


def _attach_current(conn: HTTPConnection) -> None:
    watch: _Watch | None = getattr(_local, "watch", None)
    if watch is not None:
        _watcher.attach(watch, conn)


class _Watched(HTTPConnection):
    """A connection the current call's deadline watcher can cut (mixed into plain and TLS ones)."""

    def connect(self) -> None:
        _attach_current(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)
        super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose connections report themselves to the exchange in flight on their thread."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def bounded_session(session: requests.Session | None = None) -> requests.Session:
    """A keep-alive ``requests.Session`` whose exchanges :func:`exchange` can bound and interrupt:
    a new one, or ``session`` with its http and https adapters replaced."""
    session = requests.Session() if session is None else session
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    deadline: Deadline,
    stop: threading.Event | None = None,
    max_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    **kwargs: Any,
) -> requests.Response:
    """Send one request and read its whole answer, within ``deadline`` and ``max_bytes``.

    ``session`` comes from :func:`bounded_session` (another session still gets the size cap and
    per-operation timeouts, but no cut at the deadline). ``kwargs`` go to ``session.request``;
    redirects are never followed. The returned response's ``content`` is complete (its connection
    is back in the session's pool). Blocks at most until the deadline, or until ``stop`` is set
    (checked every :data:`STOP_POLL` seconds). Raises :class:`DeadlineExceeded`,
    :class:`Interrupted`, :class:`AnswerTooLarge` and the ``requests`` exceptions.
    """
    if stop is not None and stop.is_set():
        raise Interrupted(f"{method} {url}: not sent, stopping")
    left = deadline.remaining()
    if left <= 0:
        raise DeadlineExceeded(f"{method} {url}: no time left")
    watch = _Watch(deadline, stop)
    previous = getattr(_local, "watch", None)
    _local.watch = watch
    _watcher.add(watch)
    try:
        response = session.request(method, url, timeout=(left, left), allow_redirects=False, stream=True, **kwargs)
        try:
            _read_body(response, max_bytes)
        except BaseException:
            response.close()
            raise
        if watch.fired is not None:  # a cut socket reads as an early end: headers or body cut short
            response.close()
            raise _cut_short(watch, method, url)
        return response
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        if isinstance(exc, BadAnswer | Interrupted | DeadlineExceeded):
            raise
        if watch.fired is not None or deadline.expired():
            raise _cut_short(watch, method, url) from None
        if isinstance(exc, requests.RequestException):
            raise
        raise requests.ConnectionError(f"{method} {url}: {type(exc).__name__}") from exc
    finally:
        _watcher.remove(watch)
        _local.watch = previous


def _cut_short(watch: _Watch, method: str, url: str) -> BoundedExchangeError:
    if watch.fired == "stop":
        return Interrupted(f"{method} {url}: interrupted, stopping")
    return DeadlineExceeded(f"{method} {url}: no complete answer in time")


def _read_body(response: requests.Response, max_bytes: int) -> None:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise AnswerTooLarge(f"answer of {int(declared)} bytes is larger than the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(f"answer is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    response._content = b"".join(chunks)
    setattr(response, "_content_consumed", True)  # noqa: B010 - requests has no public way


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects more than ``max_depth`` deep (strings are
    skipped). Fast when ``data`` has fewer brackets than ``max_depth``."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    depth = 0
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def parse_json(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The JSON value in ``data``. Raises :class:`AnswerTooDeep` beyond ``max_depth`` levels of
    nesting (checked before parsing) and :class:`ValueError` for text that is not JSON."""
    if json_depth_exceeds(data, max_depth):
        raise AnswerTooDeep(f"JSON answer nested more than {max_depth} levels deep")
    try:
        return json.loads(data)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise AnswerTooDeep(f"JSON answer nested more than {max_depth} levels deep") from None
