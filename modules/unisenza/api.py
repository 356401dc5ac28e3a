"""The vendor's REST service API: which gateways and thermostats the user has.

Thread-safe as far as the shared ``requests.Session`` is (one call at a time per session is
not required by requests for simple GETs). Every request ends within its timeout in all
(connect and whole answer) and when the auth is closed (see ``http.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from .auth import CognitoAuth
from .errors import AuthenticationError, ClientError
from .http import CloudHttp
from .models import DeviceType, GatewayAttributes, HvacAttributes, Occupant

log = logging.getLogger(__name__)

GatewayTree = tuple[GatewayAttributes, list[HvacAttributes]]


class ServiceApi:
    """Client of ``{service_url}/occupants/...``.

    Requests carry the user pool tokens from ``auth``; a 401/403 is retried once with
    refreshed tokens and then raises AuthenticationError. Other failures raise ClientError.
    """

    def __init__(self, auth: CognitoAuth, *, session: requests.Session | None = None, timeout: float = 10.0) -> None:
        self._auth = auth
        # the auth's by default, so closing the auth also ends calls of this API in flight
        self._http = auth.http if session is None else CloudHttp(session)
        self._own_http = session is not None
        self._timeout = timeout

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        ep = self._auth.endpoints
        url = ep.service_url.rstrip("/") + path
        for attempt in (1, 2):
            if attempt == 2:
                self._auth.tokens(force_refresh=True)
            status, raw = self._http.call(
                f"GET {path}",
                "GET",
                url,
                deadline=self._timeout,
                params=params,
                headers=self._auth.auth_headers(),
                verify=ep.tls_verify,
            )
            if status in (401, 403):
                continue
            if status != 200:
                raise ClientError(f"GET {path} failed: HTTP {status}")
            try:
                return json.loads(raw)
            except ValueError:
                raise ClientError(f"GET {path}: reply is not JSON") from None
        raise AuthenticationError(f"GET {path}: the service refused the tokens (HTTP {status})")

    def discover(self) -> list[GatewayTree]:
        """All gateways of the user with their thermostats, in the order the service lists them.

        Blocks for 1 + (number of gateways) HTTP requests. Raises AuthenticationError or
        ClientError (the latter also for a reply of unexpected shape)."""
        listing = self._get("/occupants/slider_list")
        result: list[GatewayTree] = []
        try:
            items = listing["data"]
            if not isinstance(items, list):
                raise TypeError(f"data is {type(items).__name__}, not a list")
            for item in items:
                if not isinstance(item, Mapping) or item.get("type") != "gateway":
                    continue
                gateway = _gateway_attributes(item["gateway"])
                details = self._get("/occupants/slider_details", {"id": gateway.id, "type": "gateway"})
                children = [_hvac_attributes(leaf) for leaf in _leaves(details["data"])]
                result.append((gateway, children))
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"Failed to populate devices: unexpected reply ({exc!r})") from None
        log.debug("discovered %d gateway(s)", len(result))
        return result

    def close(self) -> None:
        """Close the HTTP session if this object created it (else the auth's close does). Idempotent."""
        if self._own_http:
            self._http.close()


def _text(data: Mapping[str, Any], key: str) -> str:
    """A required field as text; a missing or null one raises (KeyError/ValueError), never "None"."""
    value = data[key]
    if value is None:
        raise ValueError(f"{key} is null")
    return str(value)


def _gateway_attributes(data: Mapping[str, Any]) -> GatewayAttributes:
    receiver = data["occupants_permissions"]["receiver_occupant"]
    return GatewayAttributes(
        id=_text(data, "id"),
        type=DeviceType.GATEWAY,
        device_code=_text(data, "device_code"),
        model=str(data.get("model") or ""),
        name=str(data.get("name") or _text(data, "device_code")),
        occupant=Occupant(id=_text(receiver, "id"), identity_id=_text(receiver, "identity_id")),
    )


def _hvac_attributes(data: Mapping[str, Any]) -> HvacAttributes:
    return HvacAttributes(
        id=_text(data, "id"),
        type=DeviceType.HVAC,
        device_code=_text(data, "device_code"),
        model=str(data.get("model") or ""),
        name=str(data.get("name") or _text(data, "device_code")),
    )


def _leaves(node: Any) -> Iterator[Mapping[str, Any]]:
    """Thermostat leaves of a slider_details tree: groups (with ``items``) are walked; a leaf
    with a ``device_code`` and no ``occupants_permissions`` (the gateway itself) is yielded."""
    if not isinstance(node, Mapping):
        return
    if "items" in node:
        for child in node["items"] or []:
            yield from _leaves(child)
    elif "device_code" in node and "occupants_permissions" not in node:
        yield node
