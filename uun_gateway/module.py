"""Module: the base class of gateway modules — config view, storage and send-with-backup."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .config import validate_section
from .errors import ConfigError
from .storage import Storage, storage_location

if TYPE_CHECKING:
    from .host import ModuleHost
    from .uuapp import UuAppClient

logger = logging.getLogger(__name__)

_MISSING: Any = object()


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


class Module:
    """Base class of a gateway module.

    ``config`` is the ``gateway`` section of the configuration (as in uun-iot); the module's own
    section is ``config[self.id]``, read with :meth:`_c`. ``uuclient`` is the gateway's
    :class:`~uun_gateway.uuapp.UuAppClient` (None when no uuApp is configured).

    Class attributes a subclass may set:

    - ``id``: the module id; by default the class name with its first letter lowercased;
    - ``config_schema``: JSON Schema of ``gateway.<id>``, composed into the config schema;
    - ``timer_defaults``: default periods of its tick timers (key ``None`` for a plain ``@on("tick")``),
      used when ``gateway.moduleTimers.<id>`` does not name them.

    Set by the host that loads the module (:meth:`attach`): ``gateway``, a
    :class:`~uun_gateway.host.ModuleHost` (None outside a gateway). ``stats`` holds the module's
    counters. Constructing a module does no I/O (the storage is opened on first use); it raises
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

    def __init__(self, config: Mapping[str, Any] | None = None, uuclient: UuAppClient | None = None) -> None:
        self._config: Mapping[str, Any] = config if config is not None else {}
        if self.config_schema is not None and self.id in self._config:
            errors = validate_section(self.id, self._config[self.id], self.config_schema)
            if errors:
                raise ConfigError(errors)
        self.uuclient = uuclient
        self.gateway: ModuleHost | None = None
        self.stats = ModuleStats()
        self._own_stop = threading.Event()
        self.logger = logging.getLogger(f"uun_gateway.module.{self.id}")
        self._storage_lock = threading.Lock()
        self._storage_obj: Storage | None = None

    # -- the host's side ----------------------------------------------------------------------

    def attach(self, host: ModuleHost) -> None:
        """Called once by the host that loads this module, before it starts."""
        self.gateway = host

    @property
    def stop_event(self) -> threading.Event:
        """Set when the module must stop: the host's ``stopev`` under a host, else an event of its
        own that :meth:`request_stop` sets. A long tick handler waits on it instead of sleeping."""
        return self.gateway.stopev if self.gateway is not None else self._own_stop

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

    # -- configuration ---------------------------------------------------------------------------

    def _c(self, key: str, default: Any = _MISSING, *, scope: str = "module") -> Any:
        """Read ``gateway.<id>.<key>`` (``scope="gateway"``: ``gateway.<key>``); ``key`` is split on ``/``.

        Returns ``default`` when a part of the path is missing; without a default raises ``KeyError``
        naming the full path.
        """
        node: Any = self._config if scope == "gateway" else self._config.get(self.id, {})
        base = "gateway" if scope == "gateway" else f"gateway.{self.id}"
        for part in key.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                if default is _MISSING:
                    raise KeyError(f"{base}.{key.replace('/', '.')} is not configured")
                return default
            node = node[part]
        return node

    # -- storage ---------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """This module's :class:`Storage`, from ``gateway.moduleBackupStorage.<id>`` (a path or
        ``{"path", "limit"}``), else ``<gateway.storageDir>/<id>.sqlite``. Opened on first use."""
        with self._storage_lock:
            if self._storage_obj is None or self._storage_obj.closed:
                self._storage_obj = Storage(self.id, *storage_location(self._config, self.id))
            return self._storage_obj

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
        usecase = usecase or getattr(self, "_uucmd", None)
        if usecase is None:
            raise TypeError(f"module {self.id}: _send_storage needs a usecase function")
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
