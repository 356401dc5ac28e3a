"""``@on``: marking module methods as event handlers, and finding them again."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import UnsupportedEvent

EVENTS = ("tick", "start", "stop", "update", "command", "alarm")
_MARK = "__uun_gateway_events__"
_RUNTIME = "__uun_gateway_runtime_handlers__"
_SUBMODULE = "__uun_gateway_submodule__"
_MAX_SUBMODULE_DEPTH = 5

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


@dataclass(frozen=True)
class _Mark:
    event: str
    name: str | None
    blocking: bool
    with_config: bool


def on(event: str, name: str | None = None, *, blocking: bool = False, with_config: bool = False) -> Callable[[F], F]:
    """Mark a method as the handler of ``event``.

    Handler signatures (``self`` is the module instance):

    - ``@on("tick")`` / ``@on("tick", "timerId")``: ``handler(self)``, run by the module's repeat timer
      whose period is ``gateway.moduleTimers.<moduleId>`` (a number) or ``...<moduleId>.<timerId>``;
    - ``@on("start")``: ``handler(self, evs)`` with ``evs = (runev, stopev)``, run in a thread of its
      own when the gateway starts; it may loop while ``runev.is_set()``. With ``blocking=True``
      :meth:`Gateway.start` waits until it returns;
    - ``@on("stop")``: ``handler(self)``, run when the gateway stops, in reverse module order;
    - ``@on("update")``: ``handler(self)``, run after a configuration update was applied; with
      ``with_config=True`` ``handler(self, gateway_section)`` gets the new ``gateway`` section;
    - ``@on("command", "name")``: ``handler(self, (name, argument))`` answers the command ``name``
      sent to the gateway's command socket (``gateway.socket.path``); it returns a text or None;
    - ``@on("alarm")``: ``handler(self, transition)``, run for every alarm transition
      (:class:`~uun_gateway.alarms.AlarmTransition`) in the thread that caused it, after it was saved.

    A method may carry several ``@on`` marks. ``on`` may also be applied at run time to a bound
    method (``on("stop")(self.save)``): the handler then belongs to that instance only. Raises
    :class:`UnsupportedEvent` at once for an unknown event or arguments the event does not take.
    """
    if event not in EVENTS:
        raise UnsupportedEvent(f"@on({event!r}): unknown event; expected one of {', '.join(EVENTS)}")
    if event in ("tick", "command"):
        if name is not None and (not isinstance(name, str) or not name):
            raise UnsupportedEvent(f"@on({event!r}, {name!r}): the name must be a non-empty string")
        if event == "command" and name is None:
            raise UnsupportedEvent("@on('command') needs the command's name: @on('command', 'name')")
    elif name is not None:
        raise UnsupportedEvent(f"@on({event!r}, {name!r}): only 'tick' takes a timer id and 'command' a name")
    if blocking and event != "start":
        raise UnsupportedEvent(f"@on({event!r}, blocking=True): only 'start' handlers can block")
    if with_config and event != "update":
        raise UnsupportedEvent(f"@on({event!r}, with_config=True): only 'update' handlers take the config")
    new = _Mark(event, name, blocking, with_config)

    def mark(func: F) -> F:
        if not callable(func):
            raise UnsupportedEvent(f"@on({event!r}) must decorate a function, not {func!r}")
        owner = getattr(func, "__self__", None)
        if inspect.ismethod(func) and owner is not None and not inspect.isclass(owner):
            _mark_runtime(owner, func, new)
            return func
        target = func.__func__ if isinstance(func, (staticmethod, classmethod)) else func
        setattr(target, _MARK, (*getattr(target, _MARK, ()), new))
        return func

    return mark


def _mark_runtime(owner: object, method: Callable[..., Any], mark: _Mark) -> None:
    """Record a handler marked on a bound method, on the instance it is bound to."""
    try:
        registry: list[tuple[_Mark, Callable[..., Any]]] = owner.__dict__.setdefault(_RUNTIME, [])
    except AttributeError:
        raise UnsupportedEvent(
            f"on({mark.event!r}) was applied to a method of {type(owner).__name__}, whose instances have no "
            "__dict__; decorate the method in the class instead"
        ) from None
    registry.append((mark, method))


def submodule(obj: T) -> T:
    """Mark ``obj`` (an attribute of a module) as a part whose handlers are the module's own: its
    ``@on`` handlers are found with the module's and run under the module's id. Returns ``obj``."""
    setattr(obj, _SUBMODULE, True)
    return obj


@dataclass(frozen=True)
class Handler:
    """One event handler bound to its module instance.

    ``timer_id`` is a tick's timer id, ``command`` a command's name; ``blocking`` (start) and
    ``with_config`` (update) are as given to :func:`on`.
    """

    event: str
    timer_id: str | None
    func: Callable[..., Any]
    name: str
    command: str | None = None
    blocking: bool = False
    with_config: bool = False


def _handler(mark: _Mark, func: Callable[..., Any], name: str) -> Handler:
    return Handler(
        mark.event,
        mark.name if mark.event == "tick" else None,
        func,
        name,
        command=mark.name if mark.event == "command" else None,
        blocking=mark.blocking,
        with_config=mark.with_config,
    )


def _declared(cls: type) -> list[tuple[str, _Mark]]:
    """(method name, mark) of the ``@on`` handlers class ``cls`` declares, in class definition order
    (base classes first); an override in a subclass replaces the base class's handler of the name."""
    found: dict[str, tuple[_Mark, ...]] = {}
    for klass in reversed(cls.__mro__):
        for attr_name, attr in vars(klass).items():
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if inspect.isfunction(func) and hasattr(func, _MARK):
                found[attr_name] = getattr(func, _MARK)
            elif attr_name in found:
                del found[attr_name]
    return [(attr_name, mark) for attr_name, marks in found.items() for mark in marks]


def declared_handlers(cls: type) -> list[tuple[str, str | None, str]]:
    """``(event, timer id or command name, method name)`` of the ``@on`` handlers class ``cls``
    declares, without an instance (handlers marked at run time on an instance are not known yet)."""
    return [(mark.event, mark.name, name) for name, mark in _declared(cls)]


def find_handlers(obj: object, _depth: int = 0) -> list[Handler]:
    """Return ``obj``'s handlers: its class's ``@on`` methods in definition order (base classes first),
    then those marked at run time on the instance, then those of its :func:`submodule` parts.

    Class attributes are inspected without evaluating properties; an override in a subclass replaces
    the base class's handler of the same name. Raises :class:`UnsupportedEvent` for parts nested
    deeper than five levels (a cycle).
    """
    owner = type(obj).__name__
    handlers = [
        _handler(mark, getattr(obj, attr_name), f"{owner}.{attr_name}") for attr_name, mark in _declared(type(obj))
    ]
    attrs: dict[str, Any] = getattr(obj, "__dict__", {})
    for mark, method in attrs.get(_RUNTIME, ()):
        handlers.append(_handler(mark, method, f"{owner}.{getattr(method, '__name__', 'handler')}"))
    for attr_name, value in list(attrs.items()):
        if attr_name == _RUNTIME or isinstance(value, type):
            continue
        if callable(value) and not inspect.ismethod(value) and hasattr(value, _MARK):
            handlers.extend(_handler(mark, value, f"{owner}.{attr_name}") for mark in getattr(value, _MARK))
        elif getattr(value, _SUBMODULE, False) is True:
            if _depth >= _MAX_SUBMODULE_DEPTH:
                raise UnsupportedEvent(f"{owner}.{attr_name}: parts nested too deep (a cycle of submodules?)")
            handlers.extend(find_handlers(value, _depth + 1))
    return handlers


def __getattr__(name: str) -> Any:
    # uun-iot's names (EvTick, EvStart, ...) live in uun_gateway.compat, imported only when asked for.
    from .compat import legacy_attribute

    return legacy_attribute(__name__, name)
