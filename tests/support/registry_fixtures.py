"""Session-scoped pytest fixtures: real distribution registries without auth, with htpasswd Basic
auth and with token auth. Load them with ``pytest_plugins = ["tests.support.registry_fixtures"]``
in a test module (or the root conftest) - importing the fixtures by name trips ruff's F811.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.registry_servers import (
    BASIC_USER,
    RegistryServer,
    running_registry,
    running_token_registry,
)


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry without auth."""
    with running_registry(tmp_path_factory.mktemp("plain-registry")) as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with htpasswd Basic auth; ``.username`` / ``.password`` are the good credentials."""
    with running_registry(
        tmp_path_factory.mktemp("basic-registry"),
        auth="htpasswd",
        username=BASIC_USER,
        password="basic-" + secrets.token_hex(8),
    ) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with token auth. ``.token_server`` is the :class:`TokenServer` (its ``requests``
    log, ``anonymous_actions`` policy - change it with monkeypatch); ``.extra_users`` holds
    TOKEN_USER (all actions) and TOKEN_READER (pull only) with their passwords."""
    with running_token_registry(tmp_path_factory.mktemp("token-registry")) as server:
        yield server
