"""HTTP to the Unisenza cloud: each call bounded as a whole and ended by a stop.

The bounding itself (total deadline, stop, size cap, no redirects) is the framework's
:func:`uun_gateway.exchange`; :class:`CloudHttp` gives it the cloud client's shape: one session,
a cancel for every call in flight, and failures as :class:`ClientError` naming the call.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from uun_gateway import (
    AnswerTooLarge,
    Deadline,
    DeadlineExceeded,
    Interrupted,
    bounded_session,
    describe_failure,
    exchange,
)

from .errors import ClientError

MAX_ANSWER_BYTES = 8 * 1024 * 1024


class CloudHttp:
    """A ``requests.Session`` whose calls end within their deadline and at :meth:`cancel`.

    Thread-safe: calls may run in several threads at once, :meth:`cancel` may come from any
    thread (a stop handler).
    """

    def __init__(self, session: requests.Session | None = None, *, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self._own_session = session is None
        self._session = bounded_session(session)
        self._max_bytes = max_bytes
        self._cancelled = threading.Event()

    def call(self, what: str, method: str, url: str, *, deadline: float, **kwargs: Any) -> tuple[int, bytes]:
        """``(status, body)`` of one HTTP call that ends within ``deadline`` seconds in all.

        Redirects are not followed (a 3xx is returned as such). Raises :class:`ClientError`
        naming ``what`` for a network failure, a deadline passed (``no complete answer within
        N s``), a cancelled call (``interrupted by stop``) or an answer over the size cap."""
        try:
            response = exchange(
                self._session,
                method,
                url,
                deadline=Deadline(deadline),
                stop=self._cancelled,
                max_bytes=self._max_bytes,
                **kwargs,
            )
        except Interrupted:
            raise ClientError(f"{what}: interrupted by stop") from None
        except DeadlineExceeded:
            raise ClientError(f"{what}: no complete answer within {deadline:g} s") from None
        except AnswerTooLarge:
            raise ClientError(f"{what}: answer larger than {self._max_bytes} bytes") from None
        except (requests.RequestException, OSError) as exc:
            raise ClientError(f"{what} failed: {describe_failure(exc)}") from exc
        return response.status_code, response.content

    def cancel(self) -> None:
        """End every call in flight and refuse new ones (``interrupted by stop``). Idempotent."""
        self._cancelled.set()

    def close(self) -> None:
        """Cancel, and close the session if this object created it. Idempotent."""
        self.cancel()
        if self._own_session:
            self._session.close()
