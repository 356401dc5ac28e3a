"""Helpers the MQTT tests share: a gateway config, a producer module, order checks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uun_gateway.modules.mqtt.module import Mqtt

from uun_gateway import CommandError, Gateway, Module, command

CLIENT_ID = "gw1"
DATA_TOPIC = f"uun/{CLIENT_ID}/data/sensor"
STATUS_TOPIC = f"uun/{CLIENT_ID}/status"
HEALTH_TOPIC = f"uun/{CLIENT_ID}/health"


class Sensor(Module):
    """A producer: the test appends to its storage."""

    id = "sensor"


class Other(Module):
    """A second producer."""

    id = "other"


class Thermostat(Module):
    """A module with commands."""

    id = "thermostat"
    target = 20.0

    @command(
        "setpoint",
        {
            "type": "object",
            "required": ["value"],
            "properties": {"value": {"type": "number", "minimum": 5, "maximum": 30}},
            "additionalProperties": False,
        },
    )
    def set_setpoint(self, args: Mapping[str, Any]) -> Any:
        """Set the target temperature."""
        if args["value"] == 13:
            raise CommandError("13 is unlucky")
        self.target = float(args["value"])
        return {"value": self.target}

    @command("explode")
    def explode(self, args: Mapping[str, Any]) -> Any:
        raise RuntimeError("boom")


def mqtt_section(*ports: int, **settings: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "brokers": [{"host": "127.0.0.1", "port": p} for p in ports],
        "clientId": CLIENT_ID,
        "sources": {"sensor": {"batchSize": 100}},
        "backoffInitial": 0.05,
        "backoffMax": 0.5,
        "connectTimeout": 3,
    }
    section.update(settings)
    return section


def config(tmp_path: Path, section: dict[str, Any]) -> dict[str, Any]:
    return {"gateway": {"storageDir": str(tmp_path / "storage"), "stopTimeout": 5, "mqtt": section}}


@contextmanager
def running(tmp_path: Path, section: dict[str, Any], *extra: type[Module]) -> Iterator[tuple[Gateway, Mqtt, Sensor]]:
    """A started gateway with the ``sensor`` producer (and ``extra`` modules); stopped at the end."""

    def modules(c: dict[str, Any], u: Any) -> list[Module]:
        return [Sensor(c["gateway"], u), *(cls(c["gateway"], u) for cls in extra)]

    gateway = Gateway(config(tmp_path, section), modules)
    mqtt = next(m for m in gateway.modules if isinstance(m, Mqtt))
    sensor = next(m for m in gateway.modules if isinstance(m, Sensor))
    gateway.start()
    try:
        yield gateway, mqtt, sensor
    finally:
        gateway.stop()


def runs(ids: list[int]) -> list[list[int]]:
    """``ids`` split where an id is not larger than the one before (a re-send starts a new run)."""
    out: list[list[int]] = []
    for i in ids:
        if not out or i <= out[-1][-1]:
            out.append([i])
        else:
            out[-1].append(i)
    return out
