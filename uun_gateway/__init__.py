"""uun-gateway: a thread-based framework for embedded IoT gateways, compatible with uun-iot.

The public API::

    from uun_gateway import Gateway, Module, on, Storage, RepeatTimer, UuAppClient, UuCmdSession
"""

from .config import load_config
from .config import validate as validate_config
from .errors import ConfigApplyError, ConfigError, ModuleLoadError, StorageError, UnsupportedEvent, UunGatewayError
from .events import on
from .files import atomic_write
from .gateway import Gateway
from .host import ModuleHost
from .module import Module, ModuleStats, module_id_from_str
from .outage import Backoff, Deadline, StateLog, describe_failure, safe_text
from .plugins import Commands
from .storage import Entry, Storage
from .timers import RepeatTimer
from .timestamps import iso_utc, parse_iso
from .uuapp import TokenCommandError, TokenError, UuAppClient, UuCmdSession
from .version import __version__

__all__ = [
    "Backoff",
    "Commands",
    "ConfigApplyError",
    "ConfigError",
    "Deadline",
    "Entry",
    "Gateway",
    "Module",
    "ModuleHost",
    "ModuleLoadError",
    "ModuleStats",
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
    "describe_failure",
    "iso_utc",
    "load_config",
    "module_id_from_str",
    "on",
    "parse_iso",
    "safe_text",
    "validate_config",
]
