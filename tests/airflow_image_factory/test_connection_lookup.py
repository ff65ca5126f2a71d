"""One Connection → registry login lookup (hooks.registry_login, and its async twin for the triggerer).

The hook, the sensor's poke and the trigger must agree for every kind of Connection: each case is run
through all of them. Connections come from ``AIRFLOW_CONN_<ID>`` environment variables, as Airflow reads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time

import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import CredentialScopeError
from airflow_image_factory.policy.credentials import RegistryLogin
from airflow_image_factory.tasks import hooks, sensors, triggers
from airflow_image_factory.tasks.hooks import RegistryHook, aregistry_login, registry_login
from airflow_image_factory.tasks.triggers import Candidate, ImageAvailableTrigger

REGISTRY = "registry.example:5000"
CONN_ID = "lookup_registry"
SECRET = ("robot", "s3cret-token")
ANON = None
REFUSED = CredentialScopeError
MISSING = AirflowNotFoundException


@pytest.fixture
def define(monkeypatch: pytest.MonkeyPatch):
    def define(host: str | None, *, login: str = SECRET[0], password: str = SECRET[1]) -> None:
        doc = {"conn_type": "docker", "login": login, "password": password}
        if host is not None:
            doc["host"] = host
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(doc))

    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    return define


def _through_the_hook(explicit: bool):
    base = load_settings(env={})
    settings = dataclasses.replace(
        base, registry_connections={REGISTRY: CONN_ID} if explicit else {}, registry_default_conn_id=CONN_ID
    )
    return RegistryHook(REGISTRY, settings=settings).credentials


def _candidate(explicit: bool) -> Candidate:
    return Candidate(REGISTRY, "slash", "a/b/prod/python3.12", "latest", CONN_ID, explicit)


def _through_the_sensor(explicit: bool):
    return sensors._credentials_now(_candidate(explicit))


def _through_the_trigger(explicit: bool):
    trigger = ImageAvailableTrigger(candidates=[_candidate(explicit).to_dict()], poke_interval=1,
                                    deadline=time.time() + 30)
    return asyncio.run(trigger._credentials())[REGISTRY]


def _pair(login):
    return login.pair if login else None


def _direct(explicit: bool):
    return _pair(registry_login(CONN_ID, REGISTRY, explicit=explicit))


def _direct_async(explicit: bool):
    return _pair(asyncio.run(aregistry_login(CONN_ID, REGISTRY, explicit=explicit)))


LOOKUPS = [_direct, _direct_async, _through_the_hook, _through_the_sensor, _through_the_trigger]


@pytest.mark.parametrize("lookup", LOOKUPS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(
    ("host", "explicit", "expected"),
    [
        (REGISTRY, False, SECRET),
        (f"https://{REGISTRY.upper()}/", True, SECRET),
        ("ghcr.io", False, ANON),  # the default connection is for another registry
        ("ghcr.io", True, REFUSED),  # mapped to this registry, but names another
        ("", False, REFUSED),  # the default connection must name its host
        ("", True, SECRET),  # the mapping names it
        ("missing", False, ANON),  # no such connection: anonymous
        ("missing", True, MISSING),  # a mapped connection must exist
    ],
)
def test_every_caller_applies_the_same_rule(define, lookup, host, explicit, expected):
    if host != "missing":
        define(host)
    if isinstance(expected, type):
        with pytest.raises(expected) as err:
            lookup(explicit)
        assert SECRET[1] not in str(err.value)
    else:
        assert lookup(explicit) == expected


@pytest.mark.parametrize("lookup", [registry_login, aregistry_login])
def test_no_conn_id_is_anonymous_without_a_lookup(monkeypatch, lookup):
    def refuse(*_):
        raise AssertionError("no connection id: nothing to look up")

    monkeypatch.setattr(BaseHook, "get_connection", refuse)
    monkeypatch.setattr(BaseHook, "aget_connection", refuse)
    result = lookup(None, REGISTRY, explicit=True)
    assert (asyncio.run(result) if asyncio.iscoroutine(result) else result) is None


def test_a_login_without_password_is_anonymous(define):
    define(REGISTRY, password="")
    assert registry_login(CONN_ID, REGISTRY, explicit=False) is None


def test_the_hook_says_why_it_goes_anonymous(define, caplog):
    caplog.set_level(logging.INFO)
    log = logging.getLogger("lookup-test")
    assert registry_login(CONN_ID, REGISTRY, explicit=False, log=log) is None
    define("ghcr.io")
    assert registry_login(CONN_ID, REGISTRY, explicit=False, log=log) is None
    assert f"No connection {CONN_ID!r}: using {REGISTRY} anonymously" in caplog.text
    assert f"Connection {CONN_ID!r} is for ghcr.io, not {REGISTRY}: anonymous access" in caplog.text
    assert SECRET[1] not in caplog.text


def test_the_callers_go_through_the_one_lookup(monkeypatch, define):
    define(REGISTRY)
    calls = []

    def spy(conn_id, registry, *, explicit, log=None):
        calls.append((conn_id, registry, explicit))
        return RegistryLogin(registry, *SECRET)

    async def aspy(conn_id, registry, *, explicit, log=None):
        return spy(conn_id, registry, explicit=explicit)

    monkeypatch.setattr(hooks, "registry_login", spy)
    monkeypatch.setattr(sensors, "registry_login", spy)
    monkeypatch.setattr(triggers, "aregistry_login", aspy)
    assert _through_the_hook(True) == _through_the_sensor(True) == _through_the_trigger(True) == SECRET
    assert calls == [(CONN_ID, REGISTRY, True)] * 3


def test_the_hook_looks_up_the_connection_its_conn_name_attr_names(monkeypatch):
    # Airflow's hook convention: getattr(hook, conn_name_attr) is the connection id the hook uses, and
    # with no setting changed it is default_conn_name (the settings file's registry_default_conn_id).
    seen = []
    monkeypatch.setattr(hooks, "registry_login", lambda conn_id, *_, **__: seen.append(conn_id))
    hook = RegistryHook(REGISTRY, settings=load_settings(env={}))
    assert hook.credentials is None
    assert seen == [getattr(hook, RegistryHook.conn_name_attr)] == [RegistryHook.default_conn_name]
