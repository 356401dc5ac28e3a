"""uun-iot's events, mapped onto :func:`uun_gateway.on`.

Every generation of uun-iot's handler declarations marks the same handlers ``@on`` does:

- 0.12: ``@EvTick.subscribe``, ``@EvTick.subscribe_timer("id")``, ``@EvStart.subscribe`` /
  ``subscribe_blocking``, ``@EvStop.subscribe``, ``@EvConfUpdate.subscribe`` (the handler gets the new
  ``gateway`` section), ``@EvExternal.subscribe_command("cmd")`` (answered on ``gateway.socket``);
  ``EvStart.subscribe(self.method).extract()`` in a constructor; ``registered_event_submodule``;
- 0.11: ``@ev.on("tick" | "start" | "stop" | "update" | "external", subevent)`` on the
  :class:`EventRegister` that a three-parameter ``module_init(ev, config, uuclient)`` receives;
- 0.9/0.10: ``@on(...)`` from ``uun_iot.decorators``, also applied at run time to bound methods;
- 0.8: ``@on_tick`` / ``@on_tick("id")``.

The Ev classes are never instantiated by the gateway: it runs the marked handlers itself.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar, overload

from .. import events as _core
from ..errors import UnsupportedEvent
from .exceptions import EventCannotRegisterHandler

F = TypeVar("F", bound=Callable[..., Any])
V = TypeVar("V")


class EventType(enum.IntEnum):
    """uun-iot's event ids."""

    START = enum.auto()
    STOP = enum.auto()
    CONF_UPDATE = enum.auto()
    TICK = enum.auto()
    EXTERNAL = enum.auto()


_CORE_EVENT = {
    EventType.START: "start",
    EventType.STOP: "stop",
    EventType.CONF_UPDATE: "update",
    EventType.TICK: "tick",
    EventType.EXTERNAL: "command",
}


class _Subscription:
    """What a subscription applied to a bound method returns: ``.extract()`` gives the method back
    (the handler is already registered on its instance)."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method

    def extract(self) -> Callable[..., Any]:
        return self._method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)


def _subscriber(event: str, name: str | None = None, **options: bool) -> Callable[[F], F]:
    mark = _core.on(event, name, **options)

    def subscribe(func: F) -> F:
        if inspect.ismethod(func) and not inspect.isclass(func.__self__):
            mark(func)
            return _Subscription(func)  # type: ignore[return-value]
        return mark(func)

    return subscribe


class _ClassProperty:
    """A read-only property of the class (uun-iot's ``classproperty``): ``EvTick.subscribe``."""

    def __init__(self, getter: Callable[[type[Any]], Any]) -> None:
        self._getter = getter

    def __get__(self, obj: object, owner: type[Any]) -> Any:
        return self._getter(owner)


class Event:
    """uun-iot's event base class; here a namespace of subscription decorators. ``number_of_handlers``
    works on what :func:`attach_handlers` returns."""

    event_type: ClassVar[EventType]

    def __init__(self, config: Mapping[str, Any] | None = None, **_: Any) -> None:
        self._config = config
        self._handlers: list[_core.Handler] = []

    def add_handlers(self, handler_list: Iterable[_core.Handler]) -> None:
        self._handlers.extend(handler_list)

    def number_of_handlers(self) -> int:
        return len(self._handlers)

    def start(self) -> None:
        """The gateway runs the handlers; an Event does nothing by itself."""

    def stop(self) -> None:
        """The gateway runs the handlers; an Event does nothing by itself."""

    def __enter__(self) -> Event:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class EvTick(Event):
    """A module's repeat timer ticked (``gateway.moduleTimers.<id>``)."""

    event_type = EventType.TICK
    subscribe = _ClassProperty(lambda cls: _subscriber("tick"))

    @classmethod
    def subscribe_timer(cls, timer_id: str) -> Callable[[F], F]:
        if not isinstance(timer_id, str):
            raise EventCannotRegisterHandler("Only string timer IDs are supported.")
        return _subscriber("tick", timer_id)


class EvStart(Event):
    """The gateway started: ``handler(self, (runev, stopev))`` runs in a thread of its own."""

    event_type = EventType.START
    subscribe = _ClassProperty(lambda cls: _subscriber("start"))
    subscribe_blocking = _ClassProperty(lambda cls: _subscriber("start", blocking=True))


class EvStop(Event):
    """The gateway is stopping: ``handler(self)``."""

    event_type = EventType.STOP
    subscribe = _ClassProperty(lambda cls: _subscriber("stop"))


class EvConfUpdate(Event):
    """The configuration was updated: ``handler(self, new_gateway_section)``."""

    event_type = EventType.CONF_UPDATE
    subscribe = _ClassProperty(lambda cls: _subscriber("update", with_config=True))


class EvExternal(Event):
    """A command came over the gateway's socket: ``handler(self, (command, argument)) -> str | None``."""

    event_type = EventType.EXTERNAL

    @classmethod
    def subscribe_command(cls, action_id: str, *subactions: str) -> Callable[[F], F]:
        if not isinstance(action_id, str):
            raise EventCannotRegisterHandler("Only string action IDs are supported.")
        return _subscriber("command", action_id + (f"[{','.join(subactions)}]" if subactions else ""))


_EVENT_CLASSES: dict[str, type[Event]] = {
    "tick": EvTick,
    "start": EvStart,
    "stop": EvStop,
    "update": EvConfUpdate,
    "command": EvExternal,
}


def registered_event_submodule(submodule: V, allowed_events: list[type[Event]] | None = None) -> V:
    """Make the handlers of ``submodule`` (an attribute of a module) handlers of the module."""
    if allowed_events is not None:
        raise EventCannotRegisterHandler("registered_event_submodule(allowed_events=...) is not supported")
    return _core.submodule(submodule)


def attach_handlers(
    config: Mapping[str, Any] | None, object_list: Iterable[Any], events: Iterable[Event] | None = None, **_: Any
) -> list[Event]:
    """The events that the objects' handlers subscribe to, one object per kind, each holding its
    handlers (for tests that count them; the gateway finds handlers itself)."""
    by_kind: dict[str, Event] = {type(ev).event_type.name: ev for ev in events or ()}
    for obj in object_list:
        for handler in _core.find_handlers(obj):
            cls = _EVENT_CLASSES[handler.event]
            event = by_kind.setdefault(cls.event_type.name, cls(config))
            event.add_handlers([handler])
    return list(by_kind.values())


def on(event: str, name: str | None = None) -> Callable[[F], F]:
    """uun-iot 0.9/0.10's ``on``: ``@on("tick")``, ``@on("tick", "timerId")``, ``@on("start")``,
    ``@on("stop")``, ``@on("update")``; also ``on("stop")(self.method)`` at run time."""
    if event == "external":
        return _core.on("command", name)
    return _core.on(event, name)


@overload
def on_tick(arg: F) -> F: ...
@overload
def on_tick(arg: str) -> Callable[[F], F]: ...
def on_tick(arg: Any) -> Any:
    """uun-iot 0.8's ``@on_tick`` / ``@on_tick("timerId")``."""
    if isinstance(arg, str):
        return _core.on("tick", arg)
    return _core.on("tick")(arg)


class EventRegister:
    """uun-iot 0.11's register: ``@ev.on(event, subevent)`` marks a handler as ``@on`` does."""

    def __init__(self) -> None:
        self.instantiated = False

    @staticmethod
    def from_existing(register: EventRegister) -> EventRegister:
        return EventRegister()

    def on(self, eventn: str, subevent: str | None = None) -> Callable[[F], F]:
        if eventn in ("start", "stop", "update") and subevent is not None:
            raise UnsupportedEvent(f"Invalid subevent argument to event '{eventn}': it must be None, got {subevent!r}")
        if eventn == "external" and subevent is None:
            raise UnsupportedEvent("Invalid subevent argument to event 'external': it must name the command")
        return on(eventn, subevent)


__all__ = [
    "EvConfUpdate",
    "EvExternal",
    "EvStart",
    "EvStop",
    "EvTick",
    "Event",
    "EventRegister",
    "EventType",
    "attach_handlers",
    "on",
    "on_tick",
    "registered_event_submodule",
]
