"""Signed evidence on the local stack, for real: main's build (the real Airflow, the ``main_build`` fixture)
signs an SBOM, provenance and test results for every image it pushes, and promotes only digests whose
evidence verifies.

Everything is checked from outside the package (tests/support/evidence.py): the registry over plain HTTP,
the signatures with ``cryptography`` and the stack's public key. Then tampering on copies of main's images:
evidence re-signed with another key, or genuine evidence about another digest, does not verify, and the
promotion refuses to move ``latest`` to such a digest.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from cryptography.exceptions import InvalidSignature

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.registry.manifest import artifact_manifest, manifest_descriptor
from airflow_image_factory.clients.signing import EvidenceSigner, EvidenceVerifier, generate_key_pair
from airflow_image_factory.exceptions import PromotionRefused
from airflow_image_factory.policy.evidence import PROVENANCE, SBOM, TEST_RESULT
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.policy.promotion import PromotionPlan, PromotionStep
from airflow_image_factory.services.evidence import Attestor, problems_of, verify_image
from airflow_image_factory.services.promotion import Promotion
from tests.services.fakes import FakeLock, Log
from tests.support.dag_runs import stack_versions
from tests.support.evidence import OCI_INDEX, STACK_DIR, STACK_PUBLIC_KEY, RawRegistry, evidence_cli

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = "apache/airflow"
REVISION_LABEL = "org.opencontainers.image.revision"


@pytest.fixture(scope="module")
def host(stack_env) -> str:
    return os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")


@pytest.fixture(scope="module")
def public_pem(stack_env) -> str:
    return STACK_PUBLIC_KEY.read_text()


def published(version: str) -> list[str]:
    return [f"{REPO}/main/{kind}/python{version}" for kind in ("ci", "prod")]


def test_every_published_image_carries_three_signed_statements_about_its_digest(main_build, host, public_pem):
    raw = RawRegistry(host)
    for version in stack_versions():
        for repository in published(version):
            digest = raw.digest(repository, "latest")
            index, referrers = raw.referrers(repository, digest)
            assert index.status_code == 200 and index.headers["Content-Type"] == OCI_INDEX, repository
            assert sorted(r.predicate_type for r in referrers) == sorted([SBOM, PROVENANCE, TEST_RESULT])
            revision = raw.config(repository, digest)["config"]["Labels"][REVISION_LABEL]
            for referrer in referrers:
                assert referrer.subject == digest
                document = referrer.statement(public_pem)  # raises unless the stack's key signed it
                assert document["_type"] == "https://in-toto.io/Statement/v1"
                assert document["subject"][0]["digest"] == {"sha256": digest.split(":", 1)[1]}
                assert document["predicateType"] == referrer.predicate_type
                predicate = document["predicate"]
                if referrer.predicate_type == PROVENANCE:
                    dependencies = predicate["buildDefinition"]["resolvedDependencies"]
                    [git] = [d for d in dependencies if "gitCommit" in d["digest"]]
                    assert git["digest"]["gitCommit"] == revision
                    assert predicate["buildDefinition"]["externalParameters"]["source"]["branch"] == "main"
                    assert predicate["runDetails"]["builder"]["id"] == "urn:airflow-image-factory:dag:build_images"
                elif referrer.predicate_type == TEST_RESULT:
                    assert predicate["result"] == "PASSED" and predicate["passedTests"] and not predicate["failedTests"]
                else:
                    purls = {c.get("purl", "") for c in predicate["components"]}
                    assert any(p.startswith("pkg:pypi/apache-airflow-core@") for p in purls), repository
                    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls), repository


def test_another_key_does_not_verify_them(main_build, host):
    _, other_public = generate_key_pair()
    raw = RawRegistry(host)
    repository = published(stack_versions()[0])[1]
    _, referrers = raw.referrers(repository, raw.digest(repository, "latest"))
    for referrer in referrers:
        with pytest.raises(InvalidSignature):
            referrer.statement(other_public)


def test_the_cli_verifies_what_main_published_and_refuses_a_foreign_key(main_build, host, tmp_path):
    ref = f"{host}/{published(stack_versions()[0])[1]}:latest"
    verified = evidence_cli("verify", ref, "--public-key", str(STACK_PUBLIC_KEY), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [report] = json.loads(verified.stdout)
    assert report["ok"] and set(report["accepted"]) == {"SBOM", "provenance", "test evidence"}
    (tmp_path / "other.pub.pem").write_text(generate_key_pair()[1])
    refused = evidence_cli("verify", ref, "--public-key", str(tmp_path / "other.pub.pem"))
    assert refused.returncode == 1 and "no valid signature of a trusted key" in refused.stdout


def test_the_signing_key_never_reaches_the_runs_logs(main_build):
    key_body = "".join((STACK_DIR / "evidence-signing.pem").read_text().splitlines()[1:-1])
    assert key_body and key_body not in main_build.output
    assert "attest_prod" in main_build.output and "signed https://slsa.dev/provenance/v1" in main_build.output


@pytest.fixture(scope="module")
def stack_client(stack_env, host) -> RegistryClient:
    return RegistryClient(host)


def promote_to(client: RegistryClient, repository: str, digest: str) -> list[dict]:
    """What promote_latest does for one tested PROD digest: the real registry and evidence check."""
    verifier = EvidenceVerifier.from_pems([STACK_PUBLIC_KEY.read_text()])

    def problems(repo: str, tested: str) -> list[str]:
        return problems_of(client, repo, tested, verifier)

    step = PromotionStep(ImageKind.PROD, "3.11", f"{client.registry}/{repository}:latest", digest)
    return Promotion(registry=client, engine=None, lock=FakeLock(), log=Log(), evidence_problems=problems).apply(
        PromotionPlan(True, "one tested digest", (step,)), "sha")


@pytest.mark.parametrize("tamper", ["re-signed with another key", "genuine evidence of another digest"])
def test_tampered_evidence_blocks_the_promotion(main_build, stack_client, tamper):
    client = stack_client
    version = stack_versions()[0]
    ci_repo, prod_repo = published(version)
    prod = client.manifest_digest(prod_repo, "latest")
    # a copy of main's PROD image without its evidence, in a repository of this test's own
    target = f"{REPO}/evidence-tamper-{uuid.uuid4().hex[:8]}/prod/python{version}"
    client.copy(prod_repo, prod, target, "candidate")
    if tamper == "re-signed with another key":
        opened = verify_image(client, prod_repo, prod, EvidenceVerifier.from_pems([STACK_PUBLIC_KEY.read_text()]))
        statements = [dict(o.document) for o in opened[0].opened]
        Attestor(client, EvidenceSigner.from_pem(generate_key_pair()[0])).attach(target, prod, statements)
    else:
        # the CI image's genuine, stack-signed artifacts, hung on the PROD digest
        ci = client.manifest_digest(ci_repo, "latest")
        subject = manifest_descriptor(client.get_manifest(target, prod))
        for entry in client.referrers(ci_repo, ci):
            genuine = client.get_manifest(ci_repo, entry["digest"]).document
            for blob in (genuine["config"], *genuine["layers"]):
                client.mount_blob(target, blob["digest"], ci_repo)
            client.attach_referrer(target, artifact_manifest(
                artifact_type=genuine["artifactType"], subject=subject, layer=genuine["layers"][0],
                annotations=genuine["annotations"]))
    with pytest.raises(PromotionRefused, match="signed evidence missing or not verifying, nothing moved") as err:
        promote_to(client, target, prod)
    expected = "no valid signature of a trusted key" if "key" in tamper else "signed for another digest"
    assert expected in str(err.value)
    assert client.manifest_digest(target, "latest") is None  # no half-written latest
    # with the image's own evidence along, the same promotion goes through
    assert client.copy_referrers(prod_repo, prod, target) == 3
    [moved] = promote_to(client, target, prod)
    assert moved["digest"] == prod and client.manifest_digest(target, "latest") == prod
