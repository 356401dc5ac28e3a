"""A failing ack (the storage cannot delete what the server accepted: a full disk, a vanished file)
goes through the upload backoff and is logged once per state change; nothing is lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.uuapp_modules import UPLOAD, running, upload_config
from uun_gateway import StorageError

pytest_plugins = ["tests.uuapp_fixtures"]


def test_a_failing_ack_backs_off_and_logs_once(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = upload_config(fake, tmp_path, period=3600, backoffInitial=0.3, backoffMax=0.3)
    with (
        caplog.at_level(logging.INFO, "uun_gateway.modules.upload"),
        running(config, start=False) as (_, sensor, upload),
    ):
        ids = sensor.storage.extend([{"n": i} for i in range(5)])
        real_ack = sensor.storage.ack

        def full_disk(ids: object) -> int:
            raise StorageError("storage 'sensor': database or disk is full")

        monkeypatch.setattr(sensor.storage, "ack", full_disk)
        for _ in range(5):  # ticks in a row: only the first is due, the others wait for the backoff
            upload.drain()
        assert len(fake.for_cmd(UPLOAD)) == 1
        assert upload.state["sensor"].failures == 1
        assert len(sensor.storage) == 5
        monkeypatch.setattr(sensor.storage, "ack", real_ack)
        wait_for(lambda: upload.state["sensor"].backoff.ready())
        upload.drain()
        assert len(sensor.storage) == 0
        assert [item["id"] for r in fake.for_cmd(UPLOAD) for item in r.dto["data"]] == ids + ids
    messages = [r.getMessage() for r in caplog.records if r.name == "uun_gateway.modules.upload"]
    assert len(messages) == 2, messages
    assert "could not be removed from storage" in messages[0] and "disk is full" in messages[0]
    assert messages[1] == "upload of sensor: works again after 1 failure(s)"
