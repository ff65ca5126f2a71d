"""Authentication to one registry, over a :class:`~.transport.Transport`: the ``WWW-Authenticate``
challenge (Basic, or the Docker token flow: Bearer), credential scopes and the tokens they buy, and
where credentials may travel (the registry's own host, an https realm, an allowed token realm).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_image_factory.clients.registry.transport import DEFAULT_PORTS, Transport, endpoint
from airflow_image_factory.exceptions import RegistryAuthError, RegistryError

log = logging.getLogger(__package__)  # the package's logger, as before the split into modules

_TOKEN_MARGIN = 10.0  # refresh tokens this many seconds before they expire
# Token realms credentials may go to over plain http too (https realms and the registry's own host
# need no entry); the ``registry_token_realms`` setting replaces this list.
DEFAULT_TOKEN_REALMS = ("auth.docker.io", "ghcr.io")


# --------------------------------------------------------------------------- scopes


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of ``type:name:actions`` scopes, actions of the same resource combined."""
    merged: dict[tuple[str, str], list[str]] = {}
    for group in groups:
        for scope in group:
            for item in scope.split():
                parts = item.split(":")
                if len(parts) < 3:
                    continue
                key = (parts[0], ":".join(parts[1:-1]))
                actions = merged.setdefault(key, [])
                for action in parts[-1].split(","):
                    if action and action not in actions:
                        actions.append(action)
    return tuple(sorted(f"{t}:{n}:{','.join(sorted(a))}" for (t, n), a in merged.items()))


def _scope_items(scopes: Iterable[str]) -> frozenset[tuple[str, str, str]]:
    """``{(type, name, action)}`` of merged scopes, to test whether one token covers another."""
    items = set()
    for scope in scopes:
        rtype, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        items.update((rtype, name, action) for action in actions.split(","))
    return frozenset(items)


# --------------------------------------------------------------------------- challenges and tokens


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """``('bearer', {'realm': ..., 'service': ..., 'scope': ...})`` from a WWW-Authenticate value."""
    header = header.strip()
    # Prefer Bearer if a registry offers several schemes in one header.
    match = re.search(r"\bBearer\b", header, re.IGNORECASE) or re.match(r"\s*(\w+)", header)
    if not match:
        return None
    scheme = match.group(0).strip().lower()
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(header[match.end() :])
    }
    return scheme, params


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()
    items: frozenset[tuple[str, str, str]]  # what we asked for (the server may have granted less)


def _host_port(entry: str) -> tuple[str, int | None] | None:
    """``(hostname, port or None)`` of a ``registry_token_realms`` entry (``host[:port]``, a scheme and a
    trailing slash tolerated); None for an empty or malformed one."""
    text = entry.strip().lower()
    text = text.split("://", 1)[1] if "://" in text else text
    parts = urlsplit("//" + text.split("/", 1)[0])
    try:
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


# --------------------------------------------------------------------------- the authenticator


class Authenticator:
    """Sends requests through ``transport`` with the credentials the registry asks for. Thread-safe.

    Credentials go to the registry's own scheme and host:port only, and to a Bearer challenge's token
    realm only when it is https, on the registry's own host:port, or on a host[:port] in
    ``token_realms``; anonymous token requests may go to any http(s) realm.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        username: str | None = None,
        password: str | None = None,
        token_realms: Iterable[str] = DEFAULT_TOKEN_REALMS,
    ):
        self.transport = transport
        self.registry = transport.registry
        self.username = username
        self._password = password
        self.token_realms = frozenset(filter(None, (_host_port(realm) for realm in token_realms)))
        self._lock = threading.Lock()
        self._auth_scheme: str | None = None  # "basic" / "bearer" once the registry challenged us
        self._bearer_params: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], _Token] = {}

    def send(
        self,
        method: str,
        url: str,
        scopes: tuple[str, ...],
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        allow_redirects: bool,
    ) -> requests.Response:
        """Send, answering a 401's challenge once; raises RegistryAuthError when access is refused (401
        after the answer, or 403). ``scopes`` are asked for up front once the auth scheme is known."""
        # Credentials never leave the registry's own scheme and host:port (e.g. for a Location or a Link).
        own_host = endpoint(url) == endpoint(self.transport.base_url)
        shown = urlsplit(url).path

        auth = self._auth_headers(scopes) if own_host else {}
        resp = self.transport.send(method, url, params, headers, data, auth, allow_redirects)
        if resp.status_code == 401 and own_host:
            challenge = _parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            auth = self._answer_challenge(challenge, scopes, method, shown, previous=auth)
            resp = self.transport.send(method, url, params, headers, data, auth, allow_redirects)
            if resp.status_code == 401:
                raise RegistryAuthError(
                    f"registry {self.registry} refused {self._who} for {method} {shown}"
                    f"{' (scope ' + ' '.join(scopes) + ')' if scopes else ''}: {self.transport.error_text(resp)}",
                    status=401,
                )
        if resp.status_code == 403:
            raise RegistryAuthError(
                f"registry {self.registry} denied {self._who} {method} {shown}: {self.transport.error_text(resp)}",
                status=403,
            )
        return resp

    @property
    def _who(self) -> str:
        return f"user {self.username!r}" if self.username else "anonymous access"

    def _auth_headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """Credentials to send up front, once we know which scheme the registry wants."""
        if self._auth_scheme == "basic":
            return self._basic_header()
        if self._auth_scheme == "bearer":
            token = self._cached_token(scopes) or self._fetch_token(scopes)
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _answer_challenge(
        self,
        challenge: tuple[str, dict[str, str]] | None,
        scopes: tuple[str, ...],
        method: str,
        path: str,
        previous: Mapping[str, str],
    ) -> dict[str, str]:
        if challenge is None:
            raise RegistryAuthError(
                f"registry {self.registry} answered 401 to {method} {path} without a usable challenge",
                status=401,
            )
        scheme, params = challenge
        if scheme == "basic":
            if not (self.username and self._password is not None):
                raise RegistryAuthError(
                    f"registry {self.registry} requires credentials (Basic auth) and none were given",
                    status=401,
                )
            if previous:
                raise RegistryAuthError(
                    f"registry {self.registry} refused the credentials of user {self.username!r}", status=401
                )
            self._auth_scheme = "basic"
            return self._basic_header()
        if scheme == "bearer":
            if "realm" not in params:
                raise RegistryAuthError(f"registry {self.registry} sent a Bearer challenge without a realm", status=401)
            with self._lock:
                self._auth_scheme = "bearer"
                self._bearer_params = {k: v for k, v in params.items() if k in ("realm", "service")}
            # The challenge names what this request needs; add what we know we will need too.
            wanted = _merge_scopes(scopes, [params["scope"]] if params.get("scope") else [])
            token = self._fetch_token(wanted)
            return {"Authorization": f"Bearer {token}"}
        raise RegistryAuthError(f"registry {self.registry} wants unsupported auth scheme {scheme!r}", status=401)

    def _basic_header(self) -> dict[str, str]:
        pair = f"{self.username or ''}:{self._password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def _cached_token(self, scopes: tuple[str, ...]) -> str | None:
        """A live token asked for with these scopes, or with more (e.g. the one a copy fetched)."""
        key = _merge_scopes(scopes)
        needed = _scope_items(key)
        now = time.monotonic()
        with self._lock:
            exact = self._tokens.get(key)
            if exact and exact.expires_at > now:
                return exact.value
            for token in self._tokens.values():
                if token.expires_at > now and needed <= token.items:
                    return token.value
        return None

    def _fetch_token(self, scopes: tuple[str, ...]) -> str:
        """Docker token flow: GET realm?service=..&scope=.. with Basic credentials if we have them."""
        realm = self._bearer_params["realm"]
        params: list[tuple[str, str]] = []
        if self._bearer_params.get("service"):
            params.append(("service", self._bearer_params["service"]))
        if self.username:
            params.append(("account", self.username))
        params += [("scope", s) for s in _merge_scopes(scopes)]
        # Basic credentials go to the realm only; anonymous token requests are allowed by the spec.
        creds = self._basic_header() if self.username and self._password is not None else {}
        realm_host = urlsplit(realm).netloc.rpartition("@")[2]
        self._check_realm(realm, credentialed=bool(creds))
        resp = self.transport.send(
            "GET", realm, params, {"Accept": "application/json"}, None, creds, True, kind="token"
        )
        self.transport.stats._add("token_fetches")
        if resp.status_code in (401, 403):
            who = f"the credentials of user {self.username!r}" if self.username else "anonymous access"
            raise RegistryAuthError(
                f"token server {realm_host} for registry {self.registry} refused {who}: "
                f"{self.transport.error_text(resp)}",
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"token server {realm_host} for registry {self.registry} answered {resp.status_code}: "
                f"{self.transport.error_text(resp)}",
                status=resp.status_code,
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise RegistryError(f"token server {realm_host} sent a non-JSON answer") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token server {realm_host} sent no token")
        # The spec's default lifetime is 60 s; refresh a little early so in-flight requests don't 401.
        lifetime = float(body.get("expires_in") or 60)
        key = _merge_scopes(scopes)
        entry = _Token(token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, lifetime / 2), _scope_items(key))
        with self._lock:
            self._tokens[key] = entry

        log.debug("got a token from %s for %s", realm_host, " ".join(_merge_scopes(scopes)) or "(no scope)")
        return token

    def _check_realm(self, realm: str, *, credentialed: bool) -> None:
        """Refuse a realm that is not http(s), and one our credentials must not travel to.

        Credentials go to a realm over https, on the registry's own host:port, or on a host[:port] of
        ``token_realms``; a plain-http realm elsewhere (another host, or another port of the
        registry's host) would hand them to whoever the registry's challenge names, in clear text.
        """
        shown = self.transport.redact(realm)
        realm_endpoint = endpoint(realm)
        if realm_endpoint is None or realm_endpoint[0] not in DEFAULT_PORTS:
            raise RegistryAuthError(
                f"registry {self.registry} named token realm {shown!r}, which is not an http(s) URL", status=401
            )
        if not credentialed or realm_endpoint[0] == "https":
            return
        scheme, hostname, port = realm_endpoint
        own = endpoint(self.transport.base_url)
        if own is not None and (hostname, port) == own[1:]:
            return
        # An allow-list entry without a port means the realm scheme's default port.
        if any(h == hostname and (p or DEFAULT_PORTS[scheme]) == port for h, p in self.token_realms):
            return
        raise RegistryAuthError(
            f"registry {self.registry} named token realm {shown!r}: plain http on another host than the "
            f"registry's own, so the credentials of user {self.username!r} were not sent there (allow the "
            "host in the registry_token_realms setting, or make the realm https)",
            status=401,
        )
