"""Writing a property and confirming it by reading it back.

A write is confirmed only by a read-back (``/uncached``) that shows the value; it is logged, and
never repeated blindly: when a write's answer is lost (the server went away in the middle) we do
not know whether the device switched, so the caller is told so and a configured output reads the
device first at its next attempt and writes only if the value is still wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .connection import ServerUnavailable
from .errors import PathError
from .families import PropertySpec, Value, spec_from_structure
from .reader import UNCACHED, Session

log = logging.getLogger(__name__)


class WriteFailed(Exception):
    """A write was refused, not confirmed by its read-back, or its outcome is unknown.

    ``unknown`` is True when the write may have reached the device (the answer was lost)."""

    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


class UnknownDevice(LookupError):
    """No device with that id or alias is configured or has been seen."""


@dataclass(frozen=True)
class WriteResult:
    """A confirmed write: ``value`` is what the read-back showed; ``changed`` is False when the
    device already had the value (nothing was written)."""

    device_id: str
    property: str
    value: Value
    changed: bool


def typed(session: Session, family: str, spec: PropertySpec) -> PropertySpec:
    """``spec`` typed from owserver's ``/structure`` when our table does not know it."""
    if spec.kind is not None or not hasattr(session, "dir"):
        return spec
    try:
        return spec_from_structure(spec, session.read(f"/structure/{family}/{spec.path}"))
    except PathError:
        return spec


def read_back(session: Session, path: str, spec: PropertySpec) -> Value:
    """The property's value now (uncached); raises PathError or ValueError (unparsable)."""
    return spec.parse(session.read(f"{UNCACHED}{path}"))


def write_confirmed(
    session: Session, bus_path: str, device_id: str, spec: PropertySpec, value: object, *, check_first: bool = False
) -> WriteResult:
    """Write ``value`` and confirm it by a read-back.

    ``check_first`` reads the value first and writes only when it differs (how configured
    outputs are retried). Raises ValueError for a value of the wrong type, :class:`WriteFailed`
    otherwise (``unknown=True`` when the server failed after the write was sent).
    """
    family = device_id[:2]
    spec = typed(session, family, spec)
    data = spec.encode(value, family)
    path = f"{bus_path}{device_id}/{spec.path}"
    where = f"1-wire {device_id} {spec.name}"
    try:
        if check_first:
            current = read_back(session, path, spec)
            if spec.same(value, current):
                return WriteResult(device_id, spec.name, current, changed=False)
        try:
            session.write(path, data)
        except ServerUnavailable as err:
            if err.timed_out or err.stopped:
                raise WriteFailed(
                    f"{where}: {session.name} failed during the write ({err.reason}); the device may or may "
                    "not have changed, the write is not repeated blindly",
                    unknown=True,
                ) from None
            # The answer was lost (e.g. a connection owserver had closed): did the write land?
            back = read_back(session, path, spec)
            if not spec.same(value, back):
                raise WriteFailed(
                    f"{where}: the write's answer was lost ({err.reason}) and the device reads back {back!r}"
                ) from None
            log.info("%s: the write's answer was lost (%s) but the read-back confirms it", where, err.reason)
        back = read_back(session, path, spec)
    except PathError as err:
        raise WriteFailed(f"{where}: {err.detail}") from None
    except ServerUnavailable as err:
        raise WriteFailed(f"{where}: {session.name} unavailable: {err.reason}", unknown=not check_first) from None
    except ValueError as err:
        raise WriteFailed(f"{where}: unreadable read-back: {err}") from None
    if not spec.same(value, back):
        raise WriteFailed(f"{where}: wrote {value!r} but the device reads back {back!r}")
    log.info("%s set to %r (confirmed by read-back)", where, back)
    return WriteResult(device_id, spec.name, back, changed=True)
