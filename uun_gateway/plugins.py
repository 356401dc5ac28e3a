"""Finding plugins through entry points, without importing them.

- ``uun_gateway.modules``: module classes, ``<moduleId> = package.module:Class``;
- ``uun_gateway.commands``: command-line commands, ``<command> = package.cli:register``, where
  ``register(commands: Commands)`` adds the command with :meth:`Commands.add`.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import ModuleLoadError

GROUP = "uun_gateway.modules"
COMMANDS_GROUP = "uun_gateway.commands"
logger = logging.getLogger(__name__)


@functools.cache
def _entry_points(group: str) -> tuple[EntryPoint, ...]:
    # Reading the installed distributions' metadata costs ~30 ms (more on a Pi): once per process.
    return tuple(entry_points().select(group=group))


def rescan() -> None:
    """Forget the entry points read so far: the next look-up sees packages installed since."""
    _entry_points.cache_clear()


def available_module_ids() -> list[str]:
    """The ids of every registered module, without importing any of them (the installed packages'
    metadata is read once per process; see :func:`rescan`)."""
    return sorted({ep.name for ep in _entry_points(GROUP)})


def load_module_class(module_id: str) -> type[Any]:
    """Import and return the class registered as ``module_id``.

    Raises :class:`ModuleLoadError` naming the module when it is not registered or its import fails.
    """
    matches = [ep for ep in _entry_points(GROUP) if ep.name == module_id]
    if not matches:
        raise ModuleLoadError(f"no module {module_id!r} is installed (entry-point group {GROUP})")
    try:
        cls = matches[0].load()
    except Exception as exc:
        raise ModuleLoadError(f"module {module_id!r} ({matches[0].value}) cannot be imported: {exc}") from exc
    if getattr(cls, "id", module_id) != module_id:
        raise ModuleLoadError(
            f"module {module_id!r} ({matches[0].value}) has id {cls.id!r}; the entry point must be named after the id"
        )
    return cls  # type: ignore[no-any-return]


class Commands:
    """What a plugin's ``register(commands)`` gets to add its ``uun-gateway <name>`` command.

    :meth:`add` returns the command's :class:`argparse.ArgumentParser`; the plugin adds its arguments
    (and subcommands) to it and sets ``func``, a ``(args: argparse.Namespace) -> int`` returning the
    exit code: ``parser.set_defaults(func=handler)``.
    """

    def __init__(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._subparsers = subparsers

    def add(self, name: str, help: str) -> argparse.ArgumentParser:
        """Add the command ``name`` (``help``: one line for ``uun-gateway --help``)."""
        return self._subparsers.add_parser(name, help=help, description=help)


def command_entry_points() -> dict[str, EntryPoint]:
    """The registered plugin commands by name, without importing any of them."""
    return {ep.name: ep for ep in sorted(_entry_points(COMMANDS_GROUP), key=lambda ep: ep.name)}


def load_command(entry_point: EntryPoint) -> Callable[[Commands], None] | None:
    """Import a plugin command's ``register`` function; None (after a logged warning naming the
    plugin) when it cannot be imported or is not callable."""
    try:
        register = entry_point.load()
    except Exception as exc:
        logger.warning("command %r (%s) cannot be loaded: %s", entry_point.name, entry_point.value, exc)
        return None
    if not callable(register):
        logger.warning("command %r (%s) is not a function; skipped", entry_point.name, entry_point.value)
        return None
    return register  # type: ignore[no-any-return]
