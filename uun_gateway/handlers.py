"""HandlerRunner: calling module handlers at the handler boundary — exceptions caught, logged and
counted — and running start/stop handlers in threads of their own with a deadline.

A handler that keeps failing (a tick every second against a broken sensor) is logged with its full
traceback the first time (and when the exception type changes), then as one line with the count
and the last message at most every ``repeat_every`` seconds, and once when it works again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from .events import Handler
from .loading import LoadedModule
from .outage import DEFAULT_REPEAT_EVERY, Clock, StateLog

logger = logging.getLogger("uun_gateway.gateway")


class HandlerRunner:
    """Runs handlers for a gateway. Thread-safe; a handler's exception never leaves :meth:`call`."""

    def __init__(self, *, repeat_every: float = DEFAULT_REPEAT_EVERY, clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._start_threads: list[threading.Thread] = []
        self._repeat_every = repeat_every
        self._clock = clock
        self._logs: dict[tuple[str, str, str], StateLog] = {}

    def _log_of(self, loaded: LoadedModule, handler: Handler) -> StateLog:
        key = (loaded.id, handler.event, handler.name)
        with self._lock:
            log = self._logs.get(key)
            if log is None:
                subject = f"module {loaded.id}: {handler.event} handler {handler.name}"
                log = self._logs[key] = StateLog(logger, subject, repeat_every=self._repeat_every, clock=self._clock)
            return log

    def call(self, loaded: LoadedModule, handler: Handler, *args: Any) -> bool:
        """Call ``handler(*args)``; False (after logging it as above and counting it in the module's
        stats) when it raised."""
        log = self._log_of(loaded, handler)
        try:
            handler.func(*args)
        except BaseException as exc:
            problem = f"{type(exc).__name__}: {exc}"
            log.failed(f"raised {problem}", state=type(exc).__name__, level=logging.ERROR, exc_info=exc)
            loaded.stats.record_handler_error(f"{handler.name}: {problem}")
            return False
        if log.failing:
            log.ok("works again")
        return True

    def start_in_thread(self, loaded: LoadedModule, handler: Handler, *args: Any) -> None:
        """Start ``handler(*args)`` in a daemon thread of its own; returns once it began running."""
        began = threading.Event()

        def run() -> None:
            began.set()
            self.call(loaded, handler, *args)

        thread = threading.Thread(target=run, name=f"start:{handler.name}", daemon=True)
        with self._lock:
            self._start_threads.append(thread)
        thread.start()
        began.wait()

    def run_each_in_thread(self, calls: Iterable[tuple[LoadedModule, Handler]], deadline: float) -> None:
        """Run each handler in a thread of its own, one after another, each until ``deadline``
        (``time.monotonic()``); one still running then is logged and abandoned."""
        for loaded, handler in calls:
            thread = threading.Thread(
                target=self.call, args=(loaded, handler), name=f"{handler.event}:{handler.name}", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
            thread.start()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error(
                    "module %s: %s handler %s did not return in time; abandoned", loaded.id, handler.event, handler.name
                )

    def join_started(self, deadline: float) -> None:
        """Wait until ``deadline`` for the start handlers' threads (not for the calling one); forget them."""
        with self._lock:
            threads = list(self._start_threads)
        for thread in threads:
            if thread is threading.current_thread():
                continue  # a start handler stopping the gateway: it goes on when stop() returns
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.error("%s is still running at stop; abandoned", thread.name)
        with self._lock:  # forgotten only now: while joined, a start handler calling stop() must not wait
            self._start_threads = [t for t in self._start_threads if t not in threads]

    def forget_threads(self) -> None:
        with self._lock:
            self._threads.clear()

    def owns(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` runs a handler started here (a stop must not wait for it)."""
        with self._lock:
            return thread in self._threads or thread in self._start_threads
