"""Fixtures shared by the uuApp tests (load with ``pytest_plugins``): a running fake uuApp and a
controllable token clock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.fake_uuapp import FakeUuApp
from uun_gateway import oidc


@pytest.fixture
def fake() -> Iterator[FakeUuApp]:
    """A started fake uuApp on a free loopback port, stopped (threads joined) afterwards."""
    server = FakeUuApp()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TokenClock:
    """Replaces the client's token clock: real monotonic time plus a settable offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def token_clock(monkeypatch: pytest.MonkeyPatch) -> TokenClock:
    """Lets a test age the client's tokens without waiting."""
    clock = TokenClock()
    monkeypatch.setattr(oidc, "_monotonic", clock)
    return clock
