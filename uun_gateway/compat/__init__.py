"""uun-iot's surface, kept for applications that migrate by renaming their imports.

``sed -i 's/\\buun_iot\\b/uun_gateway/g'`` over a uun-iot application is the whole port: its
import paths (``uun_gateway.Gateway``, ``uun_gateway.modules.Module``, ``uun_gateway.utils`` …)
and names (``EvTick``, ``ConfigScopeEnum``, ``BaseHealthCheck`` …) resolve to the modules of this
package. Nothing here is imported until an application asks for a legacy name, so the gateway
itself never pays for it. The core never uses these names; they map onto the core's own API.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# legacy module path -> the module of this package that provides its names
LEGACY_MODULES: dict[str, str] = {
    "uun_gateway.Gateway": "uun_gateway.compat.gateway",
    "uun_gateway.UuAppClient": "uun_gateway.compat.uuappclient",
    "uun_gateway.decorators": "uun_gateway.compat.events",
    "uun_gateway.utils": "uun_gateway.compat.utils",
    "uun_gateway.diagnostic": "uun_gateway.compat.diagnostic",
    "uun_gateway.typing": "uun_gateway.compat.typing",
    "uun_gateway.exceptions": "uun_gateway.compat.exceptions",
    "uun_gateway.modules.Module": "uun_gateway.compat.module",
    "uun_gateway.modules.BaseHealthCheck": "uun_gateway.compat.health",
}

# (package, legacy attribute) -> "module:name" (an attribute of that module) or "module" (the module)
LEGACY_ATTRIBUTES: dict[tuple[str, str], str] = {
    **{
        ("uun_gateway", name): "uun_gateway.compat.events:" + name
        for name in ("EvTick", "EvStart", "EvStop", "EvConfUpdate", "EvExternal", "attach_handlers", "on_tick")
    },
    ("uun_gateway", "ConfigScopeEnum"): "uun_gateway.compat.module:ConfigScopeEnum",
    ("uun_gateway", "EventRegister"): "uun_gateway.compat.events:EventRegister",  # 0.11
    ("uun_gateway", "IModule"): "uun_gateway.compat.typing:IModule",  # 0.10, 0.11
    **{
        ("uun_gateway", path.rsplit(".", 1)[1]): path
        for path in LEGACY_MODULES
        if path.count(".") == 1 and path.rsplit(".", 1)[1] not in ("Gateway", "UuAppClient")
    },
    **{
        ("uun_gateway.events", name): "uun_gateway.compat.events:" + name
        for name in (
            "EvTick",
            "EvStart",
            "EvStop",
            "EvConfUpdate",
            "EvExternal",
            "Event",
            "EventType",
            "EventRegister",
            "attach_handlers",
            "registered_event_submodule",
        )
    },
    ("uun_gateway.modules", "Module"): "uun_gateway.compat.module:Module",
    ("uun_gateway.modules", "ConfigScopeEnum"): "uun_gateway.compat.module:ConfigScopeEnum",
    ("uun_gateway.modules", "BaseHealthCheck"): "uun_gateway.compat.health:BaseHealthCheck",
}


class _LegacyModule(types.ModuleType):
    """A legacy module path whose names come from a module of this package, imported on first use."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, f"uun-iot's {name.replace('uun_gateway', 'uun_iot')}, provided by {target}")
        self.__dict__["_target"] = target

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(self.__dict__["_target"])
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(importlib.import_module(self.__dict__["_target"]))))


def install() -> None:
    """Make the legacy module paths importable (idempotent; imports nothing)."""
    for name, target in LEGACY_MODULES.items():
        sys.modules.setdefault(name, _LegacyModule(name, target))


def legacy_attribute(package: str, name: str) -> Any:
    """The legacy attribute ``name`` of ``package`` (for the package's ``__getattr__``); raises
    :class:`AttributeError` as a missing attribute does."""
    where = LEGACY_ATTRIBUTES.get((package, name))
    if where is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module_name, _, attr = where.partition(":")
    module = sys.modules[module_name] if module_name in LEGACY_MODULES else importlib.import_module(module_name)
    return getattr(module, attr) if attr else module
