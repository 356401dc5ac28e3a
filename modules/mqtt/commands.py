"""Commands over MQTT: requests on ``<prefix>/cmd/<name>``, replies on ``<prefix>/cmd/<name>/result``.

A request is a JSON object ``{"id": "<correlation id>", "args": {...}}`` (``args`` may be left out
for a command without arguments; with MQTT 5 the Correlation Data property may carry the id
instead). The reply is ``{"id": ..., "ok": true, "result": ...}`` or ``{"id": ..., "ok": false,
"error": "<what went wrong>"}``, published at QoS 1, not retained; with MQTT 5 it also carries
the request's Correlation Data.

Names: ``config`` (arguments ``{"gateway": {...}}``: the new ``gateway`` section, applied through
the gateway's reconfigure with its validation and rollback), ``commands`` (the list of commands
with their argument schemas), ``health`` (the gateway's health), and ``<moduleId>.<command>`` for
what modules declare with :func:`uun_gateway.command`.

Requests are queued (at most :data:`QUEUE_SIZE`) and run one at a time in the dispatcher's own
thread, so a slow command never stalls the connection; a request that does not fit in the queue
gets a ``busy`` error reply at once. Nothing here raises into the caller of :meth:`submit`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from uun_gateway import Command, CommandError, ConfigError, find_commands, safe_text

QUEUE_SIZE = 32
MAX_REQUEST_BYTES = 1 << 20
MAX_ID_LENGTH = 200

Publish = Callable[[str, bytes, int, Any], "int | None"]


@dataclass(frozen=True)
class Request:
    name: str
    reply_topic: str
    payload: bytes
    correlation: bytes | None


class Dispatcher:
    """Runs command requests in a thread of its own and publishes their replies.

    ``gateway`` is the host (for ``config`` and ``health``; None outside a gateway); ``publish``
    sends a reply (``topic, payload, qos, properties``) and may be called from this thread.
    Start with :meth:`start`, end with :meth:`stop` (joins the thread within ``timeout``).
    """

    def __init__(self, gateway: Any, publish: Publish, logger: logging.Logger, *, mqtt5: bool) -> None:
        self.gateway = gateway
        self._publish = publish
        self.logger = logger
        self.mqtt5 = mqtt5
        self._queue: queue.Queue[Request | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.handled = 0
        self.failed = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqtt-commands", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        thread.join(timeout)
        if thread.is_alive():
            self.logger.error("mqtt: a command was still running at stop; abandoned")

    # -- requests ------------------------------------------------------------------------------

    def submit(self, topic: str, payload: bytes, properties: Any) -> None:
        """Queue a request that arrived on ``topic`` (called in the connection's thread; never raises)."""
        try:
            name = topic.rsplit("/", 1)[-1]
            correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
            request = Request(name, f"{topic}/result", payload, correlation if isinstance(correlation, bytes) else None)
            try:
                self._queue.put_nowait(request)
            except queue.Full:
                self._reply(request, _request_id(payload), error="busy: too many commands waiting; try again")
        except Exception:
            self.logger.exception("mqtt: a command request could not be queued")

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            try:
                self._handle(request)
            except Exception:
                self.logger.exception("mqtt: handling command %s failed", safe_text(request.name))

    def _handle(self, request: Request) -> None:
        if len(request.payload) > MAX_REQUEST_BYTES:
            self._reply(request, None, error=f"the request is larger than {MAX_REQUEST_BYTES} bytes")
            return
        try:
            body = json.loads(request.payload) if request.payload.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            self._reply(request, None, error=f"the request is not JSON: {exc}")
            return
        if not isinstance(body, dict):
            self._reply(request, None, error='the request must be a JSON object {"id": ..., "args": {...}}')
            return
        request_id = body.get("id")
        if request_id is not None and not (isinstance(request_id, str | int) and len(str(request_id)) <= MAX_ID_LENGTH):
            self._reply(request, None, error=f"id must be a string or an integer of at most {MAX_ID_LENGTH} chars")
            return
        commands = self.commands()
        found = commands.get(request.name)
        if found is None:
            known = ", ".join(sorted(commands))
            self._reply(request, request_id, error=f"unknown command {safe_text(request.name)!r}; known: {known}")
            return
        args = body.get("args", {})
        try:
            result = found.run(args)
        except CommandError as exc:
            self._reply(request, request_id, error=str(exc))
            return
        except ConfigError as exc:
            self._reply(request, request_id, error=str(exc))
            return
        except Exception as exc:
            self.logger.exception("mqtt: command %s raised", request.name)
            self._reply(request, request_id, error=f"internal error: {type(exc).__name__}: {exc}")
            return
        self.logger.info("mqtt: command %s done (id %s)", request.name, safe_text(request_id))
        self._reply(request, request_id, result=result)

    def _reply(self, request: Request, request_id: Any, *, result: Any = None, error: str | None = None) -> None:
        doc: dict[str, Any] = {"id": request_id, "ok": error is None}
        if error is None:
            doc["result"] = result
        else:
            doc["error"] = error
            self.failed += 1
            self.logger.warning("mqtt: command %s refused: %s", safe_text(request.name), safe_text(error))
        self.handled += 1
        try:
            payload = json.dumps(doc, default=str).encode()
        except (TypeError, ValueError) as exc:
            payload = json.dumps({"id": request_id, "ok": False, "error": f"the result is not JSON: {exc}"}).encode()
        properties = None
        if self.mqtt5 and request.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = request.correlation
        if self._publish(request.reply_topic, payload, 1, properties) is None:
            self.logger.warning("mqtt: the reply to %s could not be sent (not connected)", safe_text(request.name))

    # -- the command set -----------------------------------------------------------------------

    def commands(self) -> dict[str, Command]:
        """Every command by its topic name: the built-ins, then ``<moduleId>.<name>`` of each module."""
        found: dict[str, Command] = {
            "config": Command("config", CONFIG_ARGS, "replace the gateway section of the config", self._config),
            "commands": Command("commands", NO_ARGS, "list the commands and their argument schemas", self._list),
            "health": Command("health", NO_ARGS, "the gateway's health", self._health),
        }
        for module in list(getattr(self.gateway, "modules", None) or []):
            module_id = getattr(module, "id", None)
            if not isinstance(module_id, str):
                continue
            try:
                for name, cmd in find_commands(module).items():
                    found[f"{module_id}.{name}"] = cmd
            except Exception:
                self.logger.exception("mqtt: the commands of module %s cannot be listed", module_id)
        return found

    def _config(self, args: Mapping[str, Any]) -> Any:
        if self.gateway is None:
            raise CommandError("not running in a gateway")
        new = dict(self.gateway.config)
        new["gateway"] = args["gateway"]
        changed = self.gateway.reconfigure(new)
        return {"changed": bool(changed)}

    def _list(self, args: Mapping[str, Any]) -> Any:
        return {name: {"description": c.description, "args": c.schema} for name, c in sorted(self.commands().items())}

    def _health(self, args: Mapping[str, Any]) -> Any:
        if self.gateway is None:
            raise CommandError("not running in a gateway")
        return self.gateway.health()


CONFIG_ARGS: dict[str, Any] = {
    "type": "object",
    "required": ["gateway"],
    "properties": {"gateway": {"type": "object", "description": "the new gateway section"}},
    "additionalProperties": False,
}
NO_ARGS: dict[str, Any] = {"type": "object", "maxProperties": 0}


def _request_id(payload: bytes) -> Any:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return body.get("id") if isinstance(body, dict) else None
