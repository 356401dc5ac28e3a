"""The JSON Schema of ``gateway.alarms`` (the rules of :mod:`uun_gateway.alarms`), apart so that
the config loader can compose it without importing the alarm engine."""

from __future__ import annotations

from typing import Any, Literal

from .bounds import YEAR, seconds_schema

Priority = Literal["info", "warning", "error", "critical"]
PRIORITIES: tuple[Priority, ...] = ("info", "warning", "error", "critical")

_GLOB = {"type": "string", "minLength": 1, "description": 'a name or a glob pattern ("*", "?", "[...]")'}

ALARM_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "an alarm rule: name, watch and either condition or staleAfter",
    "required": ["name", "watch"],
    "anyOf": [{"required": ["condition"]}, {"required": ["staleAfter"]}],
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_.:-]{1,100}$",
            "description": "a rule name of 1-100 letters, digits, '_', '.', ':' or '-'",
        },
        "description": {"type": "string", "description": "a text"},
        "watch": {
            "type": "object",
            "description": 'an object {"module": module id, "device": glob, "point": glob}',
            "required": ["module"],
            "properties": {
                "module": {"type": "string", "minLength": 1, "description": "a module id"},
                "device": _GLOB,
                "point": _GLOB,
            },
            "additionalProperties": False,
        },
        "condition": {
            "type": "string",
            "minLength": 1,
            "description": "an expression over value, previous and age, e.g. value > 80",
        },
        "releaseCondition": {
            "type": "string",
            "minLength": 1,
            "description": "an expression over value, previous and age, e.g. value < 75",
        },
        "staleAfter": seconds_schema("seconds without a reading that trip a stale rule", maximum=YEAR),
        "priority": {"enum": list(PRIORITIES), "description": "one of " + ", ".join(PRIORITIES)},
        "tripDelay": seconds_schema("seconds the condition must hold before the alarm trips", maximum=YEAR, zero=True),
        "autoAck": {"type": "boolean", "description": "true or false"},
    },
    "additionalProperties": False,
}
"""The schema of one rule."""

ALARMS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "a list of alarm rules",
    "items": ALARM_RULE_SCHEMA,
}
"""The schema of ``gateway.alarms``; the config loader composes it under that key."""
