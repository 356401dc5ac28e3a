"""Helpers for the uuApp module tests: a producer module and a gateway config pointing at the fake."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from tests.fake_uuapp import FakeUuApp
from uun_gateway import Gateway, Module, UuAppClient, on


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


@contextmanager
def loaded_gateway(config: Any, module_init: Callable[[dict[str, Any], UuAppClient | None], Any]) -> Iterator[Gateway]:
    """A (not started) gateway whose first module owns a storage; its storage and uuApp connections
    are closed afterwards, whether or not it was started."""
    gateway = Gateway(config, module_init)
    try:
        yield gateway
    finally:
        gateway.stop()
        gateway.modules[0].close_storage()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()
