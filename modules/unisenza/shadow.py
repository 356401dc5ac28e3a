"""One MQTT-over-websocket connection to AWS IoT device shadows (classic, unnamed shadows).

A :class:`ShadowConnection` owns one paho-mqtt client and its network thread. It

- signs every websocket upgrade through a caller-supplied signer (any exception from it is
  turned into ``OSError`` so paho retries with backoff instead of its thread dying);
- subscribes ``get``/``update`` ``accepted``/``rejected`` for each of its things, one
  SUBSCRIBE per thing (4 filters; AWS allows at most 8 per SUBSCRIBE), and is *ready* once
  every SUBACK has arrived without a failure code;
- correlates requests and replies by ``clientToken``;
- hands every ``accepted`` document to ``on_document`` (in the network thread: the callback
  must not block) before completing the matching request, so a caller that waited for a
  reply sees the model already updated;
- reports readiness and loss through ``on_ready``/``on_lost`` (network thread, must not block);
- reconnects by itself with exponential backoff; after a refused handshake the signer is asked
  for fresh credentials;
- bounds each connection attempt as a whole: TCP, TLS, the websocket upgrade and the CONNACK
  must be done within ``connect_timeout`` seconds, else the attempt's socket is shut down (and
  paho retries); :meth:`stop` shuts down an attempt in progress, so it never waits for a server
  that answers byte by byte.

No callback of this class blocks; :meth:`request` blocks the caller for at most ``timeout``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .endpoints import Endpoints
from .errors import ClientError

log = logging.getLogger(__name__)

OPERATIONS = ("get", "update")
RESULTS = ("accepted", "rejected")

Signer = Callable[[dict[str, str], bool], dict[str, str]]
"""``signer(default_headers, fresh)`` returns the upgrade headers to send; ``fresh`` is True when
the previous handshake did not lead to a connection (credentials may be stale)."""


def shadow_topic(thing: str, op: str, result: str | None = None) -> str:
    """``$aws/things/<thing>/shadow/<op>[/<result>]``."""
    base = f"$aws/things/{thing}/shadow/{op}"
    return f"{base}/{result}" if result else base


class _Client(mqtt.Client):
    """paho's client, telling its owner about each new socket (before TLS and the websocket
    upgrade), so that a connection attempt can be cut short."""

    on_new_socket: Callable[[socket.socket], None] | None = None

    def _create_socket_connection(self) -> socket.socket:
        sock = super()._create_socket_connection()
        if self.on_new_socket is not None:
            self.on_new_socket(sock)
        return sock


class ShadowRequest:
    """A request in flight. Completed by the reply (accepted document, or ClientError for a
    rejected reply or a lost connection)."""

    def __init__(self, connection: ShadowConnection, thing: str, op: str) -> None:
        self.connection = connection
        self.thing = thing
        self.op = op
        self.token = str(uuid.uuid4())
        self.future: Future[dict[str, Any]] = Future()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait at most ``timeout`` seconds; return the accepted document or raise ClientError
        (rejected, connection lost, closed, or no reply in time; the request is then forgotten)."""
        try:
            return self.future.result(timeout)
        except FutureTimeout:
            self.connection._forget(self.token)
            raise ClientError(f"no reply to {self.op} of {self.thing} within {timeout:.3g} s") from None


class ShadowConnection:
    """A self-healing shadow connection for a fixed set of things. See the module docstring."""

    def __init__(
        self,
        things: Sequence[str],
        endpoints: Endpoints,
        signer: Signer,
        on_document: Callable[[str, dict[str, Any]], None],
        *,
        client_id: str,
        on_ready: Callable[[ShadowConnection], None] | None = None,
        on_lost: Callable[[ShadowConnection], None] | None = None,
        keepalive: int = 30,
        reconnect_delay: tuple[float, float] = (1.0, 120.0),
        connect_timeout: float = 10.0,
    ) -> None:
        if not things:
            raise ValueError("a shadow connection needs at least one thing")
        self.things: tuple[str, ...] = tuple(things)
        self.client_id = client_id
        self._endpoints = endpoints
        self._signer = signer
        self._on_document = on_document
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._pending: dict[str, ShadowRequest] = {}
        self._suback_pending: dict[int, str] = {}
        self._subscribe_failed = False
        self._handshake_unconfirmed = False
        self._network_thread: int | None = None
        self._started = False
        self._closed = False
        self.connects = 0
        self.handshakes = 0
        self._connect_timeout = connect_timeout
        self._attempt: socket.socket | None = None  # the socket of a connection attempt in progress
        self._attempt_timer: threading.Timer | None = None

        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            transport="websockets",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.tls_set_context(ssl.create_default_context(cafile=endpoints.ca_file))
        client.ws_set_options(path=endpoints.iot_path, headers=self._ws_headers)
        client.reconnect_delay_set(min_delay=reconnect_delay[0], max_delay=reconnect_delay[1])  # type: ignore[arg-type]
        client.connect_timeout = connect_timeout
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        client.on_connect_fail = self._handle_connect_fail
        client.on_new_socket = self._attempt_started
        self._mqtt = client

    def __repr__(self) -> str:
        return f"ShadowConnection({self.client_id!r}, things={len(self.things)})"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background (never blocks on the network). Idempotent.
        Raises ClientError after :meth:`stop`."""
        with self._lock:
            if self._closed:
                raise ClientError("connection is closed")
            if self._started:
                return
            self._started = True
        self._mqtt.connect_async(self._endpoints.iot_host, self._endpoints.iot_port, self._keepalive)
        self._mqtt.loop_start()

    def stop(self) -> None:
        """Disconnect, fail pending requests with ClientError and join the network thread.
        Idempotent; must not be called from a callback of this connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
            pending = list(self._pending.values())
            self._pending.clear()
        self._ready.clear()
        for p in pending:
            p.future.set_exception(ClientError("connection closed"))
        self._end_attempt(shut_down=True)
        if started:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
        # paho closes its wake-up socket pair only when the client is garbage collected.
        reset = getattr(self._mqtt, "_reset_sockets", None)
        if callable(reset):
            reset(sockpair_only=True)

    @property
    def ready(self) -> bool:
        """True while connected with every subscription granted."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None) -> bool:
        """Block until ready or ``timeout`` seconds passed; returns :attr:`ready`."""
        return self._ready.wait(timeout)

    # -- requests ------------------------------------------------------------------------------

    def start_request(self, thing: str, op: str, payload: dict[str, Any] | None = None) -> ShadowRequest:
        """Publish a shadow request; the returned handle's :meth:`ShadowRequest.result` waits for
        the reply. Raises ClientError at once when not ready or the publish fails."""
        if thing not in self.things:
            raise ValueError(f"{thing!r} is not served by this connection")
        if op not in OPERATIONS:
            raise ValueError(f"unknown shadow operation {op!r}")
        if not self._ready.is_set():
            raise ClientError(f"cannot {op} shadow of {thing}: not connected to the cloud")
        request = ShadowRequest(self, thing, op)
        body = dict(payload or {})
        body["clientToken"] = request.token
        with self._lock:
            if self._closed:
                raise ClientError("connection is closed")
            self._pending[request.token] = request
        info = self._mqtt.publish(shadow_topic(thing, op), json.dumps(body), qos=0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._forget(request.token)
            raise ClientError(f"cannot {op} shadow of {thing}: publish failed ({mqtt.error_string(info.rc)})")
        log.debug("sent %s for %s", op, thing)
        return request

    def _forget(self, token: str) -> None:
        with self._lock:
            self._pending.pop(token, None)

    def request(
        self, thing: str, op: str, payload: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Publish a request and wait for its reply for at most ``timeout`` seconds.

        Returns the accepted document. Raises ClientError when not connected, rejected, on
        connection loss, or without a reply in time. Raises RuntimeError when called from this
        connection's network thread (it would deadlock)."""
        if threading.get_ident() == self._network_thread:
            raise RuntimeError("ShadowConnection.request() called from the MQTT network thread")
        return self.start_request(thing, op, payload).result(timeout)

    # -- paho callbacks (network thread; never block) ------------------------------------------

    def _ws_headers(self, headers: dict[str, str]) -> dict[str, str]:
        with self._lock:
            fresh = self._handshake_unconfirmed
            self._handshake_unconfirmed = True
            self.handshakes += 1
        try:
            return self._signer(headers, fresh)
        except Exception as exc:
            # paho's loop retries only OSError; anything else would end its thread silently.
            log.warning("%s: cannot sign the websocket upgrade: %s", self.client_id, str(exc))
            if isinstance(exc, OSError):
                raise
            raise OSError(f"signing the websocket upgrade failed: {exc}") from exc

    # -- the deadline of a connection attempt ---------------------------------------------------

    def _attempt_started(self, opened: socket.socket) -> None:
        """paho's network thread opened a socket: it must be connected within the deadline.

        A duplicate of its descriptor is kept: TLS wrapping detaches the original object, and
        shutting the duplicate down ends the connection whatever paho wrapped it in."""
        sock = opened.dup()
        timer = threading.Timer(self._connect_timeout, self._attempt_expired, (sock,))
        timer.daemon = True
        with self._lock:
            closed = self._closed
            if not closed:
                self._end_attempt_locked()
                self._attempt, self._attempt_timer = sock, timer
        if closed:
            _shut_down(sock)
            sock.close()
            return
        timer.start()

    def _attempt_expired(self, sock: socket.socket) -> None:
        with self._lock:
            if self._attempt is not sock:
                return  # ended meanwhile (and closed)
            self._attempt = self._attempt_timer = None
        log.warning(
            "%s: not connected within %.3g s (TCP, TLS, websocket upgrade and CONNACK); retrying",
            self.client_id,
            self._connect_timeout,
        )
        _shut_down(sock)
        sock.close()

    def _end_attempt_locked(self) -> threading.Timer | None:
        timer = self._attempt_timer
        if self._attempt is not None:
            self._attempt.close()  # the duplicate only: paho's socket stays open
        self._attempt = self._attempt_timer = None
        if timer is not None:
            timer.cancel()
        return timer

    def _end_attempt(self, *, shut_down: bool) -> None:
        """The attempt in progress ended (connected, or stop: then its socket is shut down)."""
        with self._lock:
            if shut_down and self._attempt is not None:
                _shut_down(self._attempt)
            timer = self._end_attempt_locked()
        if timer is not None and timer is not threading.current_thread():
            timer.join()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._end_attempt(shut_down=False)

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._end_attempt(shut_down=False)
        if reason_code.is_failure:
            log.warning("%s: connection refused: %s", self.client_id, reason_code)
            return
        with self._lock:
            self._network_thread = threading.get_ident()
            self._handshake_unconfirmed = False
            self._suback_pending.clear()
            self._subscribe_failed = False
            self.connects += 1
        log.info("%s: connected, subscribing %d thing(s)", self.client_id, len(self.things))
        for thing in self.things:
            filters = [(shadow_topic(thing, op, result), 0) for op in OPERATIONS for result in RESULTS]
            rc, mid = client.subscribe(filters)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                log.warning("%s: subscribe for %s failed: %s", self.client_id, thing, mqtt.error_string(rc))
                continue
            with self._lock:
                self._suback_pending[mid] = thing

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        with self._lock:
            thing = self._suback_pending.pop(mid, None)
            if thing is None:
                return
            if any(rc.is_failure for rc in reason_codes):
                self._subscribe_failed = True
                log.error("%s: subscription for %s refused: %s", self.client_id, thing, reason_codes)
            done = not self._suback_pending and not self._subscribe_failed
        if done:
            self._ready.set()
            log.info("%s: ready", self.client_id)
            if self._on_ready is not None:
                self._on_ready(self)

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            closing = self._closed
        for p in pending:
            p.future.set_exception(ClientError(f"connection lost before the reply to {p.op} of {p.thing}"))
        if closing:
            return
        if was_ready:
            log.warning("%s: connection lost (%s); reconnecting", self.client_id, reason_code)
            if self._on_lost is not None:
                self._on_lost(self)

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) != 6 or parts[0] != "$aws" or parts[1] != "things" or parts[3] != "shadow":
            return
        thing, op, result = parts[2], parts[4], parts[5]
        try:
            doc = json.loads(message.payload)
        except ValueError:
            log.warning("%s: non-JSON payload on %s ignored", self.client_id, message.topic)
            return
        if not isinstance(doc, dict):
            return
        if result == "accepted":
            try:
                self._on_document(thing, doc)
            except Exception:
                log.exception("%s: handling a document of %s failed", self.client_id, thing)
        token = doc.get("clientToken")
        if not isinstance(token, str):
            return
        with self._lock:
            pending = self._pending.get(token)
            if pending is None or pending.thing != thing or pending.op != op:
                return
            del self._pending[token]
        if result == "accepted":
            pending.future.set_result(doc)
        else:
            pending.future.set_exception(
                ClientError(f"Message rejected: {op} of {thing}: {doc.get('code')} {doc.get('message')}")
            )


def _shut_down(sock: socket.socket) -> None:
    """Make every blocked and later operation on ``sock`` fail at once (paho closes it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
