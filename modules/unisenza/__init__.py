"""Unisenza Plus (Purmo) thermostats: a thread-based cloud client and the ``unisenza`` module.

The client (:class:`Client`, :func:`create_client`, :class:`CognitoAuth`, the models) does not
need the uun_gateway core; the gateway module class lives in ``.module`` and is imported from
there (entry point ``unisenza = uun_gateway.modules.unisenza.module:Unisenza``).
"""

from .auth import CognitoAuth, Tokens
from .client import Client, ClientOptions, create_client
from .endpoints import Endpoints
from .errors import AuthenticationError, ClientError
from .models import (
    Device,
    DeviceAttributes,
    DeviceType,
    Gateway,
    GatewayAttributes,
    HvacAttributes,
    HvacDevice,
    Occupant,
    RunningState,
    SystemMode,
)
from .sigv4 import AwsCredentials

__all__ = [
    "AuthenticationError",
    "AwsCredentials",
    "Client",
    "ClientError",
    "ClientOptions",
    "CognitoAuth",
    "Device",
    "DeviceAttributes",
    "DeviceType",
    "Endpoints",
    "Gateway",
    "GatewayAttributes",
    "HvacAttributes",
    "HvacDevice",
    "Occupant",
    "RunningState",
    "SystemMode",
    "Tokens",
    "create_client",
]
