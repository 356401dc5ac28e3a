"""AWS Signature Version 4 (header mode), standard library only.

Used to sign the websocket upgrade request to AWS IoT (service ``iotdevicegateway``) with the
temporary Cognito credentials. All functions are pure and thread-safe. The canonical URI is
each path segment percent-encoded once (RFC 3986 unreserved set kept), which is what both the
AWS IoT endpoint and the generic test suite expect for the paths used here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
IOT_SERVICE = "iotdevicegateway"
_SPACES = re.compile(r" +")


@dataclass(frozen=True)
class AwsCredentials:
    """Temporary AWS credentials. ``expiration`` is epoch seconds, or None when unknown.

    The repr never shows the secret key or the session token."""

    access_key_id: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expiration: float | None = None


def amz_dates(when: dt.datetime) -> tuple[str, str]:
    """``('YYYYMMDDTHHMMSSZ', 'YYYYMMDD')`` for a timezone-aware ``when``, in UTC."""
    t = when.astimezone(dt.UTC)
    return t.strftime("%Y%m%dT%H%M%SZ"), t.strftime("%Y%m%d")


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_uri(path: str) -> str:
    """The canonical form of ``path`` (no query): each segment decoded then encoded once."""
    if not path:
        return "/"
    return "/".join(_encode(unquote(part)) for part in path.split("/"))


def canonical_query(query: str) -> str:
    """Sorted ``name=value`` pairs, each side percent-encoded (RFC 3986), joined by ``&``."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name)), _encode(unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    """``name:value\\n`` for each name in ``signed`` (lowercase, sorted); values trimmed and runs of
    spaces collapsed; same-name headers (differing only in case) joined by commas."""
    merged: dict[str, list[str]] = {}
    for name, value in headers.items():
        merged.setdefault(name.lower(), []).append(_SPACES.sub(" ", str(value).strip()))
    return "".join(f"{name}:{','.join(merged[name])}\n" for name in signed)


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], signed: list[str], payload_hash: str
) -> str:
    """The SigV4 canonical request text."""
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers(headers, signed),
            ";".join(signed),
            payload_hash,
        ]
    )


def credential_scope(date: str, region: str, service: str) -> str:
    """``date/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """The SigV4 string to sign for a canonical request."""
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key: HMAC chain over date, region, service and ``aws4_request``."""
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret_key: str, date: str, region: str, service: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of ``to_sign`` under the derived signing key."""
    return hmac.new(signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()


def _sign_all(_name: str) -> bool:
    return True


def sign_headers(
    method: str,
    path: str,
    headers: Mapping[str, str],
    credentials: AwsCredentials,
    region: str,
    service: str,
    when: dt.datetime,
    payload_hash: str = EMPTY_SHA256,
    include: Callable[[str], bool] = _sign_all,
) -> dict[str, str]:
    """Return a copy of ``headers`` with ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the
    credentials carry one) and ``Authorization`` added.

    ``path`` may carry a ``?query``. Every header whose lowercase name passes ``include`` is
    signed (the added ``x-amz-*`` headers always pass). Existing ``X-Amz-Date``/
    ``Authorization``/``X-Amz-Security-Token`` headers, in any case, are replaced.
    """
    amz_date, date = amz_dates(when)
    replaced = {"x-amz-date", "authorization", "x-amz-security-token"}
    out = {k: v for k, v in headers.items() if k.lower() not in replaced}
    out["X-Amz-Date"] = amz_date
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    signed = sorted({k.lower() for k in out if k.lower().startswith("x-amz-") or include(k.lower())})
    raw_path, _, query = path.partition("?")
    canonical = canonical_request(method, raw_path, query, out, signed, payload_hash)
    scope = credential_scope(date, region, service)
    sig = signature(credentials.secret_key, date, region, service, string_to_sign(amz_date, scope, canonical))
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    return out


def _ws_signed(name: str) -> bool:
    return name != "upgrade" and not name.startswith("sec-websocket-")


def sign_ws_headers(
    headers: Mapping[str, str],
    path: str,
    credentials: AwsCredentials,
    region: str,
    when: dt.datetime,
    service: str = IOT_SERVICE,
) -> dict[str, str]:
    """Sign a websocket upgrade (``GET path``) the way AWS IoT accepts it: every header except
    ``Upgrade`` and ``Sec-WebSocket-*`` is signed, the payload is the empty string."""
    return sign_headers("GET", path, headers, credentials, region, service, when, include=_ws_signed)


@dataclass(frozen=True)
class ParsedAuthorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split an ``Authorization`` header. Raises ValueError when it is not a SigV4 header."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise ValueError("not an AWS4-HMAC-SHA256 authorization")
    parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
    try:
        access_key, date, region, service, terminal = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
        sig = parts["Signature"]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed SigV4 authorization: {exc}") from None
    if terminal != "aws4_request":
        raise ValueError("malformed SigV4 credential scope")
    return ParsedAuthorization(access_key, date, region, service, signed, sig)
