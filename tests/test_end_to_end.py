"""The built-in modules together, with only real parts: 1-wire readings from Debian's owserver go
through the module's storage and the upload module into a uuApp over HTTP, heartbeat included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from uun_gateway import Gateway, Storage

if TYPE_CHECKING:
    from tests.onewire_fixtures import Owserver

pytest_plugins = ["tests.uuapp_fixtures", "tests.onewire_fixtures"]


def _config(fake: FakeUuApp, owserver: Owserver, tmp_path: Path) -> dict[str, Any]:
    host, port = owserver.address.rsplit(":", 1)
    config = fake.config(str(tmp_path / "oidc-token"), gatewayUpload="gateway/upload")
    config["gateway"] = {
        "storageDir": str(tmp_path / "storage"),
        "moduleTimers": {"onewire": {"scan": 3600, "read": 0.2}, "upload": 0.2, "heartbeat": 0.5},
        "onewire": {"servers": [{"host": host, "port": int(port)}], "conversionDelay": 0},
        "upload": {"sources": {"onewire": {"uuCmd": "gateway/upload"}}},
        "heartbeat": {},
    }
    return config


def _uploaded(fake: FakeUuApp) -> list[dict[str, Any]]:
    return [item for record in fake.for_cmd("gateway/upload", ok_only=True) for item in record.dto["data"]]


def test_onewire_readings_reach_uuapp_through_upload(
    fake: FakeUuApp, owserver_factory: Callable[..., Owserver], tmp_path: Path
) -> None:
    owserver = owserver_factory(["--tester=28,10"])
    with Gateway(_config(fake, owserver, tmp_path)) as gateway:
        wait_for(lambda: len({item["data"]["deviceId"] for item in _uploaded(fake)}) >= 2, timeout=30)
        wait_for(lambda: len(fake.for_cmd("gateway/heartbeat", ok_only=True)) >= 1, timeout=30)
        # the server records a request before the gateway has read the answer
        wait_for(lambda: gateway.health()["modules"]["onewire"]["lastSendOk"] is not None, timeout=30)
    reading = _uploaded(fake)[0]
    assert reading["data"]["property"] == "temperature" and isinstance(reading["data"]["value"], float)
    assert {"id", "created", "data"} <= reading.keys()
    ids = [item["id"] for item in _uploaded(fake)]
    assert ids == sorted(ids), "readings must arrive in order"


def test_readings_survive_an_outage_and_a_sigkill(
    fake: FakeUuApp, owserver_factory: Callable[..., Owserver], tmp_path: Path
) -> None:
    """uuApp is down while the gateway reads; the gateway is SIGKILLed; a second run delivers it all."""
    owserver = owserver_factory(["--tester=28"])
    config = _config(fake, owserver, tmp_path)
    fake.fault("5xx", "gateway/upload", count=10**6)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    store_path = tmp_path / "storage" / "onewire.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-m", "uun_gateway.cli", "run", "-c", str(path)], stderr=subprocess.DEVNULL
    )
    try:

        def stored() -> list[int]:
            if not store_path.exists():
                return []
            store = Storage("probe", store_path)
            try:
                return [entry.id for entry in store]
            finally:
                store.close()

        wait_for(lambda: len(stored()) >= 5, timeout=30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    kept = stored()
    assert len(kept) >= 5 and _uploaded(fake) == []
    fake.clear_faults()  # the server is back
    with Gateway(config):
        wait_for(lambda: set(kept) <= {item["id"] for item in _uploaded(fake)}, timeout=30)
    ids = [item["id"] for item in _uploaded(fake)]
    assert len(set(ids)) == len(ids), "no duplicates after a clean outage"
    assert ids == sorted(ids), "in order"
