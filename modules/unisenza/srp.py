"""SRP-6a client math as AWS Cognito user pools use it (``USER_SRP_AUTH``).

Pure functions over Python integers; no I/O, no global state, thread-safe. The group is the
3072-bit MODP group of RFC 3526 / RFC 5054 with generator 2, the hash is SHA-256, and the
session key is one 16-byte HKDF-SHA256 block with the info string ``"Caldera Derived Key"``.
Cognito hashes every number through :func:`pad_hex` (minimal even-length hex that reads as a
positive two's-complement number), and the password hash ``x`` covers
``pool_name + user_id + ":" + password``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

# RFC 3526 section 4 (also RFC 5054 appendix A): the 3072-bit MODP prime.
N_HEX = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B2"
    "2514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7E"
    "C6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45"
    "B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F3562085"
    "52BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180"
    "E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898"
    "FA051015728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575"
    "D060C7DB3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06"
    "D98A0864D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA"
    "074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
)
N = int(N_HEX, 16)
G = 2
_INFO = b"Caldera Derived Key"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pad_hex(value: int) -> str:
    """Return ``value`` as Cognito's padded hex: even length, and a leading ``00`` when the
    first digit is 8-f so the bytes read as a positive number."""
    text = format(value, "x")
    if len(text) % 2:
        return "0" + text
    if text[0] in "89abcdef":
        return "00" + text
    return text


def hash_hex(hex_text: str) -> str:
    """SHA-256 of the bytes spelled by ``hex_text``, as 64 lowercase hex digits."""
    return hashlib.sha256(bytes.fromhex(hex_text)).hexdigest()


def hash_int(*values: int) -> int:
    """``H(pad(v1) || pad(v2) ...)`` read as an integer."""
    return int(hash_hex("".join(pad_hex(v) for v in values)), 16)


K = int(hash_hex("00" + N_HEX + "0" + format(G, "x")), 16)


def generate_private() -> int:
    """A fresh random SRP private exponent (1024 bits reduced mod N), never zero."""
    while True:
        value = secrets.randbits(1024) % N
        if value:
            return value


def public_a(a: int) -> int:
    """The client's public value ``A = g^a mod N``. Raises ValueError for a degenerate ``a``."""
    value = pow(G, a, N)
    if value % N == 0:
        raise ValueError("SRP: A is 0 mod N")
    return value


def password_hash(pool_name: str, user_id: str, password: str, salt_hex: str) -> int:
    """The private key ``x = H(pad(salt) || hex(SHA256(pool_name || user_id || ":" || password)))``."""
    inner = hashlib.sha256(f"{pool_name}{user_id}:{password}".encode()).hexdigest()
    return int(hash_hex(pad_hex(int(salt_hex, 16)) + inner), 16)


def session_key(shared_secret: int, u: int) -> bytes:
    """The 16-byte HKDF-SHA256 key derived from ``S`` with salt ``pad(u)``."""
    prk = hmac.new(bytes.fromhex(pad_hex(u)), bytes.fromhex(pad_hex(shared_secret)), hashlib.sha256).digest()
    return hmac.new(prk, _INFO + b"\x01", hashlib.sha256).digest()[:16]


def client_session_key(
    a: int, big_a: int, big_b: int, pool_name: str, user_id: str, password: str, salt_hex: str
) -> bytes:
    """Derive the client's session key from its secret ``a`` and the server's ``B``.

    Raises ValueError when ``B % N == 0`` or the scrambler ``u`` is 0 (a hostile server).
    """
    if big_b % N == 0:
        raise ValueError("SRP: B is 0 mod N")
    u = hash_int(big_a, big_b)
    if u == 0:
        raise ValueError("SRP: u is 0")
    x = password_hash(pool_name, user_id, password, salt_hex)
    shared = pow(big_b - K * pow(G, x, N), a + u * x, N)
    return session_key(shared, u)


def cognito_timestamp(when: dt.datetime) -> str:
    """Cognito's ``TIMESTAMP``: ``'Fri Jan 5 09:04:07 UTC 2024'`` in UTC, English names, day not
    zero-padded, independent of the process locale. ``when`` must be timezone-aware."""
    t = when.astimezone(dt.UTC)
    return f"{_WEEKDAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day} {t:%H:%M:%S} UTC {t.year}"


def claim_signature(key: bytes, pool_name: str, user_id: str, secret_block_b64: str, timestamp: str) -> str:
    """``PASSWORD_CLAIM_SIGNATURE``: base64 HMAC-SHA256 over pool name, user id, the decoded
    secret block and the timestamp."""
    msg = pool_name.encode() + user_id.encode() + base64.b64decode(secret_block_b64) + timestamp.encode()
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def password_claim(
    a: int,
    pool_name: str,
    user_id: str,
    password: str,
    salt_hex: str,
    srp_b_hex: str,
    secret_block_b64: str,
    timestamp: str,
) -> str:
    """Compute ``PASSWORD_CLAIM_SIGNATURE`` for a ``PASSWORD_VERIFIER`` challenge.

    ``a`` is the secret whose ``public_a(a)`` was sent as ``SRP_A``. Raises ValueError on a
    degenerate challenge.
    """
    key = client_session_key(a, public_a(a), int(srp_b_hex, 16), pool_name, user_id, password, salt_hex)
    return claim_signature(key, pool_name, user_id, secret_block_b64, timestamp)
