"""Talking to a uuApp server: :class:`UuAppClient`, :class:`UuCmdSession` and the OIDC token cache.

The API follows uun-iot's ``UuAppClient`` (``get``, ``post``, ``multipart``, ``custom_request``,
``*_ignore_http_err``, ``get_uucmd_url``, ``get_auth_headers``, ``refresh_token``,
``is_token_expired``) and its ``(response, exception)`` return contract, with these differences:

- the constructor never touches the network (a gateway must boot offline); the first request
  obtains the token;
- the token cache is written atomically with mode 0600 and holds only the token and its expiry;
- the expiry is measured on the local monotonic clock from ``expires_in``, so a server clock
  that is ahead or behind, and local wall-clock steps, do not matter;
- a 401 invalidates the token; a replayable request is retried once with a fresh token;
- without an ``oidcGrantToken`` section, requests carry no ``Authorization`` header at all;
- every request has a timeout, TLS verification is always on (``caBundle`` may name a CA file);
- connections are kept alive (one ``requests.Session`` per thread, one per :class:`UuCmdSession`);
- access codes, the client secret and tokens never appear in log records or exception messages.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder  # type: ignore[import-untyped,unused-ignore]

from uun_gateway.errors import ConfigError, UunGatewayError
from uun_gateway.version import __version__

logger = logging.getLogger(__name__)

USER_AGENT = f"uun-gateway/{__version__}"
DEFAULT_TIMEOUT = 20.0
DEFAULT_TOKEN_LEEWAY = 60.0

_monotonic = time.monotonic  # the token clock; tests replace it to age tokens without waiting

RequestResult = tuple[requests.Response | None, "TokenError | requests.RequestException | None"]

_GATEWAY_PATTERN = r"^(https?://)?[A-Za-z0-9._~%\-\[\]:]+/?$"
_NAME = {"type": "string", "minLength": 1, "pattern": r"^[^/\s]+$"}
# writeOnly marks secrets: whoever reports a validation error must not print their value.
_SECRET = {"type": "string", "minLength": 1, "writeOnly": True}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "maximum": 600}

UUAPP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "uuApp": {
            "type": "object",
            "description": "The uuApp server the gateway reports to.",
            "required": ["gateway", "uuAppName", "awid"],
            "properties": {
                "gateway": {
                    "type": "string",
                    "pattern": _GATEWAY_PATTERN,
                    "description": "Host name (https is implied) or scheme://host[:port].",
                },
                "uuAppName": _NAME,
                "awid": _NAME,
                "uuCmdList": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
                "timeout": _TIMEOUT,
                "caBundle": {"type": "string", "minLength": 1},
            },
            "additionalProperties": False,
        },
        "uuThing": {
            "type": "object",
            "description": "The gateway's uuIdentity and its access codes (secrets).",
            "required": ["uuIdentity", "accessCode1", "accessCode2"],
            "properties": {"uuIdentity": {"type": "string"}, "accessCode1": _SECRET, "accessCode2": _SECRET},
            "additionalProperties": False,
        },
        "oidcGrantToken": {
            "type": "object",
            "description": "The OIDC service that grants the bearer token.",
            "required": ["gateway", "uuAppName", "awid", "uuCmd", "tokenPath"],
            "properties": {
                "gateway": {"type": "string", "pattern": _GATEWAY_PATTERN},
                "uuAppName": _NAME,
                "awid": _NAME,
                "clientId": {"type": "string"},
                "clientSecret": {"type": "string", "writeOnly": True},
                "uuCmd": {"type": "string", "minLength": 1},
                "tokenPath": {"type": "string", "minLength": 1},
                "timeout": _TIMEOUT,
                "caBundle": {"type": "string", "minLength": 1},
            },
            "additionalProperties": False,
        },
    },
    "dependentRequired": {"oidcGrantToken": ["uuApp", "uuThing"], "uuThing": ["uuApp"]},
}
"""JSON Schema over the whole config document for the keys ``uuApp``, ``uuThing`` and
``oidcGrantToken``; compose it with ``allOf`` (or merge its ``properties``/``dependentRequired``)."""


class UuAppClientError(UunGatewayError):
    """Base of the errors raised by the uuApp client."""


class TokenError(UuAppClientError):
    """A valid bearer token could not be obtained (network failure, bad response, cache trouble)."""


class TokenCommandError(TokenError):
    """The OIDC server answered the grant with an error.

    ``status`` is the HTTP status, ``error_map`` the server's ``uuAppErrorMap`` (may be empty).
    The message names only the status and the error codes, never the request's secrets.
    """

    def __init__(self, error_map: Mapping[str, Any], status: int) -> None:
        self.error_map = dict(error_map)
        self.status = status
        codes = ", ".join(sorted(self.error_map)) or "no uuAppErrorMap"
        super().__init__(f"token grant refused: HTTP {status} ({codes})")


def base_url(gateway: str) -> str:
    """Turn a ``gateway`` config value into a base URL without a trailing slash.

    A bare host name (optionally with ``:port``) means ``https://host``; a value with a scheme is
    kept as given. Raises :class:`ValueError` for any other scheme or a missing host.
    """
    value = gateway.strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a host name or http(s) URL: {gateway!r}")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"gateway must not carry a path: {gateway!r}")
    return value


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (``localhost`` or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT (server epoch seconds), or None when it is not a readable JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None
    except (IndexError, ValueError, AttributeError):
        return None


class _Token:
    """A bearer token with its expiry on the monotonic clock (immune to wall-clock steps)."""

    __slots__ = ("deadline", "lifetime", "value")

    def __init__(self, value: str, lifetime: float) -> None:
        self.value = value
        self.lifetime = lifetime
        self.deadline = _monotonic() + lifetime

    def remaining(self) -> float:
        return self.deadline - _monotonic()


class UuAppClient:
    """Client for one uuApp (``uuApp`` section) authenticated by OIDC (``oidcGrantToken``).

    ``config`` is the full config document. Construction only reads it (and warns about plain
    http to a non-loopback host); it never blocks on the network and raises
    :class:`~uun_gateway.errors.ConfigError` when a present section lacks a required key.

    ``fn_token_request`` replaces the function that POSTs the grant (called like
    ``requests.post(url, json=..., headers=..., timeout=..., verify=...)``). ``refresh_token_on_init``
    exists for uun-iot compatibility and defaults to False: when True the constructor obtains the
    token and may block up to the timeout and raise :class:`TokenError`. A token is renewed when
    less than ``token_leeway`` seconds of its lifetime remain. ``timeout`` (seconds) overrides
    ``uuApp.timeout``/``oidcGrantToken.timeout`` (default 20 s) for every request.

    Thread-safe: requests may be made from any thread; each thread gets its own keep-alive
    session and at most one thread grants a token at a time. Call :meth:`close` to drop the
    connections.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        fn_token_request: Callable[..., requests.Response] | None = None,
        refresh_token_on_init: bool = False,
        token_leeway: float = DEFAULT_TOKEN_LEEWAY,
        timeout: float | None = None,
    ) -> None:
        self._config = copy.deepcopy(dict(config))
        app = self._config.get("uuApp") or {}
        oidc = self._config.get("oidcGrantToken")
        thing = self._config.get("uuThing")
        errors = _section_errors("uuApp", app, ("gateway", "uuAppName", "awid"))
        if oidc is not None:
            errors += _section_errors("oidcGrantToken", oidc, ("gateway", "uuAppName", "awid", "uuCmd", "tokenPath"))
            if thing is None:
                errors.append("uuThing: required when oidcGrantToken is configured")
            else:
                errors += _section_errors("uuThing", thing, ("accessCode1", "accessCode2"))
        self._app_base = self._oidc_base = ""
        for section, attr in (("uuApp", "_app_base"), ("oidcGrantToken", "_oidc_base")):
            value = self._config.get(section)
            if not errors and isinstance(value, Mapping):
                try:
                    setattr(self, attr, base_url(value["gateway"]))
                except ValueError as exc:
                    errors.append(f"{section}.gateway: {exc}")
        if errors:
            raise ConfigError(errors)

        self.uuapp: dict[str, Any] = app
        self.uucmd_list: dict[str, str] = dict(app.get("uuCmdList") or {})
        self.token_leeway = float(token_leeway)
        self.timeout = float(timeout if timeout is not None else app.get("timeout", DEFAULT_TIMEOUT))
        self._verify: str | bool = app.get("caBundle") or True
        self._app_url = f"{self._app_base}/{app['uuAppName']}/{app['awid']}"
        self._oidc: dict[str, Any] | None = oidc
        self._thing: dict[str, Any] | None = thing
        if oidc is not None:
            self._oidc_url = f"{self._oidc_base}/{oidc['uuAppName']}/{oidc['awid']}/{oidc['uuCmd'].lstrip('/')}"
            self._oidc_timeout = float(timeout if timeout is not None else oidc.get("timeout", self.timeout))
            self._oidc_verify: str | bool = oidc.get("caBundle") or self._verify
            self.token_path: str | None = oidc["tokenPath"]
        else:
            self._oidc_url = ""
            self._oidc_timeout = self.timeout
            self._oidc_verify = self._verify
            self.token_path = None
        self._fn_token_request = fn_token_request
        self._token: _Token | None = None
        self._cache_checked = False
        self._grant_failure: tuple[float, TokenError] | None = None
        self._token_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.grants = 0
        """How many tokens this client obtained from the OIDC server (for tests and status)."""

        for url in (self._app_base, self._oidc_base):
            if url.startswith("http://") and not is_loopback(url):
                logger.warning("plain http to %s: traffic and tokens are not encrypted", url)
        if refresh_token_on_init:
            self.refresh_token()

    @property
    def auth_enabled(self) -> bool:
        """True when an ``oidcGrantToken`` section is configured (requests carry a bearer token)."""
        return self._oidc is not None

    # ------------------------------------------------------------------ URLs and headers
    def get_uucmd_url(self, uucmd: str) -> str:
        """The full URL of ``uucmd`` (e.g. ``gateway/heartbeat``) on the configured uuApp."""
        return f"{self._app_url}/{uucmd.lstrip('/')}"

    def get_auth_headers(self, content_type: str | None = "application/json") -> dict[str, str]:
        """Headers for a request: Content-Type (unless None), User-Agent and, with auth, the bearer token.

        Obtains or renews the token when needed; may block up to the OIDC timeout.
        Raises :class:`TokenError` when no valid token can be had.
        """
        headers = {"User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        if self._oidc is not None:
            self.refresh_token()
            token = self._token
            if token is None:
                raise TokenError("no token available")
            headers["Authorization"] = f"Bearer {token.value}"
        return headers

    # ------------------------------------------------------------------ token
    def is_token_expired(self) -> bool:
        """True when no token is held or less than ``token_leeway`` seconds of it remain.

        Without auth configured this is always False. Does not touch the network.
        """
        if self._oidc is None:
            return False
        token = self._token
        return token is None or token.remaining() < self.token_leeway

    def refresh_token(self) -> bool:
        """Make sure a valid token is held: load the cache file, or grant a new one when it expired.

        Returns False when nothing had to be granted (auth disabled, or the held/cached token is
        still valid), True when a new token was obtained and cached. Blocks up to the OIDC timeout.
        Raises :class:`TokenError` on network or response trouble and :class:`TokenCommandError`
        when the server refuses the grant. Callers that waited while another thread's grant failed
        get that failure at once instead of waiting for a timeout of their own.
        """
        if self._oidc is None:
            return False
        arrived = _monotonic()
        with self._token_lock:
            if not self._cache_checked:
                self._cache_checked = True
                self._token = self._load_cache()
            if not self.is_token_expired():
                return False
            failure = self._grant_failure
            if failure is not None and failure[0] >= arrived:
                raise failure[1]
            try:
                self._token = self._grant()
            except TokenError as exc:
                self._grant_failure = (_monotonic(), exc)
                raise
            self._grant_failure = None
            self.grants += 1
            self._store_cache(self._token)
            return True

    def invalidate_token(self, token: str | None = None) -> None:
        """Forget the held token (e.g. after the server answered 401); the next request grants anew.

        With ``token`` (the value the refused request carried), only when the held token is still
        that one: a late 401 for an old token must not throw away one another thread renewed since.
        """
        with self._token_lock:
            if token is None or (self._token is not None and self._token.value == token):
                self._token = None
            self._cache_checked = True

    def _grant(self) -> _Token:
        oidc = self._oidc
        thing = self._thing
        assert oidc is not None and thing is not None
        dto: dict[str, Any] = {
            "grant_type": "password",
            "accessCode1": thing["accessCode1"],
            "accessCode2": thing["accessCode2"],
            "scope": f"openid {self._app_base}/{self.uuapp['uuAppName']}/{self.uuapp['awid']}",
        }
        if oidc.get("clientId"):
            dto["client_id"] = oidc["clientId"]
        if oidc.get("clientSecret"):
            dto["client_secret"] = oidc["clientSecret"]
        sent_at = _monotonic()
        status, body, date = self._post_grant(dto)
        if not 200 <= status < 300:
            error_map = body.get("uuAppErrorMap", {}) if isinstance(body, dict) else {}
            raise TokenCommandError(error_map if isinstance(error_map, dict) else {}, status)
        if not isinstance(body, dict) or not isinstance(body.get("id_token"), str) or not body["id_token"]:
            raise TokenError(f"token grant at {self._oidc_url}: response has no id_token")
        value = body["id_token"]
        lifetime = self._lifetime(body, value, date)
        if lifetime <= 0:
            raise TokenError(f"token grant at {self._oidc_url}: token already expired")
        # The expiry counts from when the request was sent: a slow answer only shortens it.
        token = _Token(value, lifetime)
        token.deadline = sent_at + lifetime
        return token

    def _post_grant(self, dto: Mapping[str, Any]) -> tuple[int, Any, str | None]:
        """POST the grant; returns (status, JSON body or None, Date header). Raises TokenError offline.

        Only plain data leaves this frame, so an exception raised later cannot keep the
        response, and with it a pooled socket, alive.
        """
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
        send = self._fn_token_request or self._session().post
        try:
            response = send(
                self._oidc_url,
                json=dto,
                headers=headers,
                timeout=self._oidc_timeout,
                verify=self._oidc_verify,
            )
        except requests.RequestException as exc:
            raise TokenError(f"token grant at {self._oidc_url} failed: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        finally:
            response.close()
        return response.status_code, body, response.headers.get("Date")

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

    def _load_cache(self) -> _Token | None:
        path = self.token_path
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            value = data["id_token"]
            expires_at = float(data["expires_at"])
            lifetime = float(data.get("expires_in", expires_at - time.time()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("token cache %s unreadable (%s); a new token will be granted", path, type(exc).__name__)
            return None
        if not isinstance(value, str) or not value:
            return None
        # A wall clock stepped back since the file was written would stretch the token; cap it.
        remaining = min(expires_at - time.time(), lifetime)
        return _Token(value, remaining) if remaining > 0 else None

    def _store_cache(self, token: _Token) -> None:
        """Write the token cache atomically with mode 0600; a failure is logged, never fatal."""
        path = self.token_path
        if not path:
            return
        remaining = token.remaining()
        data = {"id_token": token.value, "expires_at": time.time() + remaining, "expires_in": remaining}
        directory = os.path.dirname(os.path.abspath(path))
        tmp = ""
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".oidc-token.", dir=directory)  # mkstemp creates 0600
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = ""
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            logger.warning("cannot write token cache %s: %s", path, exc.strerror or type(exc).__name__)
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    # ------------------------------------------------------------------ sessions
    def new_session(self) -> requests.Session:
        """A keep-alive session that :meth:`close` will close."""
        session = requests.Session()
        with self._sessions_lock:
            self._sessions.append(session)
        return session

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.new_session()
        return session

    def close(self) -> None:
        """Close every connection this client opened. The client stays usable (it reconnects)."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            _close_session(session)
        self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def custom_request(
        self,
        custom_send_f: Callable[[Any], requests.Response],
        dto_in: Any = None,
        label: str | None = None,
        log_level: int = logging.WARNING,
    ) -> RequestResult:
        """Call ``custom_send_f(dto_in or {})``, raise for HTTP errors, and return ``(response, exc)``.

        ``exc`` is None on success. On an HTTP error status the response is returned with the
        ``requests.HTTPError``; on a network error or :class:`TokenError` the response is None.
        Each failure is logged once at ``log_level`` with ``label``. Other exceptions propagate.
        """
        label = label or getattr(custom_send_f, "__name__", "request")
        try:
            response = custom_send_f(dto_in if dto_in is not None else {})
        except TokenError as exc:
            logger.log(log_level, "%s: no token: %s", label, exc)
            return None, exc
        except requests.RequestException as exc:
            logger.log(log_level, "%s: %s", label, _describe(exc))
            return None, exc
        try:
            response.raise_for_status()
        except requests.HTTPError as exc:
            logger.log(log_level, "%s: HTTP %s", label, response.status_code)
            return response, exc
        return response, None

    def _send(
        self,
        method: str,
        uucmd: str,
        dto_in: Any,
        session: requests.Session | None = None,
    ) -> requests.Response:
        """Send one request (retrying once with a fresh token after a 401 when the body is replayable)."""
        url = self.get_uucmd_url(uucmd)
        for attempt in (1, 2):
            if isinstance(dto_in, MultipartEncoder):
                headers = self.get_auth_headers(dto_in.content_type)
                kwargs: dict[str, Any] = {"data": dto_in}
            elif method == "GET":
                headers = self.get_auth_headers(None)
                kwargs = {"params": _query(dto_in)}
            else:
                headers = self.get_auth_headers()
                kwargs = {"data": json.dumps(dto_in, separators=(",", ":")).encode()}
            response = (session or self._session()).request(
                method, url, headers=headers, timeout=self.timeout, verify=self._verify, **kwargs
            )
            if response.status_code != 401 or self._oidc is None:
                return response
            self.invalidate_token(headers.get("Authorization", "").removeprefix("Bearer ") or None)
            if attempt == 2 or isinstance(dto_in, MultipartEncoder):
                return response
            response.close()
        raise AssertionError("unreachable")

    def get(
        self, uucmd: str, dto_in: Mapping[str, Any] | None = None, log_level: int = logging.WARNING
    ) -> RequestResult:
        """Authenticated GET of ``uucmd``; ``dto_in`` goes in the query string (non-scalars as JSON).

        Returns ``(response, exc)`` as :meth:`custom_request`; never raises for network, HTTP or
        token errors.
        """
        return self.custom_request(lambda dto: self._send("GET", uucmd, dto), dto_in, uucmd, log_level)

    def post(self, uucmd: str, dto_in: Any = None, log_level: int = logging.WARNING) -> RequestResult:
        """Authenticated POST of ``dto_in`` (a dict or list sent as JSON, or a ``MultipartEncoder``).

        Returns ``(response, exc)`` as :meth:`custom_request`. Raises :class:`ValueError` for any
        other ``dto_in`` type.
        """
        _check_dto(dto_in)
        return self.custom_request(lambda dto: self._send("POST", uucmd, dto), dto_in, uucmd, log_level)

    def multipart(
        self, uucmd: str, dto_in: Mapping[str, Any] | None = None, log_level: int = logging.WARNING
    ) -> RequestResult:
        """Authenticated multipart/form-data POST of ``dto_in`` (values as ``MultipartEncoder`` takes them).

        ``bytes`` values become file parts. Retried once with a fresh token after a 401.
        """

        def send(dto: Mapping[str, Any]) -> requests.Response:
            response = self._send("POST", uucmd, encode_multipart(dto))
            if response.status_code == 401 and self._oidc is not None:
                response.close()
                response = self._send("POST", uucmd, encode_multipart(dto))
            return response

        return self.custom_request(send, dto_in, uucmd, log_level)

    def get_ignore_http_err(
        self, uucmd: str, dto_in: Mapping[str, Any] | None = None, log_level: int = logging.WARNING
    ) -> requests.Response:
        """GET returning the response whatever its status; raises network errors and :class:`TokenError`."""
        return _response_or_raise(self.get(uucmd, dto_in, log_level))

    def post_ignore_http_err(
        self, uucmd: str, dto_in: Any = None, log_level: int = logging.WARNING
    ) -> requests.Response:
        """POST returning the response whatever its status; raises network errors and :class:`TokenError`."""
        return _response_or_raise(self.post(uucmd, dto_in, log_level))


class UuCmdSession:
    """Requests to one uuCmd over one keep-alive connection (a ``requests.Session`` of its own).

    Thread-safe (calls are serialised); :meth:`close` (or leaving the ``with`` block) closes it.
    """

    def __init__(self, uuclient: UuAppClient, uucmd: str, log_level: int = logging.WARNING) -> None:
        self.uuclient = uuclient
        self.uucmd = uucmd
        self.log_level = log_level
        self.url = uuclient.get_uucmd_url(uucmd)
        self._session = uuclient.new_session()
        self._lock = threading.Lock()

    def update_headers(self) -> None:
        """Put a valid bearer token in the session's headers (granting one if needed).

        Raises :class:`TokenError` when none can be had.
        """
        self._session.headers.update(self.uuclient.get_auth_headers())

    def get(self, data: Mapping[str, Any] | None = None, log_level: int | None = None) -> RequestResult:
        """Authenticated GET on this session; see :meth:`UuAppClient.get`."""
        level = self.log_level if log_level is None else log_level
        return self.uuclient.custom_request(self._sender("GET"), data, self.uucmd, level)

    def post(self, data: Any = None, log_level: int | None = None) -> RequestResult:
        """Authenticated POST on this session; see :meth:`UuAppClient.post`."""
        _check_dto(data)
        level = self.log_level if log_level is None else log_level
        return self.uuclient.custom_request(self._sender("POST"), data, self.uucmd, level)

    def _sender(self, method: str) -> Callable[[Any], requests.Response]:
        def send(dto: Any) -> requests.Response:
            with self._lock:
                return self.uuclient._send(method, self.uucmd, dto, session=self._session)

        return send

    def close(self) -> None:
        """Close the connection."""
        _close_session(self._session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _response_or_raise(result: RequestResult) -> requests.Response:
    """The response of a ``(response, exc)`` result whatever its HTTP status; the exception otherwise."""
    response, exc = result
    if response is None:
        assert exc is not None
        raise exc
    return response


def _close_session(session: requests.Session) -> None:
    """Close a session's pooled sockets now; urllib3 2.x otherwise leaves that to garbage collection."""
    for adapter in session.adapters.values():
        pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        if pools is not None:
            for key in list(pools.keys()):
                pool = pools.get(key)
                if pool is not None:
                    pool.close()
    session.close()


def encode_multipart(dto: Mapping[str, Any]) -> MultipartEncoder:
    """A ``MultipartEncoder`` for ``dto``: bytes become file parts, other non-strings JSON text."""
    fields: dict[str, Any] = {}
    for key, value in dto.items():
        if isinstance(value, bytes | bytearray):
            fields[key] = (key, bytes(value), "application/octet-stream")
        elif isinstance(value, str | tuple):
            fields[key] = value
        else:
            fields[key] = json.dumps(value)
    return MultipartEncoder(fields=fields)


def _section_errors(name: str, section: Any, keys: tuple[str, ...]) -> list[str]:
    """Problems of a config section that must be an object with these non-empty string keys."""
    if not isinstance(section, Mapping):
        return [f"{name}: expected an object"]
    return [
        f"{name}.{key}: missing or not a non-empty string"
        for key in keys
        if not isinstance(section.get(key), str) or not section.get(key)
    ]


def _check_dto(dto_in: Any) -> None:
    if dto_in is not None and not isinstance(dto_in, dict | list | MultipartEncoder):
        raise ValueError(f"dto_in must be a dict, a list or a MultipartEncoder, not {type(dto_in).__name__}")


def _query(dto_in: Any) -> dict[str, str] | None:
    if not dto_in:
        return None
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in dict(dto_in).items()}


def _describe(exc: requests.RequestException) -> str:
    """A one-line description of a network error that names the kind and the URL, nothing else."""
    url = exc.request.url if exc.request is not None else None
    kind = type(exc).__name__
    if isinstance(exc, requests.Timeout):
        kind = "timed out"
    elif isinstance(exc, requests.ConnectionError):
        kind = "connection failed"
    return f"{kind} ({url})" if url else kind
