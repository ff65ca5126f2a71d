"""Which registry an Airflow ``docker`` Connection is for, and whether its secret may go to a registry (pure).

A ``docker`` Connection is read the way the docker provider's ``DockerHook`` reads it when it logs in:
the registry is ``host`` (``host:port`` when the Connection has a port), the user ``login``, the secret
``password``, and ``extra`` may hold ``email`` and ``reauth`` (a boolean, or the strings DockerHook
accepts). The Connection is any object with those attributes (an Airflow ``Connection``, or a test's fake);
nothing here fetches it (:mod:`airflow_image_factory.tasks.hooks` does, in the worker and the triggerer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_image_factory.exceptions import CredentialScopeError
from airflow_image_factory.policy.reference import normalize_host

# DockerHook's spellings of a boolean ``reauth`` extra.
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


@dataclass(frozen=True)
class RegistryLogin:
    """A registry login read from a ``docker`` Connection. The password never shows in its repr."""

    registry: str
    username: str
    password: str = field(repr=False)
    email: str | None = None
    reauth: bool = True

    @property
    def pair(self) -> tuple[str, str]:
        """(username, password), as the registry client and the engine take them."""
        return self.username, self.password


def connection_registry(conn: Any) -> str:
    """The registry a ``docker`` Connection names, normalised (:func:`normalize_host`); empty: none.

    DockerHook logs in to ``host:port`` when the Connection has a port (a URI such as
    ``docker://user:token@registry.example:5000`` puts it there), else to ``host``.
    """
    host = normalize_host(conn.host)
    port = getattr(conn, "port", None)
    if host and port and ":" not in host.rsplit("]", 1)[-1]:
        return f"{host}:{port}"
    return host


def reauth_of(extra: Any) -> bool:
    """The ``reauth`` extra as DockerHook parses it (default True); an unreadable value is an error."""
    value = (extra or {}).get("reauth", True)
    if isinstance(value, str):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ValueError(f"Unable parse `reauth` value {value.lower()!r} to bool.")
    return bool(value)


def login_from_connection(
    conn: Any | None, registry: str, *, explicit: bool, log: Any | None = None
) -> RegistryLogin | None:
    """The login a ``docker`` Connection holds for ``registry``, or None (anonymous access).

    The secret goes only to the registry host the connection names. The default connection (not
    mapped to this registry in ``registry_connections``) must name its host: without one it is
    refused (:class:`CredentialScopeError`), for another host it is not used (anonymous). A mapped
    connection may leave its host empty (the mapping names it) but is refused when it names another
    host. No login or password means anonymous. The triggerer, which has no settings, uses this rule too.
    ``log``, when given, is told why a connection for another host is not used (never the secret).
    """
    if conn is None:
        return None
    conn_id = getattr(conn, "conn_id", None) or "(unnamed)"
    host = connection_registry(conn)
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
    extra = getattr(conn, "extra_dejson", None) or {}
    return RegistryLogin(registry=wanted, username=conn.login, password=conn.password,
                         email=extra.get("email") or None, reauth=reauth_of(extra))
