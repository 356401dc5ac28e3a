"""The upload module: answers it mis-read as "accepted", a tick that never ended
while a producer kept adding entries, one that kept sending after stop() began, and one source's
broken storage that stopped every other source's uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.upload import Upload

from tests.fake_uuapp import FakeUuApp
from tests.uuapp_modules import UPLOAD, Sensor, running, upload_config
from uun_gateway import Gateway, Module

pytest_plugins = ["tests.uuapp_fixtures"]


@pytest.mark.parametrize(
    "body",
    [
        {"accepted": None},
        {"accepted": "all"},
        {"accepted": {"1": True}},
        {"failed": None},
        {"failed": 2},
        {"accepted": [True, True]},  # JSON true is not the id 1
        {"failed": ["2", "3"]},  # ids as strings (as the multipart form sends them) are not understood
    ],
)
def test_an_answer_that_names_ids_badly_accepts_nothing(fake: FakeUuApp, tmp_path: Path, body: Any) -> None:
    fake.upload_handler = lambda dto: (200, body)
    with running(upload_config(fake, tmp_path), start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(3)])
        assert upload.send_batch("sensor") is False
        assert [e.id for e in sensor.storage.oldest(10)] == ids
        assert upload.state["sensor"].failures == 1


def test_a_tick_ends_when_it_has_sent_the_backlog_it_found(fake: FakeUuApp, tmp_path: Path) -> None:
    """A source that gains an entry during every request must not keep the tick running for ever
    (the watchdog would then restart a healthy gateway as stalled)."""
    config = upload_config(fake, tmp_path)
    config["gateway"]["upload"]["sources"]["sensor"]["batchSize"] = 2
    with running(config, start=False) as (_, sensor, upload):

        def produce_while_answering(dto: Any) -> tuple[int, Any]:
            if len(fake.for_cmd(UPLOAD)) < 40:  # a producer as fast as the uploads
                sensor.storage.append({"n": "new"})
            return 200, {"accepted": [item["id"] for item in dto["data"]]}

        fake.upload_handler = produce_while_answering
        sensor.storage.extend([{"n": i} for i in range(5)])
        upload.drain()
        requests = len(fake.for_cmd(UPLOAD))
        assert requests <= 4, f"one tick sent {requests} requests for a backlog of 5 in batches of 2"
        assert len(sensor.storage) == 5 + requests - sum(len(r.dto["data"]) for r in fake.for_cmd(UPLOAD))


class Other(Module):
    """A second producer: only its storage matters here."""

    id = "other"


def test_a_tick_sends_nothing_more_once_the_gateway_stops(fake: FakeUuApp, tmp_path: Path) -> None:
    """Each further request could take the whole client timeout and push stop() past its bound."""
    config = upload_config(fake, tmp_path)
    config["gateway"]["upload"]["sources"]["other"] = {"uuCmd": UPLOAD}
    config["gateway"]["other"] = {}
    gateway = Gateway(config, lambda c, u: [Sensor(c["gateway"], u), Other(c["gateway"], u), Upload(c["gateway"], u)])
    sensor, other, upload = gateway.modules
    try:
        sensor.storage.append({"n": 0})
        other.storage.append({"n": 1})

        def stop_on_first(dto: Any) -> tuple[int, Any]:
            gateway.stopping.set()  # stop() begins while this request is in flight
            return 200, {"accepted": [item["id"] for item in dto["data"]]}

        fake.upload_handler = stop_on_first
        upload.drain()
        assert len(fake.for_cmd(UPLOAD)) == 1
        assert len(sensor.storage) + len(other.storage) == 1
    finally:
        sensor.close_storage()
        other.close_storage()
        assert gateway.uuapp_client is not None
        gateway.uuapp_client.close()


def test_a_source_whose_storage_cannot_open_does_not_block_the_others(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-dir").mkdir()
    config = upload_config(fake, tmp_path)
    config["gateway"]["upload"]["sources"] = {"other": {"uuCmd": UPLOAD}, "sensor": {"uuCmd": UPLOAD}}
    config["gateway"]["other"] = {}
    config["gateway"]["moduleBackupStorage"] = {"other": str(tmp_path / "not-a-dir" / "other.sqlite")}
    gateway = Gateway(config, lambda c, u: [Other(c["gateway"], u), Sensor(c["gateway"], u), Upload(c["gateway"], u)])
    other, sensor, upload = gateway.modules
    (tmp_path / "not-a-dir").rmdir()  # the storage location breaks after start (a card unmounted, say)
    (tmp_path / "not-a-dir").write_text("")
    try:
        sensor.storage.append({"n": 0})
        upload.drain()
        upload.drain()
        assert len(sensor.storage) == 0
        assert len([r for r in caplog.records if "upload source 'other'" in r.getMessage()]) == 1
    finally:
        sensor.close_storage()
        other.close_storage()
        assert gateway.uuapp_client is not None
        gateway.uuapp_client.close()
