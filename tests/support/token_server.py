"""A tiny Docker token server (https://distribution.github.io/distribution/spec/auth/token/) for tests.

It signs RS256 JWTs with a throw-away key whose self-signed certificate is both sent in the ``x5c``
header and given to the registry as ``rootcertbundle`` - the registry trusts nothing else.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ALL_ACTIONS = ("pull", "push", "delete")


@dataclass
class TokenRequest:
    """What one call to the realm asked for and got (for assertions on token caching)."""

    account: str | None  # None = anonymous
    scopes: list[str]
    granted: list[dict]
    status: int


@dataclass
class TokenServer:
    """Issues tokens on ``http://127.0.0.1:<port>/token``.

    ``users`` maps name -> password; ``user_actions`` limits what a user may get (default: all).
    ``anonymous_actions`` is what callers without credentials get on repositories (``()`` = a
    token with no access at all). ``token_field`` picks the answer's key: token, access_token, both.
    """

    workdir: Path
    service: str = "test-registry"
    issuer: str = "test-token-issuer"
    users: dict[str, str] = field(default_factory=dict)
    user_actions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    anonymous_actions: tuple[str, ...] = ("pull",)
    token_field: str = "token"  # noqa: S105 - a JSON key
    lifetime: int = 300
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = self.workdir / "token-cert.pem"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- lifecycle

    @property
    def realm(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def start(self) -> TokenServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="token-server",
            daemon=True,
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def registry_auth_config(self) -> dict:
        """The ``auth:`` section of a distribution config that trusts this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    # ----------------------------------------------------------------- issuing

    def issue(self, account: str | None, scopes: list[str]) -> str:
        allowed = self.user_actions.get(account, ALL_ACTIONS) if account else self.anonymous_actions
        access = []
        for scope in scopes:
            for item in scope.split():
                rtype, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if rtype == "repository":
                    granted = [a for a in actions.split(",") if a in allowed]
                elif rtype == "registry" and name == "catalog" and account:
                    granted = ["*"]
                else:
                    granted = []
                if granted:
                    access.append({"type": rtype, "name": name, "actions": granted})
        now = int(dt.datetime.now(dt.timezone.utc).timestamp())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": [self._x5c]})
        with self._lock:
            self.requests.append(TokenRequest(account, scopes, access, 200))
        return token

    def check(self, authorization: str | None) -> tuple[bool, str | None]:
        """(ok, account) for an Authorization header; no header means anonymous."""
        if not authorization:
            return True, None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        return self.users.get(user) == password and user in self.users, user


def _handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path != "/token":
                return self._reply(404, {"details": "not found"})
            if query.get("service", [""])[0] != server.service:
                return self._reply(400, {"details": "unknown service"})
            ok, account = server.check(self.headers.get("Authorization"))
            scopes = query.get("scope", [])
            if not ok:
                with server._lock:
                    server.requests.append(TokenRequest(account, scopes, [], 401))
                return self._reply(401, {"details": "incorrect username or password"})
            token = server.issue(account, scopes)
            body: dict = {"expires_in": server.lifetime, "issued_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            if server.token_field in ("token", "both"):
                body["token"] = token
            if server.token_field in ("access_token", "both"):
                body["access_token"] = token
            self._reply(200, body)

        def _reply(self, status: int, body: dict) -> None:
            send_json(self, status, body)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return Handler


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Answer ``handler``'s request with ``body`` as JSON (the fake servers' one way of answering)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
