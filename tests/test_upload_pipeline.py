"""Upload drain bound by the link, not by round trips: batches bounded by bytes that grow while the
backlog is large, a bounded pipeline of batches in flight whose acks apply in order, keep-alive,
optional gzip, and each batch encoded once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.upload import Batch, Upload

from tests.fake_uuapp import FakeUuApp
from tests.uuapp_modules import UPLOAD, delivered, running, upload_config

pytest_plugins = ["tests.uuapp_fixtures"]


def sources(batch: int, **more: Any) -> dict[str, Any]:
    return {"sources": {"sensor": {"uuCmd": UPLOAD, "batchSize": batch, **more}}}


def test_a_failure_in_the_middle_keeps_that_batch_and_every_later_one(fake: FakeUuApp, tmp_path: Path) -> None:
    def fail_third(dto: Any) -> tuple[int, Any]:
        ids = [item["id"] for item in dto["data"]]
        return (503, {}) if 21 in ids else (200, {"accepted": ids})

    fake.upload_handler = fail_third
    config = upload_config(fake, tmp_path, period=3600, **sources(10, pipeline=5))
    with running(config, start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": i} for i in range(50)])
        assert upload.send_batch("sensor") is False
        assert len(fake.for_cmd(UPLOAD)) == 5, "five batches were in flight at once"
        # batches 4 and 5 were accepted, but acking them would leave a hole before them
        assert [e.id for e in sensor.storage.oldest(100)] == list(range(21, 51))
        assert upload.state["sensor"].failures == 1


def test_batches_grow_while_the_backlog_is_large_and_stay_within_their_bytes(fake: FakeUuApp, tmp_path: Path) -> None:
    config = upload_config(fake, tmp_path, period=3600, **sources(10, pipeline=2, maxBatchBytes=8192))
    with running(config, start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i, "pad": "x" * 40} for i in range(3000)])
        upload.drain()
        assert len(sensor.storage) == 0
    records = fake.for_cmd(UPLOAD)
    sizes = [len(r.dto["data"]) for r in records]
    assert sizes[:2] == [10, 10] and max(sizes) > 40, sizes
    assert all(int(r.headers["content-length"]) <= 8192 for r in records)
    assert sorted(delivered(fake)) == ids
    assert len({r.peer for r in records}) <= 2, "one kept-alive connection per pipeline slot"


def test_gzip_bodies_when_configured(fake: FakeUuApp, tmp_path: Path) -> None:
    config = upload_config(fake, tmp_path, period=3600, **sources(100, compress="gzip"))
    with running(config, start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(300)])
        upload.drain()
    records = fake.for_cmd(UPLOAD)
    assert {r.headers.get("content-encoding") for r in records} == {"gzip"}
    assert sorted(delivered(fake)) == ids


def test_auto_gzip_falls_back_to_plain_json_on_415(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.accept_gzip = False
    config = upload_config(fake, tmp_path, period=3600, **sources(100, compress="auto", pipeline=1))
    with caplog.at_level(logging.WARNING), running(config, start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(300)])
        upload.drain()
        assert len(sensor.storage) == 0 and upload.state["sensor"].failures == 0
    assert delivered(fake) == ids
    assert sum("refuses gzip" in r.getMessage() for r in caplog.records) == 1


def test_a_batch_is_encoded_once_and_sent_again_as_it_was(
    fake: FakeUuApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Batch] = []
    original = Upload._post_batch

    def spy(self: Upload, source: str, storage: Any, uucmd: str, batch: Batch, slot: int) -> Any:
        sent.append(batch)
        return original(self, source, storage, uucmd, batch, slot)

    monkeypatch.setattr(Upload, "_post_batch", spy)
    fake.fault("5xx", UPLOAD, count=2)
    config = upload_config(fake, tmp_path, period=3600, **sources(100, pipeline=1))
    with running(config, start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": i} for i in range(50)])
        for _ in range(3):
            upload.drain()
            upload.state["sensor"].backoff.succeeded()  # the next attempt is due at once
        assert len(sensor.storage) == 0
    assert len(sent) == 3 and sent[0].body is not None
    assert sent[1].body is sent[0].body and sent[2].body is sent[0].body
