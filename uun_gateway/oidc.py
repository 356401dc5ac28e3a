"""The OIDC token grant and its cache: the bearer token a :class:`~uun_gateway.uuapp.UuAppClient` sends.

Promises:

- the grant is one bounded exchange (``oidcGrantToken.timeout``, default 20 s, for connect plus the
  whole answer) that a stop interrupts; the token lock is held only for that bounded time, and a
  thread waiting for another's grant waits no longer than the timeout (plus a second) either;
- a redirect is a failure, never followed: the access codes and the client secret go to the
  configured host only;
- the expiry is measured on the local monotonic clock from ``expires_in`` (or the JWT ``exp``
  against the server's own ``Date``), so clock skew and wall-clock steps do not matter;
- the cache file holds only the token and its expiry, is written atomically with mode 0600, and a
  failure to write it is logged, never fatal;
- access codes, the client secret and tokens never appear in log records or exception messages,
  and text the server chose (error codes, a ``Location``) is escaped and bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from .errors import UunGatewayError
from .files import atomic_write, read_secret_file
from .httpcall import BadAnswer, bounded_session, exchange, parse_json
from .outage import Deadline, describe_failure, safe_text
from .version import __version__

logger = logging.getLogger(__name__)

USER_AGENT = f"uun-gateway/{__version__}"
GRANT_MAX_BYTES = 64 * 1024
"""The largest grant answer read (a token answer is a few kB)."""
_LOCK_POLL = 0.05

_monotonic = time.monotonic  # the token clock; tests replace it to age tokens without waiting


class UuAppClientError(UunGatewayError):
    """Base of the errors raised by the uuApp client."""


class TokenError(UuAppClientError):
    """A valid bearer token could not be obtained (network failure, bad response, cache trouble)."""


class TokenCommandError(TokenError):
    """The OIDC server answered the grant with an error.

    ``status`` is the HTTP status, ``error_map`` the server's ``uuAppErrorMap`` (may be empty).
    The message names only the status and the error codes (escaped, bounded), never the request's
    secrets.
    """

    def __init__(self, error_map: Mapping[str, Any], status: int) -> None:
        self.error_map = dict(error_map)
        self.status = status
        super().__init__(f"token grant refused: HTTP {status} ({error_codes(self.error_map) or 'no uuAppErrorMap'})")


def error_codes(error_map: Mapping[str, Any], limit: int = 3) -> str:
    """The first ``limit`` codes of a ``uuAppErrorMap`` with their messages, escaped and bounded for a
    log line (the server chose them: a newline must not forge a line, a huge key must not flood)."""
    parts = []
    for code in sorted(error_map, key=str)[:limit]:
        entry = error_map[code]
        message = entry.get("message") if isinstance(entry, Mapping) else None
        text = safe_text(code, 100)
        if isinstance(message, str) and message:
            text += f": {safe_text(message, 100)}"
        parts.append(text)
    if len(error_map) > limit:
        parts.append(f"and {len(error_map) - limit} more")
    return ", ".join(parts)


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT (server epoch seconds), or None when it is not a readable JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError, RecursionError):
        return None


class Token:
    """A bearer token with its expiry on the monotonic clock (immune to wall-clock steps)."""

    __slots__ = ("deadline", "lifetime", "value")

    def __init__(self, value: str, lifetime: float) -> None:
        self.value = value
        self.lifetime = lifetime
        self.deadline = _monotonic() + lifetime

    def remaining(self) -> float:
        return self.deadline - _monotonic()


class TokenGrant:
    """Obtains the bearer token from the OIDC server and keeps it, in memory and in ``token_path``.

    ``credentials`` is the grant dto (access codes, client id and secret, scope): it is sent to
    ``url`` only. ``post`` replaces the function that POSTs the grant (called like
    ``requests.post(url, json=..., headers=..., timeout=..., verify=..., allow_redirects=False)``);
    it is bounded only by its own per-operation timeout. Thread-safe: at most one thread grants at
    a time; :meth:`close` drops the connection.
    """

    def __init__(
        self,
        *,
        url: str,
        credentials: Mapping[str, Any],
        timeout: float,
        verify: str | bool,
        token_path: str | None,
        leeway: float,
        post: Callable[..., requests.Response] | None = None,
    ) -> None:
        self.url = url
        self._credentials = dict(credentials)
        self.timeout = float(timeout)
        self.verify = verify
        self.token_path = token_path
        self.leeway = float(leeway)
        self._post_fn = post
        self.token: Token | None = None
        self._cache_checked = False
        self._failure: tuple[float, TokenError] | None = None
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self.grants = 0
        """How many tokens were obtained from the OIDC server (for tests and status)."""

    def is_expired(self) -> bool:
        """True when no token is held or less than ``leeway`` seconds of it remain."""
        token = self.token
        return token is None or token.remaining() < self.leeway

    def refresh(self, stop: threading.Event | None = None) -> bool:
        """Make sure a valid token is held: load the cache file, or grant a new one when it expired.

        Returns False when nothing had to be granted, True when a new token was obtained and
        cached. Blocks at most about twice the timeout (waiting for another thread's grant, then
        its own), less when ``stop`` is set. Raises :class:`TokenError` on network or answer
        trouble, a redirect, a timeout or a stop, and :class:`TokenCommandError` when the server
        refuses. Threads that waited while another thread's grant failed get that failure at once.
        """
        arrived = _monotonic()
        self._acquire(Deadline(self.timeout + 1.0), stop)
        try:
            if not self._cache_checked:
                self._cache_checked = True
                self.token = self._load_cache()
            if not self.is_expired():
                return False
            failure = self._failure
            if failure is not None and failure[0] >= arrived:
                raise failure[1]
            try:
                self.token = self._grant(stop)
            except TokenError as exc:
                self._failure = (_monotonic(), exc)
                raise
            self._failure = None
            self.grants += 1
            self._store_cache(self.token)
            return True
        finally:
            self._lock.release()

    def _acquire(self, deadline: Deadline, stop: threading.Event | None) -> None:
        while not self._lock.acquire(timeout=min(_LOCK_POLL, deadline.remaining()) or 0.001):
            if stop is not None and stop.is_set():
                raise TokenError("token grant: interrupted, stopping")
            if deadline.expired():
                raise TokenError(f"token grant: another thread's grant took longer than {self.timeout:g} s")

    def invalidate(self, token: str | None = None) -> None:
        """Forget the held token; with ``token``, only when the held one is still that one."""
        with self._lock:
            if token is None or (self.token is not None and self.token.value == token):
                self.token = None
            self._cache_checked = True

    def close(self) -> None:
        """Close the connection to the OIDC server (a later grant reconnects)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            close_session(session)

    # ------------------------------------------------------------------ the grant
    def _grant(self, stop: threading.Event | None) -> Token:
        sent_at = _monotonic()
        status, body, date = self._post(stop)
        if not 200 <= status < 300:
            error_map = body.get("uuAppErrorMap", {}) if isinstance(body, dict) else {}
            raise TokenCommandError(error_map if isinstance(error_map, dict) else {}, status)
        if not isinstance(body, dict) or not isinstance(body.get("id_token"), str) or not body["id_token"]:
            raise TokenError(f"token grant at {self.url}: response has no id_token")
        value = body["id_token"]
        lifetime = self._lifetime(body, value, date)
        if lifetime <= 0:
            raise TokenError(f"token grant at {self.url}: token already expired")
        # The expiry counts from when the request was sent: a slow answer only shortens it.
        token = Token(value, lifetime)
        token.deadline = sent_at + lifetime
        return token

    def _post(self, stop: threading.Event | None) -> tuple[int, Any, str | None]:
        """POST the grant; (status, JSON body or None, Date header). Raises TokenError for a network
        failure, a timeout, a stop or a redirect.

        Only plain data leaves this frame, so an exception raised later cannot keep the response,
        and with it a pooled socket, alive.
        """
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        try:
            if self._post_fn is not None:
                response = self._post_fn(
                    self.url,
                    json=self._credentials,
                    headers=headers,
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                )
            else:
                if self._session is None:
                    self._session = bounded_session()
                response = exchange(
                    self._session,
                    "POST",
                    self.url,
                    deadline=Deadline(self.timeout),
                    stop=stop,
                    max_bytes=GRANT_MAX_BYTES,
                    data=json.dumps(self._credentials).encode(),
                    headers=headers,
                    verify=self.verify,
                )
        except requests.RequestException as exc:
            raise TokenError(f"token grant at {self.url} failed: {describe_failure(exc)}") from None
        try:
            status = response.status_code
            if 300 <= status < 400:
                location = safe_text(response.headers.get("Location") or "nowhere")
                raise TokenError(
                    f"token grant at {self.url}: HTTP {status} redirect to {location} not followed "
                    "(credentials are sent to the configured host only)"
                )
            try:
                body = parse_json(response.content)
            except (ValueError, BadAnswer):
                body = None
            return status, body, response.headers.get("Date")
        finally:
            response.close()

    @staticmethod
    def _lifetime(body: Mapping[str, Any], value: str, date: str | None) -> float:
        """Token lifetime in seconds, relative to now; never from the server's absolute clock alone."""
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            return float(expires_in)
        exp = _jwt_exp(value)
        if exp is None:
            raise TokenError("token grant: response has neither expires_in nor a JWT exp claim")
        server_now: float | None = None
        if date:
            with contextlib.suppress(TypeError, ValueError):
                server_now = parsedate_to_datetime(date).timestamp()
        # exp is on the server's clock; measure it against the server's own Date when we have it.
        return exp - (server_now if server_now is not None else time.time())

    # ------------------------------------------------------------------ the cache file
    def _load_cache(self) -> Token | None:
        path = self.token_path
        if not path:
            return None
        try:
            data = json.loads(read_secret_file(path))
            value = data["id_token"]
            expires_at = float(data["expires_at"])
            lifetime = float(data.get("expires_in", expires_at - time.time()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            logger.warning("token cache %s unreadable (%s); a new token will be granted", path, type(exc).__name__)
            return None
        if not isinstance(value, str) or not value:
            return None
        # A wall clock stepped back since the file was written would stretch the token; cap it.
        remaining = min(expires_at - time.time(), lifetime)
        return Token(value, remaining) if remaining > 0 else None

    def _store_cache(self, token: Token) -> None:
        """Write the token cache atomically with mode 0600; a failure is logged, never fatal."""
        path = self.token_path
        if not path:
            return
        remaining = token.remaining()
        data = {"id_token": token.value, "expires_at": time.time() + remaining, "expires_in": remaining}
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            atomic_write(path, json.dumps(data), mode=0o600)
        except OSError as exc:
            logger.warning("cannot write token cache %s: %s", path, exc.strerror or type(exc).__name__)


def close_session(session: requests.Session) -> None:
    """Close a session's pooled sockets now; urllib3 2.x otherwise leaves that to garbage collection."""
    for adapter in session.adapters.values():
        pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        if pools is not None:
            for key in list(pools.keys()):
                pool = pools.get(key)
                if pool is not None:
                    pool.close()
    session.close()
