"""The evidence steps of a run against a real distribution registry: the key checked before any build,
``attest_*`` signing and storing a pushed image's statements, the promotion's evidence check and
``verify_published``. The one stand-in is the engine that lists an image's contents (no Docker in this
tier; tests/dags/test_evidence_stack.py runs the real images)."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_image_factory.clients.engine import RunResult
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.clients.signing import EvidenceVerifier, generate_key_pair
from airflow_image_factory.policy.evidence import PROVENANCE, SBOM, TEST_RESULT
from airflow_image_factory.policy.naming import images_for
from airflow_image_factory.policy.nightly import REVISION_LABEL
from airflow_image_factory.policy.request import BuildRequest, validate_request
from airflow_image_factory.services.evidence import INVENTORY_MARKER, verify_image
from airflow_image_factory.tasks import evidence, groups, operators
from tests.support.oci_images import push_image, push_index
from tests.support.registry_servers import RegistryServer

pytest_plugins = ["tests.support.registry_fixtures"]

SHA = "d" * 40
CONN = "AIRFLOW_CONN_IMAGE_FACTORY_SIGNING"
KEY, PUBLIC = generate_key_pair()
INVENTORY = {"python": [["apache-airflow", "3.3.2", ""]], "debian": [["libc6", "2.36-9", "amd64"]],
             "os": {"ID": "debian", "VERSION_ID": "12"}}


class ListingEngine:
    """Answers the inventory run the way an image's own Python does; records what ran."""

    def __init__(self):
        self.ran = []

    def run(self, image, command=None, *, entrypoint=None, **_):
        self.ran.append((image, tuple(entrypoint or ()), tuple(command or ())))
        return RunResult(0, "noise\n" + INVENTORY_MARKER + json.dumps(INVENTORY))


@pytest.fixture
def settings_env(monkeypatch):
    """``run_settings`` of every task module without a Variable; the dict adds IMAGE_FACTORY_* overrides."""
    env: dict[str, str] = {}
    for module in (operators, groups, evidence):
        monkeypatch.setattr(module, "run_settings", lambda: load_settings(env=env))
    monkeypatch.delenv(CONN, raising=False)
    return env


def signing_key(monkeypatch, pem: str = KEY) -> None:
    monkeypatch.setenv(CONN, json.dumps({"conn_type": "generic", "password": pem}))


def request(registry: RegistryServer, env, **conf) -> dict:
    base = {"python_versions": ["3.11"], "registry": registry.host, "commit_sha": SHA}
    return validate_request({**base, **conf}, load_settings(env=env)).to_dict()


# ---- before any build ------------------------------------------------------------------------------------
def test_a_run_that_would_publish_without_a_signing_key_fails_before_building(plain_registry, settings_env):
    with pytest.raises(AirflowFailException, match=r"^signing_connection: no Airflow Connection "
                                                   r"'image_factory_signing' .*image-factory keygen"):
        groups.check_publishing.function(request(plain_registry, settings_env))


def test_an_unreadable_key_is_named_never_shown(plain_registry, settings_env, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    not_a_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    signing_key(monkeypatch, not_a_key)
    with pytest.raises(AirflowFailException, match="the password of Connection 'image_factory_signing' is not") as err:
        groups.check_publishing.function(request(plain_registry, settings_env))
    assert "bm90IGEga2V5" not in str(err.value) and "bm90IGEga2V5" not in caplog.text


def test_with_a_key_or_with_evidence_off_the_run_goes_on(plain_registry, settings_env, monkeypatch):
    signing_key(monkeypatch)
    assert groups.check_publishing.function(request(plain_registry, settings_env))["push"] is True
    monkeypatch.delenv(CONN)
    settings_env["IMAGE_FACTORY_EVIDENCE"] = "off"
    assert groups.check_publishing.function(request(plain_registry, settings_env))["push"] is True
    # and a run that publishes nothing needs no key
    settings_env.pop("IMAGE_FACTORY_EVIDENCE")
    assert groups.check_publishing.function(request(plain_registry, settings_env, push=False))["push"] is False


# ---- attest_* ------------------------------------------------------------------------------------------
BUILD = {"image": "x", "reused": None, "provenance": {
    "dockerfile": "Dockerfile", "target": None, "dockerfile_digest": "1" * 64, "build_args": {"REVISION": SHA},
    "started_on": "2026-12-07T10:00:00Z", "finished_on": "2026-12-07T10:04:00Z"}}
VERIFIED = {"checks": [{"check": "airflow version", "passed": True}, {"check": "pip check", "passed": True}]}
BASE = {"upstream": "localhost:5000/library/python:3.11-slim-bookworm", "digest": "sha256:" + "e" * 64}


def pushed_prod(registry: RegistryServer, build_request: dict, labels=None):
    image = images_for(BuildRequest.from_dict(build_request), "3.11").prod
    return image, push_image(registry.client(), image.path, SHA, labels={REVISION_LABEL: SHA, **(labels or {})})


def attest_step(build_request, pushed, build=BUILD):
    return evidence.AttestImageOperator(
        task_id="attest_prod", kind="prod", build_request=build_request, python="3.11", build=build,
        verification=VERIFIED, pushed=pushed, python_base=BASE, constraints={"3.11": "pin==1\n"})


@pytest.fixture
def engine(monkeypatch) -> ListingEngine:
    """The signing key, and the listing engine the attest step gets from its EngineHook."""
    signing_key(monkeypatch)
    listing = ListingEngine()
    monkeypatch.setattr(evidence, "EngineHook", lambda **_: type("H", (), {"get_conn": lambda self: listing})())
    return listing


def test_attest_signs_three_statements_about_the_pushed_digest(plain_registry, settings_env, engine):
    build_request = request(plain_registry, settings_env)
    image, pushed = pushed_prod(plain_registry, build_request)
    result = attest_step(build_request, pushed.digest).execute({"run_id": "manual__1"})
    assert [s["predicateType"] for s in result["statements"]] == [SBOM, PROVENANCE, TEST_RESULT]
    assert engine.ran == [(image.ref(SHA), ("python", "-c"), engine.ran[0][2])]  # the entrypoint bypassed
    [found] = verify_image(plain_registry.client(), image.path, SHA, EvidenceVerifier.from_pems([PUBLIC]))
    assert found.verdict.ok, found.verdict.problems
    provenance = next(o.document for o in found.opened if o.predicate_type == PROVENANCE)["predicate"]
    params = provenance["buildDefinition"]["externalParameters"]
    assert params["source"]["commit"] == SHA and params["image"] == {
        "kind": "prod", "python": "3.11", "dockerfile": "Dockerfile", "target": ""}
    assert provenance["runDetails"]["metadata"]["invocationId"] == "build_images/manual__1"
    # what the promotion asks of a tested digest: nothing wrong with this one, everything with another
    check = evidence.evidence_check(load_settings(env=settings_env), plain_registry.client(), push=True)
    assert check(image.path, pushed.digest) == []
    _, unsigned = pushed_prod(plain_registry, build_request, labels={"other": "1"})
    assert len(check(image.path, unsigned.digest)) == 3


def test_attest_signs_each_platform_of_an_index_then_the_index_from_them(plain_registry, settings_env, engine):
    build_request = request(plain_registry, settings_env, platforms=["linux/amd64", "linux/arm64"])
    image = images_for(BuildRequest.from_dict(build_request), "3.11").prod
    client = plain_registry.client()
    index = push_index(client, image.path, SHA, labels={REVISION_LABEL: SHA})
    parts = [{**BUILD, "platform": p, "image": image.ref(f"{SHA}-{p.split('/')[1]}"),
              "provenance": {**BUILD["provenance"], "platform": p}} for p in ("linux/amd64", "linux/arm64")]
    verified = {"platforms": [{"platform": p, **VERIFIED} for p in ("linux/amd64", "linux/arm64")]}
    step = evidence.AttestImageOperator(
        task_id="attest_prod", kind="prod", build_request=build_request, python="3.11",
        build={"platforms": parts}, verification=verified, pushed=index.digest, python_base=BASE)
    result = step.execute({"run_id": "manual__1"})
    assert len(result["statements"]) == 9  # three per platform, three for the index
    assert [ran[0] for ran in engine.ran] == [part["image"] for part in parts]  # each platform's own inventory
    found = verify_image(client, image.path, SHA, EvidenceVerifier.from_pems([PUBLIC]))
    assert [(e.platform, e.verdict.ok) for e in found] == [("linux/amd64", True), ("linux/arm64", True),
                                                           ("index", True)]
    assert found[-1].revision == SHA
    # what the promotion asks of the index: its children's evidence and its own
    check = evidence.evidence_check(load_settings(env=settings_env), client, push=True)
    assert check(image.path, index.digest) == []


def test_a_reused_image_must_already_carry_verifying_evidence(plain_registry, settings_env, monkeypatch):
    signing_key(monkeypatch)
    build_request = request(plain_registry, settings_env)
    _, pushed = pushed_prod(plain_registry, build_request)
    reused = {**BUILD, "reused": "reg/prod:latest", "content_key": "k" * 64}
    with pytest.raises(AirflowFailException, match=r"was reused .* evidence does not verify.*rebuild: true"):
        attest_step(build_request, pushed.digest, build=reused).execute({})


def test_attest_skips_when_nothing_is_published_or_evidence_is_off(plain_registry, settings_env, monkeypatch):
    with pytest.raises(AirflowSkipException, match="nothing is published"):
        attest_step(request(plain_registry, settings_env, push=False), None).execute({})
    settings_env["IMAGE_FACTORY_EVIDENCE"] = "off"
    with pytest.raises(AirflowSkipException, match="evidence is off"):
        attest_step(request(plain_registry, settings_env), "sha256:" + "0" * 64).execute({})


# ---- verify_published ------------------------------------------------------------------------------------
def test_verify_published_reads_the_names_back(plain_registry, settings_env, engine):
    build_request = request(plain_registry, settings_env)
    image, pushed = pushed_prod(plain_registry, build_request)
    attest_step(build_request, pushed.digest).execute({})
    client = plain_registry.client()
    client.tag(image.path, pushed.digest, "latest")
    published = [{"python": "3.11", "kind": "prod", "image": image.ref("latest"), "digest": pushed.digest},
                 {"python": "3.11", "kind": "python", "image": "not/checked:latest", "digest": "sha256:" + "0" * 64}]
    [report] = evidence.verify_published.function(build_request, published)
    assert report["digest"] == pushed.digest and report["manifests"][0]["ok"]
    # someone moves latest to an unattested image after the promotion
    _, other = pushed_prod(plain_registry, build_request, labels={"other": "2"})
    client.tag(image.path, other.digest, "latest")
    with pytest.raises(AirflowFailException, match="the promotion published"):
        evidence.verify_published.function(build_request, published)
    assert evidence.verify_published.function(build_request, []) == []

