"""Airflow Connections → registry clients and the container engine. No policy here.

Registry credentials come from Airflow ``docker`` Connections (login, password; host is the registry),
one per registry host (the ``registry_connections`` setting) or the default connection id. A missing
connection means anonymous access, which is how forks build and test without a write token.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from airflow_image_factory.engine import Engine
from airflow_image_factory.registry import RegistryClient
from airflow_image_factory.settings import Settings


def credentials_from_connection(conn: Any | None, registry: str, *, explicit: bool) -> tuple[str, str] | None:
    """(login, password) of an Airflow ``docker`` Connection for ``registry``, or None (anonymous).

    A default (not explicitly mapped) connection counts only where its host is this registry; no
    login or password means anonymous. The triggerer, which has no settings, uses this rule too.
    """
    if conn is None:
        return None
    if not explicit and conn.host and conn.host.rstrip("/") != registry:
        return None
    if not conn.login or not conn.password:
        return None
    return conn.login, conn.password


class RegistryHook(BaseHook):
    """Owns the credentials of one registry and hands out a :class:`RegistryClient` for it."""

    conn_name_attr = "registry_conn_id"
    default_conn_name = "image_factory_registry"
    conn_type = "docker"
    hook_name = "Image factory registry"

    def __init__(self, registry: str, *, settings: Settings, retries: int | None = None):
        super().__init__()
        self.registry = registry
        self.conn_id = settings.registry_connections.get(registry, settings.registry_default_conn_id)
        self.explicit = registry in settings.registry_connections
        self.retries = settings.push_retries if retries is None else retries
        self._credentials: tuple[str, str] | bool | None = False

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(login, password), or None for anonymous access. Looked up once, at run time only."""
        if self._credentials is False:
            self._credentials = self._lookup()
        return self._credentials  # type: ignore[return-value]

    def _lookup(self) -> tuple[str, str] | None:
        from airflow.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            if self.explicit:
                raise
            self.log.info("No connection %r: using %s anonymously", self.conn_id, self.registry)
            return None
        credentials = credentials_from_connection(conn, self.registry, explicit=self.explicit)
        if credentials is None and conn.host and conn.host.rstrip("/") != self.registry:
            self.log.info("Connection %r is for %s, not %s: anonymous access", self.conn_id, conn.host, self.registry)
        return credentials

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
        )


class EngineHook(BaseHook):
    """The Docker engine the worker builds on, with the BuildKit-capable CLI the settings name."""

    hook_name = "Image factory engine"

    def __init__(self, *, settings: Settings):
        super().__init__()
        self.settings = settings

    def get_conn(self) -> Engine:
        return Engine(cli=self.settings.docker_cli, buildx=self.settings.buildx)
