"""Translation between AWS IoT shadow documents and model attributes.

Reading is tolerant: numbers may arrive as strings or ints, a JSON ``null`` is skipped silently
(the attribute keeps its value, as pyupgw does), an unparseable value is logged at WARNING and
skipped (the other fields still apply), an enum value outside the known set is kept as a raw int.
Pure functions, thread-safe.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from .models import DeviceType, RunningState, SystemMode

log = logging.getLogger(__name__)

HVAC_SECTION = "11"
GATEWAY_SECTION = "000000000001"

SET_TEMPERATURE_KEY = "ep1:sTherS:SetHeatingSetpoint_x100"
SET_MODE_KEY = "ep1:sTherS:SetSystemMode"


def _x100(value: Any) -> float:
    number = float(value) / 100
    if not math.isfinite(number):  # "nan", "inf", 1e999: no storage or JSON peer takes these
        raise ValueError("not a finite number")
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("boolean is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("not an integer")
    return int(value)


def _system_mode(value: Any) -> SystemMode | int:
    number = _int(value)
    try:
        return SystemMode(number)
    except ValueError:
        log.warning("unknown system mode %r kept as a raw value", number)
        return number


def _running_state(value: Any) -> RunningState | int:
    number = _int(value)
    try:
        return RunningState(number)
    except ValueError:
        log.warning("unknown running state %r kept as a raw value", number)
        return number


Reader = Callable[[Any], Any]

HVAC_READ: dict[str, tuple[str, Reader]] = {
    "ep1:sZDO:EUID": ("euid", str),
    "ep1:sPowerMS:RadSerialNum": ("serial_number", str),
    "ep1:sBasicS:ManufactureName": ("manufacturer", str),
    "ep1:sZDO:FirmwareVersion": ("firmware_version", str),
    "ep1:sTherS:HeatingSetpoint_x100": ("target_temperature", _x100),
    "ep1:sTherS:LocalTemperature_x100": ("current_temperature", _x100),
    "ep1:sTherS:MinHeatSetpoint_x100": ("min_temp", _x100),
    "ep1:sTherS:MaxHeatSetpoint_x100": ("max_temp", _x100),
    "ep1:sTherS:RunningMode": ("system_mode", _system_mode),
    "ep1:sTherS:RunningState": ("running_state", _running_state),
    "ep1:sHumiS:MeasuredValue_x100": ("humidity", _x100),
    "ep1:sComm:FloorTemperature_x100": ("floor_temperature", _x100),
    "ep1:sPowerS:BatteryRemaining": ("battery_level", _int),
}

GATEWAY_READ: dict[str, tuple[str, Reader]] = {
    "ep1:sZDO:EUID": ("euid", str),
    "ep0:sGateway:GatewaySoftwareVersion": ("firmware_version", str),
    "ep0:sGateway:NetworkLANMAC": ("mac_address", str),
    "ep0:sGateway:NetworkLANIP": ("ip_address", str),
}


def parse_document(doc: Mapping[str, Any], device_type: DeviceType) -> dict[str, Any]:
    """Attribute changes carried by an accepted shadow document (``state.reported``).

    ``reported.connected`` (``"true"``/``"false"``, or a bool) maps to ``available``. A property
    (or ``connected``) that is ``null`` carries no value and is left out. Returns an empty dict
    for documents without reported state (e.g. the echo of a desired update)."""
    state = doc.get("state")
    reported = state.get("reported") if isinstance(state, Mapping) else None
    if not isinstance(reported, Mapping):
        return {}
    changes: dict[str, Any] = {}
    if reported.get("connected") is not None:
        connected = reported["connected"]
        changes["available"] = connected is True or str(connected).lower() == "true"
    section, table = (HVAC_SECTION, HVAC_READ) if device_type is DeviceType.HVAC else (GATEWAY_SECTION, GATEWAY_READ)
    block = reported.get(section)
    props = block.get("properties") if isinstance(block, Mapping) else None
    if isinstance(props, Mapping):
        for key, (attribute, reader) in table.items():
            if props.get(key) is None:
                continue
            try:
                changes[attribute] = reader(props[key])
            except (TypeError, ValueError):
                log.warning("unparseable value %r for %s (%s) skipped", props[key], attribute, key)
    return changes


def update_document(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The ``desired`` shadow document for HVAC attribute changes. Supported names:
    ``target_temperature`` (°C, sent as an int of hundredths) and ``system_mode`` (sent as int).
    Raises ValueError for any other name or an empty change set."""
    props: dict[str, int] = {}
    for name, value in changes.items():
        if name == "target_temperature":
            props[SET_TEMPERATURE_KEY] = round(float(value) * 100)
        elif name == "system_mode":
            props[SET_MODE_KEY] = int(SystemMode(int(value)))
        else:
            raise ValueError(f"attribute {name!r} cannot be updated")
    if not props:
        raise ValueError("no changes to send")
    return {"state": {"desired": {HVAC_SECTION: {"properties": props}}}}
