"""Storage: FIFO, ids, limits, durability across reopen, damaged files, uun-iot import, threads."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from uun_gateway import Gateway, Module, Storage, StorageError, on


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


def test_merge_to_front_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Storage("t", path)
    try:
        used = store.extend([1, 2, 3])
        store.ack(used[:2])  # delivered: the server has (uid, 1) and (uid, 2) and drops them if seen again
        store.merge(["a", "b"], new_data=False)
        assert store.data == ["a", "b", 3]
        front = [e.id for e in store.oldest(2)]
        assert front == sorted(front) and front[-1] < used[2]
        assert not set(front) & set(used), f"merge reused delivered ids {set(front) & set(used)}"
        used += front
        store.ack(front)
        store.empty()
    finally:
        store.close()
    store = Storage("t", path)  # also across a restart and from an empty store
    try:
        store.merge(["c"], new_data=False)
        again = store.oldest(1)[0].id
        assert again not in used
        store.append("d")
        assert [e.data for e in store.oldest(5)] == ["c", "d"]
    finally:
        store.close()


def test_a_failed_write_raises_its_own_cause_and_the_store_keeps_working(tmp_path: Path) -> None:
    store = Storage("t", tmp_path / "s.sqlite")
    db = store._db
    assert db is not None
    try:
        store.append("kept")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # a full disk, as SQLite sees it
        with pytest.raises(StorageError, match=r"storage 't' \(.*s\.sqlite\): cannot store entries: the disk is full"):
            store.extend([b"x" * 20000, b"y" * 20000])
        assert len(store) == 1 and store.data == ["kept"]
        db.execute("PRAGMA max_page_count = 1000000")
        store.append("after")
        assert store.data == ["kept", "after"] and len(store) == 2
    finally:
        store.close()


class Sender(Module):
    id = "sender"


@pytest.mark.parametrize(
    "failed_of",
    [
        pytest.param(lambda batch: [{**item, "error": "rejected"} for item in batch[1:]], id="annotated-items"),
        pytest.param(lambda batch: "server down", id="a-string"),
    ],
)
def test_send_storage_keeps_entries_when_the_failed_items_cannot_be_matched(tmp_path: Path, failed_of: Any) -> None:
    module = Sender({"storageDir": str(tmp_path)})
    try:
        module.storage.extend([{"n": n} for n in range(3)])
        assert module._send_storage(failed_of) is False
        assert module.storage.data == [{"n": 0}, {"n": 1}, {"n": 2}]
    finally:
        module.close_storage()


# -- the file under a running store ----------------------------------------------------------------


def _lose(path: Path, how: str) -> None:
    if how == "file":
        path.unlink()
    elif how == "all-three":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
    elif how == "wal-deleted":
        Path(f"{path}-wal").unlink()
    elif how == "wal-truncated":
        os.truncate(f"{path}-wal", 0)
    elif how == "directory":
        shutil.rmtree(path.parent)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["file", "all-three", "wal-deleted", "wal-truncated", "directory"])
def test_a_file_lost_under_a_live_store_is_noticed_and_nothing_is_lost(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "storage" / "s.sqlite"
    store = Storage("t", path)
    try:
        ids = store.extend([{"n": n} for n in range(5)])
        uid = store.uid
        _lose(path, how)
        ids.append(store.append({"n": 5}))
        assert "under the running store" in caplog.text and "rescued its 5 entries" in caplog.text
        store.ack(ids[:2])
    finally:
        store.close()
    reopened = Storage("t", path)  # what is on disk, not what the old connection still sees
    try:
        assert [(e.id, e.data["n"]) for e in reopened] == list(zip(ids[2:], [2, 3, 4, 5], strict=True))
        assert reopened.uid == uid
    finally:
        reopened.close()


def test_a_file_replaced_under_a_live_store_keeps_its_entries_aside_and_refuses_old_acks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.sqlite"
    other = Storage("o", tmp_path / "other.sqlite")
    other.append("someone else's")
    other.close()
    store = Storage("t", path)
    try:
        ids = store.extend(["a", "b"])
        for suffix in ("", "-wal", "-shm"):
            os.replace(f"{tmp_path / 'other.sqlite'}{suffix}", f"{path}{suffix}")
        with pytest.raises(StorageError, match="another store now"):
            store.ack(ids)
        assert store.rescued is not None and "replaced by another file" in caplog.text
        assert store.data == ["someone else's"], "an ack of the old ids deleted another store's entries"
        store.append("c")
    finally:
        store.close()
    aside = Storage("t", store.rescued)
    try:
        assert [(e.id, e.data) for e in aside] == list(zip(ids, ["a", "b"], strict=True))
    finally:
        aside.close()


class Counter(Module):
    """Appends 0, 1, 2, ... on every tick; ``stored`` are those whose append returned."""

    id = "counter"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.stored: list[int] = []

    @on("tick")
    def tick(self) -> None:
        n = len(self.stored)
        self.storage.append(n)
        self.stored.append(n)


def test_a_storage_file_deleted_under_a_running_gateway_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"gateway": {"moduleTimers": {"counter": 0.005}, "storageDir": str(tmp_path)}}
    path = tmp_path / "counter.sqlite"
    with Gateway(config, lambda c, u: [Counter(c["gateway"])]) as gateway:
        module = gateway.modules[0]
        assert isinstance(module, Counter)
        wait_for(lambda: len(module.stored) >= 20)
        path.unlink()
        seen = len(module.stored)
        wait_for(lambda: len(module.stored) >= seen + 20)
    assert "counter.sqlite was deleted under the running store" in caplog.text
    store = Storage("counter", path)
    try:
        assert store.data == module.stored
    finally:
        store.close()


# -- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of its own (we are root in the test environment), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode:
        # a container without CAP_SYS_ADMIN; the max_page_count test above still covers SQLITE_FULL
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_raises_storage_error_and_loses_nothing(small_tmpfs: Path) -> None:
    path = small_tmpfs / "full.sqlite"
    store = Storage("full", path)
    try:
        kept = store.extend([{"n": n} for n in range(10)])
        filler = _fill(small_tmpfs)
        errors: list[StorageError] = []
        for n in range(10, 200):
            try:
                kept.append(store.append({"n": n, "pad": "x" * 3000}))
            except StorageError as exc:
                errors.append(exc)
        assert errors, "the disk never filled up"
        assert all("storage 'full'" in str(e) and str(path) in str(e) and "disk is full" in str(e) for e in errors)
        try:
            acked = kept[:3] if store.ack(kept[:3]) else []
        except StorageError as exc:
            assert "disk is full" in str(exc)
            acked = []
        filler.unlink()
        kept.append(store.append({"n": "after"}))
    finally:
        store.close()
    reopened = Storage("full", path)
    try:
        assert [e.id for e in reopened] == [i for i in kept if i not in acked]
    finally:
        reopened.close()


# -- permissions --------------------------------------------------------------------------------


def test_storage_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "s.sqlite"
        store = Storage("t", path)
        store.append(1)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        store.close()
        assert modes == {"s.sqlite": 0o600, "s.sqlite-wal": 0o600, "s.sqlite-shm": 0o600}
        for suffix in ("", "-wal", "-shm"):
            os.chmod(f"{path}{suffix}", 0o644)  # written by an older version
        Storage("t", path).close()
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == modes
    finally:
        os.umask(old)
