"""The signal policy shared by :meth:`Gateway.signal_handler` and ``uun-gateway run``.

SIGINT, SIGTERM and SIGUSR2 stop and exit 0; SIGUSR1 stops and exits 1 (uun-iot's meanings). The
first of them requests the stop; any later one, while stopping, is counted and ignored, so stop
handlers never run twice. In ``uun-gateway run`` SIGHUP re-reads the config file
(:class:`ReloadRequests`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from contextlib import suppress

from .errors import UunGatewayError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
RELOAD_SIGNAL = signal.SIGHUP
WATCHED_SIGNALS = (*STOP_SIGNALS, RELOAD_SIGNAL)


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

    def receive_in_handler(self, sig: int, logger: logging.Logger) -> bool:
        """:meth:`receive` for a Python signal handler, logging the signal. The signal may have
        interrupted a write to the same stream, which then raises (a reentrant call): the stop must
        still happen, so a failing log line is dropped."""
        first = self.receive(sig)
        with suppress(Exception):
            if first:
                logger.info("%s received", signal_name(sig))
            else:
                logger.warning("%s received while stopping; already stopping", signal_name(sig))
        return first

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.signal) if self.signal is not None else 0

    def reset(self) -> None:
        self.signal = None
        self.ignored = 0
        self.requested.clear()


class SignalWatch:
    """Stop signals handled from the moment :meth:`block` returns to :meth:`close`, with no window.

    :meth:`block` blocks :data:`WATCHED_SIGNALS` (the stop signals and SIGHUP) in the calling thread,
    and so in every thread it starts afterwards: a signal that arrives then stays pending, never lost
    and never handled in the middle of other code (a signal handler interrupting a write to stderr
    can lose the signal). :meth:`start` runs a thread that takes them with :func:`signal.sigwait` and
    feeds :attr:`stop` (SIGHUP: :attr:`reloads`), logging each one as an ordinary thread.
    :meth:`close` ends that thread and the reloads, consumes signals still pending (counted as
    ignored: the stop is done) and restores the previous signal mask.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.stop = StopRequest()
        self.reloads = ReloadRequests(logger)
        self._logger = logger
        self._previous: set[int] | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @classmethod
    def block(cls, logger: logging.Logger) -> SignalWatch:
        watch = cls(logger)
        watch._previous = {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED_SIGNALS)}
        return watch

    def start(self) -> None:
        """Begin taking the blocked signals in a thread of its own (``signals``)."""
        self._thread = threading.Thread(target=self._take, name="signals", daemon=True)
        self._thread.start()

    def _take(self) -> None:
        while True:
            sig = signal.sigwait(WATCHED_SIGNALS)
            if self._closing:
                return
            if sig == RELOAD_SIGNAL:
                self.reloads.request()
                continue
            if self.stop.receive(sig):
                self._logger.info("%s received, stopping", signal_name(sig))
            else:
                self._logger.warning("%s received while stopping; already stopping", signal_name(sig))

    def close(self, *, keep_blocked: bool = False) -> None:
        """Stop taking signals and restore the signal mask :meth:`block` found (``keep_blocked``:
        leave the stop signals blocked, for a process about to exit: a signal arriving after its
        stop cannot kill it and change its exit code). Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None and thread.ident is not None:
            self._closing = True
            signal.pthread_kill(thread.ident, signal.SIGUSR2)
            thread.join()
        if self._previous is None:
            return
        self.reloads.close()
        while signal.sigtimedwait(WATCHED_SIGNALS, 0) is not None:
            self.stop.ignored += 1
        if not keep_blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)
        self._previous = None


class ReloadRequests:
    """SIGHUP in ``uun-gateway run``: re-read the config file and apply it (:meth:`Gateway.reload`).

    :meth:`request` only sets an event, so it is safe inside a signal handler; the reload runs in a
    thread of its own (``reload``) started by :meth:`start`, one at a time; requests that arrive
    during a reload are coalesced into one more. A request before :meth:`start` waits for it. The
    outcome is logged: what changed, or the errors (the running config is kept). :meth:`close`
    ends the thread (after a reload under way) and is idempotent.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._reload: Callable[[], str] | None = None

    def request(self) -> None:
        self._pending.set()

    def start(self, reload: Callable[[], str]) -> None:
        self._reload = reload
        self._thread = threading.Thread(target=self._run, name="reload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._reload is not None
        while True:
            self._pending.wait()
            if self._closing:
                return
            self._pending.clear()
            self._logger.info("%s received: re-reading the config", signal_name(RELOAD_SIGNAL))
            try:
                self._logger.info("config reloaded: %s", self._reload())
            except UunGatewayError as exc:
                self._logger.error("config not reloaded, the running config is kept:\n%s", exc)
            except Exception:
                self._logger.exception("config reload failed; the running config is kept")

    def close(self) -> None:
        thread, self._thread = self._thread, None
        self._closing = True
        self._pending.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
