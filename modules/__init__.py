"""Built-in uun-gateway modules (installed as ``uun_gateway.modules``)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # uun-iot's uun_iot.modules names (Module, ConfigScopeEnum, BaseHealthCheck), imported when asked for.
    from uun_gateway.compat import legacy_attribute

    return legacy_attribute(__name__, name)
