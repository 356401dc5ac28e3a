"""A uun-iot 0.10-style application: ``@on`` from decorators, ``Module(config, uucmd)``,
``_send_storage()`` without a usecase, ``_c`` with uun-iot's positional scope, a stop handler
registered at run time, and a start handler that loops until the gateway stops."""

import json
import signal
import sys

from uun_iot import Gateway
from uun_iot.decorators import on
from uun_iot.modules.Module import ConfigScopeEnum, Module


class WeatherConditions(Module):
    def __init__(self, config, uucmd):
        super().__init__(config, uucmd)
        self._n = 0
        self._loops = 0
        on("stop")(self.save)

    @on("tick", "measure")
    def measure(self):
        self._n += 1
        reading = {"n": self._n, "unit": self._c("unit"), "site": self._c("site", ConfigScopeEnum.GATEWAY)}
        self._storage.append(reading)

    @on("tick", "send")
    def send(self):
        self._send_storage()

    @on("start")
    def loop(self, evs):
        runev, stopev = evs
        while runev.is_set():
            self._loops += 1
            stopev.wait(0.05)

    def save(self):
        with open(self._c("marker"), "w") as f:
            json.dump({"measured": self._n, "loops": self._loops}, f)


def init(config, uuclient):
    def send_weather(data):
        response, exc = uuclient.post("weather/add", {"data": data})
        if exc is not None:
            return data
        failed = response.json().get("failed", [])
        return [d for d in data if d["n"] in failed]

    return WeatherConditions(config["gateway"], send_weather)


if __name__ == "__main__":
    with Gateway(sys.argv[1], init) as g:
        signal.signal(signal.SIGTERM, g.signal_handler)
        signal.signal(signal.SIGINT, g.signal_handler)
        g.stopev.wait()
