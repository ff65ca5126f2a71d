"""Airflow Connections → registry clients and the container engine. No policy here.

Registry credentials come from Airflow ``docker`` Connections (login, password; host is the registry),
one per registry host (the ``registry_connections`` setting) or the default connection id. A missing
connection means anonymous access, which is how forks build and test without a write token.

A connection's secret goes only to the registry host it names (:func:`credentials_from_connection`).
:func:`registry_credentials` (and :func:`aregistry_credentials` for the triggerer) is the one lookup of
a connection id to credentials: the hook, the image sensor and its trigger all use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_image_factory.clients.engine import Engine
from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.exceptions import CredentialScopeError
from airflow_image_factory.policy.reference import normalize_host
from airflow_image_factory.policy.settings import Settings


def credentials_from_connection(
    conn: Any | None, registry: str, *, explicit: bool, log: Any | None = None
) -> tuple[str, str] | None:
    """(login, password) of an Airflow ``docker`` Connection for ``registry``, or None (anonymous).

    The secret goes only to the registry host the connection names. The default connection (not
    mapped to this registry in ``registry_connections``) must name its host: without one it is
    refused (:class:`CredentialScopeError`), for another host it is not used (anonymous). A mapped
    connection may leave its host empty (the mapping names it) but is refused when it names another
    host. No login or password means anonymous. The triggerer, which has no settings, uses this rule too.
    ``log``, when given, is told why a connection for another host is not used.
    """
    if conn is None:
        return None
    conn_id = getattr(conn, "conn_id", None) or "(unnamed)"
    host = normalize_host(conn.host)
    wanted = normalize_host(registry)
    if not host:
        if not explicit and (conn.login or conn.password):
            raise CredentialScopeError(
                f"registry connection {conn_id!r} (the default, registry_default_conn_id) has no host, so its "
                f"credentials will not be sent to {registry}: set the connection's host to {registry}, or map "
                f"{registry} to a connection in the registry_connections setting"
            )
    elif host != wanted:
        if explicit:
            raise CredentialScopeError(
                f"registry connection {conn_id!r} is mapped to {registry} (registry_connections) but its host is "
                f"{host}: its credentials will not be sent to {registry}; set the connection's host to {registry} "
                f"(or leave it empty), or map {registry} to the connection made for it"
            )
        if log is not None:
            log.info("Connection %r is for %s, not %s: anonymous access", conn_id, host, registry)
        return None
    if not conn.login or not conn.password:
        return None
    return conn.login, conn.password


@contextlib.contextmanager
def _missing_is_anonymous(conn_id: str, registry: str, *, explicit: bool, log: Any | None) -> Iterator[None]:
    """A connection id nobody defined means anonymous access, unless registry_connections named it for
    ``registry``: then it is a configuration error and the lookup fails."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        yield
    except AirflowNotFoundException:
        if explicit:
            raise
        if log is not None:
            log.info("No connection %r: using %s anonymously", conn_id, registry)


def registry_credentials(
    conn_id: str | None, registry: str, *, explicit: bool, log: Any | None = None
) -> tuple[str, str] | None:
    """(login, password) that Airflow Connection ``conn_id`` holds for ``registry``, or None (anonymous).

    No ``conn_id``: anonymous without a lookup. ``explicit``: the connection was mapped to this registry
    (``registry_connections``), so a missing one raises Airflow's not-found error; otherwise it means
    anonymous. The secret goes only where :func:`credentials_from_connection` allows.
    """
    conn = None
    if conn_id is not None:
        with _missing_is_anonymous(conn_id, registry, explicit=explicit, log=log):
            conn = BaseHook.get_connection(conn_id)
    return credentials_from_connection(conn, registry, explicit=explicit, log=log)


async def aregistry_credentials(
    conn_id: str | None, registry: str, *, explicit: bool, log: Any | None = None
) -> tuple[str, str] | None:
    """:func:`registry_credentials` for the triggerer: the same rule, the Connection read asynchronously
    (a synchronous lookup would block the triggerer's event loop)."""
    conn = None
    if conn_id is not None:
        with _missing_is_anonymous(conn_id, registry, explicit=explicit, log=log):
            conn = await BaseHook.aget_connection(conn_id)
    return credentials_from_connection(conn, registry, explicit=explicit, log=log)


class RegistryHook(BaseHook):
    """Owns the credentials of one registry and hands out a :class:`RegistryClient` for it."""

    # Airflow's convention: the attribute this names holds the hook's connection id.
    conn_name_attr = "conn_id"
    default_conn_name = "image_factory_registry"
    conn_type = "docker"
    hook_name = "Image factory registry"

    def __init__(self, registry: str, *, settings: Settings, retries: int | None = None):
        super().__init__()
        self.registry = registry
        self.conn_id = settings.registry_connections.get(registry, settings.registry_default_conn_id)
        self.explicit = registry in settings.registry_connections
        self.retries = settings.push_retries if retries is None else retries
        self.token_realms = tuple(settings.registry_token_realms)
        self._credentials: tuple[str, str] | bool | None = False

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(login, password), or None for anonymous access. Looked up once, at run time only."""
        if self._credentials is False:
            self._credentials = self._lookup()
        return self._credentials  # type: ignore[return-value]

    def _lookup(self) -> tuple[str, str] | None:
        # A misconfigured Connection raises CredentialScopeError, a permanent error: the task's
        # fails_at_once boundary fails it without a retry.
        return registry_credentials(self.conn_id, self.registry, explicit=self.explicit, log=self.log)

    @property
    def can_write(self) -> bool:
        return self.credentials is not None

    def get_conn(self) -> RegistryClient:
        creds = self.credentials
        return RegistryClient(
            self.registry,
            username=creds[0] if creds else None,
            password=creds[1] if creds else None,
            retries=self.retries,
            token_realms=self.token_realms,
        )


class EngineHook(BaseHook):
    """The Docker engine the worker builds on, with the BuildKit-capable CLI the settings name."""

    hook_name = "Image factory engine"

    def __init__(self, *, settings: Settings):
        super().__init__()
        self.settings = settings

    def get_conn(self) -> Engine:
        return Engine(cli=self.settings.docker_cli, buildx=self.settings.buildx)


def find_connection(connection_id: str) -> Any | None:
    """The Airflow Connection ``connection_id``, or None when nobody defined it (optional Connections, such
    as the promotion lock's database)."""
    try:
        return BaseHook.get_connection(connection_id)
    except AirflowNotFoundException:
        return None
