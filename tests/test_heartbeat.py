"""The heartbeat module against the fake uuApp on 127.0.0.1: the dto, errors since the last accepted
heartbeat, and online/offline transitions logged once."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.heartbeat import Heartbeat

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.uuapp_modules import Sensor, gateway_config, loaded_gateway
from uun_gateway import Gateway, __version__

pytest_plugins = ["tests.uuapp_fixtures"]

BEAT = "gateway/heartbeat"


@contextmanager
def gateway_with_heartbeat(config: dict[str, Any]) -> Iterator[tuple[Gateway, Sensor, Heartbeat]]:
    """A (not started) gateway with a Sensor and a Heartbeat; connections closed afterwards."""
    with loaded_gateway(config, lambda c, u: [Sensor(c["gateway"], u), Heartbeat(c["gateway"], u)]) as gateway:
        yield gateway, *gateway.modules


def test_dto_has_the_promised_fields(fake: FakeUuApp, tmp_path: Path) -> None:
    config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "heartbeat": 3600})
    with gateway_with_heartbeat(config) as (_, sensor, heartbeat):
        sensor.storage.extend([{"n": 1}, {"n": 2}])
        heartbeat.beat()
    (record,) = fake.for_cmd(BEAT)
    dto = record.dto
    assert record.headers["authorization"].startswith("Bearer ")
    assert dto["version"] == __version__
    now = time.time()
    assert abs(datetime.fromisoformat(dto["timestamp"].replace("Z", "+00:00")).timestamp() - now) < 60
    boot = datetime.fromisoformat(dto["bootTimestamp"].replace("Z", "+00:00")).timestamp()
    assert abs(boot + dto["uptime"] - now) < 5  # boot time and uptime agree, both in UTC
    assert len(dto["load"]) == 3 and all(v >= 0 for v in dto["load"])
    mem = dto["memory"]
    assert 0 < mem["availableKb"] <= mem["totalKb"] and mem["processRssKb"] > 1000
    st = os.statvfs(tmp_path)
    assert abs(dto["diskFree"] - st.f_bavail * st.f_frsize) < 64 * 2**20
    assert dto["modules"]["sensor"]["stored"] == 2
    assert set(dto["modules"]["sensor"]) >= {"stored", "lastSendOk", "errors", "timerOverruns"}
    assert dto["configError"] is None


def test_errors_are_counted_since_the_last_accepted_heartbeat(fake: FakeUuApp, tmp_path: Path) -> None:
    config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "heartbeat": 3600})
    with gateway_with_heartbeat(config) as (_, sensor, heartbeat):
        sensor.stats.record_handler_error("boom")
        heartbeat.beat()
        sensor.stats.record_handler_error("boom")
        fake.fault("5xx", BEAT)
        heartbeat.beat()
        sensor.stats.record_send(False, "down")
        heartbeat.beat()
        heartbeat.beat()
    accepted = [r.dto["modules"]["sensor"]["errors"] for r in fake.for_cmd(BEAT, ok_only=True)]
    assert accepted == [1, 2, 0]
    assert heartbeat.sent == 3


def test_online_offline_transitions_are_logged_once(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "heartbeat": 3600})
    with caplog.at_level(logging.INFO, "uun_gateway.modules.heartbeat"):
        with gateway_with_heartbeat(config) as (_, _sensor, heartbeat):
            heartbeat.beat()
            heartbeat.beat()
            assert heartbeat.online is True
            fake.fault("5xx", BEAT, count=2)
            heartbeat.beat()
            heartbeat.beat()
            fake.stop()
            for _ in range(3):
                heartbeat.beat()
            assert heartbeat.online is False
            fake.start()
            heartbeat.beat()
            heartbeat.beat()
            assert heartbeat.online is True
        messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "uuApp: online",
        "uuApp: server error: HTTP 503",
        "uuApp: unreachable: connection refused",
        "uuApp: online again after 3 failure(s)",
    ]


def test_heartbeat_ticks_in_a_running_gateway(fake: FakeUuApp, tmp_path: Path) -> None:
    config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "heartbeat": 0.05})
    with gateway_with_heartbeat(config) as (gateway, _, _heartbeat):
        gateway.start()
        wait_for(lambda: len(fake.for_cmd(BEAT)) >= 3)
        gateway.stop()
    dtos = [r.dto for r in fake.for_cmd(BEAT)]
    assert dtos[-1]["gatewayUptime"] >= dtos[0]["gatewayUptime"]
    assert dtos[-1]["cpuUsage"] is not None


def test_without_uuapp_it_only_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = {"gateway": {"storageDir": str(tmp_path), "moduleTimers": {"sensor": 3600, "heartbeat": 3600}}}
    with caplog.at_level(logging.WARNING), gateway_with_heartbeat(config) as (_, _sensor, heartbeat):
        heartbeat.beat()
        heartbeat.beat()
    assert [r.getMessage() for r in caplog.records] == ["no uuApp configured; heartbeats are not sent"]


def test_no_secret_in_gateway_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from uun_gateway.modules.remoteconfig import RemoteConfig
    from uun_gateway.modules.upload import Upload

    secrets = ("code-one-SECRET", "code-two-SECRET", "client-SECRET-x")
    caplog.set_level(logging.DEBUG)
    with FakeUuApp(access_codes=secrets[:2], client=("cid", secrets[2])) as fake:
        config = gateway_config(
            fake,
            tmp_path,
            moduleTimers={"sensor": 3600, "heartbeat": 3600, "upload": 3600, "config": 3600},
            upload={"sources": {"sensor": {"uuCmd": "gateway/upload"}}},
        )
        fake.gateway_config = {"moduleTimers": {"sensor": "bad"}}
        gateway = Gateway(
            config,
            lambda c, u: [
                Sensor(c["gateway"], u),
                Heartbeat(c["gateway"], u),
                Upload(c["gateway"], u),
                RemoteConfig(c["gateway"], u),
            ],
        )
        sensor, heartbeat, upload, remote = gateway.modules
        try:
            sensor.storage.append({"n": 1})
            for kind in (None, "5xx", "401", "reset", "malformed"):
                if kind:
                    fake.fault(kind)
                heartbeat.beat()
                upload.drain()
                remote.update()
            tokens = list(fake.tokens)
            fake.expire_tokens()
            fake.fault("5xx", "oidc/grantToken")
            heartbeat.beat()
        finally:
            gateway.stop()
            sensor.close_storage()
            assert gateway.uuapp_client is not None
            gateway.uuapp_client.close()
    assert tokens and "uuApp: server error" in caplog.text and "remote config rejected" in caplog.text
    for secret in (*secrets, *tokens):
        assert secret not in caplog.text
