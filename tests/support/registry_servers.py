"""Real ``docker-registry`` (distribution 2.8) processes on free loopback ports, for tests.

Three flavours: no auth, htpasswd Basic auth, and token auth backed by :class:`TokenServer`.
Use the context managers :func:`running_registry` / :func:`running_token_registry` anywhere, or
the session-scoped pytest fixtures in :mod:`tests.support.registry_fixtures`. Each test should use
its own repository names (see :func:`unique_repo`): the fixtures' registries are shared.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from airflow_image_factory.clients.registry import RegistryClient
from tests.support.token_server import TokenServer

REGISTRY_BINARY = shutil.which("docker-registry") or shutil.which("registry") or "/usr/bin/docker-registry"
BASIC_USER = "basic-user"
TOKEN_USER = "token-user"  # noqa: S105 - a user name
TOKEN_READER = "token-reader"  # noqa: S105 - a user name; may only pull


@dataclass
class RegistryServer:
    """A running registry. ``host`` is ``127.0.0.1:<port>``, ready for :class:`RegistryClient`."""

    host: str
    root: Path
    auth: str  # "none" | "htpasswd" | "token"
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    extra_users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def client(self, *, anonymous: bool = False, **kwargs: object) -> RegistryClient:
        """A client with this registry's credentials (unless ``anonymous``) and fast test retries."""
        options: dict[str, object] = {"retries": 2, "backoff": 0.05, "timeout": 10}
        if self.token_server is not None:
            # The token server is plain http on another port: credentials go there only when allowed.
            options["token_realms"] = (urlsplit(self.token_server.realm).netloc,)
        if not anonymous and self.username:
            options.update(username=self.username, password=self.password)
        options.update(kwargs)
        return RegistryClient(self.host, **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_repo(prefix: str = "test") -> str:
    """A repository name nobody else uses (the registries are shared across tests and sessions)."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def start_registry(
    root: Path,
    *,
    auth: str = "none",
    username: str | None = None,
    password: str | None = None,
    token_server: TokenServer | None = None,
    extra_users: dict[str, str] | None = None,
    startup_timeout: float = 15.0,
) -> RegistryServer:
    """Write a config under ``root`` and start ``docker-registry serve`` on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    port = free_port()
    config: dict = {
        "version": "0.1",
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            # Purging runs on start-up and walks the tree; nothing to purge in a fresh dir.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    users = dict(extra_users or {})
    if auth == "htpasswd":
        assert username and password, "htpasswd auth needs a username and password"
        users[username] = password
        lines = []
        for user, pw in users.items():
            # bcrypt is the only hash distribution accepts.
            out = subprocess.run(["htpasswd", "-Bbn", user, pw], check=True, capture_output=True, text=True)
            lines.append(out.stdout.strip())
        htpasswd = root / "htpasswd"
        htpasswd.write_text("\n".join(lines) + "\n")
        config["auth"] = {"htpasswd": {"realm": "test-registry", "path": str(htpasswd)}}
    elif auth == "token":
        assert token_server is not None, "token auth needs a running TokenServer"
        config["auth"] = token_server.registry_auth_config()
    elif auth != "none":
        raise ValueError(f"unknown auth {auth!r}")

    # YAML is a superset of JSON, so no YAML writer is needed.
    config_path = root / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=root
    )
    log.close()
    server = RegistryServer(
        host=f"127.0.0.1:{port}",
        root=root,
        auth=auth,
        process=process,
        username=username,
        password=password,
        token_server=token_server,
        extra_users=users,
    )
    deadline = time.monotonic() + startup_timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {process.returncode}:\n{server.log_path.read_text()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.url}/v2/", timeout=1).status_code in (200, 401):
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"docker-registry did not come up on {server.host}:\n{server.log_path.read_text()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_registry(root: Path, **kwargs: object) -> Iterator[RegistryServer]:
    """A throw-away registry: its data goes with it (pushed test images are gigabytes)."""
    server = start_registry(root, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_token_registry(
    root: Path, *, users: dict[str, str] | None = None, **token_options: object
) -> Iterator[RegistryServer]:
    """A token server plus a registry that trusts it; the first user becomes the server's default."""
    users = users or {TOKEN_USER: "token-" + secrets.token_hex(8), TOKEN_READER: "reader-" + secrets.token_hex(8)}
    token_options.setdefault("user_actions", {TOKEN_READER: ("pull",)})
    tokens = TokenServer(root / "token", users=users, **token_options).start()  # type: ignore[arg-type]
    try:
        username, password = next(iter(users.items()))
        with running_registry(
            root / "registry", auth="token", token_server=tokens, username=username, password=password
        ) as server:
            server.extra_users = dict(users)
            yield server
    finally:
        tokens.stop()
