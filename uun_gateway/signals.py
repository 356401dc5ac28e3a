"""The stop-signal policy shared by :meth:`Gateway.signal_handler` and ``uun-gateway run``.

SIGINT, SIGTERM and SIGUSR2 stop and exit 0; SIGUSR1 stops and exits 1 (uun-iot's meanings). The
first of them requests the stop; any later one, while stopping, is counted and ignored, so stop
handlers never run twice.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def exit_code_for(sig: int) -> int:
    """The exit code a stop caused by ``sig`` ends with."""
    return 1 if sig == signal.SIGUSR1 else 0


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class StopRequest:
    """Records stop signals. :meth:`receive` does no I/O and takes no lock that the interrupted
    code could hold, so it is safe inside a signal handler; :attr:`requested` is set by the first
    signal. Reset with :meth:`reset` when the gateway starts again."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signal: int | None = None
        self.ignored = 0

    def receive(self, sig: int) -> bool:
        """Note ``sig``; True when it is the first (the caller stops), False when a stop is under way."""
        if self.signal is not None:
            self.ignored += 1
            return False
        self.signal = sig
        self.requested.set()
        return True

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signal) if self.signal is not None else 0

    def reset(self) -> None:
        self.signal = None
        self.ignored = 0
        self.requested.clear()
