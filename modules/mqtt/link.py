"""The connection to the broker: one paho client at a time, failover through the broker list and
back to the first, TLS, credentials, the status will, and outage logging with backoff.

A :class:`Link` is driven by one thread (its owner) calling :meth:`Link.step` in a loop; paho's
callbacks run inside that call, in that thread. :meth:`Link.publish` may be called from any thread
(paho's publish is thread-safe). Nothing here runs paho's own network thread or its automatic
reconnect: which broker to try next, and when, is decided here.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from uun_gateway import Backoff, Deadline, StateLog, describe_failure, read_secret_file, safe_text

from .schema import Broker, Settings

ONLINE = b"online"
OFFLINE = b"offline"
FAILBACK_PROBE_TIMEOUT = 1.0
CLOSE_FLUSH = 1.0
HANDSHAKE_TIMEOUT = 5.0

OnPublished = Callable[[int, bool, str], None]
OnMessage = Callable[[str, bytes, Any], None]
OnState = Callable[[], None]


class Link:
    """An MQTT connection that keeps itself up.

    States: ``idle`` (no client; waiting for the backoff), ``connecting`` (CONNECT sent, waiting for
    CONNACK until ``connectTimeout``), ``connected``. Brokers are tried in order; when none takes
    the connection the link waits (capped exponential backoff) before the next round. While
    connected to any but the first broker it probes the first every ``failbackInterval`` seconds
    and moves back when it answers. A refused login or TLS handshake counts as a failed attempt like
    any other, so it is never retried in a tight loop. Every change of state is logged once.

    ``sleep(seconds)`` waits while idle (the owner passes its stop event's ``wait``).
    ``on_published(mid, ok, reason)`` is called for each PUBACK (QoS 1) in the owner's thread;
    ``on_connected``/``on_lost`` when a connection is ready or gone; ``on_message(topic, payload,
    properties)`` for messages on the subscribed command filter. A callback that raises is logged;
    it never reaches paho.
    """

    def __init__(
        self,
        settings: Settings,
        logger: logging.Logger,
        *,
        on_published: OnPublished,
        on_connected: OnState,
        on_lost: OnState,
        on_message: OnMessage,
        sleep: Callable[[float], object],
    ) -> None:
        self.settings = settings
        self.logger = logger
        self._on_published = on_published
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._on_message = on_message
        self._sleep = sleep
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.log = StateLog(logger, "mqtt")
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self.state = "idle"
        self.broker: Broker | None = None
        self._index = 0
        self._round_failures = 0
        self._connect_deadline: Deadline | None = None
        self._failback_at: Deadline | None = None
        self.connects = 0
        self.inflight_limit = settings.max_inflight

    # -- driving -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def step(self, timeout: float) -> None:
        """Connect when due, then process network events for up to ``timeout`` seconds.

        Blocks for at most ``timeout``, or ``connectTimeout`` while a TCP/TLS handshake is in
        progress. Never raises for network trouble (it is logged and retried).
        """
        if self._client is None:
            if self.backoff.ready():
                self._attempt()
            if self._client is None:
                self.sleep_hint(timeout)
                return
        client = self._client
        rc = client.loop(timeout)
        if client is not self._client:
            return  # the connection ended inside a callback
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(mqtt.error_string(rc))
            return
        if self.state == "connecting" and self._connect_deadline is not None and self._connect_deadline.expired():
            self._attempt_failed(f"no CONNACK within {self.settings.connect_timeout:g}s", "timeout")
        elif self.state == "connected":
            self._maybe_failback()

    def sleep_hint(self, timeout: float) -> None:
        """Wait while idle: until the backoff is over, at most ``timeout`` seconds."""
        wait = min(timeout, self.backoff.remaining())
        if wait > 0:
            self._sleep(wait)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False, properties: Any = None) -> int | None:
        """Queue a message; return its mid, or None when not connected or paho refused it. Any thread."""
        with self._lock:
            client = self._client if self.state == "connected" else None
        if client is None:
            return None
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except (ValueError, OSError) as exc:
            self.logger.error("mqtt: cannot publish to %s: %s", safe_text(topic), safe_text(exc))
            return None
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE):
            return None
        with self._lock:
            # paho may have noticed a dead socket inside publish() and ended the connection: a mid
            # of a client that is gone must never be taken for one of the next connection
            if client is not self._client or self.state != "connected":
                return None
        return int(info.mid)

    def close(self, timeout: float = CLOSE_FLUSH) -> None:
        """Publish ``offline`` (retained), disconnect cleanly and drop the client. Owner thread only."""
        client = self._client
        if client is None:
            return
        client.on_disconnect = None  # a clean disconnect is not a lost connection
        if self.state == "connected":
            try:
                info = client.publish(self.settings.status_topic, OFFLINE, qos=1, retain=True)
                deadline = Deadline(timeout)
                while not info.is_published() and not deadline.expired() and client is self._client:
                    if client.loop(min(0.05, deadline.remaining())) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                client.disconnect()
                client.loop(0.01)
            except (OSError, ValueError, RuntimeError):
                pass
            self.logger.info("mqtt: disconnected from %s", self.broker)
        self._drop()

    # -- connecting ----------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else s.session_expiry == 0,
        )
        client.suppress_exceptions = True
        # the TCP and TLS handshakes block the owner's thread: keep them short enough for a prompt
        # stop; the CONNACK wait after them does not block and gets the whole connectTimeout
        client.connect_timeout = min(s.connect_timeout, HANDSHAKE_TIMEOUT)
        client.max_inflight_messages_set(s.max_inflight)
        client.will_set(s.status_topic, OFFLINE, qos=1, retain=True)
        if s.tls is not None:
            context = ssl.create_default_context(cafile=s.tls.ca_file)
            if s.tls.cert_file is not None:
                context.load_cert_chain(s.tls.cert_file, s.tls.key_file)
            client.tls_set_context(context)
        if s.username is not None:
            password = None
            if s.password_file is not None:
                password = read_secret_file(s.password_file).rstrip("\r\n")
            client.username_pw_set(s.username, password)
        client.on_connect = self._guarded(self._handle_connect)
        client.on_disconnect = self._guarded(self._handle_disconnect)
        client.on_publish = self._guarded(self._handle_publish)
        client.on_message = self._guarded(self._handle_message)
        return client

    def _attempt(self) -> None:
        broker = self.settings.brokers[self._index]
        self.broker = broker
        try:
            client = self._new_client()
        except (OSError, ssl.SSLError, ValueError) as exc:
            where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
            self._attempt_failed(f"cannot set up the connection: {where}{_describe(exc)}", "setup")
            return
        self.logger.debug("mqtt: connecting to %s", broker)
        try:
            client.connect(broker.host, broker.port, self.settings.keepalive, **self._session_arguments())
        except ssl.SSLError as exc:
            discard_client(client)
            self._attempt_failed(f"TLS handshake with {broker} failed: {_describe(exc)}", "tls")
            return
        except (OSError, ValueError) as exc:
            discard_client(client)
            self._attempt_failed(f"{broker} unreachable: {_describe(exc)}", "unreachable")
            return
        with self._lock:
            self._client = client
            self.state = "connecting"
        self._connect_deadline = Deadline(self.settings.connect_timeout)

    def _session_arguments(self) -> dict[str, Any]:
        """MQTT 5's CONNECT session flags: a clean start, or the session kept ``sessionExpiry`` s."""
        expiry = self.settings.session_expiry
        if self.settings.protocol != "5":
            return {}
        if expiry == 0:
            return {"clean_start": True}
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = expiry
        return {"clean_start": False, "properties": properties}

    def _attempt_failed(self, problem: str, kind: str) -> None:
        self._drop()
        self._index += 1
        if self._index >= len(self.settings.brokers):
            self._index = 0
            wait = self.backoff.failed()
            self.log.failed(f"{problem}; no broker took the connection, next round in {wait:.1f}s", state=kind)
        else:
            self.logger.debug("mqtt: %s; trying %s", problem, self.settings.brokers[self._index])

    def _lost(self, problem: str) -> None:
        was = self.state
        broker = self.broker
        self._drop()
        if was == "connected":
            self._index = 0
            self.log.failed(f"connection to {broker} lost ({safe_text(problem)}); reconnecting", state="lost")
            self._call(self._on_lost)
        else:
            self._attempt_failed(f"{broker} closed the connection ({safe_text(problem)})", "refused")

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self.state = "idle"
        self._connect_deadline = None
        self._failback_at = None
        if client is not None:
            discard_client(client)

    def _maybe_failback(self) -> None:
        if self._index == 0 or self._failback_at is None or not self._failback_at.expired():
            return
        primary = self.settings.brokers[0]
        self._failback_at = Deadline(self.settings.failback_interval)
        try:
            with socket.create_connection((primary.host, primary.port), timeout=FAILBACK_PROBE_TIMEOUT):
                pass
        except OSError:
            return
        self.logger.info("mqtt: the first broker %s answers again; moving back from %s", primary, self.broker)
        self.close()
        self._index = 0
        self._call(self._on_lost)
        self._attempt()

    # -- paho callbacks (owner thread, inside step) ----------------------------------------------

    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if client is not self._client:
            return
        if isinstance(reason, ReasonCode) and reason.is_failure:
            self._attempt_failed(f"{self.broker} refused the connection: {reason}", "refused")
            return
        limit = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        # paho does not honour the broker's Receive Maximum itself; the delivery window does
        self.inflight_limit = min(self.settings.max_inflight, int(limit)) if limit else self.settings.max_inflight
        with self._lock:
            self.state = "connected"
        self.connects += 1
        self.backoff.succeeded()
        if not self.log.ok(f"connected to {self.broker}", first=f"connected to {self.broker}") and self.connects > 1:
            self.logger.info("mqtt: connected to %s", self.broker)
        self._failback_at = Deadline(self.settings.failback_interval) if self._index else None
        if self.settings.session_expiry and getattr(flags, "session_present", False):
            self.logger.info("mqtt: %s kept the session: commands queued while offline follow", self.broker)
        if self.settings.commands:
            client.subscribe(self.settings.command_filter, qos=1)
        client.publish(self.settings.status_topic, ONLINE, qos=1, retain=True)
        self._call(self._on_connected)

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if client is self._client:
            self._lost(str(reason))

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if client is not self._client:
            return
        ok = not (isinstance(reason, ReasonCode) and reason.is_failure)
        self._call(self._on_published, mid, ok, str(reason))

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self.logger.warning("mqtt: a message with a topic that is not UTF-8 was ignored")
            return
        if message.retain:
            # a retained command would run again at every connect
            self.logger.warning(
                "mqtt: a retained message on %s was ignored (commands must not be retained)", safe_text(topic)
            )
            return
        self._call(self._on_message, topic, bytes(message.payload), getattr(message, "properties", None))

    def _guarded(self, func: Callable[..., None]) -> Callable[..., None]:
        """``func`` for paho: an exception is logged here, never raised into paho's loop."""

        def call(*args: Any) -> None:
            try:
                func(*args)
            except Exception:
                self.logger.exception("mqtt: %s raised", func.__name__)

        return call

    def _call(self, func: Callable[..., None], *args: Any) -> None:
        try:
            func(*args)
        except Exception:
            self.logger.exception("mqtt: a handler of the connection raised")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return safe_text(f"certificate verify failed ({exc.verify_message})")
    if isinstance(exc, ssl.SSLError):
        return safe_text(f"TLS: {getattr(exc, 'reason', None) or exc}")
    return describe_failure(exc)


def discard_client(client: mqtt.Client) -> None:
    """Close a client's socket and its wake-up socket pair (paho closes the pair only when the
    client is garbage collected)."""
    client.on_connect = client.on_disconnect = client.on_publish = client.on_message = None
    reset = getattr(client, "_reset_sockets", None)
    if callable(reset):
        reset()
