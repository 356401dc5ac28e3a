"""Remote configuration: an answer that arrives after stop() must not be applied."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from uun_gateway.modules.remoteconfig import RemoteConfig

from tests.conftest import wait_for
from tests.fake_uuapp import FakeUuApp
from tests.test_remoteconfig import GET_CONFIG
from tests.uuapp_modules import Sensor, gateway_config
from uun_gateway import Gateway


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
