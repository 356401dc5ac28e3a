"""Talking to a uuApp server: :class:`UuAppClient` and :class:`UuCmdSession` (the token lives in
:mod:`uun_gateway.oidc`).

The API follows uun-iot's ``UuAppClient`` (``get``, ``post``, ``multipart``, ``custom_request``,
``*_ignore_http_err``, ``get_uucmd_url``, ``get_auth_headers``, ``refresh_token``,
``is_token_expired``) and its ``(response, exception)`` return contract, with these differences:

- the constructor never touches the network (a gateway must boot offline); the first request
  obtains the token;
- every call has a total deadline (``uuApp.timeout``, default 20 s, for connect plus the whole
  answer, both attempts of a 401 retry included; the token grant has its own), and a set stop
  event (``stop=`` or the client's :attr:`UuAppClient.stop_event`) interrupts it at once;
- answers are capped (``uuApp.maxAnswerBytes``, default 1 MiB, read in chunks and abandoned when
  larger) and JSON answers nested more than 64 levels deep are failures, never parsed;
- redirects are never followed: a 3xx is a failure (:class:`RedirectError`, naming its
  ``Location``), so a batch is never re-sent to, or "accepted" by, another host;
- a 2xx whose ``uuAppErrorMap`` holds an entry of ``"type": "error"`` is a failure
  (:class:`UuAppErrorMapError`): uuApp reports failures that way;
- ``get`` sends its dto as a JSON body, as uun-iot does (``query=True`` puts it in the query
  string instead);
- a 401 invalidates the token; a replayable request is retried once with a fresh token;
- without an ``oidcGrantToken`` section, requests carry no ``Authorization`` header at all;
- TLS verification is always on (``caBundle`` may name a CA file);
- connections are kept alive (one session per thread, one per :class:`UuCmdSession`);
- access codes, the client secret and tokens never appear in log records or exception messages;
  what the server chose (error codes and messages, a ``Location``) is logged escaped and bounded.
"""

from __future__ import annotations

import copy
import gzip
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests_toolbelt.multipart.encoder import MultipartEncoder  # type: ignore[import-untyped,unused-ignore]

from .errors import ConfigError
from .httpcall import DEFAULT_MAX_ANSWER_BYTES, BadAnswer, bounded_session, exchange, parse_json
from .oidc import (
    USER_AGENT,
    Token,
    TokenCommandError,
    TokenError,
    TokenGrant,
    UuAppClientError,
    close_session,
    error_codes,
)
from .outage import Deadline, describe_failure, safe_text

__all__ = [
    "UUAPP_SCHEMA",
    "EncodedJson",
    "RedirectError",
    "TokenCommandError",
    "TokenError",
    "UuAppClient",
    "UuAppClientError",
    "UuAppErrorMapError",
    "UuCmdSession",
    "answer_json",
    "base_url",
    "encode_multipart",
    "is_loopback",
]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0
DEFAULT_TOKEN_LEEWAY = 60.0

RequestResult = tuple[requests.Response | None, "TokenError | requests.RequestException | None"]

_GATEWAY_PATTERN = r"^(https?://)?[A-Za-z0-9._~%\-\[\]:]+/?$"
_GATEWAY = {
    "type": "string",
    "pattern": _GATEWAY_PATTERN,
    "format": "uuapp-gateway",
    "description": "a host name (https is implied) or http(s)://host[:port], port 1-65535",
}
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
                "gateway": _GATEWAY,
                "uuAppName": _NAME,
                "awid": _NAME,
                "uuCmdList": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
                "timeout": _TIMEOUT,
                "caBundle": {"type": "string", "minLength": 1, "format": "existing-file"},
                "maxAnswerBytes": {
                    "type": "integer",
                    "minimum": 1024,
                    "maximum": 64 * 1024 * 1024,
                    "description": "largest answer read, in bytes (default 1 MiB); a larger one is a failure",
                },
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
                "gateway": _GATEWAY,
                "uuAppName": _NAME,
                "awid": _NAME,
                "clientId": {"type": "string"},
                "clientSecret": {"type": "string", "writeOnly": True},
                "uuCmd": {"type": "string", "minLength": 1},
                "tokenPath": {"type": "string", "minLength": 1},
                "timeout": _TIMEOUT,
                "caBundle": {"type": "string", "minLength": 1, "format": "existing-file"},
            },
            "additionalProperties": False,
        },
    },
    "dependentRequired": {"oidcGrantToken": ["uuApp", "uuThing"], "uuThing": ["uuApp"]},
}
"""JSON Schema over the whole config document for the keys ``uuApp``, ``uuThing`` and
``oidcGrantToken``; compose it with ``allOf`` (or merge its ``properties``/``dependentRequired``)."""


class RedirectError(requests.RequestException):
    """The server answered a uuCmd with a redirect (3xx), which is never followed: nothing it
    carried counts as delivered. ``location`` is the (escaped, bounded) ``Location`` header."""

    def __init__(self, response: requests.Response) -> None:
        self.location = safe_text(response.headers.get("Location") or "nowhere")
        super().__init__(f"HTTP {response.status_code} redirect to {self.location} (not followed)", response=response)


class UuAppErrorMapError(requests.RequestException):
    """A 2xx answer whose ``uuAppErrorMap`` reports an error (an entry with ``"type": "error"``):
    the call failed. ``codes`` are the error codes as the server sent them (log them only through
    :func:`~uun_gateway.safe_text`); the message is escaped and bounded."""

    def __init__(self, response: requests.Response, errors: Mapping[str, Any]) -> None:
        self.codes = list(errors)
        super().__init__(
            f"HTTP {response.status_code} with uuAppErrorMap errors: {error_codes(errors)}", response=response
        )


@dataclass(frozen=True)
class EncodedJson:
    """A JSON document encoded once, POSTed as is on every attempt (``body``, or ``gzipped`` with
    ``Content-Encoding: gzip`` when given). Build it with :meth:`of`."""

    body: bytes
    gzipped: bytes | None = None

    @classmethod
    def of(cls, dto: Any, *, compress: bool = False) -> EncodedJson:
        body = json.dumps(dto, separators=(",", ":")).encode()
        return cls(body, gzip.compress(body, compresslevel=5, mtime=0) if compress else None)


def base_url(gateway: str) -> str:
    """Turn a ``gateway`` config value into a base URL without a trailing slash.

    A bare host name (optionally with ``:port``) means ``https://host``; a value with a scheme is
    kept as given. Raises :class:`ValueError` for any other scheme, a missing host, a path, or a
    port that is not a number from 1 to 65535.
    """
    value = gateway.strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a host name or http(s) URL: {gateway!r}")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"gateway must not carry a path: {gateway!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"not a TCP port (1-65535) in {gateway!r}")
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


class UuAppClient:
    """Client for one uuApp (``uuApp`` section) authenticated by OIDC (``oidcGrantToken``).

    ``config`` is the full config document. Construction only reads it (and warns about plain
    http to a non-loopback host); it never blocks on the network and raises
    :class:`~uun_gateway.errors.ConfigError` when a present section lacks a required key.

    ``fn_token_request`` replaces the function that POSTs the grant (called like
    ``requests.post(url, json=..., headers=..., timeout=..., verify=..., allow_redirects=False)``).
    ``refresh_token_on_init`` exists for uun-iot compatibility and defaults to False: when True the
    constructor obtains the token and may block up to the timeout and raise :class:`TokenError`.
    A token is renewed when less than ``token_leeway`` seconds of its lifetime remain. ``timeout``
    (seconds) overrides ``uuApp.timeout``/``oidcGrantToken.timeout`` (default 20 s): the total
    time of one call. ``stop_event``, when set, interrupts every call in flight and fails new
    ones (a call's own ``stop=`` argument takes precedence).

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
        stop_event: threading.Event | None = None,
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
        bases = {"uuApp": "", "oidcGrantToken": ""}
        for section in bases:
            value = self._config.get(section)
            if not errors and isinstance(value, Mapping):
                try:
                    bases[section] = base_url(value["gateway"])
                except ValueError as exc:
                    errors.append(f"{section}.gateway: {exc}")
        if errors:
            raise ConfigError(errors)

        self.uuapp: dict[str, Any] = app
        self.uucmd_list: dict[str, str] = dict(app.get("uuCmdList") or {})
        self.token_leeway = float(token_leeway)
        self.timeout = float(timeout if timeout is not None else app.get("timeout", DEFAULT_TIMEOUT))
        self.max_answer_bytes = int(app.get("maxAnswerBytes", DEFAULT_MAX_ANSWER_BYTES))
        self.stop_event = stop_event
        self._verify: str | bool = app.get("caBundle") or True
        self._app_base = bases["uuApp"]
        self._app_url = f"{self._app_base}/{app['uuAppName']}/{app['awid']}"
        self._tokens: TokenGrant | None = None
        self.token_path: str | None = None
        if oidc is not None:
            assert thing is not None  # checked above
            credentials: dict[str, Any] = {
                "grant_type": "password",
                "accessCode1": thing["accessCode1"],
                "accessCode2": thing["accessCode2"],
                "scope": f"openid {self._app_base}/{app['uuAppName']}/{app['awid']}",
            }
            if oidc.get("clientId"):
                credentials["client_id"] = oidc["clientId"]
            if oidc.get("clientSecret"):
                credentials["client_secret"] = oidc["clientSecret"]
            self.token_path = oidc["tokenPath"]
            self._tokens = TokenGrant(
                url=f"{bases['oidcGrantToken']}/{oidc['uuAppName']}/{oidc['awid']}/{oidc['uuCmd'].lstrip('/')}",
                credentials=credentials,
                timeout=float(timeout if timeout is not None else oidc.get("timeout", self.timeout)),
                verify=oidc.get("caBundle") or self._verify,
                token_path=self.token_path,
                leeway=self.token_leeway,
                post=fn_token_request,
            )
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

        for url in bases.values():
            if url.startswith("http://") and not is_loopback(url):
                logger.warning("plain http to %s: traffic and tokens are not encrypted", url)
        if refresh_token_on_init:
            self.refresh_token()

    @property
    def auth_enabled(self) -> bool:
        """True when an ``oidcGrantToken`` section is configured (requests carry a bearer token)."""
        return self._tokens is not None

    @property
    def grants(self) -> int:
        """How many tokens this client obtained from the OIDC server (for tests and status)."""
        return self._tokens.grants if self._tokens is not None else 0

    @property
    def _token(self) -> Token | None:
        return self._tokens.token if self._tokens is not None else None

    # ------------------------------------------------------------------ URLs and headers
    def get_uucmd_url(self, uucmd: str) -> str:
        """The full URL of ``uucmd`` (e.g. ``gateway/heartbeat``) on the configured uuApp."""
        return f"{self._app_url}/{uucmd.lstrip('/')}"

    def get_auth_headers(
        self, content_type: str | None = "application/json", *, stop: threading.Event | None = None
    ) -> dict[str, str]:
        """Headers for a request: Content-Type (unless None), User-Agent and, with auth, the bearer token.

        Obtains or renews the token when needed; may block up to the OIDC timeout (less when
        ``stop`` is set). Raises :class:`TokenError` when no valid token can be had.
        """
        headers = {"User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        if self._tokens is not None:
            self._tokens.refresh(stop or self.stop_event)
            token = self._tokens.token
            if token is None:
                raise TokenError("no token available")
            headers["Authorization"] = f"Bearer {token.value}"
        return headers

    # ------------------------------------------------------------------ token
    def is_token_expired(self) -> bool:
        """True when no token is held or less than ``token_leeway`` seconds of it remain.

        Without auth configured this is always False. Does not touch the network.
        """
        return self._tokens is not None and self._tokens.is_expired()

    def refresh_token(self) -> bool:
        """Make sure a valid token is held: load the cache file, or grant a new one when it expired.

        Returns False when nothing had to be granted (auth disabled, or the held/cached token is
        still valid), True when a new token was obtained and cached. Blocks up to the OIDC timeout.
        Raises :class:`TokenError` on network or response trouble and :class:`TokenCommandError`
        when the server refuses the grant; see :meth:`uun_gateway.oidc.TokenGrant.refresh`.
        """
        return self._tokens.refresh(self.stop_event) if self._tokens is not None else False

    def invalidate_token(self, token: str | None = None) -> None:
        """Forget the held token (e.g. after the server answered 401); the next request grants anew.

        With ``token`` (the value the refused request carried), only when the held token is still
        that one: a late 401 for an old token must not throw away one another thread renewed since.
        """
        if self._tokens is not None:
            self._tokens.invalidate(token)

    # ------------------------------------------------------------------ sessions
    def new_session(self) -> requests.Session:
        """A keep-alive session (bounded, see :mod:`uun_gateway.httpcall`) that :meth:`close` closes."""
        session = bounded_session()
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
            close_session(session)
        if self._tokens is not None:
            self._tokens.close()
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
        """Call ``custom_send_f(dto_in or {})``, judge the answer, and return ``(response, exc)``.

        ``exc`` is None on success: a 2xx whose body is not JSON, or is JSON without an error in its
        ``uuAppErrorMap``. Otherwise the response comes with the exception: ``requests.HTTPError``
        (4xx/5xx), :class:`RedirectError` (3xx), :class:`UuAppErrorMapError` (a 2xx reporting an
        error) or :class:`~uun_gateway.httpcall.BadAnswer` (too large, nested too deeply); on a
        network error, a timeout, a stop or :class:`TokenError` the response is None. Each failure
        is logged once at ``log_level`` with ``label``. Other exceptions propagate.
        """
        label = safe_text(label or getattr(custom_send_f, "__name__", "request"))
        try:
            response = custom_send_f(dto_in if dto_in is not None else {})
        except TokenError as exc:
            logger.log(log_level, "%s: no token: %s", label, exc)
            return None, exc
        except requests.RequestException as exc:
            if isinstance(exc, BadAnswer):
                logger.log(log_level, "%s: %s", label, exc)
            else:
                logger.log(log_level, "%s: %s", label, _describe(exc))
            return None, exc
        problem = _judge(response)
        if problem is not None:
            logger.log(log_level, "%s: %s", label, problem)
        return response, problem

    def _send(
        self,
        method: str,
        uucmd: str,
        dto_in: Any,
        session: requests.Session | None = None,
        *,
        query: bool = False,
        stop: threading.Event | None = None,
    ) -> requests.Response:
        """Send one call (retrying once with a fresh token after a 401 when the body is replayable),
        both attempts within one deadline of ``timeout`` seconds."""
        url = self.get_uucmd_url(uucmd)
        stop = stop or self.stop_event
        deadline = Deadline(self.timeout)
        for attempt in (1, 2):
            if isinstance(dto_in, MultipartEncoder):
                headers = self.get_auth_headers(dto_in.content_type, stop=stop)
                kwargs: dict[str, Any] = {"data": dto_in}
            elif isinstance(dto_in, EncodedJson):
                headers = self.get_auth_headers(stop=stop)
                if dto_in.gzipped is not None:
                    headers["Content-Encoding"] = "gzip"
                kwargs = {"data": dto_in.gzipped if dto_in.gzipped is not None else dto_in.body}
            elif method == "GET" and query:
                headers = self.get_auth_headers(None, stop=stop)
                kwargs = {"params": _query(dto_in)}
            else:
                headers = self.get_auth_headers(stop=stop)
                kwargs = {"data": json.dumps(dto_in, separators=(",", ":")).encode()}
            response = exchange(
                session or self._session(),
                method,
                url,
                deadline=deadline,
                stop=stop,
                max_bytes=self.max_answer_bytes,
                headers=headers,
                verify=self._verify,
                **kwargs,
            )
            if response.status_code != 401 or self._tokens is None:
                return response
            self.invalidate_token(headers.get("Authorization", "").removeprefix("Bearer ") or None)
            if attempt == 2 or isinstance(dto_in, MultipartEncoder):
                return response
            response.close()
        raise AssertionError("unreachable")

    def get(
        self,
        uucmd: str,
        dto_in: Mapping[str, Any] | None = None,
        log_level: int = logging.WARNING,
        *,
        query: bool = False,
        stop: threading.Event | None = None,
    ) -> RequestResult:
        """Authenticated GET of ``uucmd`` with ``dto_in`` as a JSON body, as uun-iot sends it (``{}``
        when None); with ``query=True`` in the query string instead (non-scalars as JSON text).

        Returns ``(response, exc)`` as :meth:`custom_request`; never raises for network, HTTP or
        token errors. Blocks at most the timeout (plus a token grant), less when ``stop`` is set.
        """
        return self.custom_request(
            lambda dto: self._send("GET", uucmd, dto, query=query, stop=stop), dto_in, uucmd, log_level
        )

    def post(
        self, uucmd: str, dto_in: Any = None, log_level: int = logging.WARNING, *, stop: threading.Event | None = None
    ) -> RequestResult:
        """Authenticated POST of ``dto_in`` (a dict or list sent as JSON, an :class:`EncodedJson`, or a
        ``MultipartEncoder``).

        Returns ``(response, exc)`` as :meth:`custom_request`. Raises :class:`ValueError` for any
        other ``dto_in`` type. Blocks at most the timeout (plus a token grant), less when ``stop``
        is set.
        """
        _check_dto(dto_in)
        return self.custom_request(lambda dto: self._send("POST", uucmd, dto, stop=stop), dto_in, uucmd, log_level)

    def multipart(
        self,
        uucmd: str,
        dto_in: Mapping[str, Any] | None = None,
        log_level: int = logging.WARNING,
        *,
        stop: threading.Event | None = None,
    ) -> RequestResult:
        """Authenticated multipart/form-data POST of ``dto_in`` (values as ``MultipartEncoder`` takes them).

        ``bytes`` values become file parts. Retried once with a fresh token after a 401.
        """

        def send(dto: Mapping[str, Any]) -> requests.Response:
            response = self._send("POST", uucmd, encode_multipart(dto), stop=stop)
            if response.status_code == 401 and self._tokens is not None:
                response.close()
                response = self._send("POST", uucmd, encode_multipart(dto), stop=stop)
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

    def get(
        self,
        data: Mapping[str, Any] | None = None,
        log_level: int | None = None,
        *,
        query: bool = False,
        stop: threading.Event | None = None,
    ) -> RequestResult:
        """Authenticated GET on this session; see :meth:`UuAppClient.get`."""
        level = self.log_level if log_level is None else log_level
        return self.uuclient.custom_request(self._sender("GET", query, stop), data, self.uucmd, level)

    def post(
        self, data: Any = None, log_level: int | None = None, *, stop: threading.Event | None = None
    ) -> RequestResult:
        """Authenticated POST on this session; see :meth:`UuAppClient.post`."""
        _check_dto(data)
        level = self.log_level if log_level is None else log_level
        return self.uuclient.custom_request(self._sender("POST", False, stop), data, self.uucmd, level)

    def _sender(self, method: str, query: bool, stop: threading.Event | None) -> Callable[[Any], requests.Response]:
        def send(dto: Any) -> requests.Response:
            with self._lock:
                return self.uuclient._send(method, self.uucmd, dto, session=self._session, query=query, stop=stop)

        return send

    def close(self) -> None:
        """Close the connection."""
        close_session(self._session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BODY = "_uun_gateway_json"  # where answer_json keeps a parsed body on its response
_NOT_JSON = object()


def answer_json(response: requests.Response) -> Any:
    """The JSON body of an answer, parsed once (kept on the response) with the depth bound.

    Raises :class:`~uun_gateway.httpcall.AnswerTooDeep` beyond 64 levels and :class:`ValueError`
    when the body is not JSON.
    """
    cached = getattr(response, _BODY, None)
    if cached is None:
        try:
            cached = parse_json(response.content)
        except BadAnswer:
            raise
        except ValueError:
            cached = _NOT_JSON
        setattr(response, _BODY, cached)
    if cached is _NOT_JSON:
        raise ValueError("the answer is not JSON")
    return cached


def _judge(response: requests.Response) -> requests.RequestException | None:
    """Why an answer is a failure (None when it is a success)."""
    status = response.status_code
    if 300 <= status < 400:
        return RedirectError(response)
    try:
        body = answer_json(response)
    except BadAnswer as exc:
        return exc
    except ValueError:
        body = None
    errors = _error_entries(body)
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        # the reason phrase and the error map are the server's text: escaped and bounded
        error_map = body.get("uuAppErrorMap") if isinstance(body, dict) else None
        codes = error_codes(error_map) if isinstance(error_map, dict) else ""
        exc.args = (f"HTTP {status}" + (f" ({codes})" if codes else ""),)
        return exc
    if errors:
        return UuAppErrorMapError(response, errors)
    return None


def _error_entries(body: Any) -> dict[str, Any]:
    """The entries of a body's ``uuAppErrorMap`` whose type is ``error``."""
    error_map = body.get("uuAppErrorMap") if isinstance(body, dict) else None
    if not isinstance(error_map, dict):
        return {}
    return {k: v for k, v in error_map.items() if isinstance(v, dict) and v.get("type") == "error"}


def _response_or_raise(result: RequestResult) -> requests.Response:
    """The response of a ``(response, exc)`` result whatever its HTTP status; the exception otherwise."""
    response, exc = result
    if response is None:
        assert exc is not None
        raise exc
    return response


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
    if dto_in is not None and not isinstance(dto_in, dict | list | MultipartEncoder | EncodedJson):
        raise ValueError(
            f"dto_in must be a dict, a list, an EncodedJson or a MultipartEncoder, not {type(dto_in).__name__}"
        )


def _query(dto_in: Any) -> dict[str, str] | None:
    if not dto_in:
        return None
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in dict(dto_in).items()}


def _describe(exc: requests.RequestException) -> str:
    """A one-line description of a network error that names the kind and the URL, nothing else."""
    url = exc.request.url if exc.request is not None else None
    kind = describe_failure(exc)
    return f"{kind} ({safe_text(url)})" if url else kind
