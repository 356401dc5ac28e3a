"""Storage: FIFO, ids, limits, durability across reopen, damaged files, uun-iot import, threads."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from uun_gateway import Storage, StorageError


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Storage("test", tmp_path / "s.sqlite")
    yield s
    s.close()


def test_fifo_batch_and_ack(store: Storage) -> None:
    ids = [store.append({"n": n}) for n in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    batch = store.oldest(3)
    assert [e.data["n"] for e in batch] == [0, 1, 2]
    assert store.ack([batch[0].id, batch[2].id]) == 2
    assert [e.data["n"] for e in store.oldest(10)] == [1, 3, 4]
    assert len(store) == 3 and not store.is_empty()


def test_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with_ids = Storage("t", path)
    first = with_ids.append("a")
    with_ids.ack([first])
    with_ids.close()
    again = Storage("t", path)
    try:
        assert again.append("b") > first
    finally:
        again.close()


def test_entries_and_uid_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "s.sqlite"
    s = Storage("t", path)
    s.extend([1, "two", {"three": [3]}, b"\x00\x01"])
    uid = s.uid
    s.close()
    s = Storage("t", path)
    try:
        assert s.data == [1, "two", {"three": [3]}, b"\x00\x01"]
        assert s.uid == uid
    finally:
        s.close()


def test_limit_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Storage("lim", tmp_path / "s.sqlite", maxlen=3)
    try:
        for n in range(5):
            s.append(n)
        assert s.data == [2, 3, 4]
        assert s.dropped == 2
        assert caplog.text.count("dropped the 1 oldest") == 1  # rate-limited, not once per append
    finally:
        s.close()


def test_limit_applies_to_loaded_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = Storage("t", path)
    s.extend(range(10))
    s.close()
    s = Storage("t", path, maxlen=4)
    try:
        assert s.data == [6, 7, 8, 9] and s.dropped == 6
    finally:
        s.close()


def test_merge_front_and_back(store: Storage) -> None:
    store.extend([3, 4])
    store.merge([1, 2], new_data=False)
    store.merge([5])
    assert store.data == [1, 2, 3, 4, 5]
    assert [e.id for e in store.oldest(5)] == sorted(e.id for e in store.oldest(5))


def test_empty(store: Storage) -> None:
    store.extend([1, 2])
    store.empty()
    assert store.is_empty() and store.data == [] and len(store) == 0


def test_unserialisable_entry_is_refused_and_nothing_stored(store: Storage) -> None:
    store.append(1)
    with pytest.raises(StorageError, match="test"):
        store.append(object())
    with pytest.raises(StorageError):
        store.extend([2, object()])
    with pytest.raises(StorageError):
        store.append(float("nan"))
    assert store.data == [1]


def test_closed_store_raises(store: Storage) -> None:
    store.close()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.append(1)


def test_garbage_file_is_moved_aside_not_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"\x07garbage that is neither sqlite nor json")
    s = Storage("bad", path)
    try:
        assert s.quarantined is not None and s.quarantined.read_bytes().startswith(b"\x07garbage")
        assert s.is_empty()
        s.append(1)
        assert "moved it aside" in caplog.text and str(s.quarantined) in caplog.text
    finally:
        s.close()


def test_damaged_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = Storage("t", path)
    s.extend([{"n": n, "pad": "x" * 200} for n in range(200)])
    s.close()
    # the kept WAL still holds these pages and would mask the damage: damage the database alone
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()
    data = bytearray(path.read_bytes())
    data[4096 : 4096 * 3] = b"\xff" * (4096 * 2)  # destroy pages in the middle of the file
    path.write_bytes(bytes(data))
    s = Storage("t", path)
    try:
        assert s.quarantined is not None and s.quarantined.exists()
        s.append("fresh")
        assert s.data == ["fresh"]
    finally:
        s.close()


def test_uuniot_json_backup_is_imported_once(tmp_path: Path) -> None:
    path = tmp_path / "backup" / "customModule.json"
    path.parent.mkdir()
    original = [{"temp": 21.5}, {"temp": 22.0}]
    path.write_text(json.dumps(original))
    s = Storage("customModule", path)
    try:
        assert s.data == original
        s.append({"temp": 23.0})
    finally:
        s.close()
    assert json.loads((tmp_path / "backup" / "customModule.json.uun-iot.json").read_text()) == original
    s = Storage("customModule", path)
    try:
        assert s.data == [*original, {"temp": 23.0}]
    finally:
        s.close()
    assert not list(path.parent.glob("*.importing"))


def test_torn_uuniot_json_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('[{"temp": 21.5}, {"te')
    s = Storage("m", path)
    try:
        assert s.quarantined is not None
        assert s.quarantined.read_text() == '[{"temp": 21.5}, {"te'
    finally:
        s.close()


def test_store_is_a_valid_wal_database(store: Storage) -> None:
    store.append(1)
    db = sqlite3.connect(store.path)  # type: ignore[arg-type]
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_memory_only_store() -> None:
    s = Storage("ram", None, maxlen=2)
    try:
        s.extend([1, 2, 3])
        assert s.data == [2, 3]
    finally:
        s.close()


def test_concurrent_appends_and_acks(store: Storage) -> None:
    def produce(base: int) -> None:
        for n in range(100):
            store.append(base + n)

    threads = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    acked: list[int] = []
    while any(t.is_alive() for t in threads) or not store.is_empty():
        batch = store.oldest(17)
        store.ack(e.id for e in batch)
        acked += [e.data for e in batch]
    for t in threads:
        t.join()
    assert sorted(acked) == sorted(k * 1000 + n for k in range(4) for n in range(100))
    for k in range(4):
        mine = [a for a in acked if k * 1000 <= a < (k + 1) * 1000]
        assert mine == sorted(mine)  # each producer's entries come out in its order


@pytest.mark.parametrize("maxlen", [-1, 1.5, True])
def test_invalid_limit(tmp_path: Path, maxlen: object) -> None:
    with pytest.raises(ValueError, match="maxlen"):
        Storage("t", tmp_path / "x", maxlen)  # type: ignore[arg-type]


def test_a_locked_store_is_reported_not_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Storage("t", path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="cannot open"):
            Storage("t", path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))
    s = Storage("t", path)
    s.close()
