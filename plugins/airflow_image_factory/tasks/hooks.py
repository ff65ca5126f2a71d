"""Airflow Connections → registry clients and the container engine. No policy here.

Registry credentials come from Airflow ``docker`` Connections (login, password; host is the registry),
one per registry host (the ``registry_connections`` setting) or the default connection id. A missing
connection means anonymous access, which is how forks build and test without a write token.

A ``docker`` Connection is read the way the docker provider's ``DockerHook`` reads it (``host[:port]``,
``login``, ``password``, ``extra`` ``email``/``reauth``), and its secret goes only to the registry host it
names: both rules are :func:`airflow_image_factory.policy.credentials.login_from_connection` (pure).
:func:`registry_login` (and :func:`aregistry_login` for the triggerer) is the one lookup of a connection
id to a login: the hook, the image sensor and its trigger all use it.

The engine is the docker provider's :class:`DockerHook` (:class:`EngineHook`): its ``docker.APIClient``,
reached the way DockerHook reaches it, under the engine wrapper that adds BuildKit builds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from airflow.providers.docker.hooks.docker import DockerHook
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_image_factory.clients.engine import Engine
from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.exceptions import EngineError
from airflow_image_factory.policy.credentials import RegistryLogin, login_from_connection
from airflow_image_factory.policy.settings import Settings


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


def registry_login(
    conn_id: str | None, registry: str, *, explicit: bool, log: Any | None = None
) -> RegistryLogin | None:
    """The login Airflow ``docker`` Connection ``conn_id`` holds for ``registry``, or None (anonymous).

    No ``conn_id``: anonymous without a lookup. ``explicit``: the connection was mapped to this registry
    (``registry_connections``), so a missing one raises Airflow's not-found error; otherwise it means
    anonymous. The Connection is read as DockerHook reads it, and its secret goes only where
    :func:`~airflow_image_factory.policy.credentials.login_from_connection` allows.
    """
    conn = None
    if conn_id is not None:
        with _missing_is_anonymous(conn_id, registry, explicit=explicit, log=log):
            conn = BaseHook.get_connection(conn_id)
    return login_from_connection(conn, registry, explicit=explicit, log=log)


async def aregistry_login(
    conn_id: str | None, registry: str, *, explicit: bool, log: Any | None = None
) -> RegistryLogin | None:
    """:func:`registry_login` for the triggerer: the same rule, the Connection read asynchronously
    (a synchronous lookup would block the triggerer's event loop)."""
    conn = None
    if conn_id is not None:
        with _missing_is_anonymous(conn_id, registry, explicit=explicit, log=log):
            conn = await BaseHook.aget_connection(conn_id)
    return login_from_connection(conn, registry, explicit=explicit, log=log)


class RegistryHook(BaseHook):
    """Owns the login of one registry (a ``docker`` Connection) and hands out a :class:`RegistryClient` for it.

    The OCI distribution API (manifests, tags, blob mounts) is ours: DockerHook has none (see the README).
    """

    # Airflow's convention: getattr(hook, conn_name_attr) is the connection id the hook uses.
    conn_name_attr = "registry_conn_id"
    default_conn_name = "image_factory_registry"  # the settings' registry_default_conn_id by default
    conn_type = "docker"
    hook_name = "Image factory registry"

    def __init__(self, registry: str, *, settings: Settings, retries: int | None = None):
        super().__init__()
        self.registry = registry
        self.registry_conn_id = settings.registry_connections.get(registry, settings.registry_default_conn_id)
        self.explicit = registry in settings.registry_connections
        self.retries = settings.push_retries if retries is None else retries
        self.token_realms = tuple(settings.registry_token_realms)
        self._login: RegistryLogin | bool | None = False

    @property
    def login(self) -> RegistryLogin | None:
        """The registry login, or None for anonymous access. Looked up once, at run time only."""
        if self._login is False:
            # A misconfigured Connection raises CredentialScopeError, a permanent error: the task's
            # fails_at_once boundary fails it without a retry.
            self._login = registry_login(self.registry_conn_id, self.registry, explicit=self.explicit, log=self.log)
        return self._login  # type: ignore[return-value]

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(login, password), or None for anonymous access, as the engine and the registry client take them."""
        return self.login.pair if self.login else None

    @property
    def can_write(self) -> bool:
        return self.login is not None

    def get_conn(self) -> RegistryClient:
        return registry_client(self.registry, self.credentials, retries=self.retries, token_realms=self.token_realms)


def registry_client(registry: str, credentials: tuple[str, str] | None, **options: Any) -> RegistryClient:
    """A :class:`RegistryClient` for ``registry`` with ``credentials`` (None: anonymous)."""
    username, password = credentials or (None, None)
    return RegistryClient(registry, username=username, password=password, **options)


class EngineHook(DockerHook):
    """The Docker engine the worker builds on: the docker provider's :class:`DockerHook`, under
    :class:`Engine`, which adds BuildKit builds through the CLI the settings name.

    DockerHook makes the engine connection (``base_url``, TLS and the API version as ``docker.from_env``
    reads them from ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``; the engine's socket
    without them) and, when ``docker_conn_id`` names a ``docker`` Connection, its registry login
    (``host[:port]``, ``login``, ``password``, ``extra`` ``email``/``reauth``). None by default: pushes and
    pulls carry the login of the registry they go to (:class:`RegistryHook`), which honours
    ``registry_connections`` and the rule of which host a secret may go to. :meth:`get_conn` returns the
    :class:`Engine`; DockerHook's ``docker.APIClient`` is :attr:`api_client`, as in the provider.
    """

    hook_name = "Image factory engine"

    def __init__(self, *, settings: Settings, docker_conn_id: str | None = None, base_url: str | None = None):
        import docker.constants
        import docker.utils

        from_env = docker.utils.kwargs_from_env()
        super().__init__(
            docker_conn_id=docker_conn_id,
            base_url=base_url or from_env.get("base_url") or docker.constants.DEFAULT_UNIX_SOCKET,
            tls=from_env.get("tls"),
        )
        self.settings = settings

    def get_conn(self) -> Engine:  # type: ignore[override]  # the Engine, whose .client.api is DockerHook's
        import docker

        try:
            api = self.api_client
        except Exception as exc:
            raise EngineError(f"the Docker engine does not answer ({exc}); is dockerd running?") from exc
        client = docker.DockerClient.__new__(docker.DockerClient)  # DockerClient(...) only builds .api
        client.api = api
        return Engine(cli=self.settings.docker_cli, buildx=self.settings.buildx, client=client)


def find_connection(connection_id: str) -> Any | None:
    """The Airflow Connection ``connection_id``, or None when nobody defined it (optional Connections, such
    as the promotion lock's database)."""
    try:
        return BaseHook.get_connection(connection_id)
    except AirflowNotFoundException:
        return None
