"""Small helpers the tests share: polling with a deadline, free ports, required programs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

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
