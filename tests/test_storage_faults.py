"""Storage and Module._send_storage: id reuse by merge-to-front, a failed write that
hid its cause behind a failed ROLLBACK, and a send function whose "failed" items were silently lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from uun_gateway import Module, Storage, StorageError


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
