"""Cloud endpoints and identifiers of the Unisenza Plus service.

The defaults are the production values the public pyupgw client uses; every one can be
overridden (``gateway.unisenza.endpoints``) so tests point the client at loopback fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# camelCase config key -> dataclass field
_CONFIG_KEYS = {
    "region": "region",
    "userPoolId": "user_pool_id",
    "clientId": "client_id",
    "idpUrl": "idp_url",
    "identityUrl": "identity_url",
    "identityProvider": "identity_provider",
    "serviceUrl": "service_url",
    "company": "company",
    "iotHost": "iot_host",
    "iotPort": "iot_port",
    "iotPath": "iot_path",
    "caFile": "ca_file",
}


@dataclass(frozen=True)
class Endpoints:
    """Where and as whom the client talks to the cloud. Immutable.

    ``ca_file`` is a CA bundle used for every TLS connection (HTTP and MQTT) instead of the
    system store; verification is always on.
    """

    region: str = "eu-central-1"
    user_pool_id: str = "eu-central-1_HfciXliKM"
    client_id: str = "63qkc36u3eje4lp8ums9njmarv"
    idp_url: str = "https://cognito-idp.eu-central-1.amazonaws.com/"
    identity_url: str = "https://cognito-identity.eu-central-1.amazonaws.com/"
    identity_provider: str | None = None
    service_url: str = "https://service-api.purmo.uleeco.com/api/v1"
    company: str = "purmo"
    iot_host: str = "a1b4blxx3o9kj3-ats.iot.eu-central-1.amazonaws.com"
    iot_port: int = 443
    iot_path: str = "/mqtt"
    ca_file: str | None = None

    @property
    def pool_name(self) -> str:
        """The user pool id without its region prefix (used in the SRP hashes)."""
        return self.user_pool_id.split("_", 1)[1]

    @property
    def logins_key(self) -> str:
        """The key of the ``Logins`` map of GetCredentialsForIdentity."""
        if self.identity_provider:
            return self.identity_provider
        return f"cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def tls_verify(self) -> str | bool:
        """The ``verify`` argument for requests: the CA bundle, or True (system store)."""
        return self.ca_file if self.ca_file else True

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Endpoints:
        """Build from a camelCase mapping (``gateway.unisenza.endpoints``); missing keys keep
        their defaults. Raises ValueError on an unknown key."""
        if not config:
            return cls()
        unknown = set(config) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown endpoint keys: {sorted(unknown)}")
        return cls(**{_CONFIG_KEYS[k]: v for k, v in config.items()})

    def to_config(self) -> dict[str, Any]:
        """The camelCase mapping that :meth:`from_config` reads back to an equal object."""
        reverse = {v: k for k, v in _CONFIG_KEYS.items()}
        return {reverse[f.name]: getattr(self, f.name) for f in fields(self)}
