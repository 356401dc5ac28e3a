"""The ``upload`` module: the one way module storages reach uuApp.

Configuration (``gateway.upload``)::

    "upload": {
        "sources": {
            "oneWire": {"uuCmd": "gateway/uploadReadings", "batchSize": 500},
            "camera":  {"uuCmd": "gateway/uploadImage"}
        },
        "batchSize": 100,
        "backoffInitial": 2,
        "backoffMax": 300
    }

Each source is another loaded module (found through ``gateway.modules``); its storage is read with
``storage.oldest(n)`` and entries leave it only through ``storage.ack(ids)`` after the server accepted
them. A JSON batch is POSTed as::

    {"source": "oneWire", "storageId": "<storage uid>",
     "data": [{"id": 17, "created": "2026-11-23T10:00:00.000Z", "data": <entry>}, ...]}

``(storageId, id)`` is stable across retries and restarts, so the server can drop duplicates. A
``bytes`` entry is sent alone as multipart/form-data with the fields ``source``, ``storageId``,
``id``, ``created`` and the file part ``data``.

What counts as accepted: a 2xx answer whose JSON body names ``accepted`` (ids) or ``failed`` (ids) —
only those accepted are deleted — or names neither (all accepted). Ids are JSON integers; a key that
holds anything but a list of them accepts nothing. Anything else (an HTTP error, a network error, no
token, a body that is not JSON) accepts nothing: the batch stays, in order, and the source backs
off exponentially (``backoffInitial`` doubling up to ``backoffMax`` seconds) before its next
attempt. A tick drains every due source round-robin, batch after batch, until it has sent the
backlog the source had when the tick began, or the source is empty, fails, or the gateway stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests

from uun_gateway import Entry, Module, Storage, UuAppClient, on

DEFAULT_BATCH = 100
DEFAULT_BACKOFF_INITIAL = 2.0
DEFAULT_BACKOFF_MAX = 300.0

_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_BATCH = {"type": "integer", "minimum": 1, "maximum": 10000, "description": "entries per request (1..10000)"}


@dataclass
class SourceState:
    """Delivery state of one source (read-only for callers)."""

    failures: int = 0
    next_attempt: float = 0.0
    sent: int = 0
    requests: int = 0
    warned_missing: bool = False


def iso_ms(epoch: float) -> str:
    """``epoch`` as ISO 8601 UTC with milliseconds and a ``Z`` suffix."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
                    },
                    "additionalProperties": False,
                },
            },
            "batchSize": _BATCH,
            "backoffInitial": {**_POSITIVE, "description": "first retry delay in seconds (> 0)"},
            "backoffMax": {**_POSITIVE, "description": "longest retry delay in seconds (> 0)"},
        },
        "additionalProperties": False,
    }

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        super().__init__(config, uuclient)
        self.state: dict[str, SourceState] = {}
        self._warned_no_client = False

    # -- configuration ---------------------------------------------------------------------------

    def sources(self) -> dict[str, dict[str, Any]]:
        """The configured sources (module id -> settings)."""
        return dict(self._c("sources", {}))

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` failures in a row (exponential, capped)."""
        initial = float(self._c("backoffInitial", DEFAULT_BACKOFF_INITIAL))
        cap = float(self._c("backoffMax", DEFAULT_BACKOFF_MAX))
        return float(min(cap, initial * 2.0 ** min(failures - 1, 62)))

    def _storage_of(self, source: str) -> Storage | None:
        module = self._module_of(source)
        if module is None or module is self:
            return None
        try:
            storage = getattr(module, "storage", None)
        except Exception as exc:  # one source's broken storage must not stop the others' uploads
            state = self.state.setdefault(source, SourceState())
            if not state.warned_missing:
                state.warned_missing = True
                self.logger.error("upload source %r: its storage cannot be opened (%s); skipped", source, exc)
            return None
        return storage if isinstance(storage, Storage) else None

    def _module_of(self, source: str) -> Any:
        modules = self.gateway.modules if self.gateway is not None else []
        found = next((m for m in modules if getattr(m, "id", None) == source), None)
        if found is None:
            # the source "alarms": the gateway's alarm transitions (gateway.alarms), stored like data
            alarms = getattr(self.gateway, "alarms", None)
            found = alarms if getattr(alarms, "id", None) == source else None
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
        """Send every due source's backlog, round-robin one batch at a time, until done or failing."""
        if not self._has_client():
            return
        due = [s for s in self.sources() if self.state.setdefault(s, SourceState()).next_attempt <= time.monotonic()]
        # A tick sends at most the backlog it found: entries that keep arriving wait for the next
        # tick, so a source fed as fast as it drains cannot keep the tick (and the watchdog) hanging.
        backlog = {s: len(storage) if (storage := self._storage_of(s)) is not None else 0 for s in due}
        while due:
            more = []
            for source in due:
                if not self._running():
                    return
                sent = self.state[source].sent
                if self.send_batch(source):
                    backlog[source] -= self.state[source].sent - sent
                    if backlog[source] > 0:
                        more.append(source)
            due = more

    def send_batch(self, source: str) -> bool:
        """Send the oldest batch of ``source``; True when all of it was accepted and more may follow.

        Blocks for up to the client's timeout. Called by the tick; calling it concurrently with the
        tick may send a batch twice (never loses one).
        """
        settings = self.sources().get(source)
        state = self.state.setdefault(source, SourceState())
        if settings is None or not self._has_client():
            return False
        storage = self._storage_of(source)
        if storage is None:
            if not state.warned_missing:
                state.warned_missing = True
                self.logger.warning("upload source %r is not a loaded module with a storage; skipped", source)
            return False
        size = int(settings.get("batchSize", self._c("batchSize", DEFAULT_BATCH)))
        entries = storage.oldest(size)
        if not entries:
            return False
        if isinstance(entries[0].data, bytes):
            batch = entries[:1]
            response, exc = self._post_binary(source, storage, settings["uuCmd"], batch[0])
        else:
            batch = []
            for entry in entries:
                if isinstance(entry.data, bytes):
                    break
                batch.append(entry)
            dto = {
                "source": source,
                "storageId": storage.uid,
                "data": [{"id": e.id, "created": iso_ms(e.created), "data": e.data} for e in batch],
            }
            assert self.uuclient is not None
            response, exc = self.uuclient.post(settings["uuCmd"], dto, log_level=logging.DEBUG)
        state.requests += 1
        accepted, problem = _accepted(batch, response, exc)
        if accepted:
            storage.ack(accepted)
            state.sent += len(accepted)
        if problem is None and len(accepted) == len(batch):
            self._succeeded(source, state)
            return True
        self._failed(source, state, problem or f"{len(batch) - len(accepted)} of {len(batch)} entries not accepted")
        return False

    def _post_binary(
        self, source: str, storage: Storage, uucmd: str, entry: Entry
    ) -> tuple[requests.Response | None, BaseException | None]:
        fields = {
            "source": source,
            "storageId": storage.uid,
            "id": str(entry.id),
            "created": iso_ms(entry.created),
            "data": entry.data,
        }
        assert self.uuclient is not None
        return self.uuclient.multipart(uucmd, fields, log_level=logging.DEBUG)

    def _succeeded(self, source: str, state: SourceState) -> None:
        if state.failures:
            self.logger.info("upload of %s works again after %d failed attempt(s)", source, state.failures)
        state.failures = 0
        state.next_attempt = 0.0
        self._record(source, True, None)

    def _failed(self, source: str, state: SourceState, problem: str) -> None:
        state.failures += 1
        delay = self.backoff(state.failures)
        state.next_attempt = time.monotonic() + delay
        if state.failures == 1:
            self.logger.warning("upload of %s failed (%s); kept, retrying with backoff", source, problem)
        else:
            self.logger.debug("upload of %s failed again (%s); next attempt in %.1fs", source, problem, delay)
        self._record(source, False, f"upload failed: {problem}")

    def _record(self, source: str, ok: bool, error: str | None) -> None:
        self.stats.record_send(ok, error)
        module = self._module_of(source)
        stats = getattr(module, "stats", None)
        if stats is not None and stats is not self.stats and hasattr(stats, "record_send"):
            stats.record_send(ok, error)


def _accepted(
    batch: list[Entry], response: requests.Response | None, exc: BaseException | None
) -> tuple[list[int], str | None]:
    """The ids of ``batch`` the server accepted, and a description of the problem (None if none)."""
    if exc is not None or response is None:
        if isinstance(exc, requests.HTTPError) and response is not None:
            return [], f"HTTP {response.status_code}"
        if isinstance(exc, requests.Timeout):
            return [], "timed out"
        if isinstance(exc, requests.ConnectionError):
            return [], "connection failed"
        return [], type(exc).__name__ if exc is not None else "no response"
    try:
        body = response.json()
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
