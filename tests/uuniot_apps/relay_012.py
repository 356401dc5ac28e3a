"""A uun-iot 0.12-style application: Ev* subscriptions, ``Module(config=..., uucmd=...)``, a
config base for ``_c``, a config-update handler that receives the new config, and commands that a
local tool sends over the gateway's Unix socket (``gateway.socket.path``)."""

import logging
import signal
import sys
from datetime import UTC

from uun_iot import EvConfUpdate, EvExternal, EvStart, EvStop, EvTick, Gateway, Module
from uun_iot.utils import LoggingSystemdHandler, get_iso_timestamp

logger = logging.getLogger("relay")


class Relay(Module):
    def __init__(self, config, uucmd):
        super().__init__(config=config, uucmd=uucmd)
        self._set_config_manager_base("relayBoard")
        self.state = "off"
        self.threshold_seen = None

    @EvStart.subscribe
    def started(self, evs):
        logger.info("relay board started")

    @EvTick.subscribe
    def report(self):
        from datetime import datetime

        self._storage.append(
            {
                "state": self.state,
                "threshold": self._c("threshold"),
                "at": get_iso_timestamp(datetime.now(UTC)),
            }
        )
        self._send_storage()

    @EvConfUpdate.subscribe
    def on_update(self, new_config):
        self._config = new_config
        self.threshold_seen = new_config["relayBoard"]["threshold"]

    @EvExternal.subscribe_command("relay")
    def relay(self, msg):
        _, arg = msg
        if arg not in ("on", "off"):
            raise ValueError(f"relay takes on or off, not {arg!r}")
        self.state = arg
        return f"relay {arg}"

    @EvExternal.subscribe_command("threshold")
    def threshold(self, msg):
        return str(self._c("threshold"))

    @EvStop.subscribe
    def stopped(self):
        logger.info("relay board stopped")


def init(config, uuclient):
    def send(data):
        _, exc = uuclient.post("relay/report", {"data": data})
        return data if exc is not None else []

    return [Relay(config["gateway"], send)]


if __name__ == "__main__":
    logging.getLogger().addHandler(LoggingSystemdHandler())
    logging.getLogger().setLevel(logging.INFO)
    with Gateway(config_file=sys.argv[1], module_init=init) as g:
        signal.signal(signal.SIGTERM, g.signal_handler)
        g.stopev.wait()
