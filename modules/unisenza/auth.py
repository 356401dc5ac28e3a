"""Login to the Unisenza cloud: Cognito user pool SRP, token refresh, identity credentials.

:class:`CognitoAuth` is thread-safe: one lock serialises login and refresh, so concurrent
callers of :meth:`CognitoAuth.tokens` trigger at most one network exchange. Every network
call ends within its timeout in all (connect and whole answer, see ``http.py``) and at
:meth:`CognitoAuth.close`. Passwords, tokens and secret keys are never logged and never appear
in a repr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from . import srp
from .endpoints import Endpoints
from .errors import AuthenticationError, ClientError
from .http import CloudHttp
from .sigv4 import AwsCredentials

log = logging.getLogger(__name__)

_IDP_TARGET = "AWSCognitoIdentityProviderService."
_IDENTITY_TARGET = "AWSCognitoIdentityService."
# Cognito error types that mean "these credentials will not work"; others may be transient.
_AUTH_ERRORS = frozenset(
    {
        "NotAuthorizedException",
        "UserNotFoundException",
        "PasswordResetRequiredException",
        "UserNotConfirmedException",
    }
)


class CognitoError(ClientError):
    """A Cognito call returned an error body (``__type``/``message``)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


@dataclass(frozen=True)
class Tokens:
    """User pool tokens. ``expires_at`` is epoch seconds (the earlier of the id/access tokens)."""

    id_token: str = field(repr=False)
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    issued_at: float
    expires_at: float


def _margin(start: float, end: float, preferred: float) -> float:
    """Refresh margin: ``preferred`` seconds, but at most half the lifetime (short test TTLs)."""
    return min(preferred, max(0.0, (end - start) / 2))


class CognitoAuth:
    """Holds one user's Cognito session.

    - :meth:`login` performs the SRP exchange (``USER_SRP_AUTH`` + ``PASSWORD_VERIFIER``).
    - :meth:`tokens` returns tokens valid for at least the refresh margin, refreshing them
      (``REFRESH_TOKEN_AUTH``) before expiry and falling back to a password login when the
      refresh token is refused.
    - :meth:`credentials` returns temporary AWS credentials for an identity id, cached until
      shortly before their expiration.

    Errors: :class:`AuthenticationError` when the cloud refuses the user or password (or asks
    for an unsupported challenge such as MFA); :class:`ClientError` for everything else
    (network, throttling, 5xx, malformed replies).
    """

    def __init__(
        self,
        username: str,
        password: str,
        endpoints: Endpoints | None = None,
        *,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.username = username
        self._password = password
        self.endpoints = endpoints or Endpoints()
        self.http = CloudHttp(session)
        self._timeout = timeout
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.RLock()
        self._tokens: Tokens | None = None
        self._credentials: dict[str, AwsCredentials] = {}
        self._credentials_obtained: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"CognitoAuth(username={self.username!r})"

    # -- low level -------------------------------------------------------------------------

    def _call(self, url: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        action = target.rsplit(".", 1)[-1]
        status, raw = self.http.call(
            action, "POST", url, deadline=self._timeout, json=body, headers=headers, verify=self.endpoints.tls_verify
        )
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if status == 200 and isinstance(data, dict):
            return data
        if status == 200:
            raise ClientError(f"{action}: unexpected reply (HTTP 200 without a JSON object)")
        if isinstance(data, dict) and "__type" in data:
            error_type = str(data["__type"]).rsplit("#", 1)[-1]
            message = str(data.get("message") or data.get("Message") or "")
            if error_type in _AUTH_ERRORS:
                raise AuthenticationError(f"{action}: {error_type}: {message}")
            raise CognitoError(error_type, f"{action}: {message}")
        raise ClientError(f"{action} failed: HTTP {status}")

    def _store_result(self, result: Any, keep_refresh: str | None) -> Tokens:
        if not isinstance(result, dict):
            raise ClientError("Cognito reply has no AuthenticationResult")
        try:
            now = self._clock()
            tokens = Tokens(
                id_token=str(result["IdToken"]),
                access_token=str(result["AccessToken"]),
                refresh_token=str(result.get("RefreshToken") or keep_refresh or "") or None,
                issued_at=now,
                expires_at=now + float(result.get("ExpiresIn", 3600)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"malformed AuthenticationResult: {exc}") from None
        self._tokens = tokens
        return tokens

    # -- public API ------------------------------------------------------------------------

    def login(self) -> Tokens:
        """Log in with username and password (SRP). Blocks for up to two request timeouts.

        Raises AuthenticationError or ClientError (see the class docstring)."""
        with self._lock:
            ep = self.endpoints
            a = srp.generate_private()
            big_a = srp.public_a(a)
            start = self._call(
                ep.idp_url,
                _IDP_TARGET + "InitiateAuth",
                {
                    "AuthFlow": "USER_SRP_AUTH",
                    "ClientId": ep.client_id,
                    "AuthParameters": {"USERNAME": self.username, "SRP_A": format(big_a, "x")},
                },
            )
            if start.get("ChallengeName") != "PASSWORD_VERIFIER":
                raise AuthenticationError(f"unsupported login challenge {start.get('ChallengeName')!r}")
            params = start.get("ChallengeParameters") or {}
            if not isinstance(params, dict):
                kind = type(params).__name__
                raise ClientError(
                    f"malformed PASSWORD_VERIFIER challenge: ChallengeParameters is a {kind}, not an object"
                )
            try:
                user_id = str(params["USER_ID_FOR_SRP"])
                secret_block = str(params["SECRET_BLOCK"])
                timestamp = srp.cognito_timestamp(dt.datetime.fromtimestamp(self._clock(), dt.UTC))
                claim = srp.password_claim(
                    a,
                    ep.pool_name,
                    user_id,
                    self._password,
                    str(params["SALT"]),
                    str(params["SRP_B"]),
                    secret_block,
                    timestamp,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ClientError(f"malformed PASSWORD_VERIFIER challenge: {exc}") from None
            body: dict[str, Any] = {
                "ChallengeName": "PASSWORD_VERIFIER",
                "ClientId": ep.client_id,
                "ChallengeResponses": {
                    "USERNAME": str(params.get("USERNAME") or user_id),
                    "TIMESTAMP": timestamp,
                    "PASSWORD_CLAIM_SECRET_BLOCK": secret_block,
                    "PASSWORD_CLAIM_SIGNATURE": claim,
                },
            }
            if start.get("Session"):
                body["Session"] = start["Session"]
            reply = self._call(ep.idp_url, _IDP_TARGET + "RespondToAuthChallenge", body)
            if "AuthenticationResult" not in reply:
                raise AuthenticationError(f"unsupported login challenge {reply.get('ChallengeName')!r}")
            tokens = self._store_result(reply["AuthenticationResult"], None)
            log.info("logged in to the Unisenza cloud as %s", self.username)
            return tokens

    def _refresh(self, old: Tokens) -> Tokens:
        if not old.refresh_token:
            return self.login()
        try:
            reply = self._call(
                self.endpoints.idp_url,
                _IDP_TARGET + "InitiateAuth",
                {
                    "AuthFlow": "REFRESH_TOKEN_AUTH",
                    "ClientId": self.endpoints.client_id,
                    "AuthParameters": {"REFRESH_TOKEN": old.refresh_token},
                },
            )
        except AuthenticationError:
            log.info("refresh token refused; logging in again with the password")
            return self.login()
        tokens = self._store_result(reply.get("AuthenticationResult"), old.refresh_token)
        log.debug("tokens refreshed")
        return tokens

    def tokens(self, force_refresh: bool = False) -> Tokens:
        """Valid tokens, logging in or refreshing as needed (before expiry, not after).

        ``force_refresh`` refreshes even when the cached tokens look valid (after the server
        refused them). Raises AuthenticationError or ClientError."""
        with self._lock:
            current = self._tokens
            if current is None:
                return self.login()
            margin = _margin(current.issued_at, current.expires_at, self._refresh_margin)
            if force_refresh or self._clock() >= current.expires_at - margin:
                return self._refresh(current)
            return current

    def credentials(self, identity_id: str) -> AwsCredentials:
        """Temporary AWS credentials for ``identity_id`` (GetCredentialsForIdentity), cached
        until shortly before they expire. Raises AuthenticationError or ClientError."""
        with self._lock:
            cached = self._credentials.get(identity_id)
            if cached is not None and cached.expiration is not None:
                obtained = self._credentials_obtained[identity_id]
                if self._clock() < cached.expiration - _margin(obtained, cached.expiration, self._refresh_margin):
                    return cached
            try:
                creds = self._fetch_credentials(identity_id, self.tokens())
            except AuthenticationError:
                # The id token may have been revoked server-side: one retry with fresh tokens.
                creds = self._fetch_credentials(identity_id, self.tokens(force_refresh=True))
            self._credentials[identity_id] = creds
            self._credentials_obtained[identity_id] = self._clock()
            return creds

    def _fetch_credentials(self, identity_id: str, tokens: Tokens) -> AwsCredentials:
        reply = self._call(
            self.endpoints.identity_url,
            _IDENTITY_TARGET + "GetCredentialsForIdentity",
            {"IdentityId": identity_id, "Logins": {self.endpoints.logins_key: tokens.id_token}},
        )
        try:
            c = reply["Credentials"]
            return AwsCredentials(
                access_key_id=str(c["AccessKeyId"]),
                secret_key=str(c["SecretKey"]),
                session_token=str(c["SessionToken"]) if c.get("SessionToken") else None,
                expiration=float(c["Expiration"]) if c.get("Expiration") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(f"malformed GetCredentialsForIdentity reply: {exc}") from None

    def invalidate_credentials(self, identity_id: str | None = None) -> None:
        """Forget cached AWS credentials (all, or one identity's) so the next
        :meth:`credentials` call fetches new ones. Thread-safe, no I/O."""
        with self._lock:
            if identity_id is None:
                self._credentials.clear()
            else:
                self._credentials.pop(identity_id, None)

    def auth_headers(self) -> dict[str, str]:
        """The headers the vendor REST API expects (tokens and company code)."""
        tokens = self.tokens()
        return {
            "x-auth-token": tokens.id_token,
            "x-access-token": tokens.access_token,
            "x-company-code": self.endpoints.company,
        }

    def close(self) -> None:
        """End HTTP calls in flight (they raise ClientError "interrupted by stop") and close the
        HTTP session if this object created it. Idempotent; any thread."""
        self.http.close()
