"""Delivery: module storages to broker messages, at least once and in order per source.

For each source, the oldest entries not yet in flight are published as one JSON message::

    {"gatewayId": "<clientId>", "source": "<moduleId>", "storageId": "<storage uid>",
     "entries": [{"id": 17, "created": "2026-12-01T12:00:00.250Z", "data": <entry>}, ...]}

A ``bytes`` entry carries ``"data": "<base64>"`` and ``"encoding": "base64"``. At QoS 1 the
entries of a message are deleted from their storage only after the broker's PUBACK for that
message arrived (grouped, see :meth:`Delivery.process_acks`; a PUBACK with an MQTT 5 failure
reason deletes nothing); at QoS 0 they are
deleted as soon as the message was handed to the connection (at most once). In flight at any time:
at most the link's in-flight limit of messages, shared round-robin by the sources. When the
connection is lost, everything in flight is forgotten and sent again, from the oldest stored entry,
with the same ids, on the next connection. ``(storageId, id)`` identifies an entry for
de-duplication.

A :class:`Delivery` belongs to the one thread that drives the link; it is not thread-safe. It holds
a storage's lock only inside ``oldest`` and ``ack`` (short local transactions), never while a
message is on the network, and never waits for the network itself.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from uun_gateway import Backoff, Deadline, StateLog, Storage, iso_utc
from uun_gateway.storage import RawEntry

from .schema import Settings, SourceSettings

Publish = Callable[[str, bytes, int], "int | None"]
StorageOf = Callable[[str], "Storage | None"]
Record = Callable[[str, bool, "str | None"], None]

DELETE_INTERVAL = 0.25
DELETE_BATCH = 2000
SOURCE_BACKOFF_INITIAL = 1.0
SOURCE_BACKOFF_MAX = 60.0


@dataclass
class SourceWindow:
    """Delivery state of one source. Counters are read by health and tests."""

    settings: SourceSettings
    inflight_ids: set[int] = field(default_factory=set)
    ahead: deque[RawEntry] = field(default_factory=deque)
    cursor: int | None = None
    """The newest id read (in flight, acknowledged or ahead); every older stored entry is one of
    those, so the next read starts after it. None: read from the oldest, skipping ``inflight_ids``."""
    messages: int = 0
    delivered: int = 0
    resent: int = 0
    refused: int = 0
    last_delivery: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(SOURCE_BACKOFF_INITIAL, SOURCE_BACKOFF_MAX))
    log: StateLog | None = None

    def forget(self) -> None:
        """Drop what is in flight and read ahead: it will be read again from the storage."""
        self.inflight_ids.clear()
        self.ahead.clear()
        self.cursor = None


@dataclass(frozen=True)
class InFlight:
    source: str
    ids: tuple[int, ...]


class Delivery:
    """Moves entries of the configured sources to the broker; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        storage_of: StorageOf,
        logger: logging.Logger,
        record: Record | None = None,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self._storage_of = storage_of
        self._record = record or (lambda source, ok, error: None)
        self.windows: dict[str, SourceWindow] = {
            s.module_id: SourceWindow(s, log=StateLog(logger, f"mqtt source {s.module_id}")) for s in settings.sources
        }
        self._inflight: dict[int, InFlight] = {}
        self._acks: list[tuple[int, bool, str]] = []
        self._acknowledged: dict[str, list[int]] = {}
        self._waiting = 0
        self._delete_due: Deadline | None = None
        self._turn = 0
        self._warned_missing: set[str] = set()

    @property
    def inflight(self) -> int:
        """Messages published and not yet acknowledged."""
        return len(self._inflight)

    # -- events from the link ------------------------------------------------------------------

    def published(self, mid: int, ok: bool, reason: str) -> None:
        """A PUBACK arrived (called by the link inside its loop); handled by :meth:`process_acks`."""
        self._acks.append((mid, ok, reason))

    def reset(self) -> None:
        """The connection is gone (or a new one begins): everything in flight will be sent again,
        from the oldest stored entry. Idempotent."""
        self.process_acks(flush=True)  # what the broker did acknowledge goes before anything is re-read
        resent = 0
        for flight in self._inflight.values():
            self.windows[flight.source].resent += len(flight.ids)
            resent += len(flight.ids)
        self._inflight.clear()
        self._acks.clear()
        for window in self.windows.values():
            window.forget()
        if resent:
            self.logger.info("mqtt: %d unacknowledged entries will be sent again", resent)

    # -- work of the owner thread --------------------------------------------------------------

    def process_acks(self, *, flush: bool = False) -> int:
        """Take in the PUBACKs that arrived and delete the acknowledged entries; return how many
        were deleted.

        Deletions are durable transactions (an fsync each), so they are grouped: one per source
        every :data:`DELETE_INTERVAL` seconds, or at once when :data:`DELETE_BATCH` entries wait
        or ``flush`` is given. Until then the acknowledged entries count as in flight (they are
        never read again). A crash in between means they are sent once more: never lost.
        """
        acks, self._acks = self._acks, []
        for mid, ok, reason in acks:
            flight = self._inflight.pop(mid, None)
            if flight is None:
                continue
            window = self.windows[flight.source]
            if ok:
                self._acknowledged.setdefault(flight.source, []).extend(flight.ids)
                self._waiting += len(flight.ids)
                continue
            window.inflight_ids.difference_update(flight.ids)
            window.refused += 1
            window.ahead.clear()
            window.cursor = None  # the refused entries are older than the cursor: read from the oldest
            wait = window.backoff.failed()
            assert window.log is not None
            window.log.failed(
                f"the broker refused a message on {window.settings.topic} ({reason}); "
                f"its {len(flight.ids)} entries are kept, retrying in {wait:.0f}s",
                level=logging.ERROR,
            )
            self._record(flight.source, False, f"broker refused: {reason}")
        if not self._acknowledged:
            return 0
        if self._delete_due is None:
            self._delete_due = Deadline(DELETE_INTERVAL)
        if not (flush or self._waiting >= DELETE_BATCH or self._delete_due.expired()):
            return 0
        return self._delete()

    def _delete(self) -> int:
        done, self._acknowledged, self._waiting, self._delete_due = self._acknowledged, {}, 0, None
        count = 0
        now = time.time()
        for source, ids in done.items():
            window = self.windows[source]
            window.inflight_ids.difference_update(ids)
            storage = self._storage(source)
            if storage is None:
                continue
            try:
                storage.ack(ids)
            except Exception as exc:
                assert window.log is not None
                window.log.failed(f"cannot delete delivered entries: {exc}", state="storage", level=logging.ERROR)
                continue
            window.delivered += len(ids)
            window.last_delivery = now
            count += len(ids)
            window.backoff.succeeded()
            assert window.log is not None
            window.log.ok("delivered again")
            self._record(source, True, None)
        return count

    def fill(self, publish: Publish, limit: int, deadline: Deadline) -> int:
        """Publish messages round-robin over the sources until ``limit`` are in flight, nothing is
        left, ``publish`` returns None (not connected) or ``deadline`` expires. Returns how many
        messages were published."""
        names = [name for name, w in self.windows.items() if w.backoff.ready()]
        if not names:
            return 0
        self._turn = (self._turn + 1) % len(names)
        names = names[self._turn :] + names[: self._turn]
        published = 0
        active = names
        while active and len(self._inflight) < limit and not deadline.expired():
            still = []
            for name in active:
                if len(self._inflight) >= limit:
                    break
                sent = self._send_one(self.windows[name], publish, limit)
                if sent is None:
                    return published
                if sent:
                    published += 1
                    still.append(name)
            active = still
        return published

    def _storage(self, source: str) -> Storage | None:
        try:
            storage = self._storage_of(source)
        except Exception as exc:  # one source's broken storage must not stop the others
            storage, problem = None, f"its storage cannot be opened ({exc})"
        else:
            problem = "is not a loaded module with a storage"
        if storage is None and source not in self._warned_missing:
            self._warned_missing.add(source)
            self.logger.error("mqtt source %r %s; skipped", source, problem)
        return storage

    def _send_one(self, window: SourceWindow, publish: Publish, limit: int) -> bool | None:
        """Publish one message of ``window``'s source: True if sent, False if nothing to send,
        None if the link refused it."""
        source = window.settings.module_id
        storage = self._storage(source)
        if storage is None:
            return False
        batch = self._next_batch(window, storage, limit)
        if not batch:
            return False
        payload = encode(self.settings.client_id, source, storage.uid, batch)
        qos = window.settings.qos
        mid = publish(window.settings.topic, payload, qos)
        if mid is None:
            window.ahead.extendleft(reversed(batch))
            return None
        ids = tuple(e.id for e in batch)
        window.messages += 1
        if qos == 0:
            try:
                storage.ack(ids)
            except Exception as exc:
                self.logger.error("mqtt source %r: cannot delete sent entries: %s", source, exc)
            window.delivered += len(ids)
            window.last_delivery = time.time()
            self._record(source, True, None)
        else:
            self._inflight[mid] = InFlight(source, ids)
            window.inflight_ids.update(ids)
        return True

    def _next_batch(self, window: SourceWindow, storage: Storage, limit: int) -> list[RawEntry]:
        size = window.settings.batch_size
        if not window.ahead:
            if len(storage) <= len(window.inflight_ids):
                return []
            # Read a whole window ahead, as stored (JSON payloads are spliced into the message, not
            # decoded), on from the newest id already read; without a cursor, from the oldest,
            # skipping what is in flight.
            want = size * max(1, limit)
            try:
                if window.cursor is None:
                    rows = storage.oldest_raw(len(window.inflight_ids) + want)
                    fresh = [e for e in rows if e.id not in window.inflight_ids]
                else:
                    rows = fresh = storage.oldest_raw(want, after=window.cursor)
            except Exception as exc:
                assert window.log is not None
                window.log.failed(f"cannot read the storage: {exc}", state="storage", level=logging.ERROR)
                window.backoff.failed()
                return []
            window.ahead.extend(fresh)
            # Caught up (a short read): read from the oldest next time, so an entry stored in front
            # (merge(new_data=False), ids below the cursor) is not passed over.
            window.cursor = rows[-1].id if rows and len(fresh) == want else None
        batch: list[RawEntry] = []
        while window.ahead and len(batch) < size:
            batch.append(window.ahead.popleft())
        return batch

    def has_work(self, limit: int) -> bool:
        """Whether a message could be published now (room in the window and entries waiting)."""
        if len(self._inflight) >= limit:
            return False
        for name, window in self.windows.items():
            if not window.backoff.ready():
                continue
            if window.ahead:
                return True
            try:
                storage = self._storage_of(name)
            except Exception:
                continue
            if storage is not None and len(storage) > len(window.inflight_ids):
                return True
        return False

    def stored(self) -> dict[str, int | None]:
        """Entries waiting per source (None when its storage is not available)."""
        out: dict[str, int | None] = {}
        for name in self.windows:
            try:
                storage = self._storage_of(name)
            except Exception:
                storage = None
            out[name] = len(storage) if storage is not None else None
        return out


def encode(gateway_id: str, source: str, storage_id: str, batch: list[RawEntry]) -> bytes:
    """The JSON message of one batch (see the module docstring). Stored JSON payloads are spliced
    in as they are (compact JSON text, no NaN); ``bytes`` entries are base64-encoded."""
    head = json.dumps({"gatewayId": gateway_id, "source": source, "storageId": storage_id}, separators=(",", ":"))
    parts: list[bytes] = []
    stamps: dict[float, bytes] = {}  # entries stored together share their time: format it once
    for e in batch:
        created = stamps.get(e.created)
        if created is None:
            created = stamps[e.created] = iso_utc(e.created).encode()
        if e.is_bytes:
            data = base64.b64encode(e.payload)
            parts.append(b'{"id":%d,"created":"%b","data":"%b","encoding":"base64"}' % (e.id, created, data))
        else:
            parts.append(b'{"id":%d,"created":"%b","data":%b}' % (e.id, created, e.payload))
    return head[:-1].encode() + b',"entries":[' + b",".join(parts) + b"]}"
