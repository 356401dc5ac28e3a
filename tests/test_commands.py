"""The module commands API: declaring, finding and running commands with schema-checked arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from uun_gateway import CommandError, Module, command, find_commands


class Relay(Module):
    id = "relay"
    state = False

    @command("set", {"type": "object", "required": ["on"], "properties": {"on": {"type": "boolean"}}})
    def switch(self, args: Mapping[str, Any]) -> Any:
        """Switch the relay.

        More text that is not the description.
        """
        self.state = bool(args["on"])
        return {"on": self.state}

    @command("pulse", description="a short pulse")
    def pulse(self, args: Mapping[str, Any]) -> Any:
        return None

    @property
    def broken(self) -> Any:
        raise AssertionError("a property must never be evaluated")


def test_commands_are_found_bound_and_described() -> None:
    relay = Relay()
    found = find_commands(relay)
    assert sorted(found) == ["pulse", "set"]
    assert found["set"].description == "Switch the relay."
    assert found["pulse"].description == "a short pulse"
    assert found["pulse"].schema == {"type": "object"}
    assert found["set"].run({"on": True}) == {"on": True} and relay.state is True


def test_arguments_are_checked_against_the_schema() -> None:
    cmd = find_commands(Relay())["set"]
    assert cmd.problems({"on": True}) == []
    with pytest.raises(CommandError, match=r"args\.on: 'yes' is not of type 'boolean'"):
        cmd.run({"on": "yes"})
    with pytest.raises(CommandError, match="'on' is a required property"):
        cmd.run({})
    with pytest.raises(CommandError, match="is not of type 'object'"):
        cmd.run([1])


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "1abc", "a.b", 5])
def test_bad_names_are_refused_at_definition(name: Any) -> None:
    with pytest.raises(ValueError, match="a name is a letter"):
        command(name)


def test_a_bad_schema_is_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="not valid JSON Schema"):
        command("x", {"type": "no-such-type"})


def test_a_subclass_overrides_and_inherits() -> None:
    class Bigger(Relay):
        @command("set", {"type": "object"})
        def switch(self, args: Mapping[str, Any]) -> Any:
            return "overridden"

    found = find_commands(Bigger())
    assert sorted(found) == ["pulse", "set"] and found["set"].run({}) == "overridden"
