"""Installed modules for the live module set tests, registered as entry points by :func:`install`.

Every lifecycle step is recorded in :data:`JOURNAL` as ``"<event> <id>#<instance number>"`` so a
test can see which instance started, stopped or was constructed, in which order.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from uun_gateway import Module, UuAppClient, command, on
from uun_gateway.plugins import rescan

JOURNAL: list[str] = []
_numbers = itertools.count(1)
_lock = threading.Lock()

ENTRY_POINTS = {
    "ticker": "tests.liveset_modules:Ticker",
    "tuner": "tests.liveset_modules:Tuner",
    "early": "tests.liveset_modules:Early",
    "broken": "tests.liveset_modules:Broken",
    "badStart": "tests.liveset_modules:BadStart",
    "courier": "tests.liveset_modules:Courier",
    "herald": "tests.liveset_modules:Herald",
    "missing": "tests.no_such_module:Missing",
}


def install(directory: Path) -> None:
    """Write a distribution's metadata registering :data:`ENTRY_POINTS` into ``directory`` (put
    it on ``sys.path`` to install them, see :func:`installed_in`)."""
    dist = directory / "liveset_test_modules-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: liveset-test-modules\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text(f"[uun_gateway.modules]\n{lines}")


@contextmanager
def installed_in(directory: Path) -> Iterator[Path]:
    """The test modules installed (in ``directory``) for the duration, the journal cleared; the
    entry points are read again on entry and on exit."""
    install(directory)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    rescan()
    JOURNAL.clear()
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        rescan()


def record(entry: str) -> None:
    with _lock:
        JOURNAL.append(entry)


class _Recorded(Module):
    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.number = next(_numbers)
        self.name = f"{self.id}#{self.number}"
        record(f"construct {self.name}")

    @on("start")
    def started(self, evs: tuple[threading.Event, threading.Event]) -> None:
        record(f"start {self.name}")

    @on("stop")
    def stopped(self) -> None:
        record(f"stop {self.name}")


class Ticker(_Recorded):
    """Counts ticks into its storage; a start thread lives until the module stops."""

    config_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "properties": {"label": {"type": "string"}},
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.ticks = 0
        self.start_thread_ended = threading.Event()

    @on("start")
    def wait_for_stop(self, evs: tuple[threading.Event, threading.Event]) -> None:
        evs[1].wait()  # stopev: set when this module stops
        self.start_thread_ended.set()

    @on("tick")
    def tick(self) -> None:
        self.ticks += 1
        self.storage.append({"label": self._c("label", ""), "n": self.ticks})

    @on("command", "ticks")
    def count(self, request: tuple[str, str | None]) -> str:
        return str(self.ticks)

    @command("ticks")
    def ticks_command(self, args: Mapping[str, Any]) -> Any:
        """How many times it ticked (the uplinks' command channel)."""
        return {"ticks": self.ticks, "instance": self.name}


class Tuner(_Recorded):
    """Applies a changed section in place (it has an update handler)."""

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.updates = 0

    @on("update")
    def updated(self) -> None:
        self.updates += 1


class Courier(_Recorded):
    """Brings remote configs (as ``config`` and ``mqtt`` do)."""

    carries_remote_config = True


class Herald(Courier):
    """A second module that brings remote configs."""


class Early(_Recorded):
    """Declares a priority of its own."""

    priority = -5


class Broken(_Recorded):
    """Fails in its constructor."""

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        raise OSError("the probe's device file is missing")


class BadStart(_Recorded):
    """Its blocking start handler raises."""

    @on("start", blocking=True)
    def open_device(self, evs: tuple[threading.Event, threading.Event]) -> None:
        raise OSError("the device does not answer")
