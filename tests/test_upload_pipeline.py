"""Upload drain bound by the link, not by round trips: batches bounded by bytes that grow while the
backlog is large, a bounded pipeline of batches in flight whose acks apply in order, keep-alive,
optional gzip, and each batch encoded once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.upload import Batch, Upload

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.uuapp_modules import UPLOAD, delivered, running, upload_config
from uun_gateway import Storage

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


def test_a_round_is_acked_in_one_transaction(fake: FakeUuApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # each ack is a durable transaction (a flush): one per round of batches, not one per batch
    acks: list[list[int]] = []
    original = Storage.ack

    def spy(self: Storage, ids: Any) -> int:
        acks.append(list(ids))
        return original(self, acks[-1])

    monkeypatch.setattr(Storage, "ack", spy)
    config = upload_config(fake, tmp_path, period=3600, **sources(10, pipeline=5))
    with running(config, start=False) as (_, sensor, upload):
        ids = sensor.storage.extend([{"n": i} for i in range(50)])
        assert upload.send_batch("sensor") is True
        assert len(fake.for_cmd(UPLOAD)) == 5 and len(sensor.storage) == 0
    assert acks == [ids]


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


def test_the_next_round_is_encoded_while_a_round_is_in_flight_and_sent_as_encoded(
    fake: FakeUuApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Batch] = []
    ready_while_in_flight: list[bool] = []
    lock = threading.Lock()
    original = Upload._post_batch

    def spy(self: Upload, source: str, storage: Any, uucmd: str, batch: Batch, slot: int) -> Any:
        if slot == 0 and not ready_while_in_flight:
            # the first request of the first round: the next round gets ready before it returns
            state = self.state[source]
            try:
                wait_for(lambda: bool(state.ahead), timeout=10)
                ready_while_in_flight.append(True)
            except BaseException:
                ready_while_in_flight.append(False)
        with lock:
            sent.append(batch)
        return original(self, source, storage, uucmd, batch, slot)

    monkeypatch.setattr(Upload, "_post_batch", spy)
    config = upload_config(fake, tmp_path, period=3600, **sources(10, pipeline=2))
    with running(config, start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": i} for i in range(500)])
        assert upload.send_batch("sensor") is True
        ahead = dict(upload.state["sensor"].ahead)
        assert upload.send_batch("sensor") is True
    assert ready_while_in_flight == [True]
    second = sorted(sent[2:4], key=lambda b: b.ids[0])
    assert [b.ids[0] for b in second] == sorted(ahead)
    assert all(b is ahead[b.ids[0]] for b in second), "the batches read ahead are sent as they were encoded"
    ids = sorted(i for b in sent for i in b.ids)
    assert ids == list(range(1, len(ids) + 1))


def test_an_entry_stored_in_front_after_a_read_ahead_goes_first(fake: FakeUuApp, tmp_path: Path) -> None:
    config = upload_config(fake, tmp_path, period=3600, **sources(10, pipeline=2))
    with running(config, start=False) as (_, sensor, upload):
        sensor.storage.extend([{"n": i} for i in range(500)])
        assert upload.send_batch("sensor") is True
        assert upload.state["sensor"].ahead, "the next round was read ahead"
        sensor.storage.merge([{"n": "older"}], new_data=False)
        front = sensor.storage.oldest(1)[0].id
        assert upload.send_batch("sensor") is True
    second_round = fake.for_cmd(UPLOAD)[2:4]
    firsts = sorted(record.dto["data"][0]["id"] for record in second_round)
    assert firsts[0] == front
    assert {"n": "older"} in [item["data"] for record in second_round for item in record.dto["data"]]
