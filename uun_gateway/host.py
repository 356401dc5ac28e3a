"""ModuleHost: what a module may use of the gateway that loaded it (``Module.gateway``).

Built-in and user modules depend on this protocol, never on :class:`~uun_gateway.gateway.Gateway`
itself, so a module can run under any host that offers it (a test double, a future live module set).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .readings import Reading
    from .storage import Storage


SERVICE_IDS = frozenset({"alarms"})
"""The ids of the host's own services (:class:`HostService`): each storage is placed with
``gateway.moduleBackupStorage.<id>`` like a module's, and checked like one."""


class HostService(Protocol):
    """A part of the host that is not a module but is addressed like one (the alarm service):

    - ``id``: its name, unique among module ids (``alarms``); a delivery module's source name;
    - ``storage``: its :class:`~uun_gateway.storage.Storage` of unsent entries, which delivery
      modules (upload, an MQTT uplink) send and delete like a module's (opened on first use;
      raises OSError or a storage error when it cannot be opened);
    - its ``@on("command", name)`` handlers are answered on the command socket like a module's.
    """

    @property
    def id(self) -> str: ...

    @property
    def storage(self) -> Storage: ...


class ModuleHost(Protocol):
    """The host side of a loaded module.

    - ``config``: the whole configuration in effect (replaced, never mutated, on an update);
    - ``stopping``: set from the moment the host begins to stop until it starts again; long
      handlers wait on it to end early (a module reads it as :attr:`Module.stop_event`);
    - ``stopev``: uun-iot's event, set whenever the host is not running (before start too);
    - ``modules``: the loaded module instances, in start order (a snapshot);
    - ``services``: the host's own :class:`HostService` parts in effect (a snapshot; the alarm
      service while ``gateway.alarms`` has rules): their storages are sources for delivery modules;
    - :meth:`health`: a JSON-ready status summary (see :meth:`Gateway.health`);
    - :meth:`reconfigure`: validate, apply and persist a new configuration (see
      :meth:`Gateway.reconfigure`; raises :class:`~uun_gateway.errors.ConfigError`);
    - :meth:`reload`: re-read the config file and apply it; returns what changed (see
      :meth:`Gateway.reload`; raises :class:`~uun_gateway.errors.ConfigError`);
    - :meth:`publish`: hand stored readings to the alarm rules and reading listeners
      (:meth:`Module.publish <uun_gateway.module.Module.publish>` calls it).

    All of it is thread-safe.
    """

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def stopping(self) -> threading.Event: ...

    @property
    def stopev(self) -> threading.Event: ...

    @property
    def modules(self) -> Sequence[Any]: ...

    @property
    def services(self) -> Sequence[HostService]: ...

    def health(self) -> dict[str, Any]: ...

    def reconfigure(self, new_config: Mapping[str, Any], *, save: bool = True) -> bool: ...

    def reload(self) -> str: ...

    def publish(self, readings: Sequence[Reading]) -> None: ...
