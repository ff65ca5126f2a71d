"""The docker provider where a user of it would look: a ``docker`` Connection is read as ``DockerHook``
reads it, the engine connection is DockerHook's, and the registry password reaches no log, repr or XCom.

Small fakes only: no engine, no registry. DockerHook's own login is run against a fake ``APIClient`` that
records what it was given, so "read the DockerHook way" is checked against the provider's code itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from types import SimpleNamespace

import pytest
from airflow.models.connection import Connection
from airflow.providers.docker.hooks.docker import DockerHook

from airflow_image_factory.clients import engine as engine_module
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import EngineError
from airflow_image_factory.policy.credentials import RegistryLogin, connection_registry, login_from_connection
from airflow_image_factory.tasks import hooks, sensors
from airflow_image_factory.tasks.hooks import EngineHook, RegistryHook
from airflow_image_factory.tasks.triggers import Candidate, ImageAvailableTrigger

PASSWORD = "pa55-w0rd-never-shown"  # noqa: S105 - a test secret
CONN_ID = "provider_registry"


class _RecordingApiClient:
    def __init__(self) -> None:
        self.logins: list[dict] = []

    def login(self, **kwargs) -> None:
        self.logins.append(kwargs)


def _docker_hooks_login(conn: Connection) -> dict:
    """What DockerHook itself sends to the engine's login for ``conn`` (its private __login)."""
    client = _RecordingApiClient()
    DockerHook(docker_conn_id=None, base_url="unix:///nowhere")._DockerHook__login(client, conn)
    return client.logins[-1]


CONNECTIONS = [
    Connection(conn_id=CONN_ID, uri=f"docker://robot:{PASSWORD}@registry.example:5000"),
    Connection(conn_id=CONN_ID, conn_type="docker", host="ghcr.io", login="robot", password=PASSWORD,
               extra=json.dumps({"email": "robot@example.org", "reauth": "no"})),
    Connection(conn_id=CONN_ID, conn_type="docker", host="localhost", port=5001, login="robot", password=PASSWORD,
               extra=json.dumps({"reauth": False})),
    Connection(conn_id=CONN_ID, conn_type="docker", host="quay.io", login="robot", password=PASSWORD,
               extra=json.dumps({"reauth": "TRUE", "email": ""})),
]


@pytest.mark.parametrize("conn", CONNECTIONS, ids=lambda c: c.get_uri().split("@")[-1])
def test_a_docker_connection_is_read_as_dockerhook_reads_it(conn):
    theirs = _docker_hooks_login(conn)
    ours = login_from_connection(conn, theirs["registry"], explicit=False)
    assert ours == RegistryLogin(registry=theirs["registry"], username=theirs["username"],
                                 password=theirs["password"], email=theirs["email"], reauth=theirs["reauth"])
    assert connection_registry(conn) == theirs["registry"]


def test_a_port_of_the_connection_is_part_of_its_registry():
    # docker://robot:…@registry.example:5000 puts the port in conn.port: the login is for registry.example:5000
    conn = CONNECTIONS[0]
    assert conn.host == "registry.example" and conn.port == 5000
    assert login_from_connection(conn, "registry.example:5000", explicit=False).pair == ("robot", PASSWORD)
    assert login_from_connection(conn, "registry.example", explicit=False) is None


def test_an_unreadable_reauth_is_refused_as_dockerhook_refuses_it():
    conn = Connection(conn_id=CONN_ID, conn_type="docker", host="ghcr.io", login="robot", password=PASSWORD,
                      extra=json.dumps({"reauth": "perhaps"}))
    with pytest.raises(ValueError, match="reauth") as ours:
        login_from_connection(conn, "ghcr.io", explicit=False)
    with pytest.raises(ValueError, match="reauth") as theirs:
        _docker_hooks_login(conn)
    assert str(ours.value) == str(theirs.value)
    assert PASSWORD not in str(ours.value)


# ---- the one lookup, for each caller -------------------------------------------------------------


@pytest.fixture
def connection(monkeypatch):
    conn = CONNECTIONS[1]
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn.as_json())
    return conn


def test_hook_sensor_and_trigger_get_the_same_login_from_the_one_lookup(monkeypatch, connection, caplog):
    caplog.set_level(logging.DEBUG)
    seen = []
    real = hooks.registry_login

    def spy(*args, **kwargs):
        seen.append("sync")
        return real(*args, **kwargs)

    monkeypatch.setattr(hooks, "registry_login", spy)
    monkeypatch.setattr(sensors, "registry_login", spy)
    settings = dataclasses.replace(load_settings(env={}), registry_connections={"ghcr.io": CONN_ID})
    hook = RegistryHook("ghcr.io", settings=settings)
    candidate = Candidate("ghcr.io", "slash", "a/b/prod/python3.12", "latest", CONN_ID, True)
    trigger = ImageAvailableTrigger(candidates=[candidate.to_dict()], poke_interval=1, deadline=time.time() + 30)
    by_hook = hook.credentials
    by_sensor = sensors._credentials_now(candidate)
    by_trigger = asyncio.run(trigger._credentials())["ghcr.io"]
    assert by_hook == by_sensor == by_trigger == ("robot", PASSWORD)
    assert seen == ["sync", "sync"]  # the trigger reads it asynchronously (aregistry_login), same rule
    assert hook.login.email == "robot@example.org" and hook.login.reauth is False
    assert PASSWORD not in caplog.text


def test_the_password_is_in_no_repr_serialized_trigger_or_sensor_result(connection):
    login = login_from_connection(connection, "ghcr.io", explicit=True)
    assert PASSWORD not in repr(login) and PASSWORD not in str(login)
    candidate = Candidate("ghcr.io", "slash", "a/b/prod/python3.12", "latest", CONN_ID, True)
    trigger = ImageAvailableTrigger(candidates=[candidate.to_dict()], poke_interval=1, deadline=time.time() + 30)
    assert PASSWORD not in json.dumps(trigger.serialize())  # only connection ids reach the triggerer
    event = {"registry": "ghcr.io", "naming": "slash", "image": "ghcr.io/a/b/prod/python3.12",
             "ref": "ghcr.io/a/b/prod/python3.12:latest", "tag": "latest", "digest": "sha256:" + "0" * 64}
    xcom = sensors._result({**event, "status": "found"})
    assert PASSWORD not in json.dumps(xcom)


def test_registry_hook_attributes_follow_airflows_convention():
    hook = RegistryHook("ghcr.io", settings=load_settings(env={}))
    assert RegistryHook.conn_name_attr == "registry_conn_id"
    assert getattr(hook, hook.conn_name_attr) == RegistryHook.default_conn_name
    assert (RegistryHook.conn_type, RegistryHook.hook_name) == ("docker", "Image factory registry")


# ---- the engine: DockerHook's connection ---------------------------------------------------------


@pytest.fixture
def no_cli(monkeypatch):
    monkeypatch.setattr(engine_module, "find_buildkit_cli", lambda preferred="": preferred or "/usr/bin/docker")


def test_the_engine_hook_is_a_dockerhook_reading_the_environment_as_docker_from_env(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://engine.example:2375")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    hook = EngineHook(settings=load_settings(env={}))
    assert isinstance(hook, DockerHook)
    assert hook.docker_conn_id is None  # no login of its own: each push carries its registry's login
    assert getattr(hook, hook.conn_name_attr) is None and hook.conn_type == "docker"
    assert hook._DockerHook__base_url == ["tcp://engine.example:2375"]
    monkeypatch.delenv("DOCKER_HOST")
    assert EngineHook(settings=load_settings(env={}))._DockerHook__base_url == ["http+unix:///var/run/docker.sock"]


def test_the_engine_wraps_dockerhooks_api_client(monkeypatch, no_cli):
    api = SimpleNamespace(ping=lambda: True)
    monkeypatch.setattr(EngineHook, "api_client", api)
    engine = EngineHook(settings=load_settings(env={})).get_conn()
    assert engine.client.api is api


def test_an_engine_that_does_not_answer_is_named_as_before(monkeypatch, no_cli):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(EngineError, match=r"the Docker engine does not answer .*is dockerd running\?"):
        EngineHook(settings=load_settings(env={})).get_conn()
