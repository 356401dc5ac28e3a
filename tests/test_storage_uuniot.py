"""Storage as uun-iot code sees it: a read-only ``data``, ``has_backup()``, tuples, and the way back:
``uun-gateway storage export`` writes the JSON list a uun-iot Storage loads (``json.load`` of the
backup file, as uun-iot 0.12.14's ``Storage.__init__`` does), and such a file is imported."""

from __future__ import annotations

import json
import operator
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from uun_gateway import Storage
from uun_gateway.cli import main
from uun_gateway.storage import StorageKind, StoredData, inspect_storage_file

READINGS = [{"sensor": "28-1", "value": 21.5}, [1, "two"], "text", 3, None, {"nested": {"a": [1.5]}}]


def _store(path: Path, items: list[object]) -> None:
    s = Storage(path.stem, path)
    try:
        s.extend(items)
    finally:
        s.close()


def test_data_is_a_read_only_snapshot_that_compares_like_a_list(tmp_path: Path) -> None:
    s = Storage("t", tmp_path / "s.sqlite")
    try:
        assert s.data == [] and operator.eq([], s.data)
        s.extend([1, 2])
        data = s.data
        assert isinstance(data, StoredData) and data == [1, 2] and data == (1, 2) and list(data) == [1, 2]
        assert data[0] == 1 and data[-1] == 2 and data[:1] == (1,) and len(data) == 2
        assert json.dumps(data) == "[1, 2]"  # uun-iot apps send storage.data as it is
        changes: list[Callable[[], object]] = [lambda: data.append(3), lambda: data.clear(), lambda: data.pop()]
        for change in changes:
            with pytest.raises(TypeError, match="read-only snapshot"):
                change()
        with pytest.raises(TypeError, match="read-only snapshot"):
            data[0] = 5
        with pytest.raises(TypeError, match="read-only snapshot"):
            del data[0]
        assert s.data == [1, 2]
    finally:
        s.close()


def test_has_backup(tmp_path: Path) -> None:
    on_disk, in_memory = Storage("t", tmp_path / "s.sqlite"), Storage("m", None)
    try:
        assert on_disk.has_backup() and not in_memory.has_backup()
    finally:
        on_disk.close()
        in_memory.close()


def test_a_tuple_comes_back_as_a_list(tmp_path: Path) -> None:
    s = Storage("t", tmp_path / "s.sqlite")
    try:
        s.append((1, "a"))  # documented in the README: JSON has no tuples
        assert s.data == [[1, "a"]] and isinstance(s.data[0], list)
    finally:
        s.close()


def test_export_writes_the_uuniot_backup_format_and_keeps_the_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "onewire.sqlite"
    _store(path, READINGS)
    out = tmp_path / "backup" / "onewire.json"
    out.parent.mkdir()
    assert main(["storage", "export", str(path), "-o", str(out)]) == 0
    assert "wrote its 6 entries" in capsys.readouterr().err
    with open(out) as f:
        assert json.load(f) == READINGS  # exactly what uun-iot's Storage loads as its data list
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    s = Storage("onewire", path)
    try:
        assert s.data == READINGS
    finally:
        s.close()


def test_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.sqlite"
    _store(path, READINGS)
    assert main(["storage", "export", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == READINGS


def test_an_exported_backup_is_imported_again(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    _store(path, READINGS)
    back = tmp_path / "uuniot" / "m.json"
    back.parent.mkdir()
    assert main(["storage", "export", str(path), "-o", str(back)]) == 0
    s = Storage("m", back)
    try:
        assert s.data == READINGS and s.quarantined is None
    finally:
        s.close()


def test_a_file_as_uuniot_writes_it_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(READINGS))  # uun-iot's file_save: json.dumps(data), no newline
    s = Storage("m", path)
    try:
        assert s.data == READINGS
    finally:
        s.close()


def test_export_refuses_bytes_entries_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.sqlite"
    _store(path, ["a", b"\x00raw", "b"])
    out = tmp_path / "out.json"
    assert main(["storage", "export", str(path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 entries are bytes (#2)" in err and "cannot hold" in err
    assert not out.exists()


def test_export_of_a_uuniot_backup_or_nothing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "m.json"
    backup.write_text("[1, 2]")
    assert main(["storage", "export", str(backup)]) == 1
    assert "already a uun-iot JSON backup" in capsys.readouterr().err
    assert backup.read_text() == "[1, 2]"
    assert main(["storage", "export", str(tmp_path / "none.sqlite")]) == 1
    assert "no such storage file" in capsys.readouterr().err


def test_storage_with_a_second_argument_but_no_export_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["storage", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "storage export FILE" in capsys.readouterr().err


def test_inspect_tells_every_kind_of_file_apart_without_changing_it(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    _store(store, [1])
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    backup = tmp_path / "b.json"
    backup.write_text(" [1]")
    other = tmp_path / "o.txt"
    other.write_text("hello")
    foreign = tmp_path / "f.sqlite"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    damaged = tmp_path / "d.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    kinds = {
        p.name: inspect_storage_file(p).kind
        for p in (store, empty, backup, other, foreign, damaged, tmp_path / "missing", tmp_path)
    }
    assert kinds == {
        "s.sqlite": StorageKind.STORAGE,
        "empty.sqlite": StorageKind.EMPTY,
        "b.json": StorageKind.UUNIOT_JSON,
        "o.txt": StorageKind.OTHER,
        "f.sqlite": StorageKind.FOREIGN_SQLITE,
        "d.sqlite": StorageKind.DAMAGED,
        "missing": StorageKind.MISSING,
        tmp_path.name: StorageKind.UNREADABLE,
    }
    assert inspect_storage_file(store).problem is None and inspect_storage_file(damaged).problem is None
    assert backup.read_text() == " [1]" and empty.read_bytes() == b""
    assert not list(tmp_path.glob("*.corrupt-*")) and not (tmp_path / "b.json.uun-iot.json").exists()
