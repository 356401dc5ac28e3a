"""Stop signals: handled from the moment ``uun-gateway run`` can take them to the end of its stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uun_gateway.signals import StopRequest

UUN_GATEWAY = str(Path(sys.executable).parent / "uun-gateway")


def _handles_sigterm(pid: int) -> bool:
    """Whether the process blocks or catches SIGTERM (else it would die of it)."""
    fields = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    bit = 1 << (signal.SIGTERM - 1)
    return bool((int(fields["SigBlk"], 16) | int(fields["SigCgt"], 16)) & bit)


class Run:
    """``uun-gateway run`` under ``env -i`` (no locale, no PYTHONUNBUFFERED, stderr a pipe)."""

    def __init__(self, config: Path, *, poll: bool = True) -> None:
        self.proc = subprocess.Popen(
            ["env", "-i", UUN_GATEWAY, "run", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=config.parent,
        )
        self.err = b""
        deadline = time.monotonic() + 30
        while poll and not _handles_sigterm(self.proc.pid):
            assert self.proc.poll() is None and time.monotonic() < deadline, "never took SIGTERM"
        self.handled_at = time.monotonic()

    def read_until(self, text: bytes) -> None:
        assert self.proc.stderr is not None
        while text not in self.err:
            chunk = os.read(self.proc.stderr.fileno(), 4096)
            assert chunk, f"exited before logging {text!r}: {self.err.decode()}"
            self.err += chunk

    def finish(self) -> tuple[int, str]:
        try:
            _, rest = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, rest = self.proc.communicate()
            pytest.fail(f"the signal was lost: still running 30 s later\n{(self.err + rest).decode()}")
        return self.proc.returncode, (self.err + rest).decode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"gateway": {"storageDir": str(tmp_path / "storage")}}))
    return path


def test_sigterm_at_any_moment_of_start_up_stops_with_exit_0(config: Path) -> None:
    calibration = Run(config)
    calibration.read_until(b"gateway started")
    start_up = time.monotonic() - calibration.handled_at
    calibration.proc.send_signal(signal.SIGTERM)
    assert calibration.finish()[0] == 0

    # before and during loading, around "gateway started", and just after it
    delays = [start_up * n / 16 for n in range(20)]
    for delay in delays:
        run = Run(config)
        time.sleep(delay)  # the moment under test, not a wait for a thread
        run.proc.send_signal(signal.SIGTERM)
        code, err = run.finish()
        assert code == 0, f"signal {delay * 1000:.0f} ms after it was taken: exit {code}\n{err}"
        assert "SIGTERM received, stopping" in err
    for _ in range(10):
        # Reading stderr as it comes (no polling that would delay us), the signal arrives while
        # "gateway started" is still being written: a handler that logs then loses the signal.
        run = Run(config, poll=False)
        run.read_until(b"gateway started")
        run.proc.send_signal(signal.SIGTERM)
        code, err = run.finish()
        assert code == 0 and "gateway stopped" in err, err


def test_a_second_signal_while_stopping_is_ignored_and_the_exit_code_is_the_first_ones(config: Path) -> None:
    run = Run(config)
    run.read_until(b"gateway started")
    run.proc.send_signal(signal.SIGUSR1)
    run.read_until(b"SIGUSR1 received, stopping")
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 1
    assert err.count("gateway stopped") == 1


def test_signals_after_the_stop_do_not_change_the_exit_code(config: Path) -> None:
    run = Run(config)
    run.read_until(b"gateway started")
    run.proc.send_signal(signal.SIGUSR1)
    run.read_until(b"gateway stopped")
    while run.proc.poll() is None:  # hammer the window between the stop and the exit
        run.proc.send_signal(signal.SIGTERM)
    code, _ = run.finish()
    assert code == 1


def test_stop_request_counts_later_signals() -> None:
    stop = StopRequest()
    assert stop.receive(signal.SIGTERM) and stop.requested.is_set()
    assert not stop.receive(signal.SIGUSR1)
    assert stop.exit_code == 0 and stop.ignored == 1
    stop.reset()
    assert not stop.requested.is_set() and stop.receive(signal.SIGUSR1) and stop.exit_code == 1


def test_a_signal_handler_stops_even_when_its_log_line_cannot_be_written() -> None:
    class Reentrant(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    log = logging.getLogger("tests.signals.reentrant")
    log.propagate = False
    log.addHandler(Reentrant())
    request = StopRequest()
    try:
        assert request.receive_in_handler(signal.SIGTERM, log) is True
        assert request.receive_in_handler(signal.SIGINT, log) is False
    finally:
        log.handlers.clear()
        log.propagate = True
    assert request.signal == signal.SIGTERM and request.ignored == 1 and request.requested.is_set()


def test_other_commands_keep_the_normal_signal_behaviour() -> None:
    from uun_gateway.cli import main

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with pytest.raises(SystemExit):
        main(["--version"])
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
