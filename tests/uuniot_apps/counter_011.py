"""A uun-iot 0.11-style application: handlers registered on the EventRegister that a
three-parameter ``module_init(ev, config, uuclient)`` receives, on a plain ``IModule``."""

import signal
import sys

from uun_iot import Gateway
from uun_iot.typing import IModule


def register_counter(ev):
    class Counter(IModule):
        id = "counter"

        def __init__(self, path):
            self.path = path
            self.n = 0

        @ev.on("tick")
        def tick(self):
            self.n += 1
            with open(self.path, "w") as f:
                f.write(str(self.n))

        @ev.on("external", "count")
        def count(self, msg):
            return str(self.n)

    return Counter


def init(ev, config, uuclient):
    return [register_counter(ev)(config["gateway"]["counter"]["path"])]


if __name__ == "__main__":
    g = Gateway(sys.argv[1], init)
    signal.signal(signal.SIGTERM, g.signal_handler)
    g.start()
    g.stopev.wait()
