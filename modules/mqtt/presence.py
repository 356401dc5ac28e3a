"""Presence and health on the broker.

``<prefix>/status`` (retained, QoS 1): ``online`` when a connection is ready, ``offline`` when the
gateway disconnects cleanly, and ``offline`` as the connection's will, published by the broker when
the gateway vanishes (SIGKILL, power cut, network loss beyond the keepalive).

``<prefix>/health`` (retained, QoS 1), every ``healthPeriod`` seconds and on each connect::

    {"gatewayId": "pi-17", "time": "2026-12-01T12:00:00.000Z", "uptime": 3600.2,
     "configError": null,
     "modules": {"<id>": {"stored": 12, "lastSendOk": "...", "handlerErrors": 0, "sendFailures": 0,
                          "timerOverruns": 0, "lastError": null}, ...},
     "mqtt": {"broker": "127.0.0.1:1883", "connects": 1, "inflight": 0,
              "sources": {"<id>": {"stored": 12, "delivered": 4000, "resent": 0, "refused": 0,
                                   "lastDelivery": "2026-12-01T11:59:59.871Z"}}}}

``modules`` is the gateway's health (the same as the heartbeat sends to uuApp).
"""

from __future__ import annotations

from typing import Any

from uun_gateway import iso_utc

from .delivery import Delivery


def health_payload(
    gateway: Any, gateway_id: str, delivery: Delivery, broker: str | None, connects: int
) -> dict[str, Any]:
    """The health document (see the module docstring). Never waits on the network."""
    health: dict[str, Any] = gateway.health() if gateway is not None else {"uptime": None, "modules": {}}
    stored = delivery.stored()
    sources = {
        name: {
            "stored": stored.get(name),
            "delivered": w.delivered,
            "resent": w.resent,
            "refused": w.refused,
            "lastDelivery": iso_utc(w.last_delivery) if w.last_delivery is not None else None,
        }
        for name, w in delivery.windows.items()
    }
    return {
        "gatewayId": gateway_id,
        "time": iso_utc(),
        "uptime": health.get("uptime"),
        "configError": health.get("configError"),
        "modules": health.get("modules", {}),
        "mqtt": {"broker": broker, "connects": connects, "inflight": delivery.inflight, "sources": sources},
    }
