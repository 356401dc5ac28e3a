"""The ``upload`` module: the one way module storages reach uuApp.

Configuration (``gateway.upload``; every key but ``sources`` may also be set per source)::

    "upload": {
        "sources": {
            "oneWire": {"uuCmd": "gateway/uploadReadings", "batchSize": 500},
            "camera":  {"uuCmd": "gateway/uploadImage"}
        },
        "batchSize": 100,
        "maxBatchBytes": 262144,
        "pipeline": 4,
        "compress": "none",
        "backoffInitial": 2,
        "backoffMax": 300
    }

Each source is another loaded module (found through ``gateway.modules``); its storage is read with
``storage.oldest_raw(n)`` (stored JSON is spliced into the body, not decoded) and entries leave it
only through ``storage.ack(ids)`` after the server accepted them. A JSON batch is POSTed as::

    {"source": "oneWire", "storageId": "<storage uid>",
     "data": [{"id": 17, "created": "2026-11-23T10:00:00.000Z", "data": <entry>}, ...]}

``(storageId, id)`` is stable across retries and restarts, so the server can drop duplicates. A
``bytes`` entry is sent alone as multipart/form-data with the fields ``source``, ``storageId``,
``id``, ``created`` and the file part ``data``.

Throughput: a round reads up to ``pipeline`` batches and sends them at once, each on its own
kept-alive connection. A batch holds ``batchSize`` entries while the backlog is small; while the
backlog holds more than a full round the entry count grows eightfold each round (up to 50,000), and
a batch never grows past ``maxBatchBytes`` encoded bytes (one entry larger than that goes alone).
While a round's requests are in flight the next round's batches are read and encoded, so the link
is not left idle between rounds. Stored JSON entries are spliced into the body as stored, never
decoded. Each batch is encoded once: one that failed is sent again byte for byte. ``compress``: ``gzip`` sends
bodies of 1 KiB or more with ``Content-Encoding: gzip``; ``auto`` does so until the server answers
415 (Unsupported Media Type), then sends plain JSON for the rest of the run (logged once);
``none`` (the default) never compresses, since HTTP has no way to learn in advance whether a server
takes compressed request bodies.

Order: batches in flight together may arrive at the server in any order (the ids give it;
``pipeline: 1`` keeps arrival order too), but their answers are applied in storage order. What
counts as accepted: only a 2xx answer, never a redirect (3xx is a failure, not followed), whose
``uuAppErrorMap`` holds no entry of ``"type": "error"``, whose body is JSON no larger than
``uuApp.maxAnswerBytes`` and no deeper than 64 levels, and that arrived within ``uuApp.timeout``.
Of such an answer, a JSON body naming ``accepted`` (ids) accepts those ids; naming ``failed``
(ids) accepts the others; naming neither accepts the whole batch. Ids are JSON integers; a key that
holds anything but a list of them accepts nothing. Anything else (an HTTP error, a network error,
no token, a body that is not JSON) accepts nothing. The first batch of a round not wholly accepted
ends the round: it and every batch after it stay stored (even when a later one was accepted:
acking it would leave a hole), in order, and the source backs off exponentially
(``backoffInitial`` doubling up to ``backoffMax`` seconds). So does a batch the server accepted
but the storage could not delete (:class:`~uun_gateway.StorageError`): it is sent again later.
A tick drains every due source round-robin, round after round, until it has sent the backlog the
source had when the tick began, or the source is empty, fails, or the gateway stops (which also
interrupts the requests in flight).
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from uun_gateway import (
    Backoff,
    Module,
    StateLog,
    Storage,
    StorageError,
    UuAppClient,
    describe_failure,
    iso_utc,
    on,
)
from uun_gateway.bounds import seconds_schema
from uun_gateway.storage import RawEntry
from uun_gateway.uuapp import EncodedJson, UuCmdSession, answer_json

DEFAULT_BATCH = 100
DEFAULT_PIPELINE = 4
DEFAULT_MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_ENTRIES = 50_000
GZIP_MIN = 1024
"""Bodies shorter than this are never compressed (gzip would not pay for its header)."""
DEFAULT_BACKOFF_INITIAL = 2.0
DEFAULT_BACKOFF_MAX = 300.0

_BATCH = {
    "type": "integer",
    "minimum": 1,
    "maximum": 10000,
    "description": "entries per request while the backlog is small (1..10000); batches grow from it",
}
_BATCH_BYTES = {
    "type": "integer",
    "minimum": 1024,
    "maximum": 16 * 1024 * 1024,
    "description": "largest encoded batch in bytes (1 KiB..16 MiB; default 256 KiB)",
}
_PIPELINE = {"type": "integer", "minimum": 1, "maximum": 16, "description": "batches in flight at once (1..16)"}
_COMPRESS = {
    "enum": ["none", "gzip", "auto"],
    "description": "gzip request bodies: none (default), gzip (always), auto (until the server answers 415)",
}


@dataclass(frozen=True)
class Batch:
    """Entries sent in one request, with their body encoded once (None: one bytes entry, multipart)."""

    entries: list[RawEntry]
    """The entries as stored (their JSON payloads are spliced into ``body``, never decoded)."""
    body: EncodedJson | None

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries]


@dataclass
class SourceState:
    """Delivery state of one source (read-only for callers): its backoff and its log of state changes."""

    backoff: Backoff
    log: StateLog
    sent: int = 0
    requests: int = 0
    warned_missing: bool = False
    batch_entries: int = 0
    """Entries per batch now (grows while the backlog is large)."""
    fits: int = 0
    """Entries that filled a batch to ``maxBatchBytes`` while this backlog drains (0: none did yet);
    batches grow no larger, so a round never reads entries it cannot send."""
    gzip_refused: bool = False
    prepared: dict[int, Batch] = field(default_factory=dict)
    """Batches encoded for an attempt that failed, by first entry id: sent again as they were."""
    ahead: dict[int, Batch] = field(default_factory=dict)
    """Batches of the next round, encoded while this round's requests were in flight."""
    ahead_entries: list[RawEntry] = field(default_factory=list)
    """The entries those batches were made of (the storage's next ones when they were read)."""

    @property
    def failures(self) -> int:
        """Failed attempts in a row."""
        return self.backoff.failures


class Upload(Module):
    """Delivers other modules' stored entries to uuApp (id ``upload``; default period 10 s).

    At-least-once and in order per source: an entry is deleted only after the server accepted it,
    so after a lost answer it may be sent once more (same id). The storage lock is never held while
    a request is in flight (``oldest`` and ``ack`` are separate short transactions). A tick blocks
    while it drains, checking the gateway's stop event between requests. :attr:`state` holds each
    source's :class:`SourceState`.
    """

    id = "upload"
    timer_defaults: ClassVar[Mapping[str | None, float]] = {None: 10.0}
    config_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "description": "upload settings",
        "required": ["sources"],
        "properties": {
            "sources": {
                "type": "object",
                "description": "an object {moduleId: {uuCmd, batchSize}}",
                "additionalProperties": {
                    "type": "object",
                    "required": ["uuCmd"],
                    "properties": {
                        "uuCmd": {"type": "string", "minLength": 1, "description": "the uuCmd to POST to"},
                        "batchSize": _BATCH,
                        "maxBatchBytes": _BATCH_BYTES,
                        "pipeline": _PIPELINE,
                        "compress": _COMPRESS,
                    },
                    "additionalProperties": False,
                },
            },
            "batchSize": _BATCH,
            "maxBatchBytes": _BATCH_BYTES,
            "pipeline": _PIPELINE,
            "compress": _COMPRESS,
            "backoffInitial": seconds_schema("first retry delay in seconds"),
            "backoffMax": seconds_schema("longest retry delay in seconds"),
        },
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.state: dict[str, SourceState] = {}
        self._warned_no_client = False
        self._sessions: dict[tuple[str, int], UuCmdSession] = {}
        self._sessions_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    # -- configuration ---------------------------------------------------------------------------

    def sources(self) -> dict[str, dict[str, Any]]:
        """The configured sources (module id -> settings)."""
        return dict(self._c("sources", {}))

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` failures in a row (exponential, capped)."""
        return self._new_backoff().delay(failures)

    def _new_backoff(self) -> Backoff:
        initial = float(self._c("backoffInitial", DEFAULT_BACKOFF_INITIAL))
        return Backoff(initial, max(initial, float(self._c("backoffMax", DEFAULT_BACKOFF_MAX))))

    def _state(self, source: str) -> SourceState:
        state = self.state.get(source)
        if state is None:
            state = self.state[source] = SourceState(self._new_backoff(), StateLog(self.logger, f"upload of {source}"))
        return state

    def _storage_of(self, source: str) -> Storage | None:
        module = self._module_of(source)
        if module is None or module is self:
            return None
        try:
            storage = getattr(module, "storage", None)
        except Exception as exc:  # one source's broken storage must not stop the others' uploads
            state = self._state(source)
            if not state.warned_missing:
                state.warned_missing = True
                self.logger.error("upload source %r: its storage cannot be opened (%s); skipped", source, exc)
            return None
        return storage if isinstance(storage, Storage) else None

    def _module_of(self, source: str) -> Any:
        modules = self.gateway.modules if self.gateway is not None else []
        found = next((m for m in modules if getattr(m, "id", None) == source), None)
        if found is None and self.gateway is not None:
            found = next((s for s in self.gateway.services if s.id == source), None)
        return found

    def _running(self) -> bool:
        return not self.stop_event.is_set()

    # -- delivery --------------------------------------------------------------------------------

    def _has_client(self) -> bool:
        if self.uuclient is None and not self._warned_no_client:
            self._warned_no_client = True
            self.logger.warning("no uuApp configured; stored entries are kept, not uploaded")
        return self.uuclient is not None

    @on("tick")
    def drain(self) -> None:
        """Send every due source's backlog, round-robin one round (a pipeline of batches) at a time,
        until done or failing."""
        if not self._has_client():
            return
        due = [s for s in self.sources() if self._state(s).backoff.ready()]
        # A tick sends at most the backlog it found: entries that keep arriving wait for the next
        # tick, so a source fed as fast as it drains cannot keep the tick (and the watchdog) hanging.
        backlog = {s: len(storage) if (storage := self._storage_of(s)) is not None else 0 for s in due}
        try:
            while due:
                more = []
                for source in due:
                    if not self._running():
                        return
                    sent = self.state[source].sent
                    if self.send_batch(source, limit=backlog[source]):
                        backlog[source] -= self.state[source].sent - sent
                        if backlog[source] > 0:
                            more.append(source)
                due = more
        finally:
            self._shutdown_pool()

    def send_batch(self, source: str, limit: int | None = None) -> bool:
        """Send one round of ``source``'s oldest entries (at most ``limit``): up to ``pipeline``
        batches in flight at once, their acks applied in order. True when all of it was accepted
        and more may follow.

        Blocks for up to the client's timeout. Called by the tick; calling it concurrently with the
        tick may send a batch twice (never loses one).
        """
        settings = self.sources().get(source)
        state = self._state(source)
        if settings is None or not self._has_client():
            return False
        storage = self._storage_of(source)
        if storage is None:
            if not state.warned_missing:
                state.warned_missing = True
                self.logger.warning("upload source %r is not a loaded module with a storage; skipped", source)
            return False
        base = int(settings.get("batchSize", self._c("batchSize", DEFAULT_BATCH)))
        pipeline = int(settings.get("pipeline", self._c("pipeline", DEFAULT_PIPELINE)))
        max_bytes = int(settings.get("maxBatchBytes", self._c("maxBatchBytes", DEFAULT_MAX_BATCH_BYTES)))
        size = max(base, state.batch_entries)
        want = size * pipeline
        count = min(want, limit) if limit else want
        entries = self._entries_read_ahead(storage, state, count) or storage.oldest_raw(count)
        if not entries:
            return False
        uucmd = settings["uuCmd"]
        if entries[0].is_bytes:
            batches = [Batch(entries[:1], None)]
        else:
            json_entries = list(itertools.takewhile(lambda e: not e.is_bytes, entries))
            batches = self._batches(source, storage, state, json_entries, size, max_bytes, pipeline)
        results = self._send_all(source, storage, uucmd, batches)
        full = len(entries) == want and len(storage) > want
        grown = min(MAX_BATCH_ENTRIES, size * 8, state.fits or MAX_BATCH_ENTRIES)
        rest = None if not limit else limit - len(entries)
        if full and len(batches) > 1 and (rest is None or rest > 0):
            self._read_ahead(source, storage, state, batches[-1].entries[-1].id, grown, max_bytes, pipeline, rest)
        ok = self._apply_in_order(source, storage, state, batches, results)
        if ok:
            # grow while the backlog holds more than a full round (up to what the byte bound lets a
            # batch hold), shrink back once it does not
            if not full:
                state.fits = 0  # entries may be of another size next time: learn the bound again
            state.batch_entries = grown if full else base
        else:
            state.ahead, state.ahead_entries = {}, []
        return ok

    def _batches(
        self,
        source: str,
        storage: Storage,
        state: SourceState,
        entries: list[RawEntry],
        size: int,
        max_bytes: int,
        pipeline: int,
    ) -> list[Batch]:
        """Split ``entries`` into at most ``pipeline`` batches of at most ``size`` entries and about
        ``max_bytes`` bytes (at least one entry each), each encoded once: a batch prepared for an
        attempt that failed is sent again as it was."""
        compress = self._compress(source, state)
        prefix = json.dumps({"source": source, "storageId": storage.uid}, separators=(",", ":"))[:-1].encode()
        prefix += b',"data":['
        prepared, state.prepared, state.ahead = {**state.ahead, **state.prepared}, {}, {}
        stamps: dict[float, bytes] = {}  # entries stored together share their time: format it once
        batches: list[Batch] = []
        i = 0
        while i < len(entries) and len(batches) < pipeline:
            cached = prepared.get(entries[i].id)
            if (
                cached is not None
                and cached.body is not None
                and (cached.body.gzipped is not None) == (compress and len(cached.body.body) >= GZIP_MIN)
                and cached.ids == [e.id for e in entries[i : i + len(cached.ids)]]
            ):
                batches.append(cached)
                i += len(cached.ids)
                continue
            fragments: list[bytes] = []
            total = len(prefix) + 2
            start = i
            while i < len(entries) and i - start < size:
                entry = entries[i]
                stamp = stamps.get(entry.created)
                if stamp is None:
                    stamp = stamps[entry.created] = iso_utc(entry.created).encode()
                # the stored payload is the entry's compact JSON: spliced in as is, never decoded
                fragment = b'{"id":%d,"created":"%b","data":%b}' % (entry.id, stamp, entry.payload)
                if fragments and total + len(fragment) + 1 > max_bytes:
                    state.fits = len(fragments)  # what the byte bound allows: read no more per batch
                    break
                fragments.append(fragment)
                total += len(fragment) + 1
                i += 1
            body = prefix + b",".join(fragments) + b"]}"
            gzipped = gzip.compress(body, compresslevel=5, mtime=0) if compress and len(body) >= GZIP_MIN else None
            batches.append(Batch(entries[start:i], EncodedJson(body, gzipped)))
        return batches

    def _read_ahead(
        self,
        source: str,
        storage: Storage,
        state: SourceState,
        after: int,
        size: int,
        max_bytes: int,
        pipeline: int,
        limit: int | None,
    ) -> None:
        """While a round's requests are in flight: read and encode the next round's batches (the
        entries after ``after``), so the next round starts sending at once. They are used only if
        the next round reads exactly those entries; a failure here only costs the head start."""
        want = size * pipeline
        if limit is not None:
            want = min(want, limit)
        try:
            entries = storage.oldest_raw(want, after=after)
        except StorageError:
            return
        json_entries = list(itertools.takewhile(lambda e: not e.is_bytes, entries))
        if not json_entries:
            return
        prepared = state.prepared
        batches = self._batches(source, storage, state, json_entries, size, max_bytes, pipeline)
        state.prepared = prepared
        state.ahead = {batch.entries[0].id: batch for batch in batches}
        state.ahead_entries = entries

    @staticmethod
    def _entries_read_ahead(storage: Storage, state: SourceState, count: int) -> list[RawEntry]:
        """The ``count`` oldest entries as read ahead, if they still are the oldest (nothing was
        stored in front of them or removed from their front since); else []. An entry removed from
        their middle meanwhile (only by a concurrent ``send_batch``) is sent once more, never lost."""
        entries, state.ahead_entries = state.ahead_entries, []
        if len(entries) != count:
            return []
        try:
            front = storage.oldest_raw(1)
        except StorageError:
            return []
        return entries if front and front[0].id == entries[0].id else []

    def _compress(self, source: str, state: SourceState) -> bool:
        setting = self.sources().get(source, {}).get("compress", self._c("compress", "none"))
        return setting == "gzip" or (setting == "auto" and not state.gzip_refused)

    def _send_all(
        self, source: str, storage: Storage, uucmd: str, batches: list[Batch]
    ) -> list[Future[tuple[requests.Response | None, BaseException | None]]]:
        """Start every batch (the first in this thread's turn, the others on the pipeline's workers)."""
        futures: list[Future[tuple[requests.Response | None, BaseException | None]]] = []
        if len(batches) > 1:
            pool = self._pool_for(len(batches))
            for slot, batch in enumerate(batches):
                futures.append(pool.submit(self._post_batch, source, storage, uucmd, batch, slot))
        else:
            done: Future[tuple[requests.Response | None, BaseException | None]] = Future()
            done.set_result(self._post_batch(source, storage, uucmd, batches[0], 0))
            futures.append(done)
        return futures

    def _post_batch(
        self, source: str, storage: Storage, uucmd: str, batch: Batch, slot: int
    ) -> tuple[requests.Response | None, BaseException | None]:
        if batch.body is None:
            return self._post_binary(source, storage, uucmd, batch.entries[0])
        return self._session(uucmd, slot).post(batch.body, log_level=logging.DEBUG, stop=self.stop_event)

    def _apply_in_order(
        self,
        source: str,
        storage: Storage,
        state: SourceState,
        batches: list[Batch],
        results: list[Future[tuple[requests.Response | None, BaseException | None]]],
    ) -> bool:
        """Apply the answers in the order the batches were read: the first batch not wholly accepted
        ends the round, and it and every batch after it stay stored (sent again later, same ids).
        What the server accepted is acked at the end, in one transaction (one flush per round)."""
        failure: str | None = None
        delivered: list[int] = []
        for batch, future in zip(batches, results, strict=True):
            response, exc = future.result()
            state.requests += 1
            if failure is not None:
                if batch.body is not None:  # answered, but an earlier batch failed: kept, to keep the order
                    state.prepared[batch.entries[0].id] = batch
                continue
            if (
                batch.body is not None
                and batch.body.gzipped is not None
                and response is not None
                and response.status_code == 415
            ):
                state.gzip_refused = True
                self.logger.warning(
                    "upload of %s: the server refuses gzip bodies (HTTP 415); sending plain JSON", source
                )
                failure = ""
                continue
            accepted, problem = _accepted(batch.entries, response, exc)
            delivered += accepted
            if problem is not None or len(accepted) != len(batch.entries):
                failure = (
                    problem or f"{len(batch.entries) - len(accepted)} of {len(batch.entries)} entries not accepted"
                )
                if not accepted and batch.body is not None:
                    state.prepared[batch.entries[0].id] = batch  # the same bytes next time
        if delivered:
            try:
                storage.ack(delivered)
            except StorageError as err:
                # delivered but still stored: it goes out again (same ids) after the backoff
                failure = (
                    f"the server accepted {len(delivered)} entries but they could not be removed from storage ({err})"
                )
            else:
                state.sent += len(delivered)
        if failure == "":
            return True  # only the encoding was refused: send again at once, uncompressed
        if failure is not None:
            self._failed(source, state, failure)
            return False
        self._succeeded(source, state)
        return True

    def _session(self, uucmd: str, slot: int) -> UuCmdSession:
        """The keep-alive connection of pipeline slot ``slot`` to ``uucmd``."""
        with self._sessions_lock:
            session = self._sessions.get((uucmd, slot))
            if session is None:
                assert self.uuclient is not None
                session = self._sessions[(uucmd, slot)] = UuCmdSession(self.uuclient, uucmd, logging.DEBUG)
            return session

    def _pool_for(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_size < workers:
            self._shutdown_pool()
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="upload-pipeline")
            self._pool_size = workers
        return self._pool

    def _shutdown_pool(self) -> None:
        pool, self._pool, self._pool_size = self._pool, None, 0
        if pool is not None:
            pool.shutdown(wait=True)

    @on("stop")
    def close_connections(self) -> None:
        """Close the pipeline's connections (the client reconnects if the module runs again)."""
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()

    def _post_binary(
        self, source: str, storage: Storage, uucmd: str, entry: RawEntry
    ) -> tuple[requests.Response | None, BaseException | None]:
        fields = {
            "source": source,
            "storageId": storage.uid,
            "id": str(entry.id),
            "created": iso_utc(entry.created),
            "data": entry.payload,
        }
        assert self.uuclient is not None
        return self.uuclient.multipart(uucmd, fields, log_level=logging.DEBUG, stop=self.stop_event)

    def _succeeded(self, source: str, state: SourceState) -> None:
        state.backoff.succeeded()
        state.log.ok("works again")
        self._record(source, True, None)

    def _failed(self, source: str, state: SourceState, problem: str) -> None:
        state.backoff.failed()
        state.log.failed(f"failed ({problem}); kept, retrying with backoff")
        self._record(source, False, f"upload failed: {problem}")

    def _record(self, source: str, ok: bool, error: str | None) -> None:
        self.stats.record_send(ok, error)
        module = self._module_of(source)
        stats = getattr(module, "stats", None)
        if stats is not None and stats is not self.stats and hasattr(stats, "record_send"):
            stats.record_send(ok, error)


def _accepted(
    batch: list[RawEntry], response: requests.Response | None, exc: BaseException | None
) -> tuple[list[int], str | None]:
    """The ids of ``batch`` the server accepted, and a description of the problem (None if none)."""
    if exc is not None or response is None:
        return [], describe_failure(exc)
    try:
        body = answer_json(response)
    except ValueError:
        return [], "the answer is not JSON"
    ids = [e.id for e in batch]
    if not isinstance(body, dict):
        return [], "the answer is not a JSON object"
    named: dict[str, set[int]] = {}
    for key in ("accepted", "failed"):
        value = body.get(key)
        # only a list of JSON integers names entry ids (true is not 1, "3" is not 3)
        if isinstance(value, list) and all(type(i) is int for i in value):
            named[key] = set(value)
    if "accepted" in named:
        return [i for i in ids if i in named["accepted"]], None
    if "failed" in named:
        return [i for i in ids if i not in named["failed"]], None
    if "accepted" in body or "failed" in body:
        return [], "the answer's accepted/failed is not a list of entry ids"
    return ids, None
