"""The outage toolkit: Backoff, Deadline, StateLog, describe_failure, safe_text; atomic_write,
read_secret_file; iso_utc."""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

import pytest
import requests

from uun_gateway import (
    Backoff,
    Deadline,
    StateLog,
    atomic_write,
    describe_failure,
    iso_utc,
    parse_iso,
    read_secret_file,
    safe_text,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    clock = FakeClock()
    backoff = Backoff(initial=2, maximum=10, clock=clock)
    assert backoff.ready()
    assert [backoff.failed() for _ in range(5)] == [2, 4, 8, 10, 10]
    assert not backoff.ready()
    clock.now += 9.5
    assert backoff.remaining() == pytest.approx(0.5)
    clock.now += 0.5
    assert backoff.ready()
    backoff.succeeded()
    assert backoff.failures == 0 and backoff.failed() == 2


def test_backoff_survives_a_huge_number_of_failures() -> None:
    backoff = Backoff(initial=1, maximum=60)
    assert backoff.delay(10**6) == 60


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)


def test_deadline_counts_down_and_checks() -> None:
    clock = FakeClock()
    deadline = Deadline(3, clock=clock)
    assert deadline.remaining() == 3 and not deadline.expired()
    clock.now += 2
    assert deadline.check("upload") == pytest.approx(1)
    clock.now += 5
    assert deadline.expired() and deadline.remaining() == 0
    with pytest.raises(TimeoutError, match="upload: deadline exceeded"):
        deadline.check("upload")


def test_statelog_logs_once_per_change_and_summarises(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = StateLog(logging.getLogger("test.statelog"), "uuApp", repeat_every=60, clock=clock)
    caplog.set_level(logging.DEBUG, "test.statelog")
    assert not log.ok(first="online")
    assert [r.getMessage() for r in caplog.records] == ["uuApp: online"]
    caplog.clear()
    assert log.failed("timed out")
    for _ in range(10):
        clock.now += 1
        assert not log.failed("timed out")
    assert [r.getMessage() for r in caplog.records] == ["uuApp: timed out"]
    clock.now += 60
    log.failed("connection refused")
    assert (
        caplog.records[-1].getMessage() == "uuApp: still failing (11 more time(s), 12 in all); last: connection refused"
    )
    assert log.failing and log.count == 12
    assert log.failed("HTTP 500", state="server error")  # another failing state is a change
    assert log.ok()
    assert caplog.records[-1].getMessage() == "uuApp: works again after 1 failure(s)"
    assert caplog.records[-1].levelno == logging.INFO
    assert not log.ok() and not log.failing


def test_statelog_escapes_what_it_logs(caplog: pytest.LogCaptureFixture) -> None:
    log = StateLog(logging.getLogger("test.statelog2"), "server")
    caplog.set_level(logging.WARNING, "test.statelog2")
    log.failed("bad\nINFO forged line " + "x" * 1000)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in message and "\\n" in message and len(message) < 300


def test_safe_text() -> None:
    assert safe_text("plain") == "plain"
    assert safe_text("a\r\nb\x1b[31m") == "a\\r\\nb\\x1b[31m"
    assert safe_text("é" * 10, limit=5) == "éééé…"


def test_describe_failure_names_what_happened() -> None:
    assert describe_failure(None) == "no answer"
    assert describe_failure(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == "connection refused"
    assert describe_failure(ConnectionResetError()) == "connection reset by the peer"
    assert describe_failure(TimeoutError()) == "timed out"
    assert describe_failure(socket.gaierror(-2, "Name or service not known")) == "host name not found"
    assert describe_failure(OSError(errno.ENETUNREACH, "Network is unreachable")) == "network is unreachable"
    assert describe_failure(ValueError("odd")) == "ValueError: odd"
    response = requests.Response()
    response.status_code = 503
    assert describe_failure(requests.HTTPError(response=response)) == "HTTP 503"
    assert describe_failure(requests.ReadTimeout()) == "timed out"


def test_describe_failure_of_a_real_refused_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connecting is refused
        with pytest.raises(requests.ConnectionError) as caught:
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert describe_failure(caught.value) == "connection refused"


def test_atomic_write_replaces_whole_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, "{}")
    assert target.read_text() == "{}" and (target.stat().st_mode & 0o777) == 0o600
    os.chmod(target, 0o640)
    atomic_write(target, b"[1]")
    assert target.read_bytes() == b"[1]" and (target.stat().st_mode & 0o777) == 0o640
    atomic_write(target, "x", mode=0o644)
    assert (target.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing-dir" / "f", "x")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "d", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_iso_utc_round_trips() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1.5, timespec="seconds") == "1970-01-01T00:00:01Z"
    assert parse_iso("1970-01-01T00:00:01.500Z").timestamp() == 1.5
    assert parse_iso("1970-01-01T01:00:00+01:00").timestamp() == 0
    assert parse_iso("1970-01-01T00:00:02").timestamp() == 2
    with pytest.raises(ValueError, match="not an ISO 8601 timestamp: 'soon'"):
        parse_iso("soon")


def test_read_secret_file_refuses_what_is_not_a_small_regular_utf8_file_without_blocking(tmp_path: Path) -> None:
    good = tmp_path / "password"
    good.write_text("s3cret\n")
    assert read_secret_file(good) == "s3cret\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened for reading, it would block until a writer came
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (64 * 1024 + 1))
    latin = tmp_path / "latin"
    latin.write_bytes(b"h\xe9slo")
    for path, problem in ((fifo, "not a regular file"), (huge, "larger than 64 KiB"), (latin, "not UTF-8 text")):
        with pytest.raises(OSError) as info:
            read_secret_file(path)
        assert info.value.strerror == problem and info.value.filename == str(path)
        assert "slo" not in str(info.value)
