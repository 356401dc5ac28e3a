"""Fixtures for the 1-wire tests: a real Debian owserver on a free loopback port, and a tiny fake
owserver (our own ownet protocol server) for faults owserver cannot emulate.

Import the fixture functions (``owserver_fixture``, ``owserver_factory_fixture``,
``fake_owserver_fixture``) into a test module; the fixtures are named ``owserver``,
``owserver_factory`` and ``fake_owserver``.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyownet import protocol  # type: ignore[import-untyped]

from tests.helpers import require_program

OWSERVER = shutil.which("owserver") or "/usr/bin/owserver"
READY_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulated_id(family: str, index: int, bus: int = 0) -> str:
    """The id owserver's ``--tester`` gives the device at ``index`` of a tester bus.

    Layout (owfs ow_tester.c): bytes 1-2 bus number (little endian), byte 3 family, byte 4 its
    complement, bytes 5-6 position in the list (little endian).
    """
    fam = int(family, 16)
    raw = bytes([bus & 0xFF, bus >> 8, fam, fam ^ 0xFF, index & 0xFF, index >> 8])
    return f"{family}.{raw.hex().upper()}"


def emulated_value(device_id: str, array_index: int = 0) -> int:
    """owserver ``--tester`` value formula before scaling: family + bus + position + array index
    (floats are this times 0.1)."""
    raw = bytes.fromhex(device_id[3:])
    return int(device_id[:2], 16) + raw[0] + raw[1] * 256 + raw[4] + raw[5] * 256 + array_index


class Owserver:
    """One owserver process in the foreground on 127.0.0.1:<port>. Only ever signals its own pid."""

    def __init__(self, devices: Sequence[str], log_dir: Path, extra: Sequence[str] = ()) -> None:
        self.devices = list(devices)
        self.extra = list(extra)
        self.log_dir = log_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self._starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._starts += 1
        log_path = self.log_dir / f"owserver-{self.port}-{self._starts}.log"
        with open(log_path, "wb") as log_file:
            return subprocess.Popen(
                [
                    OWSERVER,
                    "--foreground",
                    "--error_print=2",
                    "--error_level=1",
                    "-p",
                    f"127.0.0.1:{self.port}",
                    *self.devices,
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, new_port_on_failure: bool = True) -> Owserver:
        """Start and wait until it answers a ping; a bind race picks another port (up to 5 tries)."""
        for _ in range(5):
            self.proc = self._spawn()
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # exited, even with status 0: "Bind problem"
                try:
                    protocol.proxy("127.0.0.1", self.port)
                    return self
                except protocol.Error:
                    time.sleep(0.02)
            self._reap()
            if not new_port_on_failure:
                break
            self.port = free_port()
        raise RuntimeError(f"owserver did not start on 127.0.0.1:{self.port} with {self.devices}")

    def _reap(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.frozen:
                self.proc.send_signal(signal.SIGCONT)
                self.frozen = False
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server is gone at once (connections reset, port free)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(3)
        self.proc = None
        self.frozen = False

    def restart(self, devices: Sequence[str] | None = None) -> None:
        """Kill and start again on the same port, optionally with another device list."""
        self.kill()
        if devices is not None:
            self.devices = list(devices)
        self.start(new_port_on_failure=False)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        self._reap()


@pytest.fixture(name="owserver_factory")
def owserver_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., Owserver]]:
    """``start(devices, extra=())`` starts an owserver; all are stopped at teardown."""
    require_program(OWSERVER, "owserver")
    started: list[Owserver] = []

    def start(devices: Sequence[str], extra: Sequence[str] = ()) -> Owserver:
        server = Owserver(devices, tmp_path, extra)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(name="owserver")
def owserver_fixture(owserver_factory: Callable[..., Owserver]) -> Owserver:
    """owserver with deterministic tester devices: 28, 28, 10, 26, 1D, 29 on one bus."""
    return owserver_factory(["--tester=28,28,10,26,1D,29"])


# -- fake owserver --------------------------------------------------------------------------------

MSG_NOP, MSG_READ, MSG_WRITE, MSG_DIRALLSLASH = 1, 2, 3, 9
FLG_PERSISTENCE = 0x04
_HEADER = struct.Struct(">iiiiii")


@dataclass(frozen=True)
class PingForever:
    """A handler's answer: keep-alive ping frames every ``every`` seconds, never a reply (what
    owserver sends during a long bus operation, here without end)."""

    every: float = 0.2


@dataclass(frozen=True)
class Drip:
    """A handler's answer: the reply ``(ret, body)`` sent one byte every ``every`` seconds."""

    ret: int
    body: bytes
    every: float = 0.3


#: ``handler(msgtype, path, data) -> (ret, payload)``; ret < 0 is an owserver error (-errno);
#: returning None closes the connection without an answer (the client sees ShortRead);
#: :class:`PingForever` / :class:`Drip` stall the client.
FakeHandler = Callable[[int, str, bytes], "tuple[int, bytes] | PingForever | Drip | None"]


class FakeOwserver:
    """A minimal ownet server on 127.0.0.1 (thread per connection) answering from ``handler``.

    Every request is appended to ``requests`` as ``(msgtype, path)``. ``stop()`` closes all
    sockets and joins all threads.
    """

    def __init__(self, handler: FakeHandler) -> None:
        self.handler = handler
        self.requests: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fake-owserver", daemon=True)
        self._accept_thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name="fake-owserver-conn", daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _recv(self, conn: socket.socket, size: int) -> bytes | None:
        buf = b""
        while len(buf) < size:
            if self._stopping.is_set():
                return None
            try:
                chunk = conn.recv(size - len(buf))
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        with conn:
            while True:
                head = self._recv(conn, _HEADER.size)
                if head is None:
                    return
                _version, length, msgtype, flags, _size, _offset = _HEADER.unpack(head)
                payload = self._recv(conn, length) if length > 0 else b""
                if payload is None:
                    return
                path_raw, _, data = payload.partition(b"\0")
                path = path_raw.decode()
                with self._lock:
                    self.requests.append((msgtype, path))
                answer = (0, b"") if msgtype == MSG_NOP else self.handler(msgtype, path, data)
                if answer is None:
                    return
                keep = bool(flags & FLG_PERSISTENCE)
                reply_flags = FLG_PERSISTENCE if keep else 0
                if isinstance(answer, PingForever):
                    self._ping_forever(conn, answer.every, reply_flags)
                    return
                ret, body = (answer.ret, answer.body) if isinstance(answer, Drip) else answer
                frame = _HEADER.pack(0, len(body), ret, reply_flags, len(body), 0) + body
                try:
                    if isinstance(answer, Drip):
                        for i in range(len(frame)):
                            if self._stopping.wait(answer.every):
                                return
                            conn.sendall(frame[i : i + 1])
                    else:
                        conn.sendall(frame)
                except OSError:
                    return
                if not keep:
                    return

    def _ping_forever(self, conn: socket.socket, every: float, flags: int) -> None:
        ping = _HEADER.pack(0, -1, 0, flags, 0, 0)
        while not self._stopping.wait(every):
            try:
                conn.sendall(ping)
            except OSError:
                return

    def stop(self) -> None:
        self._stopping.set()
        self._sock.close()
        self._accept_thread.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)


def tree_handler(
    files: dict[str, bytes | int],
    dirs: dict[str, list[str]] | Callable[[str], list[str] | None],
    keep_writes: bool = False,
) -> FakeHandler:
    """A handler serving ``files`` (path -> bytes, or an int errno to fail with) and ``dirs``
    (path -> entries, or a function). ``/uncached/X`` serves ``X`` unless listed itself, as
    owserver does. Unknown paths fail with errno 1 like owserver. Writes to existing files
    succeed (and do nothing; with ``keep_writes`` the value is stored, as a real device would)."""

    def lookup_dir(path: str) -> list[str] | None:
        if callable(dirs):
            return dirs(path)
        return dirs.get(path)

    def handle(msgtype: int, path: str, data: bytes) -> tuple[int, bytes] | None:
        if msgtype == MSG_DIRALLSLASH:
            entries = lookup_dir(path)
            return (-1, b"") if entries is None else (0, ",".join(entries).encode())
        value = files.get(path)
        if value is None and path.startswith("/uncached/"):
            value = files.get(path[len("/uncached") :])
        if value is None:
            return -1, b""
        if isinstance(value, int):
            return -value, b""
        if msgtype == MSG_WRITE:
            if keep_writes:
                files[path.removeprefix("/uncached")] = data
            return 0, b""
        return 0, value

    return handle


@pytest.fixture(name="fake_owserver")
def fake_owserver_fixture() -> Iterator[Callable[[FakeHandler], FakeOwserver]]:
    """``start(handler)`` starts a :class:`FakeOwserver`; all are stopped at teardown."""
    started: list[FakeOwserver] = []

    def start(handler: FakeHandler) -> FakeOwserver:
        server = FakeOwserver(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
