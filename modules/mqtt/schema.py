"""``gateway.mqtt``: its JSON Schema and the typed settings read from it.

The schema is composed into the gateway's config schema (so a bad section is refused, with its
JSON path, before anything starts); :func:`settings_from` turns a valid section into
:class:`Settings`, filling the defaults.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uun_gateway.bounds import YEAR, seconds_schema

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_KEEPALIVE = 30
DEFAULT_BATCH = 200
DEFAULT_MAX_INFLIGHT = 20
DEFAULT_HEALTH_PERIOD = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_POLL_INTERVAL = 0.05
DEFAULT_FAILBACK_INTERVAL = 60.0
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 120.0
PROTOCOLS = ("3.1.1", "5")

_TOPIC_LEVELS = "a topic without wildcards (+, #), not starting or ending with /"
_TOPIC = {"type": "string", "minLength": 1, "pattern": r"^[^+#/](?:[^+#]*[^+#/])?$", "description": _TOPIC_LEVELS}
_SECONDS = seconds_schema()
_FILE = {"type": "string", "minLength": 1, "description": "a file path"}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the MQTT uplink settings (an object)",
    "required": ["brokers"],
    "properties": {
        "brokers": {
            "type": "array",
            "minItems": 1,
            "description": "brokers tried in order: a list of {host, port}",
            "items": {
                "type": "object",
                "required": ["host"],
                "properties": {
                    "host": {"type": "string", "minLength": 1, "description": "a host name or address"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port"},
                },
                "additionalProperties": False,
            },
        },
        "tls": {
            "type": "object",
            "description": "TLS (the broker's certificate is always verified): {caFile, certFile, keyFile}",
            "properties": {"caFile": _FILE, "certFile": _FILE, "keyFile": _FILE},
            "dependentRequired": {"certFile": ["keyFile"], "keyFile": ["certFile"]},
            "additionalProperties": False,
        },
        "username": {"type": "string", "minLength": 1, "description": "the broker user name"},
        "passwordFile": {**_FILE, "description": "a file holding the broker password"},
        "clientId": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "pattern": r"^[^+#/]+$",
            "description": "the MQTT client id (no /, +, #)",
        },
        "protocol": {"enum": list(PROTOCOLS), "description": 'the MQTT version: "3.1.1" or "5"'},
        "keepalive": {"type": "integer", "minimum": 5, "maximum": 65535, "description": "seconds (5..65535)"},
        "connectTimeout": _SECONDS,
        "topicPrefix": _TOPIC,
        "sources": {
            "type": "object",
            "description": "an object {moduleId: {topic, qos, batchSize}}",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "topic": _TOPIC,
                    "qos": {"enum": [0, 1], "description": "1 (at least once) or 0 (at most once)"},
                    "batchSize": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "1..10000"},
                },
                "additionalProperties": False,
            },
        },
        "batchSize": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "default entries per message"},
        "maxInflight": {"type": "integer", "minimum": 1, "maximum": 1000, "description": "messages (1..1000)"},
        "healthPeriod": _SECONDS,
        "pollInterval": {"type": "number", "minimum": 0.005, "maximum": 10, "description": "seconds (0.005..10)"},
        "failbackInterval": _SECONDS,
        "backoffInitial": _SECONDS,
        "backoffMax": _SECONDS,
        "commands": {"type": "boolean", "description": "subscribe <prefix>/cmd/+ (default true)"},
        "sessionExpiry": {
            "type": "integer",
            "minimum": 0,
            "maximum": YEAR,
            "description": f"seconds the broker keeps the session (queued commands) while offline (0..{YEAR}, 0: none)",
        },
    },
    "dependentRequired": {"passwordFile": ["username"]},
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Broker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SourceSettings:
    """One delivered source: its module id, full topic, QoS and entries per message."""

    module_id: str
    topic: str
    qos: int
    batch_size: int


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class Settings:
    """The ``gateway.mqtt`` section with every default filled in."""

    brokers: tuple[Broker, ...]
    tls: TlsSettings | None
    username: str | None
    password_file: str | None
    client_id: str
    protocol: str
    keepalive: int
    connect_timeout: float
    prefix: str
    sources: tuple[SourceSettings, ...]
    max_inflight: int
    health_period: float
    poll_interval: float
    failback_interval: float
    backoff_initial: float
    backoff_max: float
    commands: bool
    session_expiry: int = 0
    """Seconds the broker keeps the session while the gateway is offline; 0: a clean session."""

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    @property
    def health_topic(self) -> str:
        return f"{self.prefix}/health"

    @property
    def command_filter(self) -> str:
        return f"{self.prefix}/cmd/+"

    def connection_key(self) -> tuple[Any, ...]:
        """What a connection depends on: a change here means reconnecting."""
        return (
            self.brokers,
            self.tls,
            self.username,
            self.password_file,
            self.client_id,
            self.protocol,
            self.keepalive,
            self.prefix,
            self.commands,
            self.session_expiry,
        )


def default_client_id(identity: str | None) -> str:
    """The client id from the uuThing's ``uuIdentity``, else the host name, fit for a topic level."""
    base = identity or socket.gethostname() or "gateway"
    return re.sub(r"[/+#\s]", "_", base)[:128]


def settings_from(section: Mapping[str, Any], identity: str | None = None) -> Settings:
    """:class:`Settings` from a ``gateway.mqtt`` section that passed :data:`CONFIG_SCHEMA`."""
    tls_section = section.get("tls")
    tls = (
        TlsSettings(tls_section.get("caFile"), tls_section.get("certFile"), tls_section.get("keyFile"))
        if isinstance(tls_section, Mapping)
        else None
    )
    default_port = DEFAULT_TLS_PORT if tls is not None else DEFAULT_PORT
    brokers = tuple(Broker(str(b["host"]), int(b.get("port", default_port))) for b in section["brokers"])
    client_id = str(section.get("clientId") or default_client_id(identity))
    prefix = str(section.get("topicPrefix", f"uun/{client_id}"))
    sources = tuple(
        SourceSettings(
            module_id=str(mid),
            topic=f"{prefix}/{s.get('topic', f'data/{mid}')}",
            qos=int(s.get("qos", 1)),
            batch_size=int(s.get("batchSize", section.get("batchSize", DEFAULT_BATCH))),
        )
        for mid, s in dict(section.get("sources", {})).items()
    )
    return Settings(
        brokers=brokers,
        tls=tls,
        username=section.get("username"),
        password_file=section.get("passwordFile"),
        client_id=client_id,
        protocol=str(section.get("protocol", "3.1.1")),
        keepalive=int(section.get("keepalive", DEFAULT_KEEPALIVE)),
        connect_timeout=float(section.get("connectTimeout", DEFAULT_CONNECT_TIMEOUT)),
        prefix=prefix,
        sources=sources,
        max_inflight=int(section.get("maxInflight", DEFAULT_MAX_INFLIGHT)),
        health_period=float(section.get("healthPeriod", DEFAULT_HEALTH_PERIOD)),
        poll_interval=float(section.get("pollInterval", DEFAULT_POLL_INTERVAL)),
        failback_interval=float(section.get("failbackInterval", DEFAULT_FAILBACK_INTERVAL)),
        backoff_initial=float(section.get("backoffInitial", DEFAULT_BACKOFF_INITIAL)),
        backoff_max=max(
            float(section.get("backoffMax", DEFAULT_BACKOFF_MAX)),
            float(section.get("backoffInitial", DEFAULT_BACKOFF_INITIAL)),
        ),
        commands=bool(section.get("commands", True)),
        session_expiry=int(section.get("sessionExpiry", 0)),
    )
