"""Storage: a durable, crash-safe FIFO of a module's unsent entries."""

from __future__ import annotations

import ctypes
import enum
import errno
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from .errors import StorageError
from .files import fsync_dir

logger = logging.getLogger(__name__)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON, _BYTES = 0, 1
DROP_LOG_INTERVAL = 60.0
RECLAIM_BYTES = 1 << 20
"""Once a store is drained, a file holding at least this many bytes of free pages is compacted."""
PAGE_SIZE = 1024
"""Database page size of a new store. A WAL frame is a page plus 24 bytes; with 4096-byte pages
every frame straddles two 4 KiB blocks of the file system, so an append flushed 8 KiB. With 1024
it is one block most of the time (about 5.5 KB per append measured, see the README); a reading of a
few hundred bytes fits a page easily."""
FILE_MODE = 0o600
"""Permissions of a storage file and its ``-wal``/``-shm`` companions, whatever the umask: they hold
the data."""
# No AUTOINCREMENT: it writes a sqlite_sequence page on every insert. Ids are assigned by Storage
# from max(id) and the 'nextId' high-water mark in meta, written only when the newest entry leaves.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    kind INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COMPANIONS = ("-wal", "-shm")


@dataclass(frozen=True)
class Entry:
    """One stored entry: its stable ``id`` (unique within the store, increasing in FIFO order), the
    ``data`` as appended, and ``created``, the wall-clock time (epoch seconds) it was stored."""

    id: int
    data: Any
    created: float


class RawEntry(NamedTuple):
    """One stored entry as it is kept, not decoded (what :meth:`Storage.oldest_raw` returns).

    ``payload`` is the entry's compact JSON text (UTF-8, ASCII-only, no NaN/Infinity: what
    ``json.dumps(data, separators=(",", ":"), allow_nan=False)`` gave when it was stored), ready to
    be spliced into a larger JSON document as is; or, when ``is_bytes``, the ``bytes`` appended.
    (A named tuple: a drain builds one per entry, and a tuple is the cheapest to build.)"""

    id: int
    created: float
    payload: bytes
    is_bytes: bool

    def entry(self) -> Entry:
        """The decoded :class:`Entry`. Raises :class:`ValueError` if the stored JSON is damaged."""
        return Entry(self.id, self.payload if self.is_bytes else json.loads(self.payload), self.created)


class StoredData(tuple[Any, ...]):
    """A read-only snapshot of a storage's data, oldest first (what :attr:`Storage.data` returns).

    A tuple that compares equal to a list with the same items, so uun-iot code such as
    ``storage.data == []`` or ``json.dumps(storage.data)`` keeps working. Mutating it (``append``,
    ``clear``, ``pop``, ...) raises :class:`TypeError`: in uun-iot ``data`` was the live list, here a
    change would be silently lost, so it is refused. Change a storage with :meth:`Storage.append`,
    :meth:`Storage.extend`, :meth:`Storage.ack` or :meth:`Storage.empty`.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return list(self) == other
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"StoredData({list(self)!r})"

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "Storage.data is a read-only snapshot: a change to it would be lost; use the storage's "
            "append(), extend(), ack() or empty()"
        )

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = _refuse


# -- group commit ---------------------------------------------------------------------------------


def _syncfs(fd: int) -> None:
    """syncfs(2): write back every file of the file system holding ``fd`` with one device flush."""
    if _libc is None or _libc.syncfs(fd) != 0:
        err = ctypes.get_errno() if _libc is not None else errno.ENOSYS
        raise OSError(err, os.strerror(err))


_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syncfs.argtypes = [ctypes.c_int]
except (OSError, AttributeError):
    _libc = None

sync_file: Callable[[int], None] = os.fdatasync
"""Makes one store's committed WAL frames durable: the flush of a round with one file."""
sync_filesystem: Callable[[int], None] = _syncfs if _libc is not None else os.fdatasync
"""Makes every file of ``fd``'s file system durable with one device flush: a round with several
store files on one file system uses it once instead of a flush per file. (``sync_file`` and
``sync_filesystem`` are the test and bench seams: wrap them to inject the flush latency of a slow
device; they are looked up at every flush.)"""


class _FlushWaiter:
    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: OSError | None = None


class _GroupCommit:
    """Makes committed transactions durable, sharing flushes between every thread and store.

    A committer registers its WAL file after COMMIT (the frames are written, not yet synced) and
    waits. The first waiter with no flush running becomes the leader: it takes every file
    registered so far and syncs each once, while later committers gather for the next flush.
    So N concurrent commits cost about two flush latencies, not N. Never holds a store's lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: dict[tuple[int, int], tuple[int, list[_FlushWaiter]]] = {}
        self._started = 0
        self._done = 0
        self._flushing = False
        self.flushes = 0
        self.commits = 0

    def register(self, fd: int, key: tuple[int, int]) -> tuple[int, _FlushWaiter]:
        """Record a commit to the WAL open as ``fd`` (identified by ``key``); call with the store's
        lock held, so ``fd`` is open. Returns the ticket to pass to :meth:`wait`."""
        waiter = _FlushWaiter()
        with self._lock:
            batch = self._pending.get(key)
            if batch is None:
                # our own descriptor: the store may close its file while the flush runs
                batch = self._pending[key] = (os.dup(fd), [])
            batch[1].append(waiter)
            self.commits += 1
            return self._started + 1, waiter

    def wait(self, ticket: tuple[int, _FlushWaiter]) -> None:
        """Block until the flush numbered ``ticket`` has run; raise its :class:`OSError`, if any."""
        number, waiter = ticket
        with self._lock:
            while self._done < number:
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                self._started += 1
                mine = self._started
                batch, self._pending = self._pending, {}
                self._lock.release()
                try:
                    _flush(batch)
                finally:
                    self._lock.acquire()
                    self._done = mine
                    self._flushing = False
                    self.flushes += 1
                    self._cond.notify_all()
        if waiter.error is not None:
            raise waiter.error


def _flush(batch: dict[tuple[int, int], tuple[int, list[_FlushWaiter]]]) -> None:
    """Flush the files of one round: one flush per file system. Closes the descriptors."""
    devices: dict[int, list[tuple[int, list[_FlushWaiter]]]] = {}
    for (device, _), pending in batch.items():
        devices.setdefault(device, []).append(pending)
    try:
        for files in devices.values():
            try:
                if len(files) == 1:
                    sync_file(files[0][0])
                else:
                    sync_filesystem(files[0][0])
            except OSError as exc:
                for _, waiters in files:
                    for each in waiters:
                        each.error = exc
    finally:
        for fd, _ in batch.values():
            os.close(fd)


group_commit = _GroupCommit()
"""The process's one flush coordinator (``flushes``/``commits`` count its work)."""


def _persist_wal(db: sqlite3.Connection, path: Path) -> bool:
    """Ask SQLite to keep the WAL file when the connection closes (SQLITE_FCNTL_PERSIST_WAL), so it
    is checkpointed and reused, not deleted and regrown from nothing at every start.

    The sqlite3 module does not expose the call; CPython's connection object begins with its
    ``sqlite3*`` handle, which we check (its file name must be ours) before using. False (and the
    SQLite default: the WAL is deleted on close) where that does not hold."""
    if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info[:2] <= (3, 13):
        return False  # the layout is checked for these versions only
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)  # resolves to the very SQLite library the module uses
        handle = ctypes.c_void_p.from_address(id(db) + object.__basicsize__).value
        lib.sqlite3_db_handle  # noqa: B018  (the symbol must exist: the library is SQLite)
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        if handle is None or lib.sqlite3_db_filename(handle, b"main") != os.fsencode(path.resolve()):
            return False
        lib.sqlite3_file_control.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        on = ctypes.c_int(1)
        return bool(lib.sqlite3_file_control(handle, b"main", 10, ctypes.byref(on)) == 0)  # 10: PERSIST_WAL
    except (OSError, AttributeError, ImportError, ValueError):
        return False


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _private(path: Path) -> None:
    """Create ``path`` (if missing) with mode 0600 and force 0600 on it and its companions, so the
    -wal and -shm SQLite creates take the same mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
    except FileExistsError:
        pass
    for suffix in ("", *_COMPANIONS):
        with suppress(FileNotFoundError):
            os.chmod(str(path) + suffix, FILE_MODE)


class Storage:
    """Thread-safe FIFO of entries, kept in an SQLite database (WAL mode) at ``backup_path``.

    Promises:

    - Durability: when :meth:`append` (or any other write) returns, the change is committed and its
      WAL frames are flushed to the device: a SIGKILL or power cut at any later instant loses
      nothing, and at no instant leaves the store corrupt. There is no batching window.
    - Group commit: writes that arrive (from any thread, to any store of the process) while a flush
      is running share the next flush, so N concurrent appends wait about two flushes, not N. A
      write waits for its flush without holding :attr:`write_lock`. :meth:`extend` stores many
      entries in one transaction and one flush.
    - Cost: an append does not depend on the number of stored entries and writes about one database
      page to the WAL (see the README for the device bytes per append). The WAL file is
      checkpointed and kept across close and open, not deleted and regrown. Once the store is
      drained, free space above :data:`RECLAIM_BYTES` is given back to the file system.
    - Order and ids: entries come out oldest first; each has a stable integer id that is never
      reused within the store (also after it was emptied, and across restarts), plus the store's
      own :attr:`uid`, so a server can drop duplicates.
    - ``maxlen > 0`` keeps only the newest ``maxlen`` entries; drops are counted in :attr:`dropped`
      and logged (at most once a minute).
    - A damaged file is moved aside (``<path>.corrupt-<time>``), logged as an error and recorded in
      :attr:`quarantined`; the store then starts empty. It is never silently replaced.
    - The file deleted or replaced under a running store (or its ``-wal`` deleted, replaced or
      truncated) is noticed by the next write: logged as an error, and the entries the store still
      reads are rescued, with their ids and uid, into a new file at the path (if the file or its WAL
      was lost), or into ``<path>.rescued-<time>`` (if another file took its place; the store then
      goes on with that file, and an :meth:`ack` of the old ids raises :class:`StorageError`).
      Nothing is ever acknowledged into a file that is gone.
    - The file and its ``-wal``/``-shm`` are 0600 whatever the umask.
    - A uun-iot JSON backup file found at ``backup_path`` is imported once; the original is kept as
      ``<path>.uun-iot.json``.
    - ``backup_path=None`` keeps the entries in memory only (not durable), as in uun-iot.

    Entries are JSON-serialisable values or ``bytes``; a tuple comes back as a list (JSON has no
    tuples). All methods may be called from any thread; :attr:`write_lock` (re-entrant) may be held
    by a caller to make several calls atomic. Every failure raises :class:`StorageError` naming the
    store and its file (a full disk included; nothing stored is lost then), also after :meth:`close`.
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
        self.rescued: Path | None = None
        self.wal_persistent = False
        self._wal_fd: int | None = None
        self._file_id: tuple[int, int] | None = None
        self._wal_id: tuple[int, int] | None = None
        self._wal_size = 0
        self._db: sqlite3.Connection | None = None
        try:
            with self._errors("open"):
                self._db = self._open()
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
            db = self._connect_file()
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
            db = self._connect_file()
        self._track_files(db)
        # the database and its WAL file now exist: make their directory entries durable too
        fsync_dir(self.path.parent)
        return db

    def _connect_file(self) -> sqlite3.Connection:
        assert self.path is not None
        with suppress(PermissionError):  # not ours to change; the open below says what is wrong
            _private(self.path)
        db = self._connect(str(self.path))
        try:
            self.wal_persistent = _persist_wal(db, self.path)
            _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # takes effect only in a new file
        if target != ":memory:":
            db.execute("PRAGMA journal_mode=WAL")
            # COMMIT writes the WAL frames; group_commit then flushes them (shared between writers).
            # Checkpoints still sync the WAL before and the database after copying.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=-1")  # a persistent WAL is kept at its size on close
        db.executescript(_SCHEMA)
        return db

    def _track_files(self, db: sqlite3.Connection) -> None:
        """Remember the identity of the database and its WAL and open the WAL for flushing."""
        assert self.path is not None
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # a read creates the -wal
        wal = Path(str(self.path) + "-wal")
        self._wal_fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        # a store dropped without close() (SQLite closes its own files then) must not leak this one
        self._wal_closer = weakref.finalize(self, os.close, self._wal_fd)
        st = os.fstat(self._wal_fd)
        self._wal_id, self._wal_size = _identity(st), st.st_size
        self._file_id = _identity(os.stat(self.path))
        _private(self.path)

    def _quarantine(self, reason: str) -> None:
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", *_COMPANIONS):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, str(aside) + suffix)
        fsync_dir(self.path.parent)
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
        _write_store(tmp, [(n, *_encode(item, time.time(), self.storage_id)) for n, item in enumerate(items, 1)], {})
        if not keep.exists():
            os.link(self.path, keep)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
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

    # -- the file under us -----------------------------------------------------------------------

    def _file_problem(self) -> str | None:
        """Why the file at the path is no longer the one this store writes, or None."""
        assert self.path is not None and self._wal_fd is not None
        try:
            if _identity(os.stat(self.path)) != self._file_id:
                return f"{self.path} was replaced by another file"
        except FileNotFoundError:
            return f"{self.path} was deleted"
        wal = f"{self.path}-wal"
        try:
            if _identity(os.stat(wal)) != self._wal_id:
                return f"{wal} was replaced by another file"
        except FileNotFoundError:
            return f"{wal} was deleted"
        if os.fstat(self._wal_fd).st_size < self._wal_size:
            return f"{wal} was truncated"
        return None

    def _ensure_file(self) -> bool:
        """Before a write: if the file is not ours any more, rescue what we can and reopen (under
        the write lock). False when the file now at the path is another store (other ids)."""
        if self.path is None or self._db is None:
            return True
        problem = self._file_problem()
        if problem is None:
            return True
        assert self._wal_fd is not None
        logger.error(
            "storage %s: %s under the running store; writing on would acknowledge entries into a file that is gone",
            self.storage_id,
            problem,
        )
        rows: list[tuple[int, float, int, bytes]] | None
        try:
            rows = self._db.execute("SELECT id, created, kind, payload FROM entries ORDER BY id").fetchall()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            meta["nextId"] = str(max(int(meta.get("nextId", 1)), rows[-1][0] + 1 if rows else 1))
        except sqlite3.Error as exc:
            rows, meta = None, {}
            logger.error(
                "storage %s: the old file cannot be read any more (%s): its entries are lost", self.storage_id, exc
            )
        wal_is_ours = self._wal_id == _identity_or_none(f"{self.path}-wal")
        current = _identity_or_none(self.path)
        ours = current is None or current == self._file_id  # gone, or only its WAL was hit
        tmp = self.path.with_name(f"{self.path.name}.rescuing")
        aside = self.path.with_name(f"{self.path.name}.rescued-{time.strftime('%Y%m%dT%H%M%S')}")
        if rows is not None:
            # on disk first: if this fails (a full disk, say), the old connection still holds them
            # and the next write tries again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_store(tmp if ours else aside, rows, meta)
        self._close_files()
        if wal_is_ours or ours:
            # companions of the lost file: the database now at the path must not pick up their frames
            for suffix in _COMPANIONS:
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        if rows is not None and ours:
            # what this store held is the truth: put it back at the path
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
            logger.error("storage %s: rescued its %d entries into a new %s", self.storage_id, len(rows), self.path)
        elif rows is not None:
            self.rescued = aside
            logger.error(
                "storage %s: rescued its %d entries into %s (not delivered from there); going on with "
                "the file now at %s",
                self.storage_id,
                len(rows),
                aside,
                self.path,
            )
        uid = self.uid
        self._db = self._open()
        self._count = self._scalar("SELECT COUNT(*) FROM entries")
        self.uid = self._load_uid()
        return self.uid == uid

    def _close_files(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._wal_fd is not None:
            self._wal_closer()
            self._wal_fd = None

    # -- helpers ---------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"storage {self.storage_id!r} ({self.path if self.path is not None else 'in memory'})"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn SQLite and OS failures of ``action`` into a :class:`StorageError` naming the store."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            why = "the disk is full" if code == sqlite3.SQLITE_FULL else str(exc)
            raise StorageError(f"{self._where()}: cannot {action}: {why}") from exc
        except OSError as exc:
            why = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
            raise StorageError(f"{self._where()}: cannot {action}: {why}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"storage {self.storage_id!r} is closed")
        return self._db

    @contextmanager
    def _transaction(self, action: str, *, by_id: bool = False) -> Iterator[sqlite3.Connection]:
        """One durable transaction under the write lock: committed when the block ends, rolled back
        (and the entry count re-read) when it raises; then, without the lock, wait for the shared
        flush that makes it durable. ``by_id``: the change names entries of this store, so it is
        refused if the file at the path turned out to be another store."""
        ticket = None
        with self._errors(action):
            with self.write_lock:
                self._conn()
                if not self._ensure_file() and by_id:
                    raise StorageError(
                        f"{self._where()}: did not {action}: the file at the path is another store now "
                        f"(this store's entries were rescued into {self.rescued})"
                    )
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
                if self._wal_fd is not None and self._wal_id is not None:
                    self._wal_size = max(self._wal_size, os.fstat(self._wal_fd).st_size)
                    ticket = group_commit.register(self._wal_fd, self._wal_id)
            if ticket is not None:
                group_commit.wait(ticket)

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self.write_lock:
            value = self._conn().execute(sql, params).fetchone()[0]
        return int(value) if value is not None else 0

    def _next_id(self, db: sqlite3.Connection) -> int:
        top = db.execute("SELECT MAX(id) FROM entries").fetchone()[0]
        mark = db.execute("SELECT value FROM meta WHERE key = 'nextId'").fetchone()
        return max(1, (top or 0) + 1, int(mark[0]) if mark else 1)

    def _note_top_removed(self, db: sqlite3.Connection, top_before: int | None) -> None:
        """Within a deleting transaction: if the newest entry went, record the id high-water mark
        (the only time meta is written), so ids are not reused after a drain or a restart."""
        if top_before is None:
            return
        top = db.execute("SELECT MAX(id) FROM entries").fetchone()[0]
        if top is None or top < top_before:
            mark = db.execute("SELECT value FROM meta WHERE key = 'nextId'").fetchone()
            if not mark or int(mark[0]) <= top_before:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('nextId', ?)", (str(top_before + 1),))

    def _insert(self, items: Iterable[Any], first_id: int | None = None) -> list[int]:
        now = time.time()
        rows = [_encode(item, now, self.storage_id) for item in items]
        if not rows:
            return []
        with self._transaction("store entries") as db:
            start = self._next_id(db) if first_id is None else first_id
            ids = list(range(start, start + len(rows)))
            db.executemany(
                "INSERT INTO entries (id, created, kind, payload) VALUES (?, ?, ?, ?)",
                [(i, *row) for i, row in zip(ids, rows, strict=True)],
            )
            if first_id is not None:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('lowestId', ?)", (str(first_id),))
            self._count += len(rows)
            self._trim_locked()
        return ids

    def _trim_locked(self) -> None:
        excess = self._count - self.maxlen if self.maxlen else 0
        if excess <= 0:
            return
        db = self._conn()
        top = db.execute("SELECT MAX(id) FROM entries").fetchone()[0]
        db.execute("DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?)", (excess,))
        self._note_top_removed(db, top)
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

    def _reclaim_if_drained(self) -> None:
        """Give a drained store's free pages back to the file system (VACUUM of an empty table is
        cheap); the WAL keeps its size for reuse."""
        if self.path is None:
            return
        with self._errors("reclaim free space"), self.write_lock:
            db = self._conn()
            if self._count:
                return
            free = db.execute("PRAGMA freelist_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
            if free < RECLAIM_BYTES:
                return
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if self._wal_fd is not None:
                self._wal_size = max(self._wal_size, os.fstat(self._wal_fd).st_size)
        logger.info(
            "storage %s: drained; gave %.1f MB of free pages back to the file system", self.storage_id, free / 1e6
        )

    # -- uun-iot API -----------------------------------------------------------------------------

    def append(self, data: Any, backup: bool = True) -> int:
        """Store ``data`` durably at the end of the queue and return its entry id.

        Blocks until the entry is flushed to the device (sharing the flush with concurrent writers).
        ``backup`` is accepted for uun-iot compatibility and ignored: every append is durable.
        Raises :class:`StorageError` if ``data`` is neither JSON-serialisable nor ``bytes``, or the
        write fails (a full disk); nothing is stored then.
        """
        return self._insert([data])[0]

    def extend(self, items: Iterable[Any]) -> list[int]:
        """Append several entries in one durable transaction and one flush (all or none); return
        their ids. Raises :class:`StorageError` as :meth:`append` does."""
        return self._insert(items)

    def merge(self, data: list[Any], new_data: bool = True, backup: bool = True) -> None:
        """uun-iot's merge: ``new_data=True`` appends ``data`` at the end, ``False`` puts it before
        every stored entry (it is older). With a limit, the oldest entries are dropped first."""
        if not new_data and data:
            with self.write_lock, self._errors("store entries"):
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
        """Delete every entry (durably)."""
        with self._transaction("delete every entry") as db:
            top = db.execute("SELECT MAX(id) FROM entries").fetchone()[0]
            db.execute("DELETE FROM entries")
            self._note_top_removed(db, top)
            self._count = 0
        self._reclaim_if_drained()

    def is_empty(self) -> bool:
        """True when no entry is stored."""
        return self._count == 0

    def has_backup(self) -> bool:
        """True when the entries are kept in a file (uun-iot's name); False for ``backup_path=None``."""
        return self.path is not None

    def __len__(self) -> int:
        return self._count

    def trim(self) -> None:
        """Drop the oldest entries beyond ``maxlen`` (no-op without a limit)."""
        with self._transaction("drop entries over the limit"):
            self._trim_locked()

    @property
    def data(self) -> StoredData:
        """A read-only snapshot of all stored data, oldest first (O(n); prefer :meth:`oldest`).

        It compares equal to a list of the same items; changing it raises :class:`TypeError`
        (uun-iot's ``data`` was the live list, so a change here would silently be lost)."""
        return StoredData(entry.data for entry in self)

    def __iter__(self) -> Iterator[Entry]:
        with self.write_lock, self._errors("read entries"):
            rows = self._conn().execute("SELECT id, created, kind, payload FROM entries ORDER BY id").fetchall()
        return iter([_decode(row) for row in rows])

    # -- delivery --------------------------------------------------------------------------------

    def oldest(self, limit: int, after: int | None = None) -> list[Entry]:
        """Return up to ``limit`` of the oldest entries, oldest first, without removing them; with
        ``after``, only entries whose id is greater (a reader that has the entries up to ``after``
        in flight reads on from there without reading them again)."""
        return [_decode(row) for row in self._oldest_rows(limit, after)]

    def oldest_raw(self, limit: int, after: int | None = None) -> list[RawEntry]:
        """As :meth:`oldest`, but the entries as stored (:class:`RawEntry`): JSON payloads as their
        encoded text, not decoded, so a sender can splice them into its message without decoding
        and encoding each again."""
        return [
            RawEntry(entry_id, created, payload, kind == _BYTES)
            for entry_id, created, kind, payload in self._oldest_rows(limit, after)
        ]

    def _oldest_rows(self, limit: int, after: int | None) -> list[tuple[int, float, int, bytes]]:
        with self.write_lock, self._errors("read entries"):
            db = self._conn()
            if after is None:
                query = db.execute("SELECT id, created, kind, payload FROM entries ORDER BY id LIMIT ?", (limit,))
            else:
                query = db.execute(
                    "SELECT id, created, kind, payload FROM entries WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
                )
            rows: list[tuple[int, float, int, bytes]] = query.fetchall()
        return rows

    def ack(self, ids: Iterable[int]) -> int:
        """Delete exactly the entries with these ids (delivered); unknown ids are ignored.

        Returns how many entries were deleted. The deletion is one durable transaction (shared
        flush); raises :class:`StorageError` if it fails (nothing is deleted then).
        """
        id_list = list(ids)
        if not id_list:
            return 0
        deleted = 0
        # ids of another type (uun-iot callers) are deleted one by one, compared as SQLite compares them
        runs = _runs(id_list) if all(type(i) is int for i in id_list) else [(i, i) for i in id_list]
        with self._transaction("delete delivered entries", by_id=True) as db:
            top = db.execute("SELECT MAX(id) FROM entries").fetchone()[0]
            # a delivered batch is mostly one run of consecutive ids: one range delete for it
            ranges = [(first, last) for first, last in runs if last > first]
            if ranges:
                deleted += db.executemany("DELETE FROM entries WHERE id BETWEEN ? AND ?", ranges).rowcount
            singles = [first for first, last in runs if last == first]
            for start in range(0, len(singles), 500):
                chunk = singles[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += db.execute(f"DELETE FROM entries WHERE id IN ({marks})", chunk).rowcount
            self._note_top_removed(db, top)
            self._count -= deleted
        if self._count == 0:
            self._reclaim_if_drained()
        return deleted

    def close(self) -> None:
        """Close the database (SQLite checkpoints the WAL, which is kept for the next open).
        Idempotent; later calls raise :class:`StorageError`."""
        with self.write_lock:
            self._close_files()

    @property
    def closed(self) -> bool:
        return self._db is None

    def __repr__(self) -> str:
        return f"Storage({self.storage_id!r}, {str(self.path) if self.path else None!r}, entries={self._count})"


def _identity_or_none(path: str | Path) -> tuple[int, int] | None:
    try:
        return _identity(os.stat(path))
    except FileNotFoundError:
        return None


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older version to the current schema (once, at open): the entries
    table loses AUTOINCREMENT, its sequence becomes the 'nextId' mark."""
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'").fetchone()
    if row is None or "AUTOINCREMENT" not in row[0].upper():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        if seq:
            mark = db.execute("SELECT value FROM meta WHERE key = 'nextId'").fetchone()
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('nextId', ?)",
                (str(max(int(seq[0]) + 1, int(mark[0]) if mark else 1)),),
            )
        db.execute("ALTER TABLE entries RENAME TO entries_old")
        db.execute(_SCHEMA.split(";")[0])
        db.execute("INSERT INTO entries SELECT id, created, kind, payload FROM entries_old")
        db.execute("DROP TABLE entries_old")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _write_store(path: Path, rows: Sequence[tuple[int, float, int, bytes]], meta: dict[str, str]) -> None:
    """Write a complete store (entries with their ids, and meta) to the new file ``path``, durably."""
    for suffix in ("", *_COMPANIONS):
        Path(str(path) + suffix).unlink(missing_ok=True)
    _private(path)
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        db.executemany("INSERT INTO entries (id, created, kind, payload) VALUES (?, ?, ?, ?)", rows)
        db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
        db.execute("COMMIT")
    finally:
        db.close()
    _fsync_file(path)
    fsync_dir(path.parent)


# -- inspecting and exporting a storage file (the ``uun-gateway storage`` command) ----------------


class StorageKind(enum.Enum):
    """What a file given as a storage turned out to be."""

    STORAGE = "a uun-gateway storage"
    EMPTY = "an empty file (opening it creates a storage)"
    UUNIOT_JSON = "a uun-iot JSON backup (imported when its module opens it)"
    DAMAGED = "a damaged SQLite database (opening it moves it aside)"
    FOREIGN_SQLITE = "an SQLite database, but not a uun-gateway storage (no entries/meta tables)"
    OTHER = "not a uun-gateway storage, nor a uun-iot JSON backup"
    MISSING = "no such storage file"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class StorageInspection:
    """The result of :func:`inspect_storage_file`: the ``kind`` of file, whether the file and its
    directory are ``writable`` (SQLite needs both for its WAL), and ``detail`` (the OS error of an
    unreadable file)."""

    path: Path
    kind: StorageKind
    writable: bool
    detail: str = ""

    @property
    def problem(self) -> str | None:
        """Why the file is not a storage to look into as it is, or None (a storage, or a damaged one,
        which opening it moves aside). Opening an empty file or a uun-iot backup would change it."""
        if self.kind in (
            StorageKind.MISSING,
            StorageKind.EMPTY,
            StorageKind.UUNIOT_JSON,
            StorageKind.FOREIGN_SQLITE,
            StorageKind.OTHER,
        ):
            return str(self.kind.value)
        if self.kind is StorageKind.UNREADABLE:
            return f"cannot read the storage file: {self.detail}"
        if not self.writable:
            return "cannot open the storage: no write access to the file or its directory"
        return None


def inspect_storage_file(path: str | os.PathLike[str]) -> StorageInspection:
    """Look at ``path`` without changing it: is it a storage, a uun-iot backup, another program's
    database, damaged? Never raises for a bad file; the answer says what it is."""
    target = Path(path)
    writable = os.access(target, os.W_OK) and os.access(target.parent, os.W_OK)
    try:
        with open(target, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return StorageInspection(target, StorageKind.MISSING, False)
    except OSError as exc:
        return StorageInspection(target, StorageKind.UNREADABLE, writable, exc.strerror or str(exc))
    if not head:
        return StorageInspection(target, StorageKind.EMPTY, writable)
    if head != _SQLITE_MAGIC:
        kind = StorageKind.UUNIOT_JSON if head.lstrip()[:1] == b"[" else StorageKind.OTHER
        return StorageInspection(target, kind, writable)
    try:
        probe = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in probe.execute("PRAGMA table_info(entries)")}
        finally:
            probe.close()
    except sqlite3.DatabaseError:
        return StorageInspection(target, StorageKind.DAMAGED, writable)
    if {"entries", "meta"} <= tables and {"id", "created", "kind", "payload"} <= columns:
        return StorageInspection(target, StorageKind.STORAGE, writable)
    return StorageInspection(target, StorageKind.FOREIGN_SQLITE, writable)


def export_uuniot(storage: Storage) -> str:
    """The stored data as a uun-iot backup file's text: a JSON list of the entries' data, oldest
    first (uun-iot keeps neither ids nor times). Raises :class:`StorageError` when an entry is
    ``bytes``, which such a file cannot hold."""
    entries = list(storage)
    binary = [e.id for e in entries if isinstance(e.data, bytes)]
    if binary:
        shown = ", ".join(f"#{i}" for i in binary[:10]) + (" …" if len(binary) > 10 else "")
        raise StorageError(
            f"{storage._where()}: {len(binary)} entries are bytes ({shown}), which a uun-iot JSON backup cannot hold"
        )
    return json.dumps([e.data for e in entries])


def storage_command(path: str, file: str | None, *, show: int, output: str | None) -> int:
    """``uun-gateway storage FILE [--show N]`` and ``uun-gateway storage export FILE [-o OUT]``:
    print to stdout, problems to stderr; return the exit code."""
    from datetime import UTC, datetime

    from .files import atomic_write

    exporting = path == "export" and file is not None
    if file is not None and not exporting:
        print(
            f"uun-gateway storage: unexpected argument {file!r} (did you mean 'storage export FILE'?)", file=sys.stderr
        )
        return 2
    if output is not None and not exporting:
        print("uun-gateway storage: -o/--output is for 'storage export FILE'", file=sys.stderr)
        return 2
    target = Path(file if exporting and file is not None else path)
    found = inspect_storage_file(target)
    if found.kind is StorageKind.UUNIOT_JSON and exporting:
        print(f"{target}: already a uun-iot JSON backup", file=sys.stderr)
        return 1
    if found.problem is not None:
        print(f"{target}: {found.problem}", file=sys.stderr)
        return 1
    try:
        storage = Storage(target.stem, target)
    except (OSError, StorageError) as exc:
        print(f"{target}: cannot open the storage: {exc}", file=sys.stderr)
        return 1
    try:
        if storage.quarantined:
            print(f"warning: the file was damaged and was moved aside to {storage.quarantined}", file=sys.stderr)
            return 1
        if exporting:
            text = export_uuniot(storage)
            if output is None:
                print(text)
            else:
                atomic_write(output, text + "\n")
                print(
                    f"{target}: wrote its {len(storage)} entries to {output} as a uun-iot backup (ids and times "
                    "are not part of that format; the entries stay in the storage)",
                    file=sys.stderr,
                )
            return 0
        entries = storage.oldest(show)
        print(f"{target}: {len(storage)} entries (store uid {storage.uid})")
        for entry in entries:
            when = datetime.fromtimestamp(entry.created, UTC).isoformat(timespec="seconds")
            data = (
                f"<{len(entry.data)} bytes>"
                if isinstance(entry.data, bytes)
                else json.dumps(entry.data, ensure_ascii=False)
            )
            print(f"  #{entry.id}  {when}  {data[:200]}")
        return 0
    except (OSError, StorageError) as exc:
        print(f"{target}: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()


def _runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """The distinct ``ids`` as runs of consecutive integers ``(first, last)``, ascending."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(ids)):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


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


#: Where no storage belongs, whatever the permissions say.
_FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def state_directory(config_path: Path | None = None) -> Path:
    """The directory storages of a remote config must stay in: ``$STATE_DIRECTORY`` (its first
    entry) under systemd, else the directory of the config file ``config_path``, else the working
    directory (where relative paths resolve)."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    return config_path.absolute().parent if config_path is not None else Path.cwd()


def _looks_like_storage(path: Path) -> bool:
    """Whether an existing file may be opened as a storage: empty, an SQLite database (damaged or
    not: opening moves a damaged one aside) or a uun-iot JSON backup (a list)."""
    with open(path, "rb") as f:
        head = f.read(64)
    return not head or head.startswith(_SQLITE_MAGIC) or head.lstrip()[:1] == b"["


def storage_location_errors(
    gateway: Mapping[str, Any],
    module_ids: Iterable[str],
    *,
    confine_to: Path | None = None,
    trusted: Mapping[str, Any] | None = None,
) -> list[str]:
    """Storage locations of ``module_ids`` the gateway could not or must not use, one line each
    naming the config key (and, for a relative path, the directory it is relative to: the working
    directory, as the service resolves it); checked before anything starts.

    Refused: a directory, a parent that is not a directory, no write access, a symlink loop, a
    place under /proc, /sys or /dev, an existing file that is read-only, not a regular file or not
    a storage (never moved aside or overwritten). With ``confine_to`` (remote configs) the resolved
    path, symlinks included, must lie inside that directory, unless it is where ``trusted`` (the
    ``gateway`` section in effect) already has it. Reads at most 64 bytes of a file."""
    errors = []
    for module_id in module_ids:
        path, _ = storage_location(gateway, module_id)
        where = storage_setting_key(gateway, module_id)
        shown = repr(str(path)) if path.is_absolute() else f"{str(path)!r} (relative to {str(Path.cwd())!r})"
        kept = trusted is not None and storage_location(trusted, module_id)[0] == path
        problem = _location_problem(path.absolute(), shown, None if kept else confine_to)
        if problem:
            errors.append(f"{where}: {problem}")
    return errors


def _location_problem(path: Path, shown: str, confine_to: Path | None) -> str | None:
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        return f"{shown} cannot be resolved ({exc}); expected a storage file path"
    if any(resolved == root or root in resolved.parents for root in _FORBIDDEN_ROOTS):
        return f"{shown} resolves to {str(resolved)!r}, under a system directory; expected a storage file path"
    if confine_to is not None and confine_to.resolve() not in resolved.parents:
        return (
            f"{shown} resolves to {str(resolved)!r}, outside the state directory {str(confine_to.resolve())!r}; "
            "a remote config may place storages only inside it"
        )
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if existing == path:
        if path.is_dir():
            return f"{shown} is a directory; expected a storage file path"
        if not path.is_file():
            return f"{shown} exists and is not a regular file; expected a storage file path"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"cannot write {shown}: the file exists and is read-only for this user"
        try:
            if not _looks_like_storage(path):
                return f"{shown} exists and is not a uun-gateway storage nor a uun-iot backup; it is left alone"
        except OSError as exc:
            return f"cannot read {shown}: {exc.strerror or exc}"
        existing = path.parent
    elif not existing.is_dir():
        return f"cannot create {shown}: {str(existing)!r} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write {shown}: no write access to {str(existing)!r}"
    return None
