"""A uun-iot 0.12-style application with a health check: modules notify diagnostic events, a
``BaseHealthCheck`` subclass checks each module's leeway on its tick."""

import datetime
import signal
import sys

from uun_iot import EvTick, Gateway, Module
from uun_iot.diagnostic import DiagnosticEvent, GeneralDiagnosticEvents
from uun_iot.modules.BaseHealthCheck import BaseHealthCheck


class HealthCheck(BaseHealthCheck):
    @EvTick.subscribe
    def check(self):
        now = datetime.datetime.now()
        for mid in self._c("modules"):
            self._act_if_data_not_sent(mid, self._leeways[mid], now)


class Sender(Module):
    def __init__(self, config, notify):
        super().__init__(config=config, storage=False)
        self._notify = notify

    @EvTick.subscribe
    def tick(self):
        if self._c("sending", True):
            self._notify(DiagnosticEvent.DATA_SEND_ATTEMPTED)


def init(config, uuclient):
    health = HealthCheck(config["gateway"])
    assert issubclass(DiagnosticEvent, GeneralDiagnosticEvents)
    return [health, Sender(config["gateway"], health.notifier("sender"))]


if __name__ == "__main__":
    g = Gateway(sys.argv[1], init)
    signal.signal(signal.SIGTERM, g.signal_handler)
    g.start()
    g.stopev.wait()
