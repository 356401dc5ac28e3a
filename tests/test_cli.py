"""User-facing input edges: config messages (``check-config``) and ``uun-gateway storage``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from uun_gateway import Storage
from uun_gateway.cli import main


def check_config(tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = main(["check-config", str(path)])
    return code, capsys.readouterr().err


def test_unknown_key_of_a_keyed_object_says_what_keys_are_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "gateway": {
            "onewire": {
                "families": {"28": ["temperature"], "zz": ["x"]},
                "sensors": {"28.0000ABCDEF01": {"alias": "boiler"}, "28.xx": {}},
            }
        }
    }
    code, err = check_config(tmp_path, config, capsys)
    assert code == 78
    lines = err.splitlines()[1:]
    # the well-formed keys "28" and "28.0000ABCDEF01" are not reported as unknown
    assert all("families.28:" not in line and "28.0000ABCDEF01" not in line for line in lines), err
    assert any(
        line.strip().startswith("gateway.onewire.families.zz: unknown key; expected") and '{"26":' in line
        for line in lines
    ), err
    assert any(
        line.strip().startswith("gateway.onewire.sensors.28.xx: unknown key; expected") and "28.000028D70000" in line
        for line in lines
    ), err


def test_a_missing_one_of_several_required_keys_names_every_alternative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check_config(tmp_path, {"gateway": {"unisenza": {"username": "a@example.com"}}}, capsys)
    assert code == 78
    assert "gateway.unisenza: required key 'password' or 'passwordFile' is missing" in err, err


def test_a_password_of_the_wrong_type_is_not_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"gateway": {"unisenza": {"username": "a@example.com", "password": 73914628}}}
    code, err = check_config(tmp_path, config, capsys)
    assert code == 78
    assert "gateway.unisenza.password: <secret> has the wrong type; expected" in err and "a string" in err, err
    assert "73914628" not in err


# -- uun-gateway storage -----------------------------------------------------------------------------


def test_storage_of_a_directory_is_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["storage", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{tmp_path}: cannot read the storage file:") and captured.out == ""


def test_storage_of_a_foreign_file_reports_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert main(["storage", str(other)]) == 1
    captured = capsys.readouterr()
    assert "not a uun-gateway storage" in captured.err and captured.out == ""


def test_storage_without_write_access_leaves_a_healthy_file_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "onewire.sqlite"
    store = Storage("onewire", path)
    store.append({"value": 1})
    store.close()
    capsys.readouterr()
    # as a user without write access (root can write anywhere, so the check is simulated):
    # SQLite's WAL open would fail, and Storage took that for damage and moved the file aside
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    assert main(["storage", str(path)]) == 1
    assert "no write access" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []
    monkeypatch.undo()
    assert main(["storage", str(path)]) == 0
    assert "1 entries" in capsys.readouterr().out


def test_a_duplicate_key_is_an_error_not_silently_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # JSON parsers keep the last of duplicate keys: the first "onewire" section would be ignored
    path = tmp_path / "config.json"
    path.write_text('{"gateway": {"onewire": {"servers": [{"port": 4305}]}, "storageDir": "s", "onewire": {}}}')
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert f"{path}: invalid configuration" in err
    assert "key 'onewire' appears more than once in an object; expected each key once" in err, err


def test_every_problem_inside_an_alternative_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before: only one error of the object branch of a oneOf was shown; the user had to fix and rerun
    config = {
        "gateway": {
            "moduleTimers": {"onewire": {"scan": 0, "read": "x"}},
            "moduleBackupStorage": {"onewire": {"path": "", "limit": -1}},
            "onewire": {},
        }
    }
    code, err = check_config(tmp_path, config, capsys)
    assert code == 78
    for expected in (
        "gateway.moduleTimers.onewire.scan: 0 is less than or equal to the minimum of 0",
        'gateway.moduleTimers.onewire.read: "x" has the wrong type',
        "gateway.moduleBackupStorage.onewire.path: '' should be non-empty",
        "gateway.moduleBackupStorage.onewire.limit: -1 is less than the minimum of 0",
    ):
        assert expected in err, err
    assert "(4 error(s))" in err


def test_each_unknown_key_is_its_own_line_naming_the_known_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = check_config(tmp_path, {"gateway": {"onewire": {"xyz": 1, "famlies": {}}}}, capsys)
    assert code == 78
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert 'gateway.onewire.famlies: unknown key (did you mean "families"?)' in lines, err
    xyz = [line for line in lines if line.startswith("gateway.onewire.xyz: unknown key; expected one of: ")]
    assert len(xyz) == 1 and "servers" in xyz[0] and "sensors" in xyz[0], err
    assert "(2 error(s))" in err


def test_nan_and_infinity_in_the_config_are_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Python's json reads these; NaN passed every schema bound and an infinite period crashed
    # the timer setup with a ValueError traceback
    path = tmp_path / "config.json"
    path.write_text('{"gateway": {"moduleTimers": {"onewire": {"read": NaN, "scan": Infinity}}, "onewire": {}}}')
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert "gateway.moduleTimers.onewire.read: NaN is not a JSON number; expected a finite number" in err, err
    assert "gateway.moduleTimers.onewire.scan: Infinity is not a JSON number; expected a finite number" in err, err


def test_storage_of_another_programs_database_is_refused_and_left_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    def tables(path: Path) -> list[str]:
        db = sqlite3.connect(path)
        try:
            return sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        finally:
            db.close()

    other, clash = tmp_path / "places.sqlite", tmp_path / "clash.sqlite"
    for path, ddl in ((other, ["CREATE TABLE t (x)"]), (clash, ["CREATE TABLE entries (x)", "CREATE TABLE meta (x)"])):
        db = sqlite3.connect(path)
        for statement in ddl:
            db.execute(statement)
        db.commit()
        db.close()
    # before: our tables were added to the first file (exit 0), the second crashed with a traceback
    for path in (other, clash):
        before = tables(path)
        assert main(["storage", str(path)]) == 1
        assert f"{path}: an SQLite database, but not a uun-gateway storage" in capsys.readouterr().err
        assert tables(path) == before
