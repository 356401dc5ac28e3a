"""Storage commits: group commit across threads and stores, one WAL page per append, stable ids
without AUTOINCREMENT, a WAL kept across close and open, space given back once drained."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from uun_gateway import Storage, StorageError, storage


class GatedSync:
    """The flush seams, held shut: each flush waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def wrap(self, name: str, real: Callable[[int], None]) -> Callable[[int], None]:
        def flush(fd: int) -> None:
            with self.lock:
                self.calls.append(name)
            self.gate.wait(10)
            real(fd)

        return flush


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedSync]:
    seam = GatedSync()
    for name in ("sync_file", "sync_filesystem"):
        monkeypatch.setattr(storage, name, seam.wrap(name, getattr(storage, name)))
    yield seam
    seam.gate.set()


def test_appends_arriving_during_a_flush_share_the_next_one_and_wait_for_it(tmp_path: Path, gated: GatedSync) -> None:
    stores = [Storage(f"s{k}", tmp_path / f"s{k}.sqlite") for k in range(2)]
    returned: list[int] = []
    lock = threading.Lock()

    def append(store: Storage, n: int) -> None:
        store.append(n)
        with lock:
            returned.append(n)

    try:
        leader = threading.Thread(target=append, args=(stores[0], 0))
        leader.start()
        wait_for(lambda: len(gated.calls) == 1)  # the first flush is running (held)
        commits = storage.group_commit.commits
        followers = [threading.Thread(target=append, args=(stores[n % 2], n)) for n in range(1, 7)]
        for t in followers:
            t.start()
        wait_for(lambda: storage.group_commit.commits == commits + 6)  # all six committed, waiting
        assert returned == [], "an append returned before its entry was flushed"
        assert len(gated.calls) == 1
        gated.gate.set()
        for t in [leader, *followers]:
            t.join(10)
        # the first flush, then one more for both files together (one file system): not one per append
        assert gated.calls == ["sync_file", "sync_filesystem"]
        assert sorted(returned) == list(range(7))
        assert sorted(stores[0].data) == [0, 2, 4, 6] and sorted(stores[1].data) == [1, 3, 5]
    finally:
        for s in stores:
            s.close()


def test_extend_is_one_transaction_and_one_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = storage.sync_file

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    s = Storage("t", tmp_path / "s.sqlite")
    monkeypatch.setattr(storage, "sync_file", counting)
    try:
        ids = s.extend({"n": n} for n in range(50))
        assert len(calls) == 1 and ids == list(range(ids[0], ids[0] + 50))
    finally:
        s.close()


def test_an_append_writes_about_one_page_to_the_wal(tmp_path: Path) -> None:
    s = Storage("t", tmp_path / "s.sqlite")
    wal = Path(f"{tmp_path / 's.sqlite'}-wal")
    try:
        s.append({"warm": "up"})
        before = wal.stat().st_size
        for n in range(200):
            s.append({"id": "28.000000000001", "value": 21.5 + n, "unit": "C"})
        page = s._conn().execute("PRAGMA page_size").fetchone()[0]
        frames = (wal.stat().st_size - before) / (page + 24)
        assert frames / 200 < 1.2, f"{frames / 200:.2f} WAL pages per append"
    finally:
        s.close()
    db = sqlite3.connect(tmp_path / "s.sqlite")
    try:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone() is None
    finally:
        db.close()


def test_ids_are_not_reused_after_a_drain_in_the_same_run_and_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = Storage("t", path)
    used = s.extend(["a", "b", "c"])
    s.ack([used[2]])  # the newest first: the next id must still come after it
    used.append(s.append("d"))
    s.ack(e.id for e in s.oldest(10))
    assert s.is_empty()
    used.append(s.append("e"))
    s.empty()
    s.close()
    s = Storage("t", path)
    try:
        again = s.append("f")
        assert again > max(used) and len(set(used)) == len(used) and used == sorted(used)
    finally:
        s.close()


def test_a_store_of_the_autoincrement_schema_is_migrated_keeping_ids(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, kind INTEGER NOT NULL,"
        " payload BLOB NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('uid', 'u1');"
        "INSERT INTO entries (created, kind, payload) VALUES (1, 0, '1'), (2, 0, '2'), (3, 0, '3');"
        "DELETE FROM entries WHERE id = 3;"
    )
    db.close()
    s = Storage("t", path)
    try:
        assert s.uid == "u1" and [(e.id, e.data) for e in s] == [(1, 1), (2, 2)]
        assert s.append(4) == 4  # 3 was given out before: not again
        sql = s._conn().execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()[0]
        assert "AUTOINCREMENT" not in sql.upper()
    finally:
        s.close()


def test_the_wal_is_kept_across_close_and_open_not_recreated(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    wal = Path(f"{path}-wal")
    s = Storage("t", path)
    s.extend(range(100))
    assert s.wal_persistent
    inode = wal.stat().st_ino
    s.close()
    assert wal.exists() and wal.stat().st_size > 0, "closing deleted the WAL"
    s = Storage("t", path)
    try:
        assert wal.stat().st_ino == inode and s.data == list(range(100))
    finally:
        s.close()


def test_a_drained_store_gives_its_space_back(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = Storage("t", path)
    try:
        for _ in range(10):
            s.extend({"pad": "x" * 200} for _ in range(1000))
        s._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")
        full = path.stat().st_size
        assert full > 2_000_000
        while not s.is_empty():
            s.ack(e.id for e in s.oldest(500))
        assert path.stat().st_size < 100_000, f"{path.stat().st_size} bytes left of {full}"
        s.append("still works")
        assert s.data == ["still works"]
    finally:
        s.close()


def test_the_flush_error_of_a_commit_is_a_storage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Storage("t", tmp_path / "s.sqlite")

    def failing(fd: int) -> None:
        raise OSError(5, os.strerror(5))

    monkeypatch.setattr(storage, "sync_file", failing)
    try:
        with pytest.raises(StorageError, match=r"storage 't' .*cannot store entries: Input/output error"):
            s.append(1)
    finally:
        s.close()
