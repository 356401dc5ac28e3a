"""The gateway's command socket (module id ``socket``, as uun-iot's SocketServer): a Unix socket on
which local tools send one command per connection to the modules' ``@on("command", name)``
handlers (uun-iot: ``@EvExternal.subscribe_command(name)``).

Config ``gateway.socket``::

    {"path": "/run/uun-gateway/control.sock"}

``path`` defaults to ``$RUNTIME_DIRECTORY/control.sock`` under systemd, else ``uun-gateway.sock``
in the working directory. The socket is created owner-only (0600); a stale socket at the path is
replaced, any other file there is an error.

Protocol (uun-iot's): the client writes ``NAME[ ARGUMENT]\\n``; the handler is called as
``handler((NAME, ARGUMENT or None))`` and its text (or None) is answered as ``0[ TEXT]\\n``; an
unknown command is answered ``1 Unknown command!``, a handler that raised ``1 Command failed!
Exception: ...``, an unreadable request ``1 Invalid message!``. A request must arrive within
``timeout`` seconds (default 2) and be at most 64 KiB. Built in, unless a module answers them
itself: ``commands`` (the names, comma-separated), ``status`` (``Gateway.health()`` as JSON) and
``reload`` (re-read the config file and apply it, :meth:`Gateway.reload`: answered ``0`` with what
changed, or ``1 reload refused: ...`` with the config's errors, nothing changed). The commands of
modules added while the gateway runs are answered from the moment they are loaded; ``uun-gateway
status`` and ``uun-gateway reload`` are the command-line clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from uun_gateway import ConfigError, Deadline, Module, on, safe_text
from uun_gateway.control import default_socket_path
from uun_gateway.events import find_handlers

MAX_REQUEST = 64 * 1024
DEFAULT_TIMEOUT = 2.0

CommandHandler = Callable[[tuple[str, str | None]], str | None]


class _Refused(Exception):
    """A built-in command declined with a message for the client (answered ``1 MESSAGE``)."""


class CommandSocket(Module):
    """Serves the command socket from a thread of its own while the gateway runs; thread-safe."""

    id = "socket"
    config_schema = {
        "type": "object",
        "description": "the command socket: {path, timeout}",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "the Unix socket's file path"},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 60,
                "description": "seconds a client has to send its request (0 < timeout <= 60)",
            },
        },
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient, storage=False)
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._answering = threading.Event()
        self._lock = threading.Lock()
        self._bound_inode: int | None = None

    @property
    def path(self) -> Path:
        return Path(self._c("path", str(default_socket_path())))

    def command_handlers(self) -> dict[str, CommandHandler]:
        """Every loaded module's command handlers by name, with the built-in ones no module replaces."""
        handlers: dict[str, CommandHandler] = {
            "commands": self._list_commands,
            "status": self._status,
            "reload": self._reload,
        }
        for module in self.gateway.modules if self.gateway is not None else [self]:
            for handler in find_handlers(module):
                if handler.event == "command" and handler.command is not None:
                    handlers[handler.command] = handler.func
        for service in self.gateway.services if self.gateway is not None else []:  # e.g. alarms, ack
            handlers.update((h.command, h.func) for h in find_handlers(service) if h.event == "command" and h.command)
        return handlers

    @on("start")
    def serve(self, evs: tuple[threading.Event, threading.Event]) -> None:
        """Bind the socket and answer commands until the gateway (or this module) stops."""
        path = self.path
        listener = self._bind(path)
        self._bound_inode = path.lstat().st_ino
        wake_r, wake_w = os.pipe()
        with self._lock:
            self._wake_r, self._wake_w = wake_r, wake_w
        self.logger.info("command socket at %s: %s", path, ", ".join(sorted(self.command_handlers())))
        self._thread = threading.Thread(
            target=self._loop, args=(listener, path, wake_r), name="socket:serve", daemon=True
        )
        self._thread.start()

    @on("stop")
    def shutdown(self) -> None:
        """Stop answering and remove the socket file. When the command being answered is what
        stops this module (a ``reload`` that restarts or removes it), the answer is still sent: the
        serving thread ends after it, closing the socket itself."""
        thread, self._thread = self._thread, None
        with self._lock:
            if self._wake_w >= 0:
                os.write(self._wake_w, b"!")
        if thread is not None and thread is not threading.current_thread() and not self._answering.is_set():
            thread.join(5.0)

    def _bind(self, path: Path) -> socket.socket:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise OSError(f"gateway.socket.path: {str(path)!r} exists and is not a socket; not replacing it")
        # Bound and listening under a temporary name, then renamed into place (replacing a stale
        # socket): a client that sees the path never finds it refusing connections.
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created owner-only, never briefly wider
        try:
            listener.bind(str(staging))
            listener.listen(8)
            os.rename(staging, path)
        except OSError:
            listener.close()
            staging.unlink(missing_ok=True)
            raise
        finally:
            os.umask(old_umask)
        listener.setblocking(False)
        return listener

    def _loop(self, listener: socket.socket, path: Path, wake_r: int) -> None:
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        selector.register(wake_r, selectors.EVENT_READ)
        try:
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if wake_r in ready:
                    return
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                with conn:
                    self._answering.set()
                    try:
                        self._answer(conn)
                    finally:
                        self._answering.clear()
        finally:
            selector.close()
            listener.close()
            with self._lock:
                for fd in (self._wake_r, self._wake_w):
                    os.close(fd)
                self._wake_r = self._wake_w = -1
            with contextlib.suppress(OSError):
                if path.lstat().st_ino == self._bound_inode:  # not a socket a restarted module bound since
                    path.unlink()

    def _answer(self, conn: socket.socket) -> None:
        deadline = Deadline(float(self._c("timeout", DEFAULT_TIMEOUT)))
        request = b""
        try:
            while b"\n" not in request and len(request) <= MAX_REQUEST:
                conn.settimeout(deadline.check("command socket request"))
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            reply = self._reply(request)
            conn.settimeout(deadline.remaining() or 0.1)
            conn.sendall(reply.encode("utf-8") + b"\n")
        except (OSError, TimeoutError) as exc:
            self.logger.debug("command socket: a client went away: %s", exc)

    def _reply(self, request: bytes) -> str:
        if b"\n" not in request or len(request) > MAX_REQUEST:
            return "1 Invalid message!"
        try:
            line = request.split(b"\n", 1)[0].decode("utf-8").strip("\r")
        except UnicodeDecodeError:
            return "1 Invalid message!"
        name, _, argument = line.partition(" ")
        handler = self.command_handlers().get(name)
        if handler is None:
            return "1 Unknown command!"
        try:
            out = handler((name, argument if argument else None))
        except _Refused as refused:
            return f"1 {refused}"
        except Exception as exc:
            self.logger.exception("command %s failed", safe_text(name))
            return f"1 Command failed! Exception: {exc!r}"
        return "0" if out is None else f"0 {out}"

    def _list_commands(self, request: tuple[str, str | None]) -> str:
        return ",".join(sorted(self.command_handlers()))

    def _status(self, request: tuple[str, str | None]) -> str:
        return json.dumps(self.gateway.health() if self.gateway is not None else {})

    def _reload(self, request: tuple[str, str | None]) -> str:
        if self.gateway is None:
            raise _Refused("reload refused: not running under a gateway")
        self.logger.info("reload requested on the command socket")
        try:
            return self.gateway.reload()
        except ConfigError as exc:
            raise _Refused(f"reload refused: {'; '.join(exc.errors)}") from None
