"""Storage reads for senders: ``oldest(limit, after=)`` reads on past the entries in flight, and
``oldest_raw`` gives the stored JSON text to splice into a message without decoding it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from uun_gateway import Storage
from uun_gateway.storage import RawEntry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    s = Storage("reads", tmp_path / "s.sqlite")
    yield s
    s.close()


def test_oldest_after_reads_on_past_an_id(store: Storage) -> None:
    ids = store.extend([{"n": n} for n in range(10)])
    assert [e.id for e in store.oldest(3, after=ids[2])] == ids[3:6]
    assert [e.data["n"] for e in store.oldest(100, after=ids[7])] == [8, 9]
    assert store.oldest(5, after=ids[-1]) == []
    assert [e.id for e in store.oldest(2, after=None)] == ids[:2]
    assert [e.id for e in store.oldest(2, after=0)] == ids[:2]


def test_oldest_after_skips_acknowledged_gaps(store: Storage) -> None:
    ids = store.extend(list(range(6)))
    store.ack([ids[3], ids[4]])
    assert [e.data for e in store.oldest(10, after=ids[1])] == [2, 5]
    assert [e.id for e in store.oldest_raw(10, after=ids[2])] == [ids[5]]


def test_oldest_raw_gives_the_stored_json_text_and_bytes_as_appended(store: Storage) -> None:
    data = [{"t": 21.5, "name": "kůň", "nested": [1, None, True]}, b"\x00\xff raw", "text", 0.1]
    ids = store.extend(data)
    raw = store.oldest_raw(10)
    assert [r.id for r in raw] == ids
    assert [r.is_bytes for r in raw] == [False, True, False, False]
    assert raw[0].payload == json.dumps(data[0], separators=(",", ":")).encode()
    assert raw[0].payload.isascii()
    assert raw[1].payload == b"\x00\xff raw"
    assert [json.loads(r.payload) for r in raw if not r.is_bytes] == [data[0], "text", 0.1]
    assert [r.entry() for r in raw] == store.oldest(10)


def test_a_raw_entry_spliced_into_a_document_parses_as_the_data(store: Storage) -> None:
    store.extend([{"a": [1, 2, {"b": 'c"d'}]}, -3, "\u2603"])
    body = b"[" + b",".join(r.payload for r in store.oldest_raw(10)) + b"]"
    assert json.loads(body) == [{"a": [1, 2, {"b": 'c"d'}]}, -3, "\u2603"]


def test_raw_entries_survive_reopen(tmp_path: Path) -> None:
    with_store = Storage("reads", tmp_path / "r.sqlite")
    ids = with_store.extend([{"n": 1}, {"n": 2}])
    with_store.close()
    again = Storage("reads", tmp_path / "r.sqlite")
    try:
        assert again.oldest_raw(1, after=ids[0]) == [RawEntry(ids[1], again.oldest(2)[1].created, b'{"n":2}', False)]
    finally:
        again.close()


def test_ack_deletes_exactly_the_listed_ids_in_runs_and_alone(store: Storage) -> None:
    ids = store.extend(list(range(20)))
    listed = ids[0:5] + ids[6:9] + [ids[11]] + ids[13:15] + [ids[19], ids[19], 10**9]
    assert store.ack(reversed(listed)) == 12  # duplicates and unknown ids count once / not at all
    left = [e.id for e in store.oldest(100)]
    assert left == [ids[5], ids[9], ids[10], ids[12], *ids[15:19]]
    assert store.ack(ids[9:11]) == 2 and len(store) == 6
