"""uun-gateway: a thread-based framework for embedded IoT gateways, compatible with uun-iot.

The public API::

    from uun_gateway import Gateway, Module, on, Storage, RepeatTimer, UuAppClient, UuCmdSession

Names are imported on first use (PEP 562), so ``from uun_gateway import Module`` does not pay for
the uuApp client, and the command line pays only for what its command needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .compat import install as _install_legacy_paths
from .version import __version__

if TYPE_CHECKING:
    from .alarms import AlarmError, AlarmTransition
    from .commands import Command, CommandError, command, find_commands
    from .config import load_config
    from .config import validate as validate_config
    from .errors import (
        EX_CONFIG,
        ConfigApplyError,
        ConfigError,
        ModuleLoadError,
        StorageError,
        UnsupportedEvent,
        UunGatewayError,
    )
    from .events import on
    from .files import atomic_write, read_secret_file
    from .gateway import Gateway
    from .host import ModuleHost
    from .httpcall import AnswerTooLarge, DeadlineExceeded, Interrupted, bounded_session, exchange
    from .module import Module, ModuleStats, module_id_from_str
    from .outage import Backoff, Deadline, StateLog, describe_failure, safe_text
    from .plugins import Commands
    from .readings import PointInfo, Reading
    from .storage import Entry, Storage
    from .timers import RepeatTimer
    from .timestamps import iso_utc, parse_iso
    from .uuapp import TokenCommandError, TokenError, UuAppClient, UuCmdSession

#: public name -> (submodule, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "Command": ("commands", "Command"),
    "CommandError": ("commands", "CommandError"),
    "command": ("commands", "command"),
    "find_commands": ("commands", "find_commands"),
    "AlarmError": ("alarms", "AlarmError"),
    "AlarmTransition": ("alarms", "AlarmTransition"),
    "PointInfo": ("readings", "PointInfo"),
    "Reading": ("readings", "Reading"),
    "AnswerTooLarge": ("httpcall", "AnswerTooLarge"),
    "Backoff": ("outage", "Backoff"),
    "Commands": ("plugins", "Commands"),
    "ConfigApplyError": ("errors", "ConfigApplyError"),
    "ConfigError": ("errors", "ConfigError"),
    "Deadline": ("outage", "Deadline"),
    "DeadlineExceeded": ("httpcall", "DeadlineExceeded"),
    "EX_CONFIG": ("errors", "EX_CONFIG"),
    "Entry": ("storage", "Entry"),
    "Gateway": ("gateway", "Gateway"),
    "Interrupted": ("httpcall", "Interrupted"),
    "Module": ("module", "Module"),
    "ModuleHost": ("host", "ModuleHost"),
    "ModuleLoadError": ("errors", "ModuleLoadError"),
    "ModuleStats": ("module", "ModuleStats"),
    "RepeatTimer": ("timers", "RepeatTimer"),
    "StateLog": ("outage", "StateLog"),
    "Storage": ("storage", "Storage"),
    "StorageError": ("errors", "StorageError"),
    "TokenCommandError": ("uuapp", "TokenCommandError"),
    "TokenError": ("uuapp", "TokenError"),
    "UnsupportedEvent": ("errors", "UnsupportedEvent"),
    "UuAppClient": ("uuapp", "UuAppClient"),
    "UuCmdSession": ("uuapp", "UuCmdSession"),
    "UunGatewayError": ("errors", "UunGatewayError"),
    "atomic_write": ("files", "atomic_write"),
    "bounded_session": ("httpcall", "bounded_session"),
    "describe_failure": ("outage", "describe_failure"),
    "read_secret_file": ("files", "read_secret_file"),
    "exchange": ("httpcall", "exchange"),
    "iso_utc": ("timestamps", "iso_utc"),
    "load_config": ("config", "load_config"),
    "module_id_from_str": ("module", "module_id_from_str"),
    "on": ("events", "on"),
    "parse_iso": ("timestamps", "parse_iso"),
    "safe_text": ("outage", "safe_text"),
    "validate_config": ("config", "validate"),
}

__all__ = [
    "EX_CONFIG",
    "AlarmError",
    "AlarmTransition",
    "AnswerTooLarge",
    "Backoff",
    "Command",
    "CommandError",
    "Commands",
    "ConfigApplyError",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "Entry",
    "Gateway",
    "Interrupted",
    "Module",
    "ModuleHost",
    "ModuleLoadError",
    "ModuleStats",
    "PointInfo",
    "Reading",
    "RepeatTimer",
    "StateLog",
    "Storage",
    "StorageError",
    "TokenCommandError",
    "TokenError",
    "UnsupportedEvent",
    "UuAppClient",
    "UuCmdSession",
    "UunGatewayError",
    "__version__",
    "atomic_write",
    "bounded_session",
    "command",
    "describe_failure",
    "exchange",
    "find_commands",
    "iso_utc",
    "load_config",
    "module_id_from_str",
    "on",
    "parse_iso",
    "read_secret_file",
    "safe_text",
    "validate_config",
]


_install_legacy_paths()


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        # uun-iot's top-level names (EvTick, ConfigScopeEnum, utils, ...), imported only when asked for
        from .compat import legacy_attribute

        return legacy_attribute(__name__, name)
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
