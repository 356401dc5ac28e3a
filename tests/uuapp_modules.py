"""Helpers for the uuApp module tests: a producer module and a gateway config pointing at the fake."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from uun_gateway.modules.upload import Upload

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


UPLOAD = "gateway/upload"


def upload_config(fake: FakeUuApp, tmp_path: Path, period: float = 0.02, **upload: Any) -> dict[str, Any]:
    settings = {"sources": {"sensor": {"uuCmd": UPLOAD, "batchSize": 100}}, **upload}
    return gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "upload": period}, upload=settings)


@contextmanager
def running(config: dict[str, Any], start: bool = True) -> Iterator[tuple[Gateway, Sensor, Upload]]:
    """A gateway with a Sensor and an Upload; stopped and its uuApp connections closed afterwards."""
    gateway = Gateway(config, lambda c, u: [Sensor(c["gateway"], u), Upload(c["gateway"], u)])
    sensor, upload = gateway.modules
    try:
        if start:
            gateway.start()
        yield gateway, sensor, upload
    finally:
        gateway.stop()
        sensor.close_storage()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()


def delivered(fake: FakeUuApp) -> list[int]:
    """Ids the fake accepted, in arrival order (duplicates kept), answered or not."""
    ids: list[int] = []
    for record in fake.for_cmd(UPLOAD):
        if not record.processed:
            continue
        if isinstance(record.dto, dict) and isinstance(record.dto.get("data"), list):
            ids += [item["id"] for item in record.dto["data"] if item["id"] not in fake.reject_ids]
        elif "id" in record.dto:
            ids.append(int(record.dto["id"]))
    return ids
