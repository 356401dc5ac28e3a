"""``uun-gateway mqtt``: operator commands against the fleet's broker.

- ``uun-gateway mqtt watch --broker HOST:PORT [--tls-ca FILE ...]``: subscribes to
  ``<prefix>/+/status`` and ``<prefix>/+/health`` and prints a live table of the fleet (gateway,
  online, stored entries, last delivery, errors, broker, age of its health); ``--once`` prints the
  table of the retained state once and exits.
- ``uun-gateway mqtt send-command --broker HOST:PORT GATEWAY NAME [--args JSON]``: sends one
  command and prints the reply; exit status 0 for an ``ok`` reply, 1 for an error reply, 2 when
  the broker or the reply cannot be reached in time.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from uun_gateway import Commands, describe_failure, iso_utc, parse_iso, read_secret_file, safe_text

from .link import discard_client

EXIT_ERROR_REPLY = 1
EXIT_UNREACHABLE = 2
DEFAULT_PREFIX = "uun"
CONNECT_TIMEOUT = 10.0


def register(commands: Commands) -> None:
    """Add the ``mqtt`` command group with ``watch`` and ``send-command``."""
    group = commands.add("mqtt", help="the fleet on an MQTT broker")
    sub = group.add_subparsers(dest="mqtt_command", metavar="SUBCOMMAND", required=True)

    watch = sub.add_parser("watch", help="a live table of the gateways on a broker")
    _connection_options(watch)
    watch.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix before the gateway id (default uun)")
    watch.add_argument("--once", action="store_true", help="print the retained state once and exit")
    watch.add_argument(
        "--wait", type=_seconds, default=2.0, metavar="SECONDS", help="with --once: how long to collect (default 2)"
    )
    watch.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS", help="redraw period (default 1)")
    watch.set_defaults(func=run_watch)

    send = sub.add_parser("send-command", help="send one command to a gateway and print its reply")
    _connection_options(send)
    send.add_argument("gateway", help="the gateway's id (its clientId)")
    send.add_argument("name", help="the command: config, commands, health or <moduleId>.<command>")
    send.add_argument("--args", type=_json_object, default={}, metavar="JSON", help="the arguments, a JSON object")
    send.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix before the gateway id (default uun)")
    send.add_argument("--topic-prefix", help="the gateway's full topicPrefix, when it is not <prefix>/<gateway>")
    send.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="wait for the reply (10)")
    send.set_defaults(func=run_send_command)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, type=_broker, metavar="HOST:PORT", help="the broker")
    parser.add_argument("--tls-ca", metavar="FILE", help="use TLS, verifying the broker with this CA file")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's CAs")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (mutual TLS; with --key)")
    parser.add_argument("--key", metavar="FILE", help="client key (mutual TLS)")
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password-file", metavar="FILE", help="a file holding the broker password")


def _broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid broker {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds, more than 0, up to 3600")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--args is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--args must be a JSON object")
    return value


# -- connecting ------------------------------------------------------------------------------------


class Connection:
    """A paho client with its own network thread, connected or raising :class:`OSError`."""

    def __init__(self, args: argparse.Namespace, on_message: Callable[[mqtt.MQTTMessage], None]) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"uun-gateway-cli-{uuid.uuid4().hex[:12]}")
        self._ready = threading.Event()
        self._problem: str | None = None
        if args.tls or args.tls_ca or args.cert:
            context = ssl.create_default_context(cafile=args.tls_ca)
            if args.cert:
                context.load_cert_chain(args.cert, args.key)
            self.client.tls_set_context(context)
        if args.username:
            password = read_secret_file(args.password_file).rstrip("\r\n") if args.password_file else None
            self.client.username_pw_set(args.username, password)
        self.client.on_connect = self._connected
        self.client.on_message = lambda c, u, m: on_message(m)
        self.subscriptions: list[str] = []
        host, port = args.broker
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._ready.wait(CONNECT_TIMEOUT) or self._problem is not None:
            self.close()
            raise OSError(self._problem or f"no answer from {host}:{port} within {CONNECT_TIMEOUT:g}s")

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._problem = f"the broker refused the connection: {reason}"
        else:
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)
        self._ready.set()

    def subscribe(self, topic: str) -> None:
        self.subscriptions.append(topic)
        self.client.subscribe(topic, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        discard_client(self.client)


def _connect(
    args: argparse.Namespace, on_message: Callable[[mqtt.MQTTMessage], None], err: TextIO
) -> Connection | None:
    try:
        return Connection(args, on_message)
    except ssl.SSLError as exc:
        print(f"error: TLS with {args.broker[0]}:{args.broker[1]} failed: {exc}", file=err)
    except OSError as exc:
        print(f"error: cannot connect to {args.broker[0]}:{args.broker[1]}: {describe_failure(exc)}", file=err)
    return None


# -- watch -----------------------------------------------------------------------------------------


@dataclass
class GatewayRow:
    online: str = "?"
    health: dict[str, Any] = field(default_factory=dict)
    health_at: float | None = None


class Fleet:
    """What the broker says about each gateway; fed from paho's thread, read by the printer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.rows: dict[str, GatewayRow] = {}

    def feed(self, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        base = self.prefix.split("/")
        if len(parts) != len(base) + 2 or parts[: len(base)] != base:
            return
        gateway, kind = parts[len(base)], parts[-1]
        with self._lock:
            row = self.rows.setdefault(gateway, GatewayRow())
            if kind == "status":
                row.online = safe_text(bytes(message.payload).decode("utf-8", "replace"), 20) or "?"
            elif kind == "health":
                try:
                    doc = json.loads(message.payload)
                except ValueError:
                    return
                if isinstance(doc, dict):
                    row.health, row.health_at = doc, time.time()

    def table(self) -> str:
        header = ("GATEWAY", "STATUS", "STORED", "LAST DELIVERY", "ERRORS", "BROKER", "HEALTH AT")
        with self._lock:
            lines = [_row(name, row) for name, row in sorted(self.rows.items())]
        widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [header, *lines]]
        online = sum(1 for r in lines if r[1] == "online")
        out.append(f"{len(lines)} gateway(s), {online} online")
        return "\n".join(out)


def _row(name: str, row: GatewayRow) -> tuple[str, ...]:
    health = row.health
    modules = [m for m in _dict(health.get("modules")).values() if isinstance(m, dict)]
    stored = sum(int(m.get("stored") or 0) for m in modules)
    errors = sum(int(m.get("handlerErrors") or 0) + int(m.get("sendFailures") or 0) for m in modules)
    link = _dict(health.get("mqtt"))
    sources = [s for s in _dict(link.get("sources")).values() if isinstance(s, dict)]
    last = [s["lastDelivery"] for s in sources if s.get("lastDelivery")]
    last_delivery = max(last, key=_when) if last else "-"
    return (
        safe_text(name, 40),
        row.online,
        str(stored) if health else "-",
        safe_text(last_delivery, 30),
        str(errors) if health else "-",
        safe_text(link.get("broker") or "-", 40),
        safe_text(health.get("time") or "-", 30),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _when(text: Any) -> float:
    try:
        return parse_iso(str(text)).timestamp()
    except ValueError:
        return 0.0


def run_watch(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the fleet table: once (``--once``) or redrawn every ``--interval`` until interrupted."""
    out, err = out or sys.stdout, err or sys.stderr
    fleet = Fleet(args.prefix.rstrip("/"))
    conn = _connect(args, fleet.feed, err)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        conn.subscribe(f"{fleet.prefix}/+/status")
        conn.subscribe(f"{fleet.prefix}/+/health")
        if args.once:
            time.sleep(args.wait)  # retained messages arrive at once; this only bounds the wait
            print(fleet.table(), file=out)
            return 0
        live = out.isatty()
        while True:
            if live:
                out.write("\x1b[H\x1b[2J")
            print(f"{iso_utc(timespec='seconds')}  {args.broker[0]}:{args.broker[1]}", file=out)
            print(fleet.table(), file=out, flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()


# -- send-command ----------------------------------------------------------------------------------


def run_send_command(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Send one command and print its reply (JSON). Exit 0 ok, 1 error reply, 2 no reply/unreachable."""
    out, err = out or sys.stdout, err or sys.stderr
    base = (args.topic_prefix or f"{args.prefix.rstrip('/')}/{args.gateway}").rstrip("/")
    topic = f"{base}/cmd/{args.name}"
    request_id = uuid.uuid4().hex
    replies: list[dict[str, Any]] = []
    got = threading.Event()

    def on_message(message: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("id") == request_id:
            replies.append(doc)
            got.set()

    conn = _connect(args, on_message, err)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        conn.subscribe(f"{topic}/result")
        conn.client.publish(topic, json.dumps({"id": request_id, "args": args.args}), qos=1)
        if not got.wait(args.timeout):
            print(f"error: no reply on {topic}/result within {args.timeout:g}s (is {args.gateway} online?)", file=err)
            return EXIT_UNREACHABLE
    finally:
        conn.close()
    reply = replies[0]
    print(json.dumps(reply, indent=2, sort_keys=True), file=out)
    return 0 if reply.get("ok") else EXIT_ERROR_REPLY
