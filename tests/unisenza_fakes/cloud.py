"""The fake Unisenza cloud, run as its own process by the tests (``python cloud.py CONFIG.json``).

One process plays every cloud part the client talks to, all on 127.0.0.1 over TLS with the
test CA's server certificate:

- an HTTPS server for Cognito user pools (``InitiateAuth`` with ``USER_SRP_AUTH`` and
  ``REFRESH_TOKEN_AUTH``, ``RespondToAuthChallenge`` with a real SRP verifier check), Cognito
  identity (``GetCredentialsForIdentity``) and the vendor REST API
  (``/api/v1/occupants/slider_list|slider_details``);
- the "IoT endpoint": a TLS front that verifies the SigV4 signature of the websocket upgrade
  against the credentials it issued, answers 403 otherwise, and pipes accepted connections to
  mosquitto's websocket listener;
- the shadow service: a paho client on mosquitto's plain listener answering
  ``$aws/things/<thing>/shadow/get|update`` like AWS IoT, and "applying" desired changes with a
  ``reported`` update afterwards.

Tests steer it with ``POST /_fake/<op>`` (JSON in, JSON out): ``reset``, ``stats``, ``push``,
``silence``, ``reject_update``, ``drop``, ``set``, ``drip`` (``{"http": s, "front": s}``: answer
one byte every ``s`` seconds, for ever; ``null`` ends it), ``revoke_refresh``, ``revoke_credentials``,
``delete_shadow``, ``shadow``, ``add_thermostat``.
On start it prints one JSON line ``{"http_port": .., "front_port": ..}`` to stdout.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hmac
import json
import logging
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from uun_gateway.modules.unisenza import sigv4, srp

log = logging.getLogger("fake-cloud")

HVAC = "11"
GATEWAY = "000000000001"
# write key -> read key, as the device applies a desired change
APPLY = {
    "ep1:sTherS:SetHeatingSetpoint_x100": "ep1:sTherS:HeatingSetpoint_x100",
    "ep1:sTherS:SetSystemMode": "ep1:sTherS:RunningMode",
}


class CognitoFault(Exception):
    def __init__(self, error_type: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status


class State:
    """Everything the fake knows; one lock guards it all."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            cfg = self.config
            self.pool_id: str = cfg["pool_id"]
            self.pool_name = self.pool_id.split("_", 1)[1]
            self.client_id: str = cfg["client_id"]
            self.region: str = cfg.get("region", "eu-central-1")
            self.token_ttl = float(cfg.get("token_ttl", 3600))
            self.credential_ttl = float(cfg.get("credential_ttl", 3600))
            self.users: dict[str, dict[str, Any]] = {}
            for name, user in cfg["users"].items():
                salt = secrets.token_hex(16)
                x = srp.password_hash(self.pool_name, user["sub"], user["password"], salt)
                self.users[name] = {
                    "sub": user["sub"],
                    "salt": salt,
                    "verifier": pow(srp.G, x, srp.N),
                    "challenge": user.get("challenge"),
                    "empty": user.get("empty", False),
                }
            self.srp_sessions: dict[str, dict[str, Any]] = {}
            self.id_tokens: dict[str, tuple[str, float]] = {}
            self.access_tokens: dict[str, tuple[str, float]] = {}
            self.refresh_tokens: dict[str, str] = {}
            self.credentials: dict[str, dict[str, Any]] = {}
            self.gateways = copy.deepcopy(cfg["gateways"])
            self.shadows: dict[str, dict[str, Any]] = {}
            for gw in self.gateways:
                self.shadows[gw["device_code"]] = {
                    "reported": {
                        "connected": "true",
                        GATEWAY: {"properties": dict(gw.get("properties", {}))},
                    },
                    "desired": {},
                    "version": 1,
                }
                for th in gw["thermostats"]:
                    self.shadows[th["device_code"]] = {
                        "reported": {
                            "connected": th.get("connected", "true"),
                            HVAC: {"properties": dict(th.get("properties", {}))},
                        },
                        "desired": {},
                        "version": 1,
                    }
            self.silenced: set[str] = set()
            self.reject_updates: dict[str, dict[str, Any]] = {}
            self.drip: dict[str, float] = {}  # "http"/"front": seconds per byte of the answer
            self.stats: dict[str, Any] = {
                "http_drips": 0,
                "front_drips": 0,
                "logins": 0,
                "failed_logins": 0,
                "refreshes": 0,
                "credentials_issued": 0,
                "rest_calls": 0,
                "rest_refused": 0,
                "front_accepted": 0,
                "front_rejected": 0,
                "front_active": 0,
                "gets": {},
                "updates": {},
            }

    def count(self, key: str, thing: str | None = None) -> None:
        with self.lock:
            if thing is None:
                self.stats[key] += 1
            else:
                self.stats[key][thing] = self.stats[key].get(thing, 0) + 1

    # -- tokens ------------------------------------------------------------------------------

    def issue_tokens(self, user: str, refresh: bool) -> dict[str, Any]:
        expires = time.time() + self.token_ttl
        id_token, access = "id-" + secrets.token_hex(12), "acc-" + secrets.token_hex(12)
        self.id_tokens[id_token] = (user, expires)
        self.access_tokens[access] = (user, expires)
        result: dict[str, Any] = {
            "IdToken": id_token,
            "AccessToken": access,
            "ExpiresIn": self.token_ttl,
            "TokenType": "Bearer",
        }
        if refresh:
            token = "ref-" + secrets.token_hex(12)
            self.refresh_tokens[token] = user
            result["RefreshToken"] = token
        return result

    def user_of_id_token(self, token: str | None) -> str | None:
        with self.lock:
            entry = self.id_tokens.get(token or "")
            if entry is None or entry[1] < time.time():
                return None
            return entry[0]

    def identities_of(self, user: str) -> set[str]:
        if self.users[user]["empty"]:
            return set()
        return {gw["identity_id"] for gw in self.gateways if gw.get("owner", user) == user}

    def add_thermostat(self, gateway_code: str, thermostat: dict[str, Any]) -> None:
        with self.lock:
            gateway = next(gw for gw in self.gateways if gw["device_code"] == gateway_code)
            gateway["thermostats"].append(thermostat)
            self.shadows[thermostat["device_code"]] = {
                "reported": {"connected": "true", HVAC: {"properties": dict(thermostat.get("properties", {}))}},
                "desired": {},
                "version": 1,
            }


# -- Cognito ------------------------------------------------------------------------------------


def initiate_auth(state: State, body: dict[str, Any]) -> dict[str, Any]:
    if body.get("ClientId") != state.client_id:
        raise CognitoFault("ResourceNotFoundException", "User pool client does not exist.")
    params = body.get("AuthParameters") or {}
    with state.lock:
        if body.get("AuthFlow") == "REFRESH_TOKEN_AUTH":
            owner = state.refresh_tokens.get(params.get("REFRESH_TOKEN", ""))
            if owner is None:
                raise CognitoFault("NotAuthorizedException", "Invalid Refresh Token")
            state.stats["refreshes"] += 1
            return {"AuthenticationResult": state.issue_tokens(owner, refresh=False)}
        if body.get("AuthFlow") != "USER_SRP_AUTH":
            raise CognitoFault("InvalidParameterException", "unsupported flow")
        username = params.get("USERNAME", "")
        user = state.users.get(username)
        if user is None:
            state.stats["failed_logins"] += 1
            raise CognitoFault("UserNotFoundException", "User does not exist.")
        big_a = int(params["SRP_A"], 16)
        if big_a % srp.N == 0:
            raise CognitoFault("InvalidParameterException", "bad SRP_A")
        b = secrets.randbits(256)
        big_b = (srp.K * user["verifier"] + pow(srp.G, b, srp.N)) % srp.N
        secret_block = base64.b64encode(secrets.token_bytes(48)).decode()
        state.srp_sessions[secret_block] = {"user": username, "A": big_a, "b": b, "B": big_b}
        return {
            "ChallengeName": "PASSWORD_VERIFIER",
            "ChallengeParameters": {
                "SALT": user["salt"],
                "SRP_B": format(big_b, "x"),
                "SECRET_BLOCK": secret_block,
                "USER_ID_FOR_SRP": user["sub"],
                "USERNAME": user["sub"],
            },
        }


def respond_to_challenge(state: State, body: dict[str, Any]) -> dict[str, Any]:
    responses = body.get("ChallengeResponses") or {}
    with state.lock:
        session = state.srp_sessions.pop(responses.get("PASSWORD_CLAIM_SECRET_BLOCK", ""), None)
        if session is None or body.get("ChallengeName") != "PASSWORD_VERIFIER":
            raise CognitoFault("NotAuthorizedException", "Invalid session")
        user = state.users[session["user"]]
        big_a, big_b, b = session["A"], session["B"], session["b"]
        u = srp.hash_int(big_a, big_b)
        shared = pow(big_a * pow(user["verifier"], u, srp.N), b, srp.N)
        key = srp.session_key(shared, u)
        expected = srp.claim_signature(
            key,
            state.pool_name,
            user["sub"],
            responses["PASSWORD_CLAIM_SECRET_BLOCK"],
            responses.get("TIMESTAMP", ""),
        )
        if not hmac.compare_digest(expected, responses.get("PASSWORD_CLAIM_SIGNATURE", "")):
            state.stats["failed_logins"] += 1
            raise CognitoFault("NotAuthorizedException", "Incorrect username or password.")
        if user["challenge"]:
            return {"ChallengeName": user["challenge"], "Session": "s", "ChallengeParameters": {}}
        state.stats["logins"] += 1
        return {"AuthenticationResult": state.issue_tokens(session["user"], refresh=True)}


def get_credentials(state: State, body: dict[str, Any]) -> dict[str, Any]:
    logins = body.get("Logins") or {}
    provider = f"cognito-idp.{state.region}.amazonaws.com/{state.pool_id}"
    user = state.user_of_id_token(logins.get(provider))
    if user is None:
        raise CognitoFault("NotAuthorizedException", "Invalid login token.")
    with state.lock:
        if body.get("IdentityId") not in state.identities_of(user):
            raise CognitoFault("NotAuthorizedException", "Access to Identity is forbidden")
        access_key = "ASIA" + secrets.token_hex(8).upper()
        creds = {
            "AccessKeyId": access_key,
            "SecretKey": secrets.token_urlsafe(30),
            "SessionToken": "tok/" + secrets.token_urlsafe(40) + "+=",
            "Expiration": time.time() + state.credential_ttl,
        }
        state.credentials[access_key] = creds
        state.stats["credentials_issued"] += 1
        return {"IdentityId": body["IdentityId"], "Credentials": creds}


TARGETS = {
    "AWSCognitoIdentityProviderService.InitiateAuth": initiate_auth,
    "AWSCognitoIdentityProviderService.RespondToAuthChallenge": respond_to_challenge,
    "AWSCognitoIdentityService.GetCredentialsForIdentity": get_credentials,
}


# -- REST -------------------------------------------------------------------------------------


def slider_list(state: State, user: str) -> dict[str, Any]:
    data = []
    for gw in state.gateways:
        if gw.get("owner", user) != user or state.users[user]["empty"]:
            continue
        data.append(
            {
                "type": "gateway",
                "gateway": {
                    "id": gw["id"],
                    "device_code": gw["device_code"],
                    "model": gw.get("model", "U-GW"),
                    "name": gw["name"],
                    "occupants_permissions": {
                        "receiver_occupant": {
                            "id": gw.get("occupant_id", "occ-1"),
                            "identity_id": gw["identity_id"],
                        }
                    },
                },
            }
        )
    data.append({"type": "home", "home": {"id": "home-1"}})
    return {"data": data}


def slider_details(state: State, gateway_id: str) -> dict[str, Any] | None:
    for gw in state.gateways:
        if gw["id"] != gateway_id:
            continue
        leaves = [
            {
                "id": th["id"],
                "device_code": th["device_code"],
                "model": th.get("model", "U-TH"),
                "name": th["name"],
            }
            for th in gw["thermostats"]
        ]
        # The tree nests groups; the gateway itself appears as a leaf with permissions.
        half = len(leaves) // 2
        items: list[dict[str, Any]] = [
            {
                "id": gw["id"],
                "device_code": gw["device_code"],
                "name": gw["name"],
                "occupants_permissions": {},
            },
            {"id": "group-1", "name": "Ground floor", "items": leaves[:half]},
            {"id": "group-2", "name": "Upstairs", "items": [{"id": "group-3", "items": leaves[half:]}]},
        ]
        return {"data": {"id": gw["id"], "items": items}}
    return None


# -- HTTP server --------------------------------------------------------------------------------


def drip(conn: Any, interval: float, head: bytes) -> None:
    """Send ``head`` and then a header line that never ends, one byte every ``interval`` seconds,
    until the client goes away (or ten minutes pass)."""
    deadline = time.monotonic() + 600
    data = head + b"X-Drip: "
    i = 0
    with contextlib.suppress(OSError, ssl.SSLError):
        while time.monotonic() < deadline:
            conn.sendall(data[i : i + 1] if i < len(data) else b"a")
            i += 1
            time.sleep(interval)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CloudHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _dripping(self) -> bool:
        state = self.server.state
        with state.lock:
            interval = state.drip.get("http")
        if interval is None:
            return False
        state.count("http_drips")
        drip(self.connection, interval, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        self.close_connection = True
        return True

    def do_POST(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        if path.startswith("/_fake/"):
            self._send(200, self.server.control(path[len("/_fake/") :], self._body()))
            return
        if self._dripping():
            return
        target = self.headers.get("X-Amz-Target", "")
        handler = TARGETS.get(target)
        if handler is None:
            self._send(400, {"__type": "UnknownOperationException", "message": target})
            return
        try:
            self._send(200, handler(state, self._body()), "application/x-amz-json-1.1")
        except CognitoFault as fault:
            self._send(fault.status, {"__type": fault.error_type, "message": str(fault)})

    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        if self._dripping():
            return
        user = state.user_of_id_token(self.headers.get("x-auth-token"))
        state.count("rest_calls")
        if user is None or self.headers.get("x-company-code") != "purmo":
            state.count("rest_refused")
            self._send(401, {"message": "Unauthorized"})
            return
        with state.lock:
            if parts.path == "/api/v1/occupants/slider_list":
                self._send(200, slider_list(state, user))
                return
            if parts.path == "/api/v1/occupants/slider_details":
                query = parse_qs(parts.query)
                found = slider_details(state, query.get("id", [""])[0])
                if found is not None:
                    self._send(200, found)
                    return
        self._send(404, {"message": "not found"})


class CloudHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: State, cloud: FakeCloudProcess, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state
        self.cloud = cloud
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.settimeout(5)
        return self.context.wrap_socket(sock, server_side=True), addr

    def control(self, op: str, body: dict[str, Any]) -> Any:
        return self.cloud.control(op, body)


# -- SigV4 front ----------------------------------------------------------------------------------


class Front:
    """TLS listener that checks the SigV4 upgrade and pipes to mosquitto's websocket port."""

    def __init__(self, state: State, context: ssl.SSLContext, ws_port: int) -> None:
        self.state = state
        self.context = context
        self.ws_port = ws_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.backends: set[socket.socket] = set()
        self.client_ids: list[str] = []
        threading.Thread(target=self._accept, name="front-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), name="front-conn", daemon=True).start()

    def verify(self, request: bytes) -> str | None:
        """None when the upgrade is properly signed, else the reason."""
        head = request.decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip()] = value.strip()
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            auth = sigv4.parse_authorization(lower.get("authorization", ""))
        except ValueError as exc:
            return str(exc)
        with self.state.lock:
            creds = self.state.credentials.get(auth.access_key_id)
        if creds is None:
            return "unknown access key"
        if creds["Expiration"] < time.time():
            return "expired credentials"
        if lower.get("x-amz-security-token") != creds["SessionToken"]:
            return "wrong security token"
        if (auth.region, auth.service) != (self.state.region, sigv4.IOT_SERVICE):
            return "wrong scope"
        for required in ("host", "x-amz-date", "x-amz-security-token"):
            if required not in auth.signed_headers:
                return f"{required} not signed"
        amz_date = lower.get("x-amz-date", "")
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return "bad x-amz-date"
        if abs(time.time() - when.timestamp()) > 300 or auth.date != amz_date[:8]:
            return "request time too skewed"
        path, _, query = target.partition("?")
        canonical = sigv4.canonical_request(method, path, query, headers, auth.signed_headers, sigv4.EMPTY_SHA256)
        scope = sigv4.credential_scope(auth.date, auth.region, auth.service)
        expected = sigv4.signature(
            creds["SecretKey"],
            auth.date,
            auth.region,
            auth.service,
            sigv4.string_to_sign(amz_date, scope, canonical),
        )
        if not hmac.compare_digest(expected, auth.signature):
            return "signature mismatch"
        return None

    def _serve(self, raw: socket.socket) -> None:
        backend: socket.socket | None = None
        try:
            raw.settimeout(10)
            conn = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk or len(data) > 65536:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            with self.state.lock:
                interval = self.state.drip.get("front")
            if interval is not None:
                self.state.count("front_drips")
                drip(conn, interval, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
                return
            reason = self.verify(head)
            if reason is not None:
                log.info("front: refused upgrade: %s", reason)
                self.state.count("front_rejected")
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                backend = socket.create_connection(("127.0.0.1", self.ws_port), timeout=5)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                return
            self.state.count("front_accepted")
            with self.state.lock:
                self.backends.add(backend)
                self.state.stats["front_active"] += 1
            backend.sendall(head + b"\r\n\r\n" + rest)
            conn.settimeout(None)
            backend.settimeout(None)
            self._pipe(conn, backend)
        except (OSError, ssl.SSLError):
            pass
        finally:
            if backend is not None:
                with self.state.lock:
                    if backend in self.backends:
                        self.backends.discard(backend)
                        self.state.stats["front_active"] -= 1
                backend.close()
            conn.close()

    @staticmethod
    def _pipe(conn: ssl.SSLSocket, backend: socket.socket) -> None:
        while True:
            readable: list[Any]
            if conn.pending():
                readable = [conn]
            else:
                readable, _, _ = select.select([conn, backend], [], [])
            if conn in readable:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                backend.sendall(chunk)
            if backend in readable:
                chunk = backend.recv(65536)
                if not chunk:
                    return
                conn.sendall(chunk)

    def drop_all(self) -> int:
        with self.state.lock:
            backends = list(self.backends)
        for backend in backends:
            with contextlib.suppress(OSError):
                backend.shutdown(socket.SHUT_RDWR)
        return len(backends)


# -- shadow service -------------------------------------------------------------------------------


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into ``target``; return the parts that changed."""
    changed: dict[str, Any] = {}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            sub = _merge(target[key], value)
            if sub:
                changed[key] = sub
        elif target.get(key) != value:
            target[key] = copy.deepcopy(value)
            changed[key] = value
    return changed


class ShadowService:
    def __init__(self, state: State, mqtt_port: int) -> None:
        self.state = state
        self.ready = threading.Event()
        self.connects = 0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-shadow-service")
        client.reconnect_delay_set(min_delay=0.05, max_delay=0.2)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.connect_async("127.0.0.1", mqtt_port, 30)
        client.loop_start()
        self.client = client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([("$aws/things/+/shadow/get", 0), ("$aws/things/+/shadow/update", 0)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self.state.lock:
            self.connects += 1
        self.ready.set()

    def publish(self, thing: str, op: str, result: str, doc: dict[str, Any]) -> None:
        self.client.publish(f"$aws/things/{thing}/shadow/{op}/{result}", json.dumps(doc), qos=0)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        thing, op = parts[2], parts[4]
        try:
            request = json.loads(message.payload)
        except ValueError:
            return
        token = request.get("clientToken")
        state = self.state
        with state.lock:
            state.count("gets" if op == "get" else "updates", thing)
            if thing in state.silenced:
                return
            shadow = state.shadows.get(thing)
            now = int(time.time())
            if shadow is None:
                self.publish(
                    thing,
                    op,
                    "rejected",
                    {"code": 404, "message": f"No shadow exists with name: '{thing}'", "clientToken": token},
                )
                return
            if op == "get":
                doc = {
                    "state": {"reported": shadow["reported"], "desired": shadow["desired"]},
                    "metadata": {},
                    "version": shadow["version"],
                    "timestamp": now,
                    "clientToken": token,
                }
                self.publish(thing, "get", "accepted", doc)
                return
            rule = state.reject_updates.get(thing)
            desired = (request.get("state") or {}).get("desired")
            if rule is not None or not isinstance(desired, dict):
                rule = rule or {"code": 400, "message": "Missing required node: state"}
                self.publish(thing, "update", "rejected", {**rule, "clientToken": token})
                return
            _merge(shadow["desired"], desired)
            shadow["version"] += 1
            accepted = {
                "state": {"desired": desired},
                "metadata": {},
                "version": shadow["version"],
                "timestamp": now,
                "clientToken": token,
            }
            self.publish(thing, "update", "accepted", accepted)
            # The device applies the change and reports it (only values that changed).
            applied: dict[str, Any] = {}
            props = (desired.get(HVAC) or {}).get("properties") or {}
            for key, value in props.items():
                if key in APPLY:
                    applied[APPLY[key]] = str(value) if key.endswith("_x100") else value
            self._report(thing, {HVAC: {"properties": applied}})

    def _report(self, thing: str, reported: dict[str, Any]) -> None:
        """Merge a reported change; publish it as update/accepted without a client token."""
        with self.state.lock:
            shadow = self.state.shadows[thing]
            changed = _merge(shadow["reported"], reported)
            if not changed:
                return
            shadow["version"] += 1
            doc = {"state": {"reported": changed}, "metadata": {}, "version": shadow["version"]}
            doc["timestamp"] = int(time.time())
        self.publish(thing, "update", "accepted", doc)


# -- process ----------------------------------------------------------------------------------------


class FakeCloudProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        self.state = State(config)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config["cert"], config["key"])
        self.service = ShadowService(self.state, config["mqtt_port"])
        if not self.service.ready.wait(10):
            raise SystemExit("shadow service could not subscribe")
        self.front = Front(self.state, context, config["ws_port"])
        self.http = CloudHTTPServer(self.state, self, context)

    def control(self, op: str, body: dict[str, Any]) -> Any:
        state = self.state
        if op == "reset":
            state.reset()
            return {"ok": True}
        if op == "stats":
            with state.lock:
                return {**copy.deepcopy(state.stats), "service_connects": self.service.connects}
        if op == "push":
            thing = body["thing"]
            reported: dict[str, Any] = {}
            if "connected" in body:
                reported["connected"] = body["connected"]
            if "properties" in body:
                section = GATEWAY if any(gw["device_code"] == thing for gw in state.gateways) else HVAC
                reported[section] = {"properties": body["properties"]}
            self.service._report(thing, reported)
            return {"ok": True}
        if op == "silence":
            with state.lock:
                if body.get("on", True):
                    state.silenced.add(body["thing"])
                else:
                    state.silenced.discard(body["thing"])
            return {"ok": True}
        if op == "reject_update":
            with state.lock:
                state.reject_updates[body["thing"]] = {"code": body["code"], "message": body["message"]}
            return {"ok": True}
        if op == "drip":
            with state.lock:
                for key in ("http", "front"):
                    if key in body:
                        if body[key] is None:
                            state.drip.pop(key, None)
                        else:
                            state.drip[key] = float(body[key])
            return {"ok": True}
        if op == "drop":
            return {"dropped": self.front.drop_all()}
        if op == "set":
            with state.lock:
                for key in ("token_ttl", "credential_ttl"):
                    if key in body:
                        setattr(state, key, float(body[key]))
            return {"ok": True}
        if op == "revoke_refresh":
            with state.lock:
                state.refresh_tokens.clear()
            return {"ok": True}
        if op == "revoke_credentials":
            with state.lock:
                state.credentials.clear()
            return {"ok": True}
        if op == "add_thermostat":
            state.add_thermostat(body["gateway"], body["thermostat"])
            return {"ok": True}
        if op == "delete_shadow":
            with state.lock:
                state.shadows.pop(body["thing"], None)
            return {"ok": True}
        if op == "shadow":
            with state.lock:
                return copy.deepcopy(state.shadows.get(body["thing"]))
        return {"error": f"unknown op {op}"}

    def serve(self) -> None:
        print(json.dumps({"http_port": self.http.server_address[1], "front_port": self.front.port}), flush=True)
        self.http.serve_forever()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s fake-cloud %(message)s")
    with open(sys.argv[1]) as fh:
        config = json.load(fh)
    FakeCloudProcess(config).serve()


if __name__ == "__main__":
    main()
