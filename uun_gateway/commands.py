"""Module commands: named actions a module offers to operators, with a JSON Schema for their arguments.

A module marks a method with :func:`command`; an uplink that receives commands (the ``mqtt``
module, for one) finds them with :func:`find_commands`, checks the arguments against the schema and
runs the method with them::

    from uun_gateway import CommandError, Module, command

    class Thermostat(Module):
        @command("setpoint", {"type": "object", "required": ["value"],
                              "properties": {"value": {"type": "number", "minimum": 5, "maximum": 30}},
                              "additionalProperties": False})
        def set_setpoint(self, args):
            if not self.connected:
                raise CommandError("the thermostat is offline")
            self.target = args["value"]
            return {"value": self.target}

The method gets the arguments (a JSON object) and returns a JSON-ready result (or None). It runs
in the uplink's command thread, never in a network thread; it should return within seconds. It
raises :class:`CommandError` for a failure the caller should read; any other exception is reported
to the caller as an internal error and logged with its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

_MARK = "__uun_gateway_command__"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_ERRORS = 10

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(Exception):
    """A command failed in a way its caller should be told (the message is the reply's error)."""


@dataclass(frozen=True)
class Command:
    """One command bound to its module: ``name`` (unique within the module), the JSON Schema of its
    arguments, a one-line description and the bound method."""

    name: str
    schema: Mapping[str, Any]
    description: str
    func: Callable[[Mapping[str, Any]], Any]

    def problems(self, args: Any) -> list[str]:
        """What is wrong with ``args`` (empty when they match the schema); each names the path."""
        validator = Draft202012Validator(dict(self.schema))
        found = []
        for error in sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path)):
            where = "args" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            found.append(f"{where}: {error.message}")
            if len(found) >= MAX_ERRORS:
                break
        return found

    def run(self, args: Any) -> Any:
        """Check ``args`` and run the command. Raises :class:`CommandError` for arguments that do
        not match the schema (listing every problem) and whatever the method raises."""
        problems = self.problems(args)
        if problems:
            raise CommandError("invalid arguments: " + "; ".join(problems))
        return self.func(args)


def command(name: str, schema: Mapping[str, Any] | None = None, *, description: str | None = None) -> Callable[[F], F]:
    """Mark a module method as the command ``name`` whose arguments match ``schema`` (default: any
    JSON object). ``description`` defaults to the first line of the method's docstring.

    Raises :class:`ValueError` at class definition for a name that is not a letter followed by
    letters, digits, ``_`` or ``-``, or a schema that is not a valid JSON Schema.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"@command({name!r}): a name is a letter followed by letters, digits, _ or -")
    chosen = dict(schema) if schema is not None else dict(ANY_OBJECT)
    try:
        Draft202012Validator.check_schema(chosen)
    except SchemaError as exc:
        raise ValueError(f"@command({name!r}): the argument schema is not valid JSON Schema: {exc.message}") from None

    def mark(func: F) -> F:
        doc = (func.__doc__ or "").strip().splitlines()
        setattr(func, _MARK, (name, chosen, description or (doc[0] if doc else "")))
        return func

    return mark


def find_commands(module: object) -> dict[str, Command]:
    """The commands of ``module`` (an instance), by name, bound to it. Only class attributes are
    inspected, so properties are never evaluated."""
    found: dict[str, Command] = {}
    for cls in reversed(type(module).__mro__):
        for attr_name, attr in vars(cls).items():
            mark = getattr(attr, _MARK, None)
            if mark is not None and callable(attr):
                name, schema, description = mark
                found[name] = Command(name, schema, description, getattr(module, attr_name))
    return found
