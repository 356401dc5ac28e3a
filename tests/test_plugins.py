"""Plugin commands: found by entry point, added through ``Commands``; a broken one is a warning."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest

from uun_gateway import cli
from uun_gateway.plugins import COMMANDS_GROUP, command_entry_points, load_command


def test_the_built_in_commands_are_registered_by_entry_point() -> None:
    assert {"onewire", "unisenza"} <= set(command_entry_points())


def test_a_plugin_command_that_cannot_load_is_a_warning_not_silence(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = EntryPoint("broken", "tests.no_such_plugin:register", COMMANDS_GROUP)
    assert load_command(broken) is None
    assert "command 'broken' (tests.no_such_plugin:register) cannot be loaded" in caplog.text

    entries = {**command_entry_points(), "broken": broken}
    monkeypatch.setattr(cli, "command_entry_points", lambda: entries)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        parser = cli.build_parser()
    assert "command 'broken'" in caplog.text
    args = parser.parse_args(["onewire", "scan"])  # the other plugins' commands are still there
    assert args.command == "onewire"
