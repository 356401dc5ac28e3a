"""Module priorities: the order in which modules start (ascending) and stop (descending).

A module's priority is ``gateway.modulePriority.<moduleId>`` when the config sets it, else the
class attribute ``priority`` of the module, else 0. Modules of equal priority keep the order they
were loaded in (``module_init``'s modules first, in the order it returned them, then installed
modules in config order). The sort is stable and pure: the same config always gives the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

DEFAULT_PRIORITY = 0.0
PRIORITY_LIMIT = 1_000_000

PRIORITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "an object {moduleId: priority}; modules start in ascending and stop in descending priority",
    "additionalProperties": {
        "type": "number",
        "minimum": -PRIORITY_LIMIT,
        "maximum": PRIORITY_LIMIT,
        "description": f"a number from -{PRIORITY_LIMIT} to {PRIORITY_LIMIT}",
    },
}


class _Prioritised(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def priority(self) -> float | None: ...


M = TypeVar("M", bound=_Prioritised)


def class_priority(instance: object) -> float | None:
    """The ``priority`` a module declares (a class or instance attribute), or None; a value that is
    not a number (a bool is not one) counts as undeclared."""
    value = getattr(instance, "priority", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def module_priority(module: _Prioritised, gateway_section: Mapping[str, Any]) -> float:
    """The priority of ``module`` under the ``gateway`` section of a checked config."""
    configured = gateway_section.get("modulePriority", {})
    if isinstance(configured, Mapping) and module.id in configured:
        return float(configured[module.id])
    return module.priority if module.priority is not None else DEFAULT_PRIORITY


def in_start_order(modules: Sequence[M], gateway_section: Mapping[str, Any]) -> list[M]:
    """``modules`` sorted by ascending priority; ties keep their order in ``modules``."""
    return sorted(modules, key=lambda m: module_priority(m, gateway_section))


def describe_order(modules: Sequence[M], gateway_section: Mapping[str, Any]) -> str:
    """``"socket (-10), heartbeat (0), upload (0)"``: the modules with their priorities."""
    return ", ".join(f"{m.id} ({module_priority(m, gateway_section):g})" for m in modules) or "none"
