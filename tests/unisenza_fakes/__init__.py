"""Test double of the Unisenza cloud: a test CA, a real mosquitto broker, the fake cloud process.

- :func:`make_test_ca` writes a CA and a server certificate for ``IP:127.0.0.1`` (openssl CLI).
- :class:`Broker` runs ``/usr/sbin/mosquitto`` on two free loopback ports (plain MQTT for the
  fake shadow service, websockets for the client through the front); ``restart()`` keeps them.
- :class:`FakeCloud` runs ``cloud.py`` (HTTPS Cognito + REST, SigV4 TLS front, shadow service)
  as a child process and steers it through ``POST /_fake/<op>``.

Everything binds 127.0.0.1 only, and ``stop()`` methods leave no process or open file behind.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from uun_gateway.modules.unisenza import Endpoints

from tests.conftest import require_program

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
CLOUD_SCRIPT = Path(__file__).with_name("cloud.py")
POOL_ID = "eu-central-1_TestPool1"
CLIENT_ID = "test-client-id"
USERNAME = "user@example.com"
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Poll until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass(frozen=True)
class CertFiles:
    """Paths of the CA bundle and the server certificate/key it signed."""

    ca_file: str
    cert: str
    key: str


def make_test_ca(directory: Path) -> CertFiles:
    """Create a throw-away CA and a server certificate for 127.0.0.1 in ``directory``."""
    d = Path(directory)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=unisenza test CA",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return CertFiles(str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"))


class Broker:
    """mosquitto on 127.0.0.1: a plain MQTT listener and a websockets listener."""

    def __init__(self) -> None:
        self.mqtt_port = free_port()
        self.ws_port = free_port()
        # mosquitto drops root privileges: its config and log must be reachable by its user.
        self.dir = Path(tempfile.mkdtemp(prefix="unisenza-broker-"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            "persistence false\nallow_anonymous true\nlog_dest stderr\n"
            f"listener {self.mqtt_port} 127.0.0.1\nprotocol mqtt\n"
            # "listener PORT 127.0.0.1" would bind 0.0.0.0 for websockets (libwebsockets 4.1).
            f"listener {self.ws_port} lo\nsocket_domain ipv4\nprotocol websockets\n"
        )
        os.chmod(self.conf, 0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        require_program(MOSQUITTO, "mosquitto")
        """Start mosquitto and wait until both listeners accept connections."""
        with open(self.dir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        wait_port(self.mqtt_port)
        wait_port(self.ws_port)

    def stop(self) -> None:
        """Terminate mosquitto and wait for it."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the working directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def default_gateways() -> list[dict[str, Any]]:
    """Two gateways with different identities: GW1 with three thermostats, GW2 with one."""

    def thermostat(code: str, name: str, current: str, target: str) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, code)),
            "device_code": code,
            "name": name,
            "properties": {
                "ep1:sZDO:EUID": f"EUID-{code}",
                "ep1:sBasicS:ManufactureName": "Purmo",
                "ep1:sTherS:LocalTemperature_x100": current,
                "ep1:sTherS:HeatingSetpoint_x100": target,
                "ep1:sTherS:MinHeatSetpoint_x100": "500",
                "ep1:sTherS:MaxHeatSetpoint_x100": "3000",
                "ep1:sTherS:RunningMode": 4,
                "ep1:sTherS:RunningState": 0,
            },
        }

    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "GW1")),
            "device_code": "GW1",
            "name": "Home gateway",
            "identity_id": "eu-central-1:11111111-1111-1111-1111-111111111111",
            "properties": {
                "ep0:sGateway:NetworkLANIP": "192.168.1.20",
                "ep0:sGateway:NetworkLANMAC": "aa:bb",
            },
            "thermostats": [
                thermostat("T1", "Living room", "2135", "2050"),
                thermostat("T2", "Kitchen", "1990", "2000"),
                thermostat("T3", "Bedroom", "1800", "1800"),
            ],
        },
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "GW2")),
            "device_code": "GW2",
            "name": "Cottage gateway",
            "identity_id": "eu-central-1:22222222-2222-2222-2222-222222222222",
            "thermostats": [thermostat("T4", "Sauna", "1500", "1600")],
        },
    ]


class FakeCloud:
    """The fake cloud child process (see ``cloud.py``)."""

    def __init__(self, ca: CertFiles, broker: Broker, workdir: Path, **settings: Any) -> None:
        self.ca = ca
        self.broker = broker
        self.workdir = Path(workdir)
        self.config: dict[str, Any] = {
            "pool_id": POOL_ID,
            "client_id": CLIENT_ID,
            "users": {
                USERNAME: {"password": PASSWORD, "sub": "3f2c6a1e-0000-4000-8000-000000000001"},
                "empty@example.com": {
                    "password": PASSWORD,
                    "sub": "3f2c6a1e-0000-4000-8000-000000000003",
                    "empty": True,
                },
                "mfa@example.com": {
                    "password": PASSWORD,
                    "sub": "3f2c6a1e-0000-4000-8000-000000000002",
                    "challenge": "SOFTWARE_TOKEN_MFA",
                },
            },
            "gateways": default_gateways(),
            "cert": ca.cert,
            "key": ca.key,
            "mqtt_port": broker.mqtt_port,
            "ws_port": broker.ws_port,
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = 0
        self.front_port = 0

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and wait for its ports line."""
        config_path = self.workdir / "fake-cloud.json"
        config_path.write_text(json.dumps(self.config))
        with open(self.workdir / "fake-cloud.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(CLOUD_SCRIPT), str(config_path)], stdout=subprocess.PIPE, stderr=log
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"fake cloud did not start; see {self.workdir / 'fake-cloud.log'}")
        ports = json.loads(line)
        self.http_port, self.front_port = ports["http_port"], ports["front_port"]

    def stop(self) -> None:
        """Terminate the process and close everything this object opened."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def control(self, op: str, **body: Any) -> Any:
        """Call a control operation of the fake (see ``cloud.py``)."""
        # A one-off session: no pooled socket outlives the call (the tests check for leaks).
        resp = requests.post(
            f"https://127.0.0.1:{self.http_port}/_fake/{op}", json=body, verify=self.ca.ca_file, timeout=10
        )
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        """The fake's counters."""
        return dict(self.control("stats"))

    def endpoints(self) -> Endpoints:
        """Client endpoints pointing at this fake, trusting the test CA only."""
        base = f"https://127.0.0.1:{self.http_port}"
        return Endpoints(
            user_pool_id=POOL_ID,
            client_id=CLIENT_ID,
            idp_url=base + "/",
            identity_url=base + "/",
            service_url=base + "/api/v1",
            iot_host="127.0.0.1",
            iot_port=self.front_port,
            ca_file=self.ca.ca_file,
        )


class CloudEnv:
    """Broker + fake cloud, started together; ``close()`` stops both."""

    def __init__(self, ca: CertFiles, workdir: Path, **settings: Any) -> None:
        self.broker = Broker()
        self.broker.start()
        try:
            self.cloud = FakeCloud(ca, self.broker, workdir, **settings)
            self.cloud.start()
        except BaseException:
            self.broker.cleanup()
            raise

    def close(self) -> None:
        """Stop the fake cloud and the broker."""
        try:
            self.cloud.stop()
        finally:
            self.broker.cleanup()


def section_for(cloud: FakeCloud, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A ``gateway.unisenza`` section for the fake, the password in a 0600 file."""
    password_file = tmp_path / "unisenza.password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    endpoints = {k: v for k, v in cloud.endpoints().to_config().items() if v is not None}
    section: dict[str, Any] = {
        "username": USERNAME,
        "passwordFile": str(password_file),
        "requestTimeout": 5,
        "reconnectDelay": {"min": 0.1, "max": 0.5},
        "retryDelay": {"min": 0.1, "max": 0.5},
        "endpoints": endpoints,
    }
    section.update(overrides)
    return section
