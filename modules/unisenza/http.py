"""HTTP to the Unisenza cloud with a total deadline per call and a stop that interrupts it.

requests' ``timeout`` bounds each socket operation, not a call: a server answering one byte at a
time keeps a call going for ever. :class:`CloudHttp` bounds the whole call (connect, TLS, request,
headers and body) by shutting its socket down when the deadline passes or :meth:`CloudHttp.cancel`
is called, and caps the size of an answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from uun_gateway import Deadline, describe_failure

from .errors import ClientError

MAX_ANSWER_BYTES = 8 * 1024 * 1024
_current = threading.local()


class _Call:
    """One call in flight: the connections it uses, shut down when it must end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self.ended: str | None = None  # why it was cut short

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._connections.append(conn)
            ended = self.ended
        if ended is not None:
            _shutdown(conn)

    def end(self, reason: str) -> None:
        with self._lock:
            if self.ended is None:
                self.ended = reason
            connections = list(self._connections)
        for conn in connections:
            _shutdown(conn)


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _TrackedMixin:
    """Tells the calling thread's :class:`_Call` which connection a request uses (new or reused)."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(conn)
        return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]


class _HTTPPool(_TrackedMixin, HTTPConnectionPool):
    pass


class _HTTPSPool(_TrackedMixin, HTTPSConnectionPool):
    pass


class _TrackedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class CloudHttp:
    """A ``requests.Session`` whose calls end within their deadline and at :meth:`cancel`.

    Thread-safe: calls may run in several threads at once, :meth:`cancel` may come from any
    thread (a stop handler). Each call runs one timer thread while it is in flight.
    """

    def __init__(self, session: requests.Session | None = None, *, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._own_session = session is None
        self._session = session or requests.Session()
        adapter = _TrackedAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._calls: set[_Call] = set()
        self._cancelled = False

    def call(self, what: str, method: str, url: str, *, deadline: float, **kwargs: Any) -> tuple[int, bytes]:
        """``(status, body)`` of one HTTP call that ends within ``deadline`` seconds in all.

        Redirects are not followed (a 3xx is returned as such). Raises :class:`ClientError`
        naming ``what`` for a network failure, a deadline passed (``no complete answer within
        N s``), a cancelled call (``interrupted by stop``) or an answer over the size cap."""
        limit = Deadline(deadline)
        call = _Call()
        with self._lock:
            if self._cancelled:
                raise ClientError(f"{what}: interrupted by stop")
            self._calls.add(call)
        timer = threading.Timer(deadline, call.end, (f"no complete answer within {deadline:g} s",))
        timer.daemon = True
        timer.start()
        try:
            with self._in(call):
                left = limit.check(what)
                resp = self._session.request(
                    method, url, timeout=(left, left), stream=True, allow_redirects=False, **kwargs
                )
                with resp:
                    body = bytearray()
                    for chunk in resp.iter_content(65536):
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise ClientError(f"{what}: answer larger than {self._max_bytes} bytes")
                    if call.ended is not None:
                        raise ClientError(f"{what}: {call.ended}")
                    return resp.status_code, bytes(body)
        except (requests.RequestException, OSError, TimeoutError) as exc:
            if call.ended is not None:
                raise ClientError(f"{what}: {call.ended}") from None
            raise ClientError(f"{what} failed: {describe_failure(exc)}") from exc
        finally:
            timer.cancel()
            timer.join()
            with self._lock:
                self._calls.discard(call)

    @contextlib.contextmanager
    def _in(self, call: _Call) -> Iterator[None]:
        previous = getattr(_current, "call", None)
        _current.call = call
        try:
            yield
        finally:
            _current.call = previous

    def cancel(self) -> None:
        """End every call in flight now and refuse new ones (``interrupted by stop``). Idempotent."""
        with self._lock:
            self._cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.end("interrupted by stop")

    def close(self) -> None:
        """Cancel, and close the session if this object created it. Idempotent."""
        self.cancel()
        if self._own_session:
            self._session.close()
