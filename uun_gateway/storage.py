"""Storage: a durable, crash-safe FIFO of a module's unsent entries."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StorageError

logger = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON, _BYTES = 0, 1
DROP_LOG_INTERVAL = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    kind INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Entry:
    """One stored entry: its stable ``id`` (unique within the store, increasing in FIFO order), the
    ``data`` as appended, and ``created``, the wall-clock time (epoch seconds) it was stored."""

    id: int
    data: Any
    created: float


class Storage:
    """Thread-safe FIFO of entries, kept in an SQLite database (WAL mode) at ``backup_path``.

    Promises:

    - Durability: when :meth:`append` (or any other write) returns, the change is committed and the
      WAL is fsynced (``synchronous=FULL``): a SIGKILL or power cut at any later instant loses nothing,
      and at no instant leaves the store corrupt. There is no batching window.
    - Cost: an append does not depend on the number of stored entries.
    - Order and ids: entries come out oldest first; each has a stable integer id that is never reused
      within the store, plus the store's own :attr:`uid`, so a server can drop duplicates.
    - ``maxlen > 0`` keeps only the newest ``maxlen`` entries; drops are counted in :attr:`dropped`
      and logged (at most once a minute).
    - A damaged file is moved aside (``<path>.corrupt-<time>``), logged as an error and recorded in
      :attr:`quarantined`; the store then starts empty. It is never silently replaced.
    - A uun-iot JSON backup file found at ``backup_path`` is imported once; the original is kept as
      ``<path>.uun-iot.json``.
    - ``backup_path=None`` keeps the entries in memory only (not durable), as in uun-iot.

    Entries are JSON-serialisable values or ``bytes``. All methods may be called from any thread;
    :attr:`write_lock` (re-entrant) may be held by a caller to make several calls atomic. Methods
    raise :class:`StorageError` after :meth:`close`.
    """

    def __init__(self, storage_id: str, backup_path: str | os.PathLike[str] | None, maxlen: int = 0) -> None:
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
            raise ValueError(f"storage {storage_id!r}: maxlen must be an integer >= 0, got {maxlen!r}")
        self.storage_id = storage_id
        self.path = Path(backup_path) if backup_path is not None else None
        self.maxlen = maxlen
        self.write_lock = threading.RLock()
        self.dropped = 0
        self._drop_logged_at: float | None = None
        self.quarantined: Path | None = None
        self._db: sqlite3.Connection | None = self._open()
        try:
            self._count = self._scalar("SELECT COUNT(*) FROM entries")
            self.uid = self._load_uid()
            if self.maxlen and self._count > self.maxlen:
                self.trim()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self.path is None:
            return self._connect(":memory:")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head != _SQLITE_MAGIC:
                self._import_uuniot_json()
        try:
            db = self._connect(str(self.path))
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                db.close()
                raise sqlite3.DatabaseError(check)
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_CORRUPT) & 0xFF
            if code not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                # not damage (no permission, locked, read-only): the file must stay where it is
                raise StorageError(f"storage {self.storage_id!r}: cannot open {self.path}: {exc}") from exc
            self._quarantine(f"damaged database ({exc})")
            db = self._connect(str(self.path))
        # the database and its WAL file now exist: make their directory entries durable too
        _fsync_dir(self.path.parent)
        return db

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        if target != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    def _quarantine(self, reason: str) -> None:
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, str(aside) + suffix)
        _fsync_dir(self.path.parent)
        self.quarantined = aside
        logger.error(
            "storage %s: %s is unreadable: %s; moved it aside to %s and started an empty store",
            self.storage_id,
            self.path,
            reason,
            aside,
        )

    def _import_uuniot_json(self) -> None:
        """Turn a uun-iot JSON backup at ``path`` into a database at the same path, atomically."""
        assert self.path is not None
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            self._quarantine(f"neither an SQLite database nor a uun-iot JSON list ({exc})")
            return
        if not isinstance(items, list):
            self._quarantine(f"a JSON {type(items).__name__} where a uun-iot backup list was expected")
            return
        keep = Path(str(self.path) + ".uun-iot.json")
        tmp = Path(str(self.path) + ".importing")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(str(tmp), isolation_level=None)
        db.executescript(_SCHEMA)
        now = time.time()
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO entries (created, kind, payload) VALUES (?, ?, ?)",
                (_encode(item, now) for item in items),
            )
        db.close()
        _fsync_file(tmp)
        if not keep.exists():
            os.link(self.path, keep)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        logger.warning(
            "storage %s: imported %d entries from the uun-iot JSON backup %s (original kept as %s)",
            self.storage_id,
            len(items),
            self.path,
            keep,
        )

    def _load_uid(self) -> str:
        with self.write_lock:
            db = self._conn()
            # another process (the storage CLI, a second gateway) may be creating the same store now
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('uid', ?)", (uuid.uuid4().hex,))
            return str(db.execute("SELECT value FROM meta WHERE key = 'uid'").fetchone()[0])

    # -- helpers ---------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"storage {self.storage_id!r} is closed")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the write lock for one durable transaction: committed when the block ends, rolled
        back (and the entry count re-read) when it raises."""
        with self.write_lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (a full disk): keep that error
                    db.execute("ROLLBACK")
                self._count = self._scalar("SELECT COUNT(*) FROM entries")
                raise

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self.write_lock:
            value = self._conn().execute(sql, params).fetchone()[0]
        return int(value) if value is not None else 0

    def _insert(self, items: Iterable[Any], first_id: int | None = None) -> list[int]:
        now = time.time()
        rows = [_encode(item, now, self.storage_id) for item in items]
        ids: list[int] = []
        with self._transaction() as db:
            for n, row in enumerate(rows):
                if first_id is None:
                    cur = db.execute("INSERT INTO entries (created, kind, payload) VALUES (?, ?, ?)", row)
                    ids.append(int(cur.lastrowid or 0))
                else:
                    db.execute(
                        "INSERT INTO entries (id, created, kind, payload) VALUES (?, ?, ?, ?)", (first_id + n, *row)
                    )
                    ids.append(first_id + n)
            if first_id is not None and rows:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('lowestId', ?)", (str(first_id),))
            self._count += len(rows)
            self._trim_locked()
        return ids

    def _trim_locked(self) -> None:
        excess = self._count - self.maxlen if self.maxlen else 0
        if excess <= 0:
            return
        self._conn().execute("DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?)", (excess,))
        self._count -= excess
        self.dropped += excess
        now = time.monotonic()
        if self._drop_logged_at is None or now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            # once a minute at most: a full store drops on every append
            self._drop_logged_at = now
            logger.warning(
                "storage %s: limit of %d entries reached, dropped the %d oldest (%d dropped in total)",
                self.storage_id,
                self.maxlen,
                excess,
                self.dropped,
            )

    # -- uun-iot API -----------------------------------------------------------------------------

    def append(self, data: Any, backup: bool = True) -> int:
        """Store ``data`` durably at the end of the queue and return its entry id.

        ``backup`` is accepted for uun-iot compatibility and ignored: every append is durable.
        Raises :class:`StorageError` if ``data`` is neither JSON-serialisable nor ``bytes`` (nothing is
        stored then).
        """
        return self._insert([data])[0]

    def extend(self, items: Iterable[Any]) -> list[int]:
        """Append several entries in one durable transaction (all or none); return their ids."""
        return self._insert(items)

    def merge(self, data: list[Any], new_data: bool = True, backup: bool = True) -> None:
        """uun-iot's merge: ``new_data=True`` appends ``data`` at the end, ``False`` puts it before
        every stored entry (it is older). With a limit, the oldest entries are dropped first."""
        if not new_data and data:
            with self.write_lock:
                # Below every id this store ever gave out (appends count up from the highest one), so
                # a prepended entry never takes the id of one the server already has.
                lowest = self._scalar(
                    "SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'lowestId'), 1)"
                )
                if self._count:
                    lowest = min(lowest, self._scalar("SELECT MIN(id) FROM entries"))
                self._insert(data, first_id=lowest - len(data))
        else:
            self._insert(data)

    def empty(self) -> None:
        """Delete every entry."""
        with self.write_lock:
            self._conn().execute("DELETE FROM entries")
            self._count = 0

    def is_empty(self) -> bool:
        """True when no entry is stored."""
        return self._count == 0

    def __len__(self) -> int:
        return self._count

    def trim(self) -> None:
        """Drop the oldest entries beyond ``maxlen`` (no-op without a limit)."""
        with self._transaction():
            self._trim_locked()

    @property
    def data(self) -> list[Any]:
        """A snapshot list of all stored data, oldest first (a copy: O(n); prefer :meth:`oldest`)."""
        return [entry.data for entry in self]

    def __iter__(self) -> Iterator[Entry]:
        with self.write_lock:
            rows = self._conn().execute("SELECT id, created, kind, payload FROM entries ORDER BY id").fetchall()
        return iter([_decode(row) for row in rows])

    # -- delivery --------------------------------------------------------------------------------

    def oldest(self, limit: int) -> list[Entry]:
        """Return up to ``limit`` of the oldest entries, oldest first, without removing them."""
        with self.write_lock:
            rows = (
                self._conn()
                .execute("SELECT id, created, kind, payload FROM entries ORDER BY id LIMIT ?", (limit,))
                .fetchall()
            )
        return [_decode(row) for row in rows]

    def ack(self, ids: Iterable[int]) -> int:
        """Delete exactly the entries with these ids (delivered); unknown ids are ignored.

        Returns how many entries were deleted. The deletion is one durable transaction.
        """
        id_list = list(ids)
        deleted = 0
        with self._transaction() as db:
            for start in range(0, len(id_list), 500):
                chunk = id_list[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += db.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk).rowcount
            self._count -= deleted
        return deleted

    def close(self) -> None:
        """Close the database. Idempotent; later calls raise :class:`StorageError`."""
        with self.write_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    def __repr__(self) -> str:
        return f"Storage({self.storage_id!r}, {str(self.path) if self.path else None!r}, entries={self._count})"


def _encode(data: Any, now: float, storage_id: str = "") -> tuple[float, int, bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return now, _BYTES, bytes(data)
    try:
        return now, _JSON, json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise StorageError(f"storage {storage_id!r}: entry is neither JSON-serialisable nor bytes: {exc}") from exc


def _decode(row: tuple[int, float, int, bytes]) -> Entry:
    entry_id, created, kind, payload = row
    data = bytes(payload) if kind == _BYTES else json.loads(payload)
    return Entry(entry_id, data, created)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- where a module's storage lives, and whether the gateway can use that place ----------------------

DEFAULT_STORAGE_DIR = "storage"


def storage_location(gateway: Mapping[str, Any], module_id: str) -> tuple[Path, int]:
    """The storage file and entry limit of module ``module_id`` under the ``gateway`` section:
    ``moduleBackupStorage.<id>`` (a path or ``{"path", "limit"}``), else ``<storageDir>/<id>.sqlite``."""
    setting = gateway.get("moduleBackupStorage", {}).get(module_id)
    if isinstance(setting, Mapping):
        return Path(setting["path"]), int(setting.get("limit", 0))
    if setting is None:
        return Path(gateway.get("storageDir", DEFAULT_STORAGE_DIR)) / f"{module_id}.sqlite", 0
    return Path(setting), 0


def storage_setting_key(gateway: Mapping[str, Any], module_id: str) -> str:
    """The config key that decides where ``module_id``'s storage lives (for error messages)."""
    if module_id in gateway.get("moduleBackupStorage", {}):
        return f"gateway.moduleBackupStorage.{module_id}"
    return "gateway.storageDir"


def storage_location_errors(gateway: Mapping[str, Any], module_ids: Iterable[str]) -> list[str]:
    """Storage locations of ``module_ids`` the gateway could not create or write, one line each
    naming the config key; checked before anything starts. Does no I/O beyond ``stat``/``access``."""
    errors = []
    for module_id in module_ids:
        path, _ = storage_location(gateway, module_id)
        where = storage_setting_key(gateway, module_id)
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if existing == path and path.is_dir():
            errors.append(f"{where}: {str(path)!r} is a directory; expected a storage file path")
        elif existing != path and not existing.is_dir():
            errors.append(f"{where}: cannot create {str(path)!r}: {str(existing)!r} is not a directory")
        elif not os.access(existing if existing != path else path.parent, os.W_OK | os.X_OK):
            errors.append(f"{where}: cannot write {str(path)!r}: no write access to {str(existing)!r}")
    return errors
