"""Plugin commands: found by entry point, added through ``Commands``; a broken one is a warning."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

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


def test_commands_import_only_what_they_need(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    probe = (
        "import sys; from uun_gateway.cli import main; from uun_gateway.compat import LEGACY_MODULES; "
        "code = main(sys.argv[1:]); print(sorted(m for m in sys.modules if m not in LEGACY_MODULES "
        "and m.startswith(('uun_gateway.modules', 'jsonschema', 'requests'))))"
    )

    def imported(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60)
        return done.stdout

    checked = imported("check-config", str(config))
    assert "'jsonschema'" in checked and "uun_gateway.modules" not in checked  # no plugin CLI imported
    listed = imported("storage", str(tmp_path / "none.sqlite"))
    assert "jsonschema" not in listed and "requests" not in listed and "uun_gateway.modules" not in listed
