"""sd_notify and the progress-gated watchdog: the test plays systemd on a unix datagram socket."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from uun_gateway import Gateway, Module, on
from uun_gateway.systemd import SystemdNotifier, format_status


class NotifyListener:
    """The systemd side of the notification socket (an abstract unix datagram socket)."""

    def __init__(self) -> None:
        self.address = f"@uun-gateway-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])

    def recv(self, timeout: float) -> tuple[float, dict[str, str]] | None:
        """The next datagram as (arrival time, {key: value}), or None when none came in ``timeout`` s.
        Every datagram must be valid UTF-8 (systemd shows STATUS as UTF-8)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        text = data.decode("utf-8")
        return time.monotonic(), dict(line.split("=", 1) for line in text.split("\n") if line)

    def wait_for(self, key: str, timeout: float = 10.0) -> tuple[float, dict[str, str], list[dict[str, str]]]:
        """Read until a datagram with ``key`` arrives; return it and the messages before it."""
        deadline = time.monotonic() + timeout
        before: list[dict[str, str]] = []
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is None:
                break
            if key in got[1]:
                return got[0], got[1], before
            before.append(got[1])
        raise AssertionError(f"no {key} within {timeout}s; got {before}")

    def pings_within(self, seconds: float) -> int:
        """Count WATCHDOG=1 messages arriving in the next ``seconds`` (for asserting that none come)."""
        deadline, pings = time.monotonic() + seconds, 0
        while (left := deadline - time.monotonic()) > 0 and (got := self.recv(left)) is not None:
            pings += "WATCHDOG" in got[1]
        return pings

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    notify = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield notify
    notify.close()


class Ticker(Module):
    """Ticks on its timer; ``hang`` makes the next tick block until ``release`` is set."""

    def __init__(self, config: Any = None, uuclient: Any = None) -> None:
        super().__init__(config, uuclient)
        self.ticked = threading.Event()
        self.hang = threading.Event()
        self.hanging = threading.Event()
        self.release = threading.Event()

    @on("tick")
    def tick(self) -> None:
        self.ticked.set()
        if self.hang.is_set():
            self.hanging.set()
            self.release.wait(30)


class Čidlo(Module):
    """A module whose id (``čidlo``) is outside latin-1."""

    @on("tick")
    def tick(self) -> None:
        pass


def make_gateway(tmp_path: Path, *modules: type[Module], period: float = 0.02) -> tuple[Gateway, list[Any]]:
    made: list[Any] = []

    def init(config: dict[str, Any], uuclient: Any) -> list[Any]:
        made.extend(cls(config["gateway"], uuclient) for cls in modules)
        return made

    timers = {cls.__name__[0].lower() + cls.__name__[1:]: period for cls in modules}
    config = {"gateway": {"moduleTimers": timers, "storageDir": str(tmp_path / "storage")}}
    return Gateway(config, init), made


def test_outside_systemd_nothing_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    gateway, _ = make_gateway(tmp_path, Ticker)
    threads = threading.active_count()
    notifier = SystemdNotifier.from_env(gateway)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready()
    notifier.status("running")
    assert threading.active_count() == threads, "a notifier outside systemd must not start a thread"
    notifier.stopping()
    notifier.close()


def test_ready_status_watchdog_cadence_and_stopping(
    listener: NotifyListener, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # pings every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    gateway, (ticker,) = make_gateway(tmp_path, Ticker)
    notifier = SystemdNotifier.from_env(gateway)
    assert notifier.enabled and notifier.watchdog_interval == pytest.approx(0.1)
    try:
        gateway.start()
        assert ticker.ticked.wait(10)
        notifier.ready()
        _, first, before = listener.wait_for("READY")
        assert before == [] and first == {"READY": "1"}, "READY=1 comes first and alone"
        _, status, _ = listener.wait_for("STATUS")
        assert status["STATUS"].startswith("1 module (ticker)"), status
        assert "no upload yet" in status["STATUS"]

        pings: list[float] = []
        while len(pings) < 12:
            at, message, _ = listener.wait_for("WATCHDOG", timeout=5)
            assert message == {"WATCHDOG": "1"}, "a ping travels alone"
            pings.append(at)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        mean = sum(gaps) / len(gaps)
        assert 0.08 <= mean <= 0.2, f"pings every {mean:.3f}s on average, expected WATCHDOG_USEC/2 = 0.1s"
        assert min(gaps) >= 0.04, f"pings came in a burst: {gaps}"

        notifier.stopping()
        _, stopping, _ = listener.wait_for("STOPPING")
        assert stopping == {"STOPPING": "1"}
        _, status, _ = listener.wait_for("STATUS")
        assert status["STATUS"] == "stopping"
    finally:
        gateway.stop()
        notifier.close()
    late = listener.recv(0.3)
    assert late is None, f"nothing follows STOPPING=1, got {late}"


def test_stuck_handler_stops_pings_until_it_returns(
    listener: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="uun_gateway.systemd")
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 0.05 s
    gateway, (ticker,) = make_gateway(tmp_path, Ticker)
    notifier = SystemdNotifier.from_env(gateway, handler_timeout=0.3)
    try:
        gateway.start()
        notifier.ready()
        for _ in range(3):
            listener.wait_for("WATCHDOG")
        ticker.hang.set()
        assert ticker.hanging.wait(10)
        hung_at = time.monotonic()
        _, status, _ = listener.wait_for("STATUS")
        stalled_at = time.monotonic()
        assert status["STATUS"].startswith("STALLED: timer ticker: handler has been running for"), status
        assert stalled_at - hung_at >= 0.25, "stalled only after handler_timeout"
        assert "gateway stalled, withholding watchdog pings" in caplog.text
        # systemd (WatchdogSec = 0.1 s here) would kill the gateway: no ping for many watchdog periods
        assert listener.pings_within(0.6) == 0, "pinged while a handler was stuck"
        assert caplog.text.count("gateway stalled") == 1, "a stall is logged once"

        ticker.hang.clear()
        ticker.release.set()
        listener.wait_for("WATCHDOG", timeout=5)
        assert "watchdog pings resume" in caplog.text
    finally:
        ticker.release.set()
        notifier.stopping()
        gateway.stop()
        notifier.close()


def test_status_is_utf8_on_one_line(listener: NotifyListener, tmp_path: Path) -> None:
    gateway, _ = make_gateway(tmp_path, Čidlo)
    notifier = SystemdNotifier.from_env(gateway)
    try:
        gateway.start()
        notifier.ready()
        listener.wait_for("READY")
        _, status, _ = listener.wait_for("STATUS")
        assert status["STATUS"].startswith("1 module (čidlo) · no upload yet"), status

        notifier.status("21.5 °C, čidlo OK\nWATCHDOG=1")
        _, status, _ = listener.wait_for("STATUS")
        assert status == {"STATUS": "21.5 °C, čidlo OK WATCHDOG=1"}, "one line, no injected assignment"
    finally:
        notifier.stopping()
        gateway.stop()
        notifier.close()


class FakeGateway:
    def __init__(self) -> None:
        self.stalled_calls = threading.Semaphore(0)

    def stalled(self, handler_timeout: float | None = None) -> list[str]:
        self.stalled_calls.release()
        raise RuntimeError("lock table corrupt")

    def health(self) -> dict[str, Any]:
        return {"modules": {}}


def test_a_failing_health_check_withholds_pings(listener: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    gateway = FakeGateway()
    notifier = SystemdNotifier.from_env(gateway)
    try:
        notifier.ready()
        _, status, before = listener.wait_for("STATUS")
        assert before == [{"READY": "1"}]
        assert "health check failed: RuntimeError: lock table corrupt" in status["STATUS"]
        for _ in range(4):  # the thread keeps checking, and keeps not pinging
            assert gateway.stalled_calls.acquire(timeout=5)
        while (got := listener.recv(0.0)) is not None:
            assert "WATCHDOG" not in got[1]
        assert notifier.pings == 0
    finally:
        notifier.stopping()
        notifier.close()


def test_watchdog_for_another_pid_is_not_ours(listener: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = SystemdNotifier.from_env(FakeGateway())
    try:
        assert notifier.enabled and notifier.watchdog_interval is None
    finally:
        notifier.close()


def test_send_failures_are_logged_once_and_never_raise(
    listener: NotifyListener, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    gateway, _ = make_gateway(tmp_path, Ticker)
    notifier = SystemdNotifier.from_env(gateway)
    try:
        notifier.status("one")
        listener.wait_for("STATUS")
        listener.close()  # systemd went away: sends now fail with ECONNREFUSED
        with caplog.at_level(logging.WARNING, logger="uun_gateway.systemd"):
            notifier.status("two")
            notifier.status("three")
            notifier.stopping()
        failures = [r for r in caplog.records if "sending to systemd failed" in r.getMessage()]
        assert len(failures) == 1, caplog.text
    finally:
        notifier.close()


def test_format_status_summarises_health() -> None:
    health: dict[str, Any] = {
        "uptime": 12.0,
        "configError": None,
        "modules": {
            "heartbeat": {
                "stored": None,
                "lastSendOk": "2026-11-23T10:41:05Z",
                "handlerErrors": 0,
                "sendFailures": 1,
            },
            "onewire": {"stored": 11, "lastSendOk": None, "handlerErrors": 2, "sendFailures": 0},
            "upload": {
                "stored": 1,
                "lastSendOk": "2026-11-23T10:42:00Z",
                "handlerErrors": 0,
                "sendFailures": 0,
            },
        },
    }
    assert format_status(health) == (
        "3 modules (heartbeat, onewire, upload) · 12 entries stored · last upload 2026-11-23 10:42:00 UTC"
        " · 2 handler errors · 1 failed upload"
    )
    health["configError"] = "update handler failed"
    assert format_status(health).endswith(" · config update failed: update handler failed")
    assert format_status(health, ["timer onewire: thread is no longer running"]).startswith(
        "STALLED: timer onewire: thread is no longer running · 3 modules"
    )
    assert format_status({}) == "0 modules (none) · no upload yet"


def _run_cli(config: Path, listener: NotifyListener, tmp_path: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000", JOURNAL_STREAM="")
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from uun_gateway.cli import main; sys.exit(main())",
            "run",
            "-c",
            str(config),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_cli_run_reports_to_systemd_and_stops_on_sigterm(listener: NotifyListener, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gateway": {}}))
    proc = _run_cli(config, listener, tmp_path)
    try:
        listener.wait_for("READY", timeout=30)
        listener.wait_for("STATUS")
        listener.wait_for("WATCHDOG")
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_run_with_an_invalid_config_exits_78_without_ready(listener: NotifyListener, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"gateway": {"moduleTimers": {"nosuchmodule": 5}}}))
    proc = _run_cli(config, listener, tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 78, out  # the unit's RestartPreventExitStatus: no restart loop
    assert "nosuchmodule" in out
    assert listener.recv(0.0) is None, "no READY for an invalid config"


def test_an_unusable_notify_socket_is_logged_and_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "no-such-socket"))
    notifier = SystemdNotifier.from_env(FakeGateway())
    assert not notifier.enabled
    assert "not reporting to systemd" in caplog.text
    notifier.ready()
    assert notifier._thread is None
    notifier.close()
