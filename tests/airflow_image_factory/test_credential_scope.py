"""A registry Connection's secret goes only to the host it was made for - checked on the wire.

Every server here is a real HTTP server on loopback that records each request it gets (request line,
headers, body); the assertions look for the Authorization header and for the password and the base64
of ``login:password`` anywhere in what a server that was not meant for the secret received.
Connections come from ``AIRFLOW_CONN_<ID>`` environment variables, as Airflow reads them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import CredentialScopeError, RegistryAuthError
from airflow_image_factory.policy.credentials import login_from_connection
from airflow_image_factory.policy.reference import normalize_host
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.tasks.hooks import RegistryHook
from airflow_image_factory.tasks.operators import fail_at_once

pytestmark = pytest.mark.timeout(60)

LOGIN = "robot"
PASSWORD = "s3cr3t-Pa55w0rd-never-leaks"  # noqa: S105 - a test secret
BASIC = "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
TOKEN = "tok-" + "0" * 20  # what the fake token servers issue
SECRETS = (PASSWORD, base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode(), BASIC)
REPO = "team/app"
BLOB = "/v2/team/app/blobs/sha256:" + "a" * 64


# ------------------------------------------------------------------------------------ fake servers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    raw: str  # request line, headers and body, as received


@dataclass
class FakeServer:
    """A loopback HTTP server that records every request and answers with ``respond(server, seen)``."""

    respond: Callable[[FakeServer, Seen], tuple[int, dict[str, str], bytes]]
    bind: str = "127.0.0.1"
    requests: list[Seen] = field(default_factory=list)
    realm: str = ""  # what a Bearer registry names in its challenge

    def start(self) -> FakeServer:
        self._server = ThreadingHTTPServer((self.bind, 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def host(self) -> str:
        return f"{self.bind}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def leaks(self) -> list[Seen]:
        """Requests that carried any Authorization header or any form of the secret."""
        return [s for s in self.requests if "authorization" in s.headers or any(x in s.raw for x in SECRETS)]

    def authorizations(self) -> list[str]:
        return [s.headers["authorization"] for s in self.requests if "authorization" in s.headers]


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                f"{self.requestline}\r\n{self.headers}\r\n{body.decode('latin-1')}",
            )
            server.requests.append(seen)
            status, headers, payload = server.respond(server, seen)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _json(status: int, doc: object, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(doc).encode()


def basic_registry(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
    """Wants ``Basic robot:<PASSWORD>`` for everything; any other answer is a 401 challenge."""
    if seen.headers.get("authorization") != BASIC:
        return _json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": 'Basic realm="fake"'})
    return _json(200, {})


def bearer_registry(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
    """Token auth naming ``server.realm``; also a token endpoint itself on ``/token`` (own-host realms)."""
    if seen.path.startswith("/token"):
        return token_server(server, seen)
    if seen.headers.get("authorization") != f"Bearer {TOKEN}":
        challenge = f'Bearer realm="{server.realm}",service="fake",scope="repository:{REPO}:pull"'
        return _json(401, {"errors": [{"code": "UNAUTHORIZED"}]}, **{"WWW-Authenticate": challenge})
    return _json(200, {})


def token_server(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
    """Issues TOKEN; to credentialed requests only when they carry the right password."""
    auth = seen.headers.get("authorization")
    if auth is not None and auth != BASIC:
        return _json(401, {"details": "bad credentials"})
    return _json(200, {"token": TOKEN, "expires_in": 300})


def anything_ok(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
    return _json(200, {"token": TOKEN})


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    started: list[FakeServer] = []

    def start(respond: Callable[[FakeServer, Seen], tuple[int, dict[str, str], bytes]], **kw: str) -> FakeServer:
        server = FakeServer(respond, **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an Airflow ``docker`` Connection with LOGIN / PASSWORD; returns its id."""

    def define(conn_id: str, host: str) -> str:
        doc = {"conn_type": "docker", "host": host, "login": LOGIN, "password": PASSWORD}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(doc))
        return conn_id

    return define


def settings(**changes: object) -> Settings:
    return dataclasses.replace(load_settings(env={}), **changes)  # type: ignore[arg-type]


def client(registry: FakeServer, **kw: object) -> RegistryClient:
    return RegistryClient(registry.host, username=LOGIN, password=PASSWORD, retries=0, timeout=10, **kw)  # type: ignore[arg-type]


def assert_secret_kept(exc: BaseException | None, caplog: pytest.LogCaptureFixture, capsys=None) -> str:
    """No form of the secret in the error, the stdlib logs or Airflow's (structlog, on stdout); the
    captured output is returned."""
    output = capsys.readouterr() if capsys is not None else None
    printed = (output.out + output.err) if output else ""
    for text in (str(exc), repr(exc), caplog.text, printed):
        assert not any(x in text for x in SECRETS), text
    return printed


# ------------------------------------------------------------------------------------ host rule


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://ghcr.io/", "ghcr.io", True),
        ("HTTP://GHCR.io", "ghcr.io", True),
        ("localhost:5000", "localhost:5000/", True),
        ("localhost:5000", "localhost:5001", False),
        ("https://index.docker.io/v1/", "docker.io", True),
        ("ghcr.io", "ghcr.io.evil.example", False),
    ],
)
def test_hosts_are_compared_normalised(a: str, b: str, same: bool) -> None:
    assert (normalize_host(a) == normalize_host(b)) is same


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"registry_default_conn_id": "the_default"}, "the_default"),
        ({"registry_connections": {"ghcr.io": "ghcr_writer"}}, "ghcr_writer"),
    ],
    ids=["default", "mapped"],
)
def test_conn_name_attr_names_the_attribute_holding_the_connection_id(changes, expected) -> None:
    # Airflow's convention: getattr(hook, hook.conn_name_attr) is the connection the hook uses.
    hook = RegistryHook("ghcr.io", settings=settings(**changes))
    assert getattr(hook, hook.conn_name_attr) == expected == hook.registry_conn_id


def test_default_connection_without_host_is_refused_and_nothing_is_sent(
    serve, connection, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = serve(basic_registry)
    conn_id = connection("cs_default_no_host", "")
    hook = RegistryHook(registry.host, settings=settings(registry_default_conn_id=conn_id))
    with pytest.raises(CredentialScopeError) as err:
        with hook.get_conn() as c:
            c.ping()
    failed = fail_at_once(err.value)  # what the task boundary raises: a failure without a retry
    assert isinstance(failed, AirflowFailException)
    message = str(failed)
    assert conn_id in message and registry.host in message and "set the connection's host" in message
    assert registry.leaks() == []
    assert_secret_kept(err.value, caplog, capsys)


def test_default_connection_without_host_fails_the_publishing_check_of_a_conf(
    serve, connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The path a DAG run takes: a conf names the registry, check_publishing asks it whether we may push."""
    from airflow_image_factory.policy.request import validate_request
    from airflow_image_factory.tasks.groups import check_publishing
    from airflow_image_factory.tasks.operators import run_settings

    caplog.set_level(logging.DEBUG)
    registry = serve(basic_registry)
    conn_id = connection("cs_conf_no_host", "")
    monkeypatch.setenv("AIRFLOW_VAR_IMAGE_FACTORY_SETTINGS", json.dumps({"registry_default_conn_id": conn_id}))
    request = validate_request({"registry": registry.host}, run_settings())
    with pytest.raises(AirflowFailException, match=rf"{conn_id}.*{registry.host}"):
        check_publishing.function(request.to_dict())
    assert registry.leaks() == []
    assert_secret_kept(None, caplog, capsys)


@pytest.mark.parametrize("spelling", ["{host}", "http://{host}/", "HTTP://{host}"])
def test_default_connection_naming_this_registry_is_used(serve, connection, spelling: str) -> None:
    registry = serve(basic_registry)
    conn_id = connection("cs_default_match", spelling.format(host=registry.host))
    hook = RegistryHook(registry.host, settings=settings(registry_default_conn_id=conn_id))
    with hook.get_conn() as c:
        assert c.ping()
    assert registry.authorizations()[-1] == BASIC


def test_default_connection_for_another_registry_stays_anonymous(
    serve, connection, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = serve(basic_registry)
    other = serve(basic_registry)
    conn_id = connection("cs_default_other", other.host)  # same hostname, another port: another registry
    hook = RegistryHook(registry.host, settings=settings(registry_default_conn_id=conn_id))
    assert hook.credentials is None
    with pytest.raises(RegistryAuthError), hook.get_conn() as c:
        c.ping()
    assert registry.leaks() == [] and other.requests == []
    printed = assert_secret_kept(None, caplog, capsys)
    assert f"is for {other.host}, not {registry.host}" in printed + caplog.text


def test_mapped_connection_naming_another_host_is_refused(
    serve, connection, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = serve(basic_registry)
    other = serve(basic_registry)
    conn_id = connection("cs_mapped_conflict", f"https://{other.host}/")
    hook = RegistryHook(registry.host, settings=settings(registry_connections={registry.host: conn_id}))
    with pytest.raises(CredentialScopeError) as err:
        with hook.get_conn() as c:
            c.ping()
    assert isinstance(fail_at_once(err.value), AirflowFailException)
    assert conn_id in str(err.value) and registry.host in str(err.value) and other.host in str(err.value)
    assert registry.leaks() == [] and other.requests == []
    assert_secret_kept(err.value, caplog, capsys)


def test_mapped_connection_without_host_is_used_for_its_registry(serve, connection) -> None:
    registry = serve(basic_registry)
    conn_id = connection("cs_mapped_no_host", "")
    hook = RegistryHook(registry.host, settings=settings(registry_connections={registry.host: conn_id}))
    with hook.get_conn() as c:
        assert c.ping()
    assert registry.authorizations()[-1] == BASIC


def test_the_trigger_rule_refuses_a_default_connection_without_host() -> None:
    class Conn:
        conn_id, host, login, password = "cs_trigger", "", LOGIN, PASSWORD

    with pytest.raises(CredentialScopeError, match=r"cs_trigger.*ghcr\.io") as err:
        login_from_connection(Conn(), "ghcr.io", explicit=False)
    assert PASSWORD not in str(err.value)


# ------------------------------------------------------------------------------------ token realms


def test_http_realm_on_another_port_gets_no_credentials(
    serve, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = serve(token_server)
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    with pytest.raises(RegistryAuthError) as err, client(registry) as c:
        c.ping()
    assert registry.realm in str(err.value)
    assert tokens.requests == [] and tokens.leaks() == []
    assert registry.leaks() == []
    assert_secret_kept(err.value, caplog, capsys)


def test_http_realm_on_another_hostname_gets_no_credentials(serve) -> None:
    tokens = serve(token_server, bind="127.0.0.2")  # all of 127/8 is loopback on Linux
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    with pytest.raises(RegistryAuthError, match=r"127\.0\.0\.2"), client(registry) as c:
        c.ping()
    assert tokens.leaks() == [] and registry.leaks() == []


def test_anonymous_token_requests_may_go_to_any_realm(serve) -> None:
    tokens = serve(token_server)
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    with RegistryClient(registry.host, retries=0) as c:
        assert c.ping()
    assert len(tokens.requests) == 1 and tokens.leaks() == []


def test_realm_on_the_registrys_own_host_gets_the_credentials(serve) -> None:
    registry = serve(bearer_registry)
    registry.realm = f"{registry.url}/token"
    with client(registry) as c:
        assert c.ping()
    token_requests = [s for s in registry.requests if s.path.startswith("/token")]
    assert [s.headers.get("authorization") for s in token_requests] == [BASIC]


def test_realm_in_the_allow_list_gets_the_credentials(serve) -> None:
    tokens = serve(token_server)
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    with client(registry, token_realms=(tokens.host,)) as c:
        assert c.ping()
    assert tokens.authorizations() == [BASIC]


def test_the_hook_passes_the_allow_list_setting(serve, connection) -> None:
    tokens = serve(token_server)
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    conn_id = connection("cs_realms", registry.host)
    refused = RegistryHook(registry.host, settings=settings(registry_default_conn_id=conn_id))
    with pytest.raises(RegistryAuthError, match="registry_token_realms"), refused.get_conn() as c:
        c.ping()
    assert tokens.requests == []
    allowed = RegistryHook(
        registry.host, settings=settings(registry_default_conn_id=conn_id, registry_token_realms=(tokens.host,))
    )
    with allowed.get_conn() as c:
        assert c.ping()
    assert tokens.authorizations() == [BASIC]
    assert load_settings(env={}).registry_token_realms == ("auth.docker.io", "ghcr.io")


@pytest.mark.parametrize("credentialed", [True, False])
def test_realm_with_another_scheme_is_refused(serve, credentialed: bool) -> None:
    registry = serve(bearer_registry)
    registry.realm = f"ftp://{registry.host}/token"
    c = client(registry) if credentialed else RegistryClient(registry.host, retries=0)
    with pytest.raises(RegistryAuthError, match="not an http"), c:
        c.ping()
    assert registry.leaks() == []


def test_a_token_endpoint_redirect_to_another_host_carries_no_credentials(serve) -> None:
    elsewhere = serve(anything_ok)

    def redirecting(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        return 307, {"Location": f"{elsewhere.url}/token?from=redirect"}, b""

    tokens = serve(redirecting)
    registry = serve(bearer_registry)
    registry.realm = f"{tokens.url}/token"
    with client(registry, token_realms=(tokens.host,)) as c:
        assert c.ping()
    assert tokens.authorizations() == [BASIC]  # allowed there...
    assert len(elsewhere.requests) == 1 and elsewhere.leaks() == []  # ...but not where it redirected


# ------------------------------------------------------------------------------------ other hosts


@pytest.mark.parametrize("flavour", ["basic", "bearer"])
def test_locations_on_another_host_get_no_auth_header(serve, flavour: str) -> None:
    elsewhere = serve(anything_ok)

    def registry_app(server: FakeServer, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = (basic_registry if flavour == "basic" else bearer_registry)(server, seen)
        if status != 200 or seen.path.startswith("/token"):
            return status, headers, body
        if seen.method == "POST" and "/blobs/uploads/" in seen.path:  # the upload lives elsewhere
            return 202, {"Location": f"{elsewhere.url}/upload/1", "Docker-Upload-UUID": "1"}, b""
        if seen.path == BLOB:  # blobs are served from "object storage"
            return 307, {"Location": f"{elsewhere.url}/blob?sig=1"}, b""
        return status, headers, body

    registry = serve(registry_app)
    registry.realm = f"{registry.url}/token"
    with client(registry) as c:
        assert c.can_push(REPO)  # POST upload, then DELETE at the Location on the other host
        assert c.request("GET", BLOB, scope=[f"repository:{REPO}:pull"]).status_code == 200  # redirect followed
        c.request("GET", f"{elsewhere.url}/absolute")  # an absolute URL on another host
    assert [s.method for s in elsewhere.requests] == ["DELETE", "GET", "GET"]
    assert elsewhere.leaks() == []
    assert registry.authorizations()  # the registry itself did get them
