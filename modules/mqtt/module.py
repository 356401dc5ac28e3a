"""The ``mqtt`` module: the fleet uplink. Every configured source's storage goes to an MQTT broker
(or a cluster behind one address, or a list to fail over through), with presence, health and
commands back. It runs side by side with ``upload``; either or both may be enabled.

Config ``gateway.mqtt`` (schema in :mod:`.schema`)::

    "mqtt": {
        "brokers": [{"host": "mqtt1.example.net", "port": 8883}, {"host": "mqtt2.example.net"}],
        "tls": {"caFile": "/etc/uun-gateway/ca.pem", "certFile": "...", "keyFile": "..."},
        "username": "pi-17", "passwordFile": "/etc/uun-gateway/mqtt-password",
        "protocol": "5", "keepalive": 30, "topicPrefix": "uun/pi-17",
        "sources": {"oneWire": {"qos": 1, "batchSize": 200}, "unisenza": {"topic": "data/hvac"}},
        "maxInflight": 20, "healthPeriod": 60
    }

Threads: the start handler is the module's worker for the gateway's life: it owns the connection
(:class:`.link.Link`) and the delivery (:class:`.delivery.Delivery`), both driven from that one
thread, so paho's callbacks run there too; commands run in a second thread
(:class:`.commands.Dispatcher`). A config update only sets a flag the worker reads between two
network steps; a changed connection setting reconnects. Stopping the gateway publishes
``offline``, disconnects and ends both threads within the stop timeout.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from uun_gateway import Deadline, Module, Storage, UuAppClient, on, safe_text

from .commands import Dispatcher
from .delivery import Delivery
from .link import Link
from .presence import health_payload
from .schema import CONFIG_SCHEMA, Settings, settings_from

FILL_BUDGET = 0.2  # seconds one round of publishing may take before the network is serviced again
STOP_JOIN = 2.0


class Mqtt(Module):
    """Delivers other modules' stored entries to an MQTT broker (id ``mqtt``; no timers).

    At least once and in order per source (QoS 1): an entry is deleted only after the broker's
    PUBACK for its message. QoS 0 sources are at most once: entries are deleted when sent.
    :attr:`delivery` and :attr:`link` are the worker's current objects (None before start);
    :attr:`connected` is set while a connection is ready. Never blocks a producer.
    """

    id = "mqtt"
    carries_remote_config = True
    config_schema: ClassVar[dict[str, Any] | None] = CONFIG_SCHEMA

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.delivery: Delivery | None = None
        self.link: Link | None = None
        self.dispatcher: Dispatcher | None = None
        self.connected = threading.Event()
        self._changed = threading.Event()
        self._health_due: Deadline | None = None

    # -- configuration ---------------------------------------------------------------------------

    def settings(self) -> Settings | None:
        """The current settings, or None when the section is missing."""
        section = self._config.get(self.id)
        if not isinstance(section, Mapping) or "brokers" not in section:
            return None
        config = getattr(self.gateway, "config", None)
        thing = config.get("uuThing") if isinstance(config, Mapping) else None
        identity = thing.get("uuIdentity") if isinstance(thing, Mapping) else None
        return settings_from(section, identity if isinstance(identity, str) else None)

    @on("update")
    def reconfigured(self) -> None:
        """Note the new config; the worker applies it between two network steps (never blocks)."""
        self._changed.set()

    # -- the worker ------------------------------------------------------------------------------

    @on("start")
    def serve(self, evs: tuple[threading.Event, threading.Event]) -> None:
        """Keep the connection up and deliver until the gateway stops."""
        runev, stopev = evs
        settings = self.settings()
        if settings is None:
            self.logger.error("mqtt: gateway.mqtt.brokers is not configured; nothing is delivered")
            return
        while runev.is_set():
            self._changed.clear()
            self._run_connection(settings, runev, stopev)
            if runev.is_set():
                fresh = self.settings()
                if fresh is None:
                    self.logger.error("mqtt: gateway.mqtt was removed; delivery stops")
                    return
                if fresh != settings:
                    self.logger.info("mqtt: settings changed; reconnecting")
                settings = fresh

    def _run_connection(self, settings: Settings, runev: threading.Event, stopev: threading.Event) -> None:
        delivery = Delivery(settings, self._storage_of, self.logger, self._record)
        link = Link(
            settings,
            self.logger,
            on_published=delivery.published,
            on_connected=self._on_connected,
            on_lost=self._on_lost,
            on_message=self._on_message,
            sleep=stopev.wait,
        )
        dispatcher = Dispatcher(
            self.gateway,
            lambda topic, payload, qos, props: link.publish(topic, payload, qos, properties=props),
            self.logger,
            mqtt5=settings.protocol == "5",
        )
        self.delivery, self.link, self.dispatcher = delivery, link, dispatcher
        dispatcher.start()
        published = 0
        try:
            while runev.is_set():
                if self._changed.is_set():
                    fresh = self.settings()
                    if fresh != settings:
                        return
                    self._changed.clear()
                # service the network without waiting only while publishing makes progress, so a
                # source that cannot be sent from never turns this loop into a busy spin
                busy = published > 0 and link.connected and delivery.has_work(link.inflight_limit)
                link.step(0.0 if busy else settings.poll_interval)
                delivery.process_acks()
                published = 0
                if link.connected:
                    published = delivery.fill(self._publish_data, link.inflight_limit, Deadline(FILL_BUDGET))
                    self._maybe_publish_health(settings, link, delivery)
        finally:
            # the command running now (a config update, say) still sends its reply on this link
            dispatcher.stop(STOP_JOIN)
            self.connected.clear()
            delivery.process_acks(flush=True)
            link.close()

    def _publish_data(self, topic: str, payload: bytes, qos: int) -> int | None:
        link = self.link
        return link.publish(topic, payload, qos) if link is not None else None

    def _maybe_publish_health(self, settings: Settings, link: Link, delivery: Delivery) -> None:
        if self._health_due is not None and not self._health_due.expired():
            return
        self._health_due = Deadline(settings.health_period)
        try:
            doc = health_payload(self.gateway, settings.client_id, delivery, str(link.broker), link.connects)
            payload = json.dumps(doc, default=str).encode()
        except Exception:
            self.logger.exception("mqtt: the health document cannot be built")
            return
        link.publish(settings.health_topic, payload, 1, retain=True)

    # -- link events (worker thread) -------------------------------------------------------------

    def _on_connected(self) -> None:
        self._health_due = None
        if self.delivery is not None:
            self.delivery.reset()  # a new connection starts from the oldest stored entry
        self.connected.set()

    def _on_lost(self) -> None:
        self.connected.clear()
        if self.delivery is not None:
            self.delivery.reset()

    def _on_message(self, topic: str, payload: bytes, properties: Any) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        settings = self.link.settings if self.link is not None else None
        if settings is None or not topic.startswith(f"{settings.prefix}/cmd/"):
            self.logger.warning("mqtt: a message on %s was ignored", safe_text(topic))
            return
        dispatcher.submit(topic, payload, properties)

    # -- sources -------------------------------------------------------------------------------

    def _module_of(self, source: str) -> Any:
        parts = [*self.gateway.modules, *self.gateway.services] if self.gateway is not None else []
        return next((m for m in parts if getattr(m, "id", None) == source), None)

    def _storage_of(self, source: str) -> Storage | None:
        module = self._module_of(source)
        if module is None or module is self:
            return None
        storage = getattr(module, "storage", None)
        return storage if isinstance(storage, Storage) else None

    def _record(self, source: str, ok: bool, error: str | None) -> None:
        self.stats.record_send(ok, error)
        stats = getattr(self._module_of(source), "stats", None)
        if stats is not None and stats is not self.stats and hasattr(stats, "record_send"):
            stats.record_send(ok, error)
