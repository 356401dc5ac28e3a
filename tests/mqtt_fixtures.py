"""Fixtures for the MQTT tests: real Debian mosquitto brokers on free loopback ports (plain, TLS
with a test CA made by openssl, mutual TLS, password file, ACL), a subscriber that records what
arrives, and a gateway process that can be SIGKILLed.

Fixtures (import the ``*_fixture`` functions into a test module): ``broker_factory`` (start as
many mosquittos as a test needs; every one is stopped at the end), ``test_ca`` (a CA, a server
certificate for 127.0.0.1 and localhost, a client certificate, and a second CA the broker does not
trust), ``proxy_factory`` (a TCP proxy a test can cut).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import free_port, require_program, wait_for

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
OPENSSL = "/usr/bin/openssl"
READY_TIMEOUT = 10.0


# -- a test CA ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, name: str, cn: str, ca: str, ext: str | None = None) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        f"/CN={cn}",
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    extra = ["-extfile", ext] if ext else []
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-out", f"{name}.crt", *extra, cwd=d,
    )  # fmt: skip


def make_ca(d: Path) -> Certificates:
    """Two CAs and certificates issued by them, in ``d`` (openssl, a few hundred ms)."""
    require_program(OPENSSL, "openssl")
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "2", "-subj", f"/CN=uun-gateway test {ca}", cwd=d,
        )  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(d, "server", "localhost", "ca", "server.ext")
    _issue(d, "client", "gateway-client", "ca")
    _issue(d, "other-client", "gateway-client", "other-ca")
    return Certificates(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
        d / "other-ca.crt", d / "other-client.crt", d / "other-client.key",
    )  # fmt: skip


@pytest.fixture(name="test_ca", scope="session")
def test_ca_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_ca(tmp_path_factory.mktemp("mqtt-ca"))


# -- mosquitto ------------------------------------------------------------------------------------


class Mosquitto:
    """One mosquitto in the foreground on 127.0.0.1:``port``. Only ever signals its own pid.

    ``extra`` is appended to the listener's config (TLS files, ``require_certificate``, …);
    ``users`` (name -> password) makes a password file and turns anonymous access off; ``acl`` is
    the text of an ACL file.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        extra: Sequence[str] = (),
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
    ) -> None:
        require_program(MOSQUITTO, "mosquitto")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [f"listener {self.port} 127.0.0.1", *extra, "log_dest stderr"]
        if "persistence true" not in extra:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the user mosquitto, who cannot read the test's files
        lines += ["log_type error", "log_type warning", "log_type notice", "log_type information"]
        if users is not None:
            require_program(MOSQUITTO_PASSWD, "mosquitto")
            pwfile = self.dir / "passwords"
            pwfile.write_text("")
            for name, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pwfile), name, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir}/acl")
        (self.dir / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        with open(self.dir / f"log.{time.monotonic_ns()}", "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for(self._listening, READY_TIMEOUT)
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited with {self.proc.returncode}: {self.log_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash: no clean disconnects, wills of its clients are lost with it)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def log_text(self) -> str:
        return "".join(p.read_text() for p in sorted(self.dir.glob("log*")))


@pytest.fixture(name="broker_factory")
def broker_factory_fixture(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(started)}", **kwargs)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        broker.stop()


# -- a recording subscriber -----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client (its own network thread) that records every message on ``topics``.

    Use as a context manager; ``close`` ends its thread and sockets.
    """

    def __init__(
        self,
        port: int,
        topics: Sequence[str] = ("#",),
        *,
        host: str = "127.0.0.1",
        tls: Any = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        clean: bool = True,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-sub-{time.monotonic_ns()}", clean_session=clean
        )
        self.client.reconnect_delay_set(1, 1)
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.topics = list(topics)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self.client.on_message = self._message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(READY_TIMEOUT):
            self.close()
            raise AssertionError(f"the test subscriber could not subscribe on port {port}")

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def entries(self, topic: str) -> list[dict[str, Any]]:
        """Every entry of every data message on ``topic``, in arrival order."""
        return [e for m in self.on(topic) for e in m.json()["entries"]]

    def ids(self, topic: str) -> list[int]:
        return [int(e["id"]) for e in self.entries(topic)]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(READY_TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        reset = getattr(self.client, "_reset_sockets", None)
        if callable(reset):
            reset()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a gateway in a process of its own ------------------------------------------------------------

GATEWAY_SCRIPT = """
import json, logging, sys, threading
from uun_gateway import Gateway, Module, on

config = json.loads(sys.argv[1])
count, chunk = int(sys.argv[2]), int(sys.argv[3])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

class Sensor(Module):
    id = "sensor"

    @on("start")
    def produce(self, evs):
        runev, _ = evs
        n = len(self.storage)
        made = 0
        while made < count and runev.is_set():
            self.storage.extend({"n": made + i} for i in range(min(chunk, count - made)))
            made += chunk
        print("produced", flush=True)

g = Gateway(config, lambda c, u: [Sensor(c["gateway"], u)])
g.start()
print("started", flush=True)
threading.Event().wait()
"""


class GatewayProcess:
    """``python -c GATEWAY_SCRIPT``: a gateway whose module ``sensor`` appends ``count`` entries in
    transactions of ``chunk`` and whose ``mqtt`` module delivers them. Killed with SIGKILL only."""

    def __init__(self, config: Mapping[str, Any], count: int, chunk: int, log: Path) -> None:
        self._log = open(log, "ab")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GATEWAY_SCRIPT, json.dumps(config), str(count), str(chunk)],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() == b"produced":  # the start handler may finish before start() returns
            line = self.proc.stdout.readline()
        if line.strip() != b"started":
            self.kill()
            raise AssertionError(f"the gateway process did not start: {line!r}; see {log}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# -- a TCP proxy the test can cut --------------------------------------------------------------


class Proxy:
    """A loopback TCP forwarder from ``port`` to ``target_port``: lets a test cut the network
    (``cut``: close every connection, refuse new ones until ``restore``). Threads end on ``close``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._open = threading.Event()
        self._open.set()
        self._closing = threading.Event()
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                down, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                down.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                down.close()
                continue
            self.accepted += 1
            with self._lock:
                self._conns += [down, up]
                for a, b in ((down, up), (up, down)):
                    t = threading.Thread(target=self._pipe, args=(a, b), name="test-proxy-pipe", daemon=True)
                    self._threads.append(t)
                    t.start()

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(2)

    def cut(self) -> None:
        self._open.clear()
        self._drop()

    def restore(self) -> None:
        self._open.set()

    def _drop(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            threads, self._threads = self._threads, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(2)
        for t in threads:
            t.join(5)
        for s in conns:
            s.close()

    def close(self) -> None:
        self._closing.set()
        self._acceptor.join(5)
        self._server.close()
        self._drop()


@pytest.fixture(name="proxy_factory")
def proxy_factory_fixture() -> Iterator[Callable[[int], Proxy]]:
    made: list[Proxy] = []

    def make(target_port: int) -> Proxy:
        made.append(Proxy(target_port))
        return made[-1]

    yield make
    for p in made:
        p.close()


# -- RabbitMQ with its MQTT plugin ----------------------------------------------------------------

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"
RABBITMQ_START_TIMEOUT = float(os.environ.get("UUN_TEST_RABBITMQ_TIMEOUT", "150"))


class RabbitMQ:
    """A RabbitMQ node of its own (node name, data dir, AMQP, MQTT, distribution and epmd ports all
    private to the test) with the MQTT plugin, run as the current user in the foreground.
    Only ever signals its own pid; :meth:`stop` also ends the epmd it started (on its own port)."""

    def __init__(self, directory: Path) -> None:
        require_program(RABBITMQ_SERVER, "rabbitmq-server")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.epmd_port = free_port()
        self.node = f"uuntest{self.port}@localhost"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{free_port()}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\nloopback_users = none\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_LOGS": "-",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RabbitMQ:
        """Start the node; skip the test (saying why) when it is not up within the CI's budget."""
        with open(self.dir / f"out.{time.monotonic_ns()}", "ab") as out:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, cwd=self.dir, stdout=out, stderr=out)
        deadline = time.monotonic() + RABBITMQ_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rabbitmq-server exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.skip(
            f"RabbitMQ did not open its MQTT port within {RABBITMQ_START_TIMEOUT:g}s on this machine "
            "(raise UUN_TEST_RABBITMQ_TIMEOUT on a slow CI runner)"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def close(self) -> None:
        self.stop()
        if os.access(EPMD, os.X_OK):
            subprocess.run(
                [EPMD, "-port", str(self.epmd_port), "-kill"], capture_output=True, env=self.env, check=False
            )

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("out.*")))


@pytest.fixture(name="rabbitmq")
def rabbitmq_fixture(tmp_path: Path) -> Iterator[RabbitMQ]:
    node = RabbitMQ(tmp_path / "rabbitmq")
    try:
        yield node.start()
    finally:
        node.close()
