"""The catalogue of installed modules (``uun-gateway modules``): what each entry point offers,
read from its class without constructing or starting anything."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from .errors import ModuleLoadError
from .events import declared_handlers
from .plugins import GROUP, load_module_class
from .priority import class_priority


@dataclass
class ModuleInfo:
    """One installed module: ``error`` is set (and the rest empty) when its class cannot be imported."""

    id: str
    entry_point: str
    description: str = ""
    config_keys: list[str] = field(default_factory=list)
    free_form: bool = True
    timers: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    priority: float | None = None
    updates_in_place: bool = False
    error: str | None = None


def describe_module(module_id: str, entry_point: str) -> ModuleInfo:
    """What the class registered as ``module_id`` declares; an import failure is reported in
    :attr:`ModuleInfo.error`, never raised."""
    info = ModuleInfo(module_id, entry_point)
    try:
        cls = load_module_class(module_id)
    except ModuleLoadError as exc:
        info.error = str(exc)
        return info
    doc = inspect.getdoc(cls) or ""
    info.description = doc.strip().splitlines()[0] if doc.strip() else ""
    schema = getattr(cls, "config_schema", None)
    if isinstance(schema, Mapping) and isinstance(schema.get("properties"), Mapping):
        info.config_keys = list(schema["properties"])
        info.free_form = schema.get("additionalProperties", True) is not False
    handlers = declared_handlers(cls)
    defaults: Mapping[str | None, Any] = getattr(cls, "timer_defaults", None) or {}
    ticks = list(dict.fromkeys(name for event, name, _ in handlers if event == "tick"))
    for timer_id in ticks:
        label = "tick" if timer_id is None else timer_id
        default = defaults.get(timer_id)
        info.timers.append(f"{label} (default {default:g}s)" if isinstance(default, int | float) else label)
    info.commands = [name for event, name, _ in handlers if event == "command" and name]
    info.priority = class_priority(cls)
    declared = getattr(cls, "updates_in_place", None)
    info.updates_in_place = declared if isinstance(declared, bool) else any(e == "update" for e, _, _ in handlers)
    return info


def installed_modules() -> list[ModuleInfo]:
    """Every module of the entry-point group ``uun_gateway.modules``, by id."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    return [describe_module(mid, found[mid]) for mid in sorted(found)]


def format_module(info: ModuleInfo, enabled: bool | None) -> list[str]:
    """The lines ``uun-gateway modules`` prints for one module (``enabled``: None without a config)."""
    state = "" if enabled is None else ("  [enabled]" if enabled else "  [not enabled]")
    lines = [f"{info.id}{state}  ({info.entry_point})"]
    if info.error is not None:
        return [*lines, f"    cannot be imported: {info.error}"]
    lines.append(f"    {info.description or '(no description)'}")
    if info.config_keys:
        more = ", ..." if info.free_form else ""
        lines.append(f"    config gateway.{info.id}: {', '.join(info.config_keys)}{more}")
    else:
        lines.append(f"    config gateway.{info.id}: free-form object")
    lines.append(f"    timers (gateway.moduleTimers.{info.id}): {', '.join(info.timers) or 'none'}")
    if info.commands:
        lines.append(f"    socket commands: {', '.join(info.commands)}")
    change = "is applied in place" if info.updates_in_place else "restarts the module"
    priority = f"{info.priority:g}" if info.priority is not None else "0 (default)"
    lines.append(f"    priority {priority}; a changed section {change}")
    return lines
