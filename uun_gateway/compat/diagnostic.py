"""uun-iot's ``uun_iot.diagnostic``: the events a :class:`BaseHealthCheck` is notified of."""

from __future__ import annotations

from enum import IntEnum, auto


class GeneralDiagnosticEvent(IntEnum):
    """Base of diagnostic events; subclass it for an application's own."""


GeneralDiagnosticEvents = GeneralDiagnosticEvent  # the misspelling some applications import


class DiagnosticEvent(GeneralDiagnosticEvent):
    DIAGNOSTICS_START = auto()
    DIAGNOSTICS_STOP = auto()
    TIMER_CALL = auto()
    ON_START_CALL = auto()
    ON_STOP_CALL = auto()
    ON_UPDATE_CALL = auto()
    DATA_RECEIVED = auto()
    DATA_SEND_IMMINENT = auto()
    DATA_SEND_OK = auto()
    DATA_SEND_PARTIAL = auto()
    DATA_SEND_FAIL = auto()
    DATA_SEND_ATTEMPTED = auto()


class GatewayDiagnosticEvent(GeneralDiagnosticEvent):
    GATEWAY_START = auto()
    GATEWAY_STOP = auto()
    GATEWAY_SIGNAL = auto()


__all__ = ["DiagnosticEvent", "GatewayDiagnosticEvent", "GeneralDiagnosticEvent", "GeneralDiagnosticEvents"]
