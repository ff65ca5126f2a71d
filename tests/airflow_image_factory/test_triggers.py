"""The image-wait trigger against real registries: found (naming the registry), timeout, error.

The trigger is run the way the triggerer runs it: ``async for event in trigger.run()``. Images are pushed
by tests/support/oci_images.py while the trigger waits. Candidates without a conn_id need no Airflow
connection lookup; the connection path is covered in test_sensors.py through a real DAG run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from airflow_image_factory.exceptions import CredentialScopeError
from airflow_image_factory.policy.credentials import login_from_connection
from airflow_image_factory.tasks.triggers import (
    ERROR,
    FOUND,
    TIMEOUT,
    Candidate,
    ImageAvailableTrigger,
    probe_candidates,
)
from tests.support.fault_proxy import Fault, fault_proxy
from tests.support.oci_images import push_image
from tests.support.registry_servers import free_port, unique_repo

pytestmark = [pytest.mark.stack]


@pytest.fixture(scope="module")
def registry_host(stack_env) -> str:
    return os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")


def first_event(trigger: ImageAvailableTrigger) -> dict:
    async def run():
        events = [event async for event in trigger.run()]
        assert len(events) == 1, events  # one event, then the trigger ends
        return events[0].payload

    return asyncio.run(run())


def roundtrip(trigger: ImageAvailableTrigger) -> ImageAvailableTrigger:
    """What the triggerer gets: only what serialize() carries."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_image_factory.tasks.triggers.ImageAvailableTrigger"
    assert all(isinstance(c, dict) for c in kwargs["candidates"])
    return ImageAvailableTrigger(**kwargs)


def test_finds_an_image_pushed_while_it_waits_and_names_the_registry(registry_host):
    repo = unique_repo("helper5-wait")
    dead = f"127.0.0.1:{free_port()}"  # nobody listens: a transient error, keep waiting
    with fault_proxy(registry_host) as other:  # a second registry (same store) where the image is not
        candidates = [
            Candidate(dead, "slash", f"{repo}/prod/python3.11", "latest"),
            Candidate(other.host, "ghcr-v2", f"{repo}-python3.11-v2", "latest"),
            Candidate(registry_host, "slash", f"{repo}/prod/python3.11", "latest"),
        ]
        trigger = roundtrip(ImageAvailableTrigger(
            candidates=[c.to_dict() for c in candidates], poke_interval=1, deadline=time.time() + 60,
        ))
        pushed = {}

        def push_later():
            time.sleep(3)
            from airflow_image_factory.clients.registry import RegistryClient

            with RegistryClient(registry_host) as client:
                pushed["image"] = push_image(client, f"{repo}/prod/python3.11", "latest")

        pusher = threading.Thread(target=push_later)
        started = time.monotonic()
        pusher.start()
        event = first_event(trigger)
        pusher.join()
        waited = time.monotonic() - started
    assert event["status"] == FOUND
    assert event["registry"] == registry_host and event["naming"] == "slash"
    assert event["ref"] == f"{registry_host}/{repo}/prod/python3.11:latest"
    assert event["digest"] == pushed["image"].digest
    assert event["rounds"] >= 2  # it really waited: the image was not there at the first look
    assert 3 <= waited < 30
    heads = [e for e in other.events if e.method == "HEAD"]
    assert heads and all("/manifests/latest" in e.path for e in heads)  # the other candidate was asked too


def test_times_out_cleanly_when_nothing_comes(registry_host):
    repo = unique_repo("helper5-never")
    trigger = ImageAvailableTrigger(
        candidates=[Candidate(registry_host, "slash", f"{repo}/ci/python3.11", "latest").to_dict()],
        poke_interval=1, deadline=time.time() + 4,
    )
    started = time.monotonic()
    event = first_event(trigger)
    elapsed = time.monotonic() - started
    assert event["status"] == TIMEOUT
    assert f"{registry_host}/{repo}/ci/python3.11:latest" in event["candidates"]
    assert event["rounds"] >= 3
    assert 3.5 <= elapsed < 10


def test_refused_everywhere_is_an_error_not_an_endless_wait(registry_host):
    with fault_proxy(registry_host, Fault(status=403, times=None)) as refusing:
        trigger = ImageAvailableTrigger(
            candidates=[Candidate(refusing.host, "slash", "x/y/prod/python3.11", "latest").to_dict()],
            poke_interval=1, deadline=time.time() + 60,
        )
        started = time.monotonic()
        event = first_event(trigger)
        assert event["status"] == ERROR
        assert refusing.host in event["message"] and "denied" in event["message"]
    assert time.monotonic() - started < 10


def test_a_refusing_registry_does_not_stop_the_wait_on_another(registry_host):
    repo = unique_repo("helper5-mixed")
    with fault_proxy(registry_host, Fault(status=403, times=None)) as refusing:
        from airflow_image_factory.clients.registry import RegistryClient

        with RegistryClient(registry_host) as client:
            image = push_image(client, f"{repo}/ci/python3.11", "latest")
        outcome = probe_candidates(
            [Candidate(refusing.host, "slash", f"{repo}/ci/python3.11", "latest"),
             Candidate(registry_host, "slash", f"{repo}/ci/python3.11", "latest")],
            {},
        )
        assert refusing.host in outcome.permanent
    assert outcome.found["registry"] == registry_host and outcome.found["digest"] == image.digest


class _Conn:
    def __init__(self, host, login, password):
        self.conn_id = "registry_conn"
        self.host, self.login, self.password = host, login, password


@pytest.mark.parametrize(
    ("conn", "explicit", "expected"),
    [
        (None, False, None),
        (_Conn("ghcr.io", "u", "p"), False, ("u", "p")),
        (_Conn("https://GHCR.io/", "u", "p"), False, ("u", "p")),  # hosts are compared normalised
        (_Conn("docker.pkg.github.com", "u", "p"), False, None),  # the default conn is for another host
        # A secret goes only to the host its connection names: a mapped conn naming another host, and a
        # default conn naming none, are refused rather than sent (tests/.../test_credential_scope.py).
        (_Conn("docker.pkg.github.com", "u", "p"), True, CredentialScopeError),
        (_Conn("", "u", "p"), False, CredentialScopeError),
        (_Conn("", "u", "p"), True, ("u", "p")),  # mapped to this registry: the mapping names the host
        (_Conn("ghcr.io", "u", ""), False, None),
    ],
)
def test_connection_rule(conn, explicit, expected):
    if expected is CredentialScopeError:
        with pytest.raises(CredentialScopeError, match=r"registry_conn.*ghcr\.io"):
            login_from_connection(conn, "ghcr.io", explicit=explicit)
        return
    login = login_from_connection(conn, "ghcr.io", explicit=explicit)
    assert (login.pair if login else None) == expected
