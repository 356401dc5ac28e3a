"""A fake uuApp (and its OIDC server): a real threaded HTTP/1.1 server on 127.0.0.1 for tests and benches.

It serves, under ``/<app>/<awid>/``:

- ``oidc/grantToken`` (under ``/<oidc_app>/<oidc_awid>/``): checks the access codes (and client
  credentials when configured), answers ``{"id_token", "expires_in"}``; tokens are JWT-shaped with
  an ``exp`` claim on the server's (optionally skewed) clock;
- ``gateway/heartbeat``: records the dto;
- ``gateway/getConfiguration``: answers :attr:`FakeUuApp.gateway_config`;
- any other uuCmd: an upload: records the dto and answers ``{"accepted": [ids]}`` for the ids in
  ``dto["data"]`` (JSON) or the ``id`` field (multipart), minus :attr:`FakeUuApp.reject_ids`.

With ``require_auth`` every app request needs ``Authorization: Bearer <token>`` of an unexpired
token (401 otherwise). Faults are queued per uuCmd with :meth:`FakeUuApp.fault`: ``"5xx"``,
``"401"``, ``"slow"`` (answers after ``delay`` s), ``"reset"`` (TCP RST before processing),
``"lost"`` (processes and records, then RST instead of the answer), ``"malformed"`` (200 with a
body that is not JSON), ``"302"``/``"307"`` (a redirect to :attr:`FakeUuApp.redirect_to` plus the
same path, not processed), ``"drip"`` (the whole answer one byte every :attr:`FakeUuApp.drip_interval`
seconds, headers included), ``"drip-body"`` (headers at once, then the body dripping),
``"headers-cut"`` (a status line and half a header, then nothing until the client goes), ``"huge"``
(a 200 of 100 MB without Content-Length), ``"deep"`` (a 200 whose JSON nests 100,000 deep) and
``"errormap"`` (a 200 that accepts every id but whose ``uuAppErrorMap`` holds an error, with the
hostile code :data:`FORGED_KEY`; not processed). A gzip request body is decoded unless
:attr:`FakeUuApp.accept_gzip` is False (then 415). :meth:`FakeUuApp.stop` then
:meth:`FakeUuApp.start` restarts it on the same port. Everything it received is in
:attr:`FakeUuApp.records` (thread-safe; use :meth:`FakeUuApp.wait_for`).
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import email.utils
import gzip
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

FAULTS = (
    "5xx",
    "401",
    "slow",
    "reset",
    "lost",
    "malformed",
    "302",
    "307",
    "drip",
    "drip-body",
    "headers-cut",
    "huge",
    "deep",
    "errormap",
)
HUGE_BYTES = 100 * 1024 * 1024
DEEP_LEVELS = 100_000
FORGED_KEY = "fake/failed\nERROR forged log line " + "k" * 100_000
"""The error code the ``errormap`` fault reports: a newline to forge a log line, and 100 kB long."""


@dataclass
class Record:
    """One request the server processed (faults ``reset`` and ``5xx`` included, marked in ``fault``)."""

    method: str
    cmd: str
    headers: dict[str, str]
    dto: Any
    fault: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    peer: tuple[str, int] = ("", 0)
    at: float = field(default_factory=time.monotonic)

    @property
    def processed(self) -> bool:
        """Whether the server acted on the request (even if the client never saw the answer)."""
        return self.fault in (None, "slow", "lost", "malformed")


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], fake: FakeUuApp) -> None:
        self.fake = fake
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients timing out or going away are expected
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.active_lock:
            self.active.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.active_lock:
            self.active.discard(request)
        super().shutdown_request(request)

    def abort_connections(self) -> None:
        with self.active_lock:
            conns = list(self.active)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.formatdate(self.server.fake.now(), usegmt=True)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:  # the client went away mid-request: nothing to act on
            self.close_connection = True
            return
        segments = parts.path.strip("/").split("/", 2)
        if len(segments) < 3:
            self._reply(404, {"uuAppErrorMap": {"fake/not-found": {}}})
            return
        app, awid, cmd = segments
        headers = {k.lower(): v for k, v in self.headers.items()}
        if headers.get("content-encoding", "identity") == "gzip":
            if not fake.accept_gzip:
                self._reply(415, {"uuAppErrorMap": {"fake/unsupported-encoding": {"type": "error"}}})
                return
            raw = gzip.decompress(raw)
        dto: Any
        files: dict[str, bytes] = {}
        ctype = headers.get("content-type", "")
        if method == "GET" and not raw:
            dto = dict(parse_qsl(parts.query))
        elif ctype.startswith("multipart/form-data"):
            dto, files = _parse_multipart(ctype, raw)
        else:
            try:
                dto = json.loads(raw) if raw else {}
            except ValueError:
                self._reply(400, {"uuAppErrorMap": {"fake/invalid-json": {}}})
                return
        fault = fake._take_fault(cmd)
        record = Record(method, cmd, headers, dto, fault, files, self.client_address)
        if fault in ("302", "307", "drip", "headers-cut", "huge", "deep"):
            fake._record(record)
            if fault in ("302", "307"):
                self.send_response(int(fault))
                self.send_header("Location", f"{fake.redirect_to}{self.path}")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            elif fault == "drip":
                self._drip(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100014\r\n\r\n"
                    + b'{"accepted": ['
                    + b" " * 100000
                )
            elif fault == "headers-cut":
                self._stall_after(b"HTTP/1.1 200 OK\r\nContent-Ty")
            elif fault == "huge":
                self._huge()
            else:
                self._reply_raw(200, b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS, "application/json")
            return
        if fault == "drip-body":
            fake._record(record)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.flush()
            self._drip(b'{"accepted": [' + b" " * 100000)
            return
        if fault == "reset":
            fake._record(record)
            self._reset()
            return
        if fault == "slow":
            fake._stopping.wait(fake.slow_delay)
        if fault == "5xx":
            fake._record(record)
            self._reply(503, {"uuAppErrorMap": {"fake/unavailable": {"type": "error"}}})
            return
        if fault == "401":
            fake._record(record)
            self._reply(401, {"uuAppErrorMap": {"fake/token-expired": {"type": "error"}}})
            return
        if (app, awid) == (fake.oidc_app, fake.oidc_awid) and cmd == "oidc/grantToken":
            status, body = fake._grant(dto)
        elif (app, awid) != (fake.app, fake.awid):
            status, body = 404, {"uuAppErrorMap": {"fake/unknown-app": {}}}
        elif fake.require_auth and not fake._authorized(headers.get("authorization", "")):
            status, body = 401, {"uuAppErrorMap": {"fake/unauthorized": {"type": "error"}}}
            record.fault = "unauthorized"
        elif cmd == "gateway/heartbeat":
            status, body = 200, {"uuAppErrorMap": {}}
        elif cmd == "gateway/getConfiguration":
            status, body = fake._get_config()
        else:
            status, body = fake._upload(dto)
        fake._record(record)
        if fault == "lost":
            self._reset()
            return
        if fault == "malformed":
            self._reply_raw(200, b'{"accepted": [1, 2', "application/json")
            return
        if fault == "errormap" and isinstance(body, dict):
            body = {**body, "uuAppErrorMap": {FORGED_KEY: {"type": "error", "message": "no\nway " * 1000}}}
        self._reply(status, body)

    def _drip(self, data: bytes) -> None:
        """Send ``data`` one byte at a time until done, the client goes away or the server stops."""
        self.close_connection = True
        fake = self.server.fake
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if fake._stopping.wait(fake.drip_interval):
                    return
        except OSError:
            return

    def _stall_after(self, data: bytes) -> None:
        """Send ``data``, then nothing until the client closes the connection (or 60 s pass)."""
        self.close_connection = True
        try:
            self.wfile.write(data)
            self.wfile.flush()
            self.connection.settimeout(60)
            while self.connection.recv(4096):
                pass
        except OSError:
            return

    def _huge(self) -> None:
        """A 200 of :data:`HUGE_BYTES` without Content-Length (the client cannot refuse it up front)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b" " * 65536
        try:
            self.wfile.write(b'{"accepted": [')
            for _ in range(HUGE_BYTES // len(chunk)):
                if self.server.fake._stopping.is_set():
                    return
                self.wfile.write(chunk)
            self.wfile.write(b"]}")
        except OSError:
            return

    def _reply(self, status: int, body: Any) -> None:
        self._reply_raw(status, json.dumps(body).encode(), "application/json")

    def _reply_raw(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def _parse_multipart(ctype: str, raw: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        if part.get_filename() is not None:
            files[name] = payload
        else:
            fields[name] = payload.decode()
    return fields, files


class FakeUuApp:
    """The fake server; see the module docstring. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        app: str = "uu-fake-app",
        awid: str = "awid0",
        oidc_app: str = "uu-oidc-fake",
        oidc_awid: str = "oidc0",
        access_codes: tuple[str, str] = ("code-one-SECRET", "code-two-SECRET"),
        client: tuple[str, str] | None = None,
        token_ttl: float = 3600.0,
        send_expires_in: bool = True,
        clock_offset: float = 0.0,
        require_auth: bool = True,
        slow_delay: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app, self.awid, self.oidc_app, self.oidc_awid = app, awid, oidc_app, oidc_awid
        self.access_codes = access_codes
        self.client = client
        self.token_ttl = token_ttl
        self.send_expires_in = send_expires_in
        self.clock_offset = clock_offset
        self.require_auth = require_auth
        self.slow_delay = slow_delay
        self.ssl_context = ssl_context
        self.gateway_config: dict[str, Any] | None = None
        self.redirect_to = "http://127.0.0.1:9"
        """Where the ``302``/``307`` faults send the client (scheme://host:port, no path)."""
        self.drip_interval = 0.05
        self.accept_gzip = True
        """Whether a gzip-encoded request body is understood (else the answer is 415)."""
        self.reject_ids: set[Any] = set()
        self.upload_handler: Callable[[Any], tuple[int, Any]] | None = None
        self.records: list[Record] = []
        self.grant_dtos: list[Any] = []
        self.tokens: dict[str, float] = {}
        self.port = 0
        self._lock = threading.Condition()
        self._faults: dict[str | None, deque[str]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token_seq = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Listen (on the previous port after a stop, else a free one) and serve in a thread."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-uuapp:{self.port}"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut every open connection and join every server thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.abort_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> float:
        """The server's clock (wall clock plus ``clock_offset``)."""
        return time.time() + self.clock_offset

    # ------------------------------------------------------------------ config for clients
    def config(self, token_path: str | None = None, auth: bool = True, **uucmds: str) -> dict[str, Any]:
        """A config document pointing a UuAppClient at this server (``oidcGrantToken`` when ``auth``)."""
        cfg: dict[str, Any] = {
            "gateway": {},
            "uuApp": {
                "gateway": self.url,
                "uuAppName": self.app,
                "awid": self.awid,
                "uuCmdList": {
                    "gatewayHeartbeat": "gateway/heartbeat",
                    "gatewayGetConfiguration": "gateway/getConfiguration",
                    **uucmds,
                },
                "timeout": 2,
            },
        }
        if auth:
            cfg["uuThing"] = {
                "uuIdentity": "1234-5678-1",
                "accessCode1": self.access_codes[0],
                "accessCode2": self.access_codes[1],
            }
            cfg["oidcGrantToken"] = {
                "gateway": self.url,
                "uuAppName": self.oidc_app,
                "awid": self.oidc_awid,
                "uuCmd": "oidc/grantToken",
                "tokenPath": token_path or "oidc-token",
            }
            if self.client:
                cfg["oidcGrantToken"]["clientId"] = self.client[0]
                cfg["oidcGrantToken"]["clientSecret"] = self.client[1]
        return cfg

    # ------------------------------------------------------------------ faults and inspection
    def fault(self, kind: str, cmd: str | None = None, count: int = 1) -> None:
        """Apply ``kind`` to the next ``count`` requests for ``cmd`` (any uuCmd when None)."""
        if kind not in FAULTS:
            raise ValueError(kind)
        with self._lock:
            self._faults.setdefault(cmd, deque()).extend([kind] * count)

    def clear_faults(self) -> None:
        """Forget every pending fault: the server answers normally again."""
        with self._lock:
            self._faults.clear()

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid (the server answers 401 to them)."""
        with self._lock:
            self.tokens.clear()

    def for_cmd(self, cmd: str, ok_only: bool = False) -> list[Record]:
        """A snapshot of the records for ``cmd`` (only the unfaulted ones when ``ok_only``)."""
        with self._lock:
            return [r for r in self.records if r.cmd == cmd and not (ok_only and r.fault)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` (called under the record lock) is true; False on timeout."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

    def _take_fault(self, cmd: str) -> str | None:
        with self._lock:
            for key in (cmd, None):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _record(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)
            self._lock.notify_all()

    # ------------------------------------------------------------------ endpoints
    def _grant(self, dto: Any) -> tuple[int, Any]:
        with self._lock:
            self.grant_dtos.append(dto)
        ok = isinstance(dto, dict) and (dto.get("accessCode1"), dto.get("accessCode2")) == self.access_codes
        if ok and self.client:
            ok = (dto.get("client_id"), dto.get("client_secret")) == self.client
        if not ok:
            return 401, {"uuAppErrorMap": {"uu-oidc/invalid-credentials": {"type": "error"}}}
        with self._lock:
            self._token_seq += 1
            exp = self.now() + self.token_ttl
            claims = {"sub": "gw", "exp": int(exp), "n": self._token_seq}
            payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            token = f"eyJhbGciOiJub25lIn0.{payload}.sig{self._token_seq}"
            self.tokens[token] = time.monotonic() + self.token_ttl
        body: dict[str, Any] = {"id_token": token, "token_type": "Bearer", "uuAppErrorMap": {}}
        if self.send_expires_in:
            body["expires_in"] = self.token_ttl
        return 200, body

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        with self._lock:
            deadline = self.tokens.get(header[7:])
        return deadline is not None and deadline > time.monotonic()

    def _get_config(self) -> tuple[int, Any]:
        if self.gateway_config is None:
            return 404, {"uuAppErrorMap": {"fake/no-config": {}}}
        return 200, {**self.gateway_config, "uuAppErrorMap": {}}

    def _upload(self, dto: Any) -> tuple[int, Any]:
        if self.upload_handler is not None:
            return self.upload_handler(dto)
        if isinstance(dto, dict) and isinstance(dto.get("data"), list):
            ids = [item.get("id") for item in dto["data"] if isinstance(item, dict)]
        elif isinstance(dto, dict) and "id" in dto:
            ids = [json.loads(dto["id"])]
        else:
            ids = []
        accepted = [i for i in ids if i not in self.reject_ids]
        return 200, {"accepted": accepted, "uuAppErrorMap": {}}
