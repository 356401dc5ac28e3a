"""uun-iot's ``uun_iot.exceptions``, mapped onto uun-gateway's errors so either name catches."""

from __future__ import annotations

from ..errors import EventError, UnsupportedEvent, UunGatewayError
from ..uuapp import TokenCommandError, TokenError, UuAppClientError

UunIotException = UunGatewayError
UuAppClientException = UuAppClientError
EventException = EventError


class InvalidModuleId(EventError):
    """A module has no usable id."""


class EventCannotRegisterHandler(EventError):
    """A handler could not be registered for an event."""


class EventRegisterAlreadyInstantiated(EventError):
    """uun-iot 0.11: the event register was used after the modules were assigned."""


class EventRegisterNotYetInstantiated(EventError):
    """uun-iot 0.11: the event register was read before the modules were assigned."""


__all__ = [
    "EventCannotRegisterHandler",
    "EventException",
    "EventRegisterAlreadyInstantiated",
    "EventRegisterNotYetInstantiated",
    "InvalidModuleId",
    "TokenCommandError",
    "TokenError",
    "UnsupportedEvent",
    "UuAppClientException",
    "UunIotException",
]
