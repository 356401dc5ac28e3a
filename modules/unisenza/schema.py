"""The JSON Schema of ``gateway.unisenza`` (composed into the gateway's config schema)."""

from __future__ import annotations

from typing import Any

from uun_gateway.bounds import YEAR, seconds_schema

_NUMBER = seconds_schema()
_LONG = seconds_schema(maximum=YEAR)
_ENDPOINT_KEYS = (
    "region", "userPoolId", "clientId", "idpUrl", "identityUrl", "identityProvider", "serviceUrl",
    "company", "iotHost", "iotPath", "caFile",
)  # fmt: skip

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the Unisenza Plus settings (an object)",
    "required": ["username"],
    "anyOf": [{"required": ["password"]}, {"required": ["passwordFile"]}],
    "properties": {
        "username": {"type": "string", "minLength": 1, "description": "the cloud account's e-mail"},
        "password": {
            "type": "string",
            "writeOnly": True,
            "description": "the cloud password, a string (prefer passwordFile)",
        },
        "passwordFile": {"type": "string", "minLength": 1, "description": "a file holding the password"},
        "requestTimeout": _NUMBER,
        "httpTimeout": _NUMBER,
        "connectTimeout": _NUMBER,
        "unavailableAfter": _LONG,
        "thingsPerConnection": {"type": "integer", "minimum": 1, "description": "an integer >= 1"},
        "reconnectDelay": {
            "type": "object",
            "description": '{"min": seconds, "max": seconds}',
            "properties": {"min": _NUMBER, "max": _NUMBER},
            "additionalProperties": False,
        },
        "retryDelay": {
            "type": "object",
            "description": '{"min": seconds, "max": seconds} between failed logins/discoveries',
            "properties": {"min": _NUMBER, "max": _NUMBER},
            "additionalProperties": False,
        },
        "authRetryDelay": _NUMBER,
        "refreshEvery": {
            "type": "integer",
            "minimum": 0,
            "description": "ticks between full refreshes (0 = never)",
        },
        "rediscoverEvery": _LONG,
        "setpoints": {
            "type": "object",
            "description": '{"<device code, id or name>": {"temperature": °C, "mode": "off"|"heat"}}',
            "additionalProperties": {
                "type": "object",
                "description": '{"temperature": °C, "mode": "off"|"heat"}',
                "properties": {
                    "temperature": {"type": "number", "description": "a temperature in °C"},
                    "mode": {"enum": ["off", "heat"], "description": '"off" or "heat"'},
                },
                "additionalProperties": False,
            },
        },
        "endpoints": {
            "type": "object",
            "description": "an object of cloud endpoint overrides",
            "properties": {
                **{key: {"type": "string", "description": "a string"} for key in _ENDPOINT_KEYS},
                "iotPort": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "a TCP port"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
