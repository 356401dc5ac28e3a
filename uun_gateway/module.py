"""Module: the base class of gateway modules — config view, storage and send-with-backup."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .config import validate_section
from .errors import ConfigError, StorageError
from .storage import Storage, storage_location

if TYPE_CHECKING:
    from .host import ModuleHost
    from .readings import Reading
    from .uuapp import UuAppClient

logger = logging.getLogger(__name__)

_MISSING: Any = object()
_SCOPES = ("module", "gateway", "based")


def module_id_from_str(name: str) -> str:
    """uun-iot's module id rule: the first letter lowercased (``WeatherConditions`` -> ``weatherConditions``)."""
    return name[:1].lower() + name[1:]


class ModuleStats:
    """Counters the gateway and the module keep about a module; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.handler_errors = 0
        self.send_failures = 0
        self.last_send_ok: float | None = None
        self.last_error: str | None = None
        self.problem: str | None = None

    def record_handler_error(self, description: str) -> None:
        with self._lock:
            self.handler_errors += 1
            self.last_error = description

    def record_send(self, ok: bool, error: str | None = None) -> None:
        with self._lock:
            if ok:
                self.last_send_ok = time.time()
            else:
                self.send_failures += 1
                if error:
                    self.last_error = error

    def report_problem(self, description: str) -> None:
        """Declare the module unhealthy until :meth:`clear_problem`: the gateway's health shows it
        and its ``stalled()`` lists it, so a supervising watchdog restarts the service."""
        with self._lock:
            self.problem = description

    def clear_problem(self) -> None:
        with self._lock:
            self.problem = None


class Module:
    """Base class of a gateway module.

    ``config`` is the ``gateway`` section of the configuration (as in uun-iot); the module's own
    section is ``config[self.id]``, read with :meth:`_c`. ``uuclient`` is the gateway's
    :class:`~uun_gateway.uuapp.UuAppClient` (None when no uuApp is configured).

    Class attributes a subclass may set:

    - ``id``: the module id; by default the class name with its first letter lowercased;
    - ``config_schema``: JSON Schema of ``gateway.<id>``, composed into the config schema;
    - ``timer_defaults``: default periods of its tick timers (key ``None`` for a plain ``@on("tick")``),
      used when ``gateway.moduleTimers.<id>`` does not name them;
    - ``priority``: a number ordering the start (ascending) and stop (descending) of modules, when
      ``gateway.modulePriority.<id>`` does not set one (default 0; see :mod:`uun_gateway.priority`);
    - ``updates_in_place``: whether a changed ``gateway.<id>`` section is applied to the running
      module (by its ``@on("update")`` handlers) instead of restarting it (default: whether it has
      ``@on("update")`` handlers; see :mod:`uun_gateway.liveset`).

    Set by the host that loads the module (:meth:`attach`): ``gateway``, a
    :class:`~uun_gateway.host.ModuleHost` (None outside a gateway). ``logger`` is
    ``uun_gateway.modules.<id>`` (the loggers of a built-in module package's parts are its
    children, so one name filters a module's records). ``stats`` holds the module's counters.
    Constructing a module does no I/O (the storage is opened on first use); it raises
    :class:`ConfigError` when its section does not match ``config_schema``.

    Plugin command-line commands are registered apart from the class (entry-point group
    ``uun_gateway.commands``, see :class:`~uun_gateway.plugins.Commands`), so that running the
    gateway never imports them.
    """

    id: ClassVar[str] = "module"
    config_schema: ClassVar[dict[str, Any] | None] = None
    timer_defaults: ClassVar[Mapping[str | None, float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "id" not in cls.__dict__:
            cls.id = module_id_from_str(cls.__name__)

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        uuclient: UuAppClient | Callable[..., Any] | None = None,
        *,
        uucmd: Callable[..., Any] | None = None,
        storage: Storage | bool = True,
    ) -> None:
        self._config: Mapping[str, Any] = config if config is not None else {}
        if self.config_schema is not None and self.id in self._config:
            errors = validate_section(self.id, self._config[self.id], self.config_schema)
            if errors:
                raise ConfigError(errors)
        if uuclient is not None and not hasattr(uuclient, "post") and callable(uuclient):
            uucmd, uuclient = uucmd or uuclient, None  # uun-iot 0.10's Module(config, uucmd)
        self._uucmd = uucmd
        self._config_manager_base: str | None = None
        self.uuclient: UuAppClient | None = uuclient  # type: ignore[assignment]
        self.gateway: ModuleHost | None = None
        self.stats = ModuleStats()
        self._own_stop = threading.Event()
        self.logger = logging.getLogger(f"uun_gateway.modules.{self.id}")
        self._storage_lock = threading.Lock()
        self._storage_enabled = storage is not False
        self._storage_obj: Storage | None = storage if isinstance(storage, Storage) else None
        self._storage_given = isinstance(storage, Storage)

    # -- the host's side ----------------------------------------------------------------------

    def attach(self, host: ModuleHost) -> None:
        """Called once by the host that loads this module, before it starts."""
        self.gateway = host

    @property
    def stop_event(self) -> threading.Event:
        """Set when the module must stop: the host's ``stopping`` under a host, else an event of its
        own that :meth:`request_stop` sets. A long tick handler waits on it instead of sleeping."""
        return self.gateway.stopping if self.gateway is not None else self._own_stop

    def request_stop(self) -> None:
        """Set :attr:`stop_event` of a module running without a host (under one, the host's stop does)."""
        self._own_stop.set()

    def replace_config(self, gateway_section: Mapping[str, Any]) -> None:
        """Use ``gateway_section`` from now on (the host calls it before the ``@on("update")`` handlers
        run); an already opened storage stays where it is until it is closed."""
        self._config = gateway_section

    def stored_count(self) -> int | None:
        """Entries in this module's storage, or None when the storage was never opened (or is closed):
        asking never opens a storage."""
        with self._storage_lock:
            opened = self._storage_obj
        return len(opened) if opened is not None and not opened.closed else None

    # -- readings ----------------------------------------------------------------------------------

    def publish(self, readings: Iterable[Reading], entries: Iterable[Any] | None = None) -> list[int]:
        """Store readings in this module's storage (one durable transaction) and hand them to the
        host's alarm rules and reading listeners; return the entry ids.

        The stored entries are ``reading.entry()``, or ``entries`` when given: the module's own records
        (any number; one record may carry several readings). The readings reach the alarm rules only
        after they are stored, in the calling thread; without a host they are only stored. Raises
        :class:`~uun_gateway.errors.StorageError` (then nothing is stored or evaluated).
        """
        batch = list(readings)
        stored = [r.entry() for r in batch] if entries is None else list(entries)
        ids = self.storage.extend(stored) if stored else []
        if self.gateway is not None and batch:
            self.gateway.publish(batch)
        return ids

    # -- configuration ---------------------------------------------------------------------------

    def _c(
        self, key: str | None = None, default: Any = _MISSING, *, scope: str = "based", must_exist: bool = True
    ) -> Any:
        """Read ``gateway.<id>.<key>``; ``key`` is split on ``/``, and no key means the whole section.

        ``scope``: ``"module"`` reads ``gateway.<id>``, ``"gateway"`` the ``gateway`` section itself,
        and the default ``"based"`` reads ``gateway.<base>`` where the base is the id unless
        :meth:`_set_config_manager_base` set another (as in uun-iot).

        Returns ``default`` when a part of the path is missing; without a default raises ``KeyError``
        naming the full path, or returns None when ``must_exist`` is False. uun-iot's positional
        scope (``self._c("a", ConfigScopeEnum.GATEWAY)``) is understood too.
        """
        if isinstance(default, enum.Enum) and default.value in _SCOPES:
            scope, default = default.value, _MISSING
        scope = scope.value if isinstance(scope, enum.Enum) else scope
        if scope not in _SCOPES:
            raise ValueError(f"module {self.id}: unknown config scope {scope!r}; expected one of {', '.join(_SCOPES)}")
        section = None if scope == "gateway" else (self._config_manager_base if scope == "based" else None) or self.id
        node: Any = self._config
        path = ["gateway"]
        for part in ([section] if section else []) + (key.split("/") if key else []):
            path.append(part)
            if not isinstance(node, Mapping) or part not in node:
                if default is not _MISSING:
                    return default
                if not must_exist:
                    return None
                raise KeyError(f"{'.'.join(path)} is not configured")
            node = node[part]
        return node

    _config_manager = _c

    def _set_config_manager_base(self, base: str | None) -> None:
        """Make ``scope="based"`` reads of :meth:`_c` look under ``gateway.<base>`` (None: the id)."""
        self._config_manager_base = base

    # -- storage ---------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """This module's :class:`Storage`, from ``gateway.moduleBackupStorage.<id>`` (a path or
        ``{"path", "limit"}``), else ``<gateway.storageDir>/<id>.sqlite``. Opened on first use."""
        with self._storage_lock:
            if not self._storage_enabled:
                raise StorageError(f"module {self.id} was created with storage=False; it has no storage")
            if self._storage_obj is None or (self._storage_obj.closed and not self._storage_given):
                self._storage_obj = Storage(self.id, *storage_location(self._config, self.id))
            return self._storage_obj

    @property
    def has_storage(self) -> bool:
        """Whether the module keeps a storage at its configured location (False when it was
        constructed with ``storage=False`` or given a :class:`Storage` of its own)."""
        return self._storage_enabled and not self._storage_given

    @property
    def _storage(self) -> Storage:
        """uun-iot's name for :attr:`storage`."""
        return self.storage

    def close_storage(self) -> None:
        """Close the storage if it was opened; the next use of :attr:`storage` reopens it."""
        with self._storage_lock:
            if self._storage_obj is not None:
                self._storage_obj.close()

    def _send_storage(
        self,
        usecase: Callable[[list[Any]], list[Any] | None] | None = None,
        batch_size: int = 100,
        stop: threading.Event | None = None,
    ) -> bool:
        """Send the stored entries with ``usecase``, oldest first, in batches of ``batch_size``.

        ``usecase(data_list)`` sends a batch and returns the items of that list that FAILED (as in
        uun-iot); only the others are deleted, and the failed ones stay in front, in order. The
        storage lock is not held while ``usecase`` runs, so producers never wait for the network.
        If ``usecase`` raises, returns None (or no list), or returns an item that is not in the batch,
        nothing of that batch is deleted. Batches follow each other while every entry is accepted,
        until the store is empty or ``stop`` is set.

        Returns True when everything sent was accepted. A crash at any point loses nothing: entries
        are deleted only after the usecase accepted them (so an entry may be sent twice, never lost).
        """
        usecase = usecase or self._uucmd
        if usecase is None:
            raise TypeError(f"module {self.id}: _send_storage needs a usecase function (or uucmd= at construction)")
        if not self._storage_enabled:
            return True
        storage = self.storage
        while not (stop is not None and stop.is_set()):
            entries = storage.oldest(batch_size)
            if not entries:
                return True
            batch = [entry.data for entry in entries]
            try:
                failed = usecase(batch)
            except Exception as exc:
                logger.warning("module %s: sending %d entries failed: %s", self.id, len(batch), exc, exc_info=True)
                self.stats.record_send(False, f"send failed: {exc}")
                return False
            if not isinstance(failed, list | tuple):
                got = "None" if failed is None else f"a {type(failed).__name__}"
                logger.error(
                    "module %s: the send function returned %s instead of the list of failed entries; "
                    "keeping all %d entries",
                    self.id,
                    got,
                    len(batch),
                )
                self.stats.record_send(False, f"send function returned {got}")
                return False
            rejected = _match_failed(batch, list(failed))
            if rejected is None:
                logger.error(
                    "module %s: the send function returned failed entries that are not in the batch it was "
                    "given; keeping all %d entries",
                    self.id,
                    len(batch),
                )
                self.stats.record_send(False, "send function returned unknown failed entries")
                return False
            storage.ack(entry.id for n, entry in enumerate(entries) if n not in rejected)
            if rejected:
                logger.warning(
                    "module %s: %d of %d entries were not accepted; kept", self.id, len(rejected), len(batch)
                )
                self.stats.record_send(False, f"{len(rejected)} entries not accepted")
                return False
            self.stats.record_send(True)
        return True

    def _send_data(self, data: Any, usecase: Callable[[Any], Any] | None = None) -> Any:
        """Send ``data`` now with ``usecase`` (default: ``uucmd``), bypassing the storage; returns what
        the usecase returns. Raises :class:`TypeError` when there is no usecase, and whatever the
        usecase raises."""
        usecase = usecase or self._uucmd
        if usecase is None:
            raise TypeError(f"module {self.id}: _send_data needs a usecase function (or uucmd= at construction)")
        return usecase(data)


def _match_failed(batch: list[Any], failed: list[Any]) -> set[int] | None:
    """Positions in ``batch`` of the ``failed`` items: by identity, else by the first equal item.
    None when an item matches nothing (deleting the batch would lose what it stands for)."""
    by_identity = {id(item): n for n, item in enumerate(batch)}
    positions: set[int] = set()
    for item in failed:
        n = by_identity.get(id(item))
        if n is None or n in positions:
            n = next((i for i, other in enumerate(batch) if i not in positions and other == item), None)
        if n is None:
            return None
        positions.add(n)
    return positions
