"""Fixtures shared by the uuApp tests: a running fake uuApp, a controllable token clock, a producer module."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.fake_uuapp import FakeUuApp
from uun_gateway import Module, UuAppClient, on, uuapp


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
    monkeypatch.setattr(uuapp, "_monotonic", clock)
    return clock


class Sensor(Module):
    """A producer module for upload tests: each tick appends ``{"n": k}`` (k = 0, 1, ...) while
    :attr:`producing` is set; :attr:`appended` lists the entry ids ``append`` returned."""

    id = "sensor"
    timer_defaults: ClassVar[Mapping[str | None, float]] = {None: 3600.0}

    def __init__(self, config: Mapping[str, Any], uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.producing = threading.Event()
        self.appended: list[int] = []
        self.updates = 0

    @on("tick")
    def measure(self) -> None:
        if self.producing.is_set():
            self.appended.append(self.storage.append({"n": len(self.appended)}))

    @on("update")
    def updated(self) -> None:
        self.updates += 1
        if self._c("failUpdate", False):
            raise RuntimeError("this update cannot be applied")


def gateway_config(fake: FakeUuApp, tmp_path: Path, **gateway: Any) -> dict[str, Any]:
    """A full config for a Gateway talking to ``fake``, storages and token under ``tmp_path``."""
    cfg = fake.config(str(tmp_path / "oidc-token"), gatewayUpload="gateway/upload")
    cfg["gateway"] = {"storageDir": str(tmp_path / "storage"), "stopTimeout": 5, **gateway}
    return cfg
