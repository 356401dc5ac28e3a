"""``@on``: marking module methods as event handlers, and finding them again."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import UnsupportedEvent

EVENTS = ("tick", "start", "stop", "update", "alarm")
_MARK = "__uun_gateway_events__"

F = TypeVar("F", bound=Callable[..., Any])


def on(event: str, timer_id: str | None = None) -> Callable[[F], F]:
    """Mark a method as the handler of ``event``.

    Handler signatures (``self`` is the module instance):

    - ``@on("tick")`` / ``@on("tick", "timerId")``: ``handler(self)``, run by the module's repeat timer
      whose period is ``gateway.moduleTimers.<moduleId>`` (a number) or ``...<moduleId>.<timerId>``;
    - ``@on("start")``: ``handler(self, evs)`` with ``evs = (runev, stopev)``, run in a thread of its
      own when the gateway starts; it may loop while ``runev.is_set()``;
    - ``@on("stop")``: ``handler(self)``, run when the gateway stops, in reverse module order;
    - ``@on("update")``: ``handler(self)``, run after a configuration update was applied;
    - ``@on("alarm")``: ``handler(self, transition)``, run for every alarm transition
      (:class:`~uun_gateway.alarms.AlarmTransition`) in the thread that caused it, after it was saved.

    A method may carry several ``@on`` marks. Raises :class:`UnsupportedEvent` at class definition for
    an unknown event, or a timer id on an event other than ``tick``.
    """
    if event not in EVENTS:
        raise UnsupportedEvent(f"@on({event!r}): unknown event; expected one of {', '.join(EVENTS)}")
    if timer_id is not None and (event != "tick" or not isinstance(timer_id, str) or not timer_id):
        raise UnsupportedEvent(f"@on({event!r}, {timer_id!r}): only 'tick' takes a timer id (a non-empty string)")

    def mark(func: F) -> F:
        if not callable(func):
            raise UnsupportedEvent(f"@on({event!r}) must decorate a function, not {func!r}")
        marks = list(getattr(func, _MARK, ()))
        marks.append((event, timer_id))
        setattr(func, _MARK, tuple(marks))
        return func

    return mark


@dataclass(frozen=True)
class Handler:
    """One event handler bound to its module instance."""

    event: str
    timer_id: str | None
    func: Callable[..., Any]
    name: str


def find_handlers(obj: object) -> list[Handler]:
    """Return ``obj``'s ``@on`` handlers in class definition order (base classes first).

    Only class attributes are inspected, so properties are never evaluated; an override in a subclass
    replaces the base class's handler of the same name.
    """
    found: dict[str, tuple[tuple[str, str | None], ...]] = {}
    for cls in reversed(type(obj).__mro__):
        for name, attr in vars(cls).items():
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if inspect.isfunction(func) and hasattr(func, _MARK):
                found[name] = getattr(func, _MARK)
            elif name in found:
                del found[name]
    return [
        Handler(event, timer_id, getattr(obj, name), f"{type(obj).__name__}.{name}")
        for name, marks in found.items()
        for event, timer_id in marks
    ]
