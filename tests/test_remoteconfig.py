"""Remote configuration (module id ``config``) against the fake uuApp on 127.0.0.1: a config that
fails validation changes nothing, a valid one is applied and persisted, one whose application fails
is rolled back; the error shows in the heartbeat."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from uun_gateway.modules.heartbeat import Heartbeat
from uun_gateway.modules.remoteconfig import RemoteConfig

from tests.fake_uuapp import FakeUuApp
from tests.helpers import wait_for
from tests.uuapp_modules import Sensor, gateway_config, loaded_gateway
from uun_gateway import Gateway, Module, on

pytest_plugins = ["tests.uuapp_fixtures"]

GET_CONFIG = "gateway/getConfiguration"


def write_config(fake: FakeUuApp, tmp_path: Path, **gateway: Any) -> tuple[Path, dict[str, Any]]:
    config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "config": 3600, "heartbeat": 3600}, **gateway)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path, config


@contextmanager
def gateway_at(path: Path) -> Iterator[tuple[Gateway, Sensor, RemoteConfig, Heartbeat]]:
    with loaded_gateway(
        path, lambda c, u: [Sensor(c["gateway"], u), RemoteConfig(c["gateway"], u), Heartbeat(c["gateway"], u)]
    ) as gateway:
        yield gateway, *gateway.modules


def test_valid_remote_config_is_applied_and_persisted(fake: FakeUuApp, tmp_path: Path) -> None:
    path, config = write_config(fake, tmp_path)
    remote = {**config["gateway"], "moduleTimers": {"sensor": 0.02, "config": 3600, "heartbeat": 3600}}
    fake.gateway_config = remote
    with gateway_at(path) as (gateway, sensor, rc, _):
        gateway.start()
        rc.update()
        assert rc.applied == 1 and rc.last_error is None
        assert gateway.config["gateway"] == remote
        assert sensor._config == remote and sensor.updates == 1
        assert gateway.timers[("sensor", None)].period == 0.02
        sensor.producing.set()
        wait_for(lambda: len(sensor.appended) >= 3)  # the new period is in effect
        rc.update()
        assert rc.applied == 1 and sensor.updates == 1  # unchanged config: nothing to do
    saved = json.loads(path.read_text())
    assert saved["gateway"] == remote
    assert saved["uuThing"] == config["uuThing"]  # the local secrets are kept
    assert path.stat().st_mode & 0o777 == 0o600


def test_invalid_remote_config_changes_nothing_and_is_reported(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, config = write_config(fake, tmp_path)
    original = path.read_text()
    fake.gateway_config = {**config["gateway"], "moduleTimers": {"sensor": "fast"}}
    with caplog.at_level(logging.ERROR), gateway_at(path) as (gateway, sensor, rc, heartbeat):
        rc.update()
        rc.update()
        assert gateway.config == config
        assert sensor._config == config["gateway"] and sensor.updates == 0
        assert rc.last_error is not None and "gateway.moduleTimers.sensor" in rc.last_error
        heartbeat.beat()
        fake.gateway_config = {
            **config["gateway"],
            "moduleTimers": {"sensor": 60, "config": 3600, "heartbeat": 3600},
        }
        rc.update()
        assert rc.last_error is None and gateway.config_error is None
        heartbeat.beat()
    assert sum("remote config rejected" in r.getMessage() for r in caplog.records) == 1
    assert len(fake.for_cmd(GET_CONFIG)) == 3
    beats = [r.dto for r in fake.for_cmd("gateway/heartbeat")]
    assert "gateway.moduleTimers.sensor" in beats[0]["configError"]
    assert beats[1]["configError"] is None
    assert path.read_text() != original


def test_remote_config_whose_application_fails_is_rolled_back(fake: FakeUuApp, tmp_path: Path) -> None:
    path, config = write_config(fake, tmp_path)
    original = path.read_text()
    fake.gateway_config = {
        **config["gateway"],
        "moduleTimers": {"sensor": 0.5, "config": 3600, "heartbeat": 3600},
        "sensor": {"failUpdate": True},
    }
    with gateway_at(path) as (gateway, sensor, rc, heartbeat):
        rc.update()
        assert gateway.config == config
        assert sensor._config == config["gateway"]
        assert gateway.timers[("sensor", None)].period == 3600
        assert sensor.updates == 2  # the failed update, then the rollback
        assert rc.last_error is not None and "rolled back" in rc.last_error
        heartbeat.beat()
    assert path.read_text() == original
    assert "Sensor.updated failed" in fake.for_cmd("gateway/heartbeat")[0].dto["configError"]


def test_fetch_failures_keep_the_config_and_log_once(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, config = write_config(fake, tmp_path)
    fake.gateway_config = {**config["gateway"], "storageDir": str(tmp_path / "elsewhere")}
    with caplog.at_level(logging.WARNING), gateway_at(path) as (gateway, _, rc, _heartbeat):
        for kind in ("5xx", "malformed", "reset"):
            fake.fault(kind, GET_CONFIG)
            rc.update()
            assert gateway.config == config and rc.last_error is not None
        rc.update()
        assert rc.last_error is None and gateway.config["gateway"]["storageDir"].endswith("elsewhere")
    assert sum("remote config: cannot fetch the configuration" in r.getMessage() for r in caplog.records) == 1


def test_nondecremental_update_merges(fake: FakeUuApp, tmp_path: Path) -> None:
    path, config = write_config(fake, tmp_path, nondecrementalUpdate=True)
    fake.gateway_config = {"sensor": {"unit": "C"}}
    with gateway_at(path) as (gateway, sensor, rc, _):
        rc.update()
        assert gateway.config["gateway"] == {**config["gateway"], "sensor": {"unit": "C"}}
        assert sensor._c("unit") == "C"


def test_a_config_that_could_not_be_applied_is_tried_again_but_an_invalid_one_is_not(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, config = write_config(fake, tmp_path)
    fake.gateway_config = {**config["gateway"], "sensor": {"failUpdate": True}}
    with caplog.at_level(logging.ERROR), gateway_at(path) as (_gateway, sensor, rc, _heartbeat):
        rc.update()
        rc.update()
        assert sensor.updates == 4, "applied (and rolled back) at both ticks"
        fake.gateway_config = {**config["gateway"], "moduleTimers": {"sensor": -1}}
        rc.update()
        rc.update()
        assert sensor.updates == 4, "an invalid config is never applied"
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("config")]
    assert sum("could not be applied" in m for m in messages) == 1
    assert sum("rejected" in m for m in messages) == 1


def test_a_config_fetched_during_stop_is_not_applied_after_it(tmp_path: Path) -> None:
    with FakeUuApp(slow_delay=1.0) as fake:
        config = gateway_config(fake, tmp_path, moduleTimers={"sensor": 3600, "config": 3600}, stopTimeout=0.1)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        fake.gateway_config = {**config["gateway"], "stopTimeout": 0.2}
        fake.fault("slow", GET_CONFIG)
        gateway = Gateway(path, lambda c, u: [Sensor(c["gateway"], u), RemoteConfig(c["gateway"], u)])
        sensor = gateway.modules[0]
        try:
            gateway.start()  # the config timer fetches at once; the answer is slow
            wait_for(lambda: not fake._faults.get(GET_CONFIG))
            gateway.stop()  # abandons the fetch after 0.1 s
            wait_for(lambda: not any(t.name == "timer:config" for t in threading.enumerate()))
            assert sensor.updates == 0, "update handlers ran after stop() returned"
            assert json.loads(path.read_text()) == config, "the config file was rewritten after stop()"
        finally:
            gateway.stop()
            sensor.close_storage()
            assert gateway.uuapp_client is not None
            gateway.uuapp_client.close()


def test_a_remote_config_cannot_switch_off_remote_configuration(fake: FakeUuApp, tmp_path: Path) -> None:
    # before: a server answer without the config module's timer removed it, and nothing remote could
    # bring it back
    config = gateway_config(fake, tmp_path, moduleTimers={"config": 3600, "heartbeat": 3600})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    fake.gateway_config = {**config["gateway"], "moduleTimers": {"heartbeat": 60}}
    gateway = Gateway(path)
    try:
        rc = next(m for m in gateway.modules if isinstance(m, RemoteConfig))
        rc.update()
        assert rc.last_error is not None
        assert "gateway.moduleTimers.config: a remote config cannot remove module 'config': no module" in rc.last_error
        assert [m.id for m in gateway.modules] == ["config", "heartbeat"]
        assert gateway.timers[("heartbeat", None)].period == 3600
        gateway.reconfigure({**config, "gateway": fake.gateway_config}, save=False, remote=False)
        assert [m.id for m in gateway.modules] == ["heartbeat"], "the config file may switch it off"
    finally:
        gateway.stop()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()


class Poller(Module):
    """An application's module whose period only the config gives (no ``timer_defaults``)."""

    @on("tick")
    def poll(self) -> None:
        pass


def test_a_remote_config_cannot_leave_an_applications_running_timer_without_a_period(
    fake: FakeUuApp, tmp_path: Path
) -> None:
    # an application's config is checked leniently (a tick without a period is a warning, as in
    # uun-iot), but a server answer that drops a period would silently stop that timer
    config = gateway_config(fake, tmp_path, moduleTimers={"poller": 60, "config": 3600})
    fake.gateway_config = {**config["gateway"], "moduleTimers": {"config": 3600}}
    gateway = Gateway(config, lambda c, u: [Poller(c["gateway"], u), RemoteConfig(c["gateway"], u)])
    try:
        rc = next(m for m in gateway.modules if isinstance(m, RemoteConfig))
        rc.update()
        assert rc.last_error is not None
        assert "gateway.moduleTimers.poller: module 'poller' has @on('tick')" in rc.last_error
        assert "a remote config may not stop a timer that runs now" in rc.last_error
        assert gateway.config == config and gateway.timers[("poller", None)].period == 60
    finally:
        gateway.stop()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()


def test_a_remote_config_changing_the_config_modules_own_section_applies_in_place(
    fake: FakeUuApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # before: the module was restarted from inside the tick applying the change ("timer config:
    # handler still running at stop; abandoned")
    config = gateway_config(fake, tmp_path, moduleTimers={"config": 3600}, config={"uuCmd": GET_CONFIG})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    fake.gateway_config = {**config["gateway"], "config": {"uuCmd": "gateway/getConfigurationV2"}}
    gateway = Gateway(path)
    try:
        gateway.start()
        (rc,) = gateway.modules
        with caplog.at_level(logging.INFO):
            rc.update()
        assert rc.last_error is None and rc.applied == 1
        assert gateway.modules == [rc] and rc.uucmd == "gateway/getConfigurationV2"
        assert "abandoned" not in caplog.text
    finally:
        gateway.stop()
        if gateway.uuapp_client is not None:
            gateway.uuapp_client.close()
