"""Fixtures every test runs under: the leak check and fresh entry points. Helpers are in tests/helpers.py."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, require_program, wait_for

__all__ = ["free_port", "require_program", "wait_for"]  # until every test imports them from tests.helpers


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
