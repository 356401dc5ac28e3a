"""Finding module classes: built-in and third-party modules register in the entry-point group
``uun_gateway.modules`` as ``<moduleId> = package.module:Class``."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from .errors import ModuleLoadError

GROUP = "uun_gateway.modules"
logger = logging.getLogger(__name__)


def available_module_ids() -> list[str]:
    """The ids of every registered module, without importing any of them."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_module_class(module_id: str) -> type[Any]:
    """Import and return the class registered as ``module_id``.

    Raises :class:`ModuleLoadError` naming the module when it is not registered or its import fails.
    """
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == module_id]
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
