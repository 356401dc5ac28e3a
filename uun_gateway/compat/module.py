"""uun-iot's ``uun_iot.modules.Module``: ``Module`` and ``ConfigScopeEnum``."""

from __future__ import annotations

import enum

from ..module import Module


class ConfigScopeEnum(enum.StrEnum):
    """Where ``Module._c(key, scope)`` looks: ``gateway.<key>``, ``gateway.<id>.<key>``, or (BASED)
    ``gateway.<base>.<key>`` with the base set by ``_set_config_manager_base`` (default the id).
    ``SELF`` is uun-iot 0.10's name of ``MODULE``."""

    GATEWAY = "gateway"
    MODULE = "module"
    BASED = "based"
    SELF = "module"


__all__ = ["ConfigScopeEnum", "Module"]
