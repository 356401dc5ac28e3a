"""Configuration: loading the JSON file, the composed JSON Schema, validation with readable errors,
and atomic saving."""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import jsonschema

from .alarmschema import ALARMS_SCHEMA
from .bounds import DAY, MAX_INTEGER, YEAR
from .errors import ConfigError
from .files import atomic_write, read_regular_file
from .priority import PRIORITY_SCHEMA

MAX_DEPTH = 64  # nesting of a config (JSON objects and arrays); real configs use < 10
MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a few KB; this bounds what reading one costs

PERIOD_SCHEMA: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": YEAR,
    "description": f"a period in seconds (a number > 0, at most a year: {YEAR})",
}

_STORAGE_SETTING = {
    "description": 'a file path, or {"path": file path, "limit": max entries (integer >= 0)}',
    "oneOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "minLength": 1, "description": "a non-empty file path"},
                "limit": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_INTEGER,
                    "description": "an integer >= 0 (0 = no limit)",
                },
            },
            "additionalProperties": False,
        },
    ],
}

#: Keys of the ``gateway`` section owned by the core; every other key is a module's own section.
CORE_GATEWAY_SCHEMA: dict[str, Any] = {
    "moduleTimers": {
        "type": "object",
        "description": "an object {moduleId: period or {timerId: period}}",
        "additionalProperties": {
            "description": 'a period in seconds (a number > 0), or an object {"timerId": period in seconds}',
            "oneOf": [
                PERIOD_SCHEMA,
                {"type": "object", "minProperties": 1, "additionalProperties": PERIOD_SCHEMA},
            ],
        },
    },
    "moduleBackupStorage": {
        "type": "object",
        "description": "an object {moduleId: storage path or {path, limit}}",
        "additionalProperties": _STORAGE_SETTING,
    },
    "storageDir": {
        "type": "string",
        "minLength": 1,
        "description": "the directory of module storages without a moduleBackupStorage entry",
    },
    "stopTimeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": DAY,
        "description": f"seconds stop() waits for handlers (a number > 0, at most a day: {DAY})",
    },
    "handlerTimeout": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": YEAR,
        "description": f"seconds a handler may run before the gateway counts as hung (a number > 0, at most {YEAR})",
    },
    "nondecrementalUpdate": {"type": "boolean", "description": "true or false"},
    "modulePriority": PRIORITY_SCHEMA,
    "alarms": ALARMS_SCHEMA,
}


def compose_schema(
    module_schemas: Mapping[str, dict[str, Any] | None], document: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The schema of a whole config: the core's ``gateway.*`` keys, each module's own section
    (``module_schemas``: module id -> schema or None for free-form), and the ``properties`` and
    ``dependentRequired`` of ``document``, a schema of other top-level keys (uuApp's)."""
    gateway_props: dict[str, Any] = dict(CORE_GATEWAY_SCHEMA)
    for module_id, schema in module_schemas.items():
        if module_id not in CORE_GATEWAY_SCHEMA:
            gateway_props[module_id] = schema if schema is not None else {"type": "object"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "description": "a JSON object",
        "properties": {
            "gateway": {
                "type": "object",
                "description": "an object",
                "properties": gateway_props,
                "additionalProperties": {"type": "object", "description": "a module's section (an object)"},
            },
            **(document or {}).get("properties", {}),
        },
        "dependentRequired": dict((document or {}).get("dependentRequired", {})),
        "additionalProperties": False,
    }


def lenient_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` (from :func:`compose_schema`) relaxed where a config is an application's business:
    any top-level key, any value under ``gateway`` that is no known module's section, and a
    ``uuThing`` without ``uuIdentity``. Returns a new schema; ``schema`` is not changed."""
    relaxed = copy.deepcopy(dict(schema))
    relaxed["additionalProperties"] = True
    properties = relaxed.get("properties", {})
    if "gateway" in properties:
        properties["gateway"]["additionalProperties"] = True
    thing = properties.get("uuThing")
    if isinstance(thing, dict) and "uuIdentity" in thing.get("required", ()):
        thing["required"] = [key for key in thing["required"] if key != "uuIdentity"]
    return relaxed


def json_path(parts: Iterable[Any]) -> str:
    """``["gateway", "moduleTimers", 0]`` -> ``gateway.moduleTimers[0]``; the root is ``(root)``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _relevant(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For a failed ``oneOf``/``anyOf``, every error of the branch meant for the value's type."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    depth = len(error.absolute_path)
    same_type = [e for e in error.context if not (e.validator == "type" and len(e.absolute_path) == depth)]
    if not same_type:
        return [error]
    best = max(same_type, key=lambda e: len(e.absolute_path))
    branch = [e for e in same_type if e.relative_schema_path[0] == best.relative_schema_path[0]]
    return [found for e in branch for found in _relevant(e)]


def _expected(error: jsonschema.ValidationError) -> str | None:
    return (
        str(error.schema["description"]) if isinstance(error.schema, dict) and "description" in error.schema else None
    )


def _missing_key(error: jsonschema.ValidationError) -> str:
    """The key a failed ``required`` is about."""
    return error.message.split("'")[1] if "'" in error.message else error.message


def _describe(outer: jsonschema.ValidationError) -> list[str]:
    if (
        outer.validator in ("oneOf", "anyOf")
        and outer.context
        and all(e.validator == "required" for e in outer.context)
    ):
        # e.g. "password" or "passwordFile": name every alternative, not just the first
        keys = list(dict.fromkeys(_missing_key(e) for e in outer.context))
        return [f"{json_path(outer.absolute_path)}: required key {' or '.join(map(repr, keys))} is missing"]
    return [line for error in _relevant(outer) for line in _describe_one(error, outer)]


def _describe_one(error: jsonschema.ValidationError, outer: jsonschema.ValidationError) -> list[str]:
    path = json_path(error.absolute_path)
    expected = _expected(error) or _expected(outer)
    schema = error.schema if isinstance(error.schema, dict) else {}
    secret = bool(schema.get("writeOnly")) or (_holds_secret(schema) and _has_text(error.instance))
    value = "<secret>" if secret else json.dumps(error.instance)
    if len(value) > 60:
        value = value[:57] + "..."
    if error.validator == "additionalProperties" and error.validator_value is False:
        allowed = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = sorted(
            key
            for key in cast(dict[str, Any], error.instance)
            if key not in allowed and not any(re.search(pattern, key) for pattern in patterns)
        )
        hint = f"; expected {expected}" if patterns and expected else ""
        return [_unknown_key(path, key, allowed) + hint for key in extra]
    if error.validator == "required":
        return [f"{path}: required key {_missing_key(error)!r} is missing"]
    if error.validator == "format":  # one of ours (see _format_checker)
        shown = json.dumps(error.instance)[:200]
        if error.validator_value == "existing-file":
            where = "" if Path(str(error.instance)).is_absolute() else f" (relative to {str(Path.cwd())!r})"
            return [f"{path}: {shown}: no such file{where}; expected {expected or 'a file'}"]
        if error.validator_value == "module-id":
            return [f"{path}: {shown}: no loaded module has this id; expected {expected or 'a module id'}"]
        return [f"{path}: {shown} is not valid; expected {expected or error.validator_value}"]
    if secret:
        message = f"{value} has the wrong type" if error.validator == "type" else f"{value} is not valid"
    elif error.validator in ("oneOf", "anyOf") or expected is None:
        message = error.message if expected is None else f"{value} is not valid"
    elif error.validator == "type":
        message = f"{value} has the wrong type"
    elif error.validator == "required":
        return [f"{path}: required key {_missing_key(error)!r} is missing"]
    else:
        message = error.message
    return [f"{path}: {message}" + (f"; expected {expected}" if expected else "")]


def _holds_secret(schema: Any, depth: int = 0) -> bool:
    """Whether a value checked against ``schema`` may be or contain a secret (``writeOnly``
    anywhere inside): ``"uuThing": "<the access code>"`` must not be printed either."""
    if isinstance(schema, dict):
        return bool(schema.get("writeOnly")) or (
            depth < 16 and any(_holds_secret(v, depth + 1) for v in schema.values())
        )
    if isinstance(schema, list):
        return depth < 16 and any(_holds_secret(v, depth + 1) for v in schema)
    return False


def _has_text(value: Any) -> bool:
    """Whether ``value`` holds a string or number anywhere (what a secret could be)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_has_text(item) for item in items)


def _unknown_key(path: str, key: str, known: Iterable[str]) -> str:
    where = f"{path}.{key}" if path != "(root)" else key
    known = list(known)
    hint = suggest(key, known) or (f"; expected one of: {', '.join(known)}" if known else "")
    return f"{where}: unknown key{hint}"


def suggest(word: str, known: Iterable[str]) -> str:
    """``' (did you mean "heartbeat"?)'`` for the nearest known word, or ``''``."""
    match = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def value_errors(config: Any) -> list[str]:
    """What no schema can check safely, each naming its JSON path: nesting deeper than
    :data:`MAX_DEPTH`, integers beyond ±:data:`MAX_INTEGER`, NaN and infinities. Iterative: a
    deep document cannot exhaust the stack here."""
    errors: list[str] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(config, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            errors.append(f"{json_path(path)}: nested deeper than {MAX_DEPTH} levels; expected a flatter document")
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            digits = len(str(abs(value))) if abs(value) < 10**4000 else "thousands of"
            errors.append(f"{json_path(path)}: an integer of {digits} digits; expected at most {MAX_INTEGER}")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{json_path(path)}: {json.dumps(value)} is not a JSON number; expected a finite number")
        elif isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((item, (*path, n)) for n, item in reversed(list(enumerate(value))))
    return errors


def _format_checker(module_ids: Collection[str] | None) -> jsonschema.FormatChecker:
    """Only our own formats are checked (a schema may use the standard ones as annotations):

    - ``"format": "existing-file"``: a string naming an existing regular file (a relative path
      from the working directory, where the service resolves it), e.g. a CA bundle;
    - ``"format": "module-id"``: the id of a loaded module (with ``propertyNames`` for keys), when
      the loaded modules are known (``module_ids``);
    - ``"format": "uuapp-gateway"``: a uuApp server as :func:`uun_gateway.uuapp.base_url` takes it.
    """
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("existing-file")
    def existing_file(value: object) -> bool:
        return not isinstance(value, str) or (bool(value) and Path(value).is_file())

    @checker.checks("uuapp-gateway")
    def uuapp_gateway(value: object) -> bool:
        from .uuapp import base_url  # only a config naming a uuApp server pays for the client

        try:
            return not isinstance(value, str) or bool(base_url(value))
        except ValueError:
            return False

    if module_ids is not None:
        known = set(module_ids)

        @checker.checks("module-id")
        def module_id(value: object) -> bool:
            return not isinstance(value, str) or value in known

    return checker


def validate(config: Any, schema: dict[str, Any], *, module_ids: Collection[str] | None = None) -> list[str]:
    """Every problem of ``config`` against ``schema``, as readable lines sorted by JSON path
    (after :func:`value_errors`: a document with such values is not checked further).
    ``module_ids``: the loaded modules, for ``"format": "module-id"`` (see :func:`_format_checker`)."""
    guarded = value_errors(config)
    if guarded:
        return guarded
    validator = jsonschema.Draft202012Validator(schema, format_checker=_format_checker(module_ids))
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for error in errors for line in _describe(error)]


def validate_section(module_id: str, section: Any, schema: dict[str, Any]) -> list[str]:
    """Every problem of a module's section ``gateway.<module_id>`` against its schema."""
    wrapped = {"type": "object", "properties": {"gateway": {"type": "object", "properties": {module_id: schema}}}}
    return validate({"gateway": {module_id: section}}, wrapped)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON config file. Raises :class:`ConfigError` naming the file (and line) on failure."""
    source = str(path)
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], source) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source) from exc
    duplicates: list[str] = []

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of repeated keys; an earlier section would be silently ignored
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        config = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"], source) from exc
    except RecursionError:
        raise ConfigError([f"nested too deeply to read; expected at most {MAX_DEPTH} levels"], source) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError([f"invalid JSON: {exc}"], source) from None
    if duplicates:
        raise ConfigError(
            [
                f"key {key!r} appears more than once in an object; expected each key once"
                for key in dict.fromkeys(duplicates)
            ],
            source,
        )
    if not isinstance(config, dict):
        raise ConfigError([f"(root): expected a JSON object, got {type(config).__name__}"], source)
    # Python's json takes NaN, Infinity and 1e999 (= inf), which pass every minimum/maximum
    errors = value_errors(config)
    if errors:
        raise ConfigError(errors, source)
    return config


def normalized(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``config`` with an empty ``gateway`` section added when it is missing."""
    result = copy.deepcopy(dict(config))
    result.setdefault("gateway", {})
    return result


def saved_update_path(config_path: Path) -> Path:
    """Where a remote update of the config file ``config_path`` is saved.

    Under systemd (``STATE_DIRECTORY`` set, ``/etc`` read-only) the updated ``gateway`` section goes
    to ``$STATE_DIRECTORY/remote-config.json`` and is laid over the config file at the next start;
    elsewhere the config file itself is replaced, as uun-iot does.
    """
    state = os.environ.get("STATE_DIRECTORY")
    return Path(state.split(":")[0]) / "remote-config.json" if state else config_path


def read_saved_update(path: Path) -> dict[str, Any]:
    """The ``gateway`` section of a remote update saved at ``path`` (see :func:`saved_update_path`).
    Raises :class:`ConfigError` naming the file when it cannot be read or has no such section."""
    saved = load_config(path)
    if not isinstance(saved.get("gateway"), dict):
        raise ConfigError(["gateway: expected an object"], str(path))
    return dict(saved["gateway"])


def save_update(target: Path, config_path: Path | None, config: Mapping[str, Any]) -> None:
    """Persist an applied remote update atomically: the whole ``config`` over the config file when
    ``target`` is it, else only its ``gateway`` section (the saved update). Raises :class:`OSError`."""
    save_config_atomically(target, config if target == config_path else {"gateway": config["gateway"]})


def save_config_atomically(path: str | os.PathLike[str], config: Mapping[str, Any]) -> None:
    """Replace the file at ``path`` with ``config`` so that it is, at every instant, either the old
    or the new complete file. The file's mode is kept (new files get 0600: configs hold secrets)."""
    atomic_write(path, json.dumps(config, indent=2) + "\n")
