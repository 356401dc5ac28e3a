"""Shared test fixtures: the leak check every test runs under, and small helpers."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def require_program(path: str, package: str) -> None:
    """Fail (not skip) when a real peer the tests need is missing: that is an install problem."""
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: install the Debian package {package} (bash .ci/test does)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _open_files() -> set[str]:
    targets = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(("/", "socket:")) and not target.startswith(("/dev/", "/proc/")):
            targets.add(target)
    return targets


@pytest.fixture(autouse=True)
def fresh_entry_points() -> Iterator[None]:
    """Entry points are read once per process; a test that installs a plugin (on sys.path) must
    not see another test's, nor miss its own."""
    from uun_gateway.plugins import rescan

    rescan()
    yield
    rescan()


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread, a child process or an open file or socket behind."""
    threads, children, files = set(threading.enumerate()), _children(), _open_files()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        extra_children = _children() - children
        extra_files = {f for f in _open_files() - files if not f.endswith((".pyc", ".py"))}
        if not (extra_threads or extra_children or extra_files) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if extra_threads:
        problems.append(f"threads still running: {[t.name for t in extra_threads]}")
    if extra_children:
        problems.append(f"child processes still running: {sorted(extra_children)}")
    if extra_files:
        problems.append(f"files or sockets still open: {sorted(extra_files)}")
    assert not problems, "test leaked resources: " + "; ".join(problems)
