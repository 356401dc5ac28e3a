"""uun-gateway: a thread-based framework for embedded IoT gateways, compatible with uun-iot.

The public API::

    from uun_gateway import Gateway, Module, on, Storage, RepeatTimer, UuAppClient, UuCmdSession
"""

from .config import load_config
from .errors import ConfigApplyError, ConfigError, ModuleLoadError, StorageError, UnsupportedEvent, UunGatewayError
from .events import on
from .gateway import Gateway
from .module import Module, ModuleStats, module_id_from_str
from .storage import Entry, Storage
from .timers import RepeatTimer
from .uuapp import TokenCommandError, TokenError, UuAppClient, UuCmdSession
from .version import __version__

__all__ = [
    "ConfigApplyError",
    "ConfigError",
    "Entry",
    "Gateway",
    "Module",
    "ModuleLoadError",
    "ModuleStats",
    "RepeatTimer",
    "Storage",
    "StorageError",
    "TokenCommandError",
    "TokenError",
    "UnsupportedEvent",
    "UuAppClient",
    "UuCmdSession",
    "UunGatewayError",
    "__version__",
    "load_config",
    "module_id_from_str",
    "on",
]
