"""The control channel's client side: where the command socket is, and sending it one command.

The server is the built-in ``socket`` module (:mod:`uun_gateway.modules.commandsocket`); the
protocol is uun-iot's: one ``NAME[ ARGUMENT]\\n`` per connection, answered ``0[ TEXT]\\n`` (done) or
``1 TEXT\\n`` (refused or failed).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import UunGatewayError

SOCKET_NAME = "control.sock"
FALLBACK_SOCKET = "uun-gateway.sock"
SYSTEM_RUNTIME_DIR = Path("/run/uun-gateway")
MAX_REPLY = 4 * 1024 * 1024


class ControlError(UunGatewayError):
    """The command socket cannot be reached, or its answer cannot be read."""


def default_socket_path() -> Path:
    """The socket the service serves when ``gateway.socket.path`` is not set: under systemd
    ``$RUNTIME_DIRECTORY/control.sock`` (the first directory), else ``uun-gateway.sock`` in the
    working directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    return Path(runtime.split(":")[0], SOCKET_NAME) if runtime else Path(FALLBACK_SOCKET)


def client_socket_path(given: str | None, config: Mapping[str, Any] | None = None) -> Path:
    """The socket a command-line client talks to: ``given`` (``--socket``); else the config's
    ``gateway.socket.path``; else ``$RUNTIME_DIRECTORY/control.sock`` when set; else the system
    service's ``/run/uun-gateway/control.sock`` when it exists; else ``uun-gateway.sock`` here."""
    if given:
        return Path(given)
    section = (config or {}).get("gateway", {}).get("socket", {})
    if isinstance(section, Mapping) and isinstance(section.get("path"), str):
        return Path(section["path"])
    if os.environ.get("RUNTIME_DIRECTORY"):
        return default_socket_path()
    system = SYSTEM_RUNTIME_DIR / SOCKET_NAME
    return system if system.exists() else Path(FALLBACK_SOCKET)


def send_command(path: Path, command: str, timeout: float = 30.0) -> tuple[bool, str]:
    """Send ``command`` to the socket at ``path``; return (done, text of the answer).

    Blocks at most ``timeout`` seconds for each step (connect, send, every read). Raises
    :class:`ControlError` naming the path when nothing listens there or the answer is cut off."""
    if "\n" in command:
        raise ValueError("a command is one line")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        try:
            conn.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"{path}: no command socket (is the gateway running with gateway.socket set?)") from None
        except OSError as exc:
            raise ControlError(f"{path}: cannot connect to the command socket: {exc.strerror or exc}") from None
        try:
            conn.sendall(command.encode("utf-8") + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if len(reply) > MAX_REPLY:
                    raise ControlError(f"{path}: the answer is longer than {MAX_REPLY} bytes")
        except TimeoutError:
            raise ControlError(f"{path}: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"{path}: the command socket went away: {exc.strerror or exc}") from None
    finally:
        conn.close()
    if not reply.endswith(b"\n"):
        raise ControlError(f"{path}: the answer was cut off: {reply[:200]!r}")
    code, _, text = reply.decode("utf-8", errors="replace").rstrip("\n").partition(" ")
    if code not in ("0", "1"):
        raise ControlError(f"{path}: not an answer of the command socket: {reply[:200]!r}")
    return code == "0", text


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--socket``, ``-c`` and ``--timeout``: where the running gateway is."""
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the gateway's command socket (default: gateway.socket.path of -c FILE, else "
        "$RUNTIME_DIRECTORY/control.sock, else /run/uun-gateway/control.sock if it exists, else ./uun-gateway.sock)",
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="the config file whose gateway.socket.path to use")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds to wait for the answer (30)")
