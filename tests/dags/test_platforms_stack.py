"""Multi-platform images on the local stack, for real: build_images for linux/amd64 and linux/arm64 (the
arm64 image built and verified under QEMU user emulation on the same engine), one Python version's slim PROD
image, in a repository of its own (``multiarch/airflow``).

Checked from outside the package: the registry over plain HTTP (the index's media type and children, each
child's config), ``docker run --platform linux/arm64`` of the published name, the signed evidence of each
child with ``cryptography`` and the stack's public key. Then a tampered child blocks the promotion, and a
retag keeps the index digest with its children and their evidence.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.signing import EvidenceSigner, EvidenceVerifier, generate_key_pair
from airflow_image_factory.exceptions import PromotionRefused
from airflow_image_factory.policy.evidence import PROVENANCE, SBOM, TEST_RESULT
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.policy.promotion import PromotionPlan, PromotionStep
from airflow_image_factory.services.evidence import Attestor, problems_of, verify_image
from airflow_image_factory.services.promotion import Promotion
from tests.services.fakes import FakeLock, Log
from tests.support.dag_runs import run_dag, stack_versions
from tests.support.evidence import OCI_INDEX, STACK_PUBLIC_KEY, RawRegistry, evidence_cli

# The build runs in the fixture, inside the first test's bound: alone it takes about 18 min here, beside the
# other two streams of `make test` (three processes on 2 cores) more than 30.
pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(5400)]

REPO = "multiarch/airflow"
PLATFORMS = ["linux/amd64", "linux/arm64"]
REVISION_LABEL = "org.opencontainers.image.revision"


def stack_platforms() -> list[str]:
    """What `make stack` could set up here (its env file): arm64 needs QEMU in binfmt_misc and an arm64 base."""
    return os.environ.get("IMAGE_FACTORY_STACK_PLATFORMS", "linux/amd64").split()


@pytest.fixture(scope="module")
def python() -> str:
    return stack_versions()[0]


@pytest.fixture(scope="module")
def host(stack_env) -> str:
    if "linux/arm64" not in stack_platforms():
        pytest.skip("the stack has no arm64 emulation here (IMAGE_FACTORY_STACK_PLATFORMS: "
                    f"{' '.join(stack_platforms())}; make stack said why)")
    return os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")


@pytest.fixture(scope="module")
def multiarch_build(host, python):
    conf = {"branch": "main", "repository": REPO, "python_versions": [python], "variants": ["slim"],
            "platforms": PLATFORMS}
    result = run_dag("build_images", conf, name="multiarch-build", timeout=5000)
    assert result.returncode == 0, result.output[-8000:]
    return result


def slim(python: str, branch: str = "main") -> str:
    return f"{REPO}/{branch}/prod-slim/python{python}"


def test_the_slim_image_is_one_oci_index_over_an_amd64_and_an_arm64_image(multiarch_build, host, python):
    raw = RegistryClient(host)
    response = RawRegistry(host).manifest(slim(python), "latest")
    assert response.status_code == 200 and response.headers["Content-Type"] == OCI_INDEX
    children = response.json()["manifests"]
    assert [(c["platform"]["os"], c["platform"]["architecture"]) for c in children] == [
        ("linux", "amd64"), ("linux", "arm64")]
    sha = raw.config_of(slim(python), raw.get_manifest(slim(python), children[0]["digest"]))["config"]["Labels"][
        REVISION_LABEL]
    # :SHA is the same index; each child is also :SHA-<arch>, and its config says its platform
    assert RawRegistry(host).digest(slim(python), sha) == response.headers["Docker-Content-Digest"]
    for child in children:
        arch = child["platform"]["architecture"]
        assert RawRegistry(host).digest(slim(python), f"{sha}-{arch}") == child["digest"]
        assert RawRegistry(host).config(slim(python), child["digest"])["architecture"] == arch
    # the build ran the checks on each platform: the arm64 image's under emulation
    assert f"({'linux/arm64'})" in multiarch_build.output and "Verifying" in multiarch_build.output


def test_docker_run_platform_arm64_runs_airflow_version_under_emulation(multiarch_build, host, python):
    docker = shutil.which("docker", path="/usr/bin") or "docker"
    ref = f"{host}/{slim(python)}:latest"
    ran = subprocess.run([docker, "run", "--rm", "--pull", "always", "--platform", "linux/arm64",
                          "--entrypoint", "bash", ref, "-c", "uname -m; airflow version"],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    machine, version = ran.stdout.split()[-2:]
    assert machine == "aarch64" and version[0].isdigit()


def test_each_childs_evidence_is_about_that_child_and_verifies_with_the_stack_key(multiarch_build, host, python):
    raw = RawRegistry(host)
    public_pem = STACK_PUBLIC_KEY.read_text()
    index = raw.manifest(slim(python), "latest").json()
    for child in index["manifests"]:
        revision = raw.config(slim(python), child["digest"])["config"]["Labels"][REVISION_LABEL]
        _, referrers = raw.referrers(slim(python), child["digest"])
        statements = {r.predicate_type: r.statement(public_pem) for r in referrers}
        assert sorted(statements) == sorted([SBOM, PROVENANCE, TEST_RESULT])
        for statement in statements.values():
            assert statement["subject"][0]["digest"]["sha256"] == child["digest"].split(":")[1]
        platform = f"{child['platform']['os']}/{child['platform']['architecture']}"
        provenance = statements[PROVENANCE]["predicate"]["buildDefinition"]["externalParameters"]
        assert provenance["source"]["commit"] == revision and provenance["image"]["platform"] == platform
        assert statements[TEST_RESULT]["predicate"]["result"] == "PASSED"
        arches = {c["purl"].split("arch=")[1].split("&")[0] for c in statements[SBOM]["predicate"]["components"]
                  if c["purl"].startswith("pkg:deb/") and "arch=" in c["purl"]}
        assert child["platform"]["architecture"] in arches  # the arm64 image's own Debian packages
    # the index itself (the digest `docker pull` records): its own statements under its referrers tag,
    # made from the children's
    index_digest = raw.digest(slim(python), "latest")
    _, referrers = raw.referrers(slim(python), index_digest)
    own = {r.predicate_type: r.statement(public_pem) for r in referrers}
    assert sorted(own) == sorted([SBOM, PROVENANCE, TEST_RESULT])
    assert all(s["subject"][0]["digest"]["sha256"] == index_digest.split(":")[1] for s in own.values())
    assert own[TEST_RESULT]["predicate"]["result"] == "PASSED"
    assert any(t.startswith("linux/arm64: ") for t in own[TEST_RESULT]["predicate"]["passedTests"])
    assert own[PROVENANCE]["predicate"]["buildDefinition"]["externalParameters"]["image"]["platforms"] == PLATFORMS
    verified = evidence_cli("verify", f"{host}/{slim(python)}:latest", "--public-key", str(STACK_PUBLIC_KEY))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_tampered_arm64_child_blocks_the_promotion_of_the_whole_index(multiarch_build, host, python):
    registry = RegistryClient(host)
    verifier = EvidenceVerifier.from_pems([STACK_PUBLIC_KEY.read_text()])
    source = slim(python)
    digest = registry.manifest_digest(source, "latest")
    index = registry.get_manifest(source, digest)
    tampered = f"{REPO}/tamper-{uuid.uuid4().hex[:8]}/prod-slim/python{python}"
    # the index and its children copied; the index's and the amd64 child's genuine evidence copied, the
    # arm64 child's replaced by statements about it signed with another key
    assert registry.copy(source, digest, tampered, "candidate") == digest
    amd64, arm64 = (c["digest"] for c in index.children)
    assert registry.copy_referrers(source, digest, tampered, children=False) == 3
    registry.copy_referrers(source, amd64, tampered)
    foreign = EvidenceSigner.from_pem(generate_key_pair()[0])
    genuine = [verifier.open(registry.get_blob(source, registry.get_manifest(source, r["digest"]).document[
        "layers"][0]["digest"])) for r in registry.referrers(source, arm64)]
    assert len(genuine) == 3
    Attestor(registry, foreign).attach(tampered, arm64, genuine)
    problems = problems_of(registry, tampered, digest, verifier)
    assert problems and all(p.startswith("linux/arm64: ") for p in problems), problems
    assert [(e.platform, e.verdict.ok) for e in verify_image(registry, tampered, digest, verifier)] == [
        ("linux/amd64", True), ("linux/arm64", False), ("index", True)]

    target = f"{host}/{tampered}:latest"
    plan = PromotionPlan(True, "test", (PromotionStep(ImageKind.PROD_SLIM, python, target, digest),))
    with pytest.raises(PromotionRefused, match="linux/arm64"):
        Promotion(registry=registry, engine=None, lock=FakeLock(), log=Log(),
                  evidence_problems=lambda repo, d: problems_of(registry, repo, d, verifier)).apply(plan, "x")
    assert registry.manifest_digest(tampered, "latest") is None
    # the genuine index verifies on both platforms
    assert problems_of(registry, source, digest, verifier) == []


def test_a_retag_keeps_the_index_digest_its_children_and_their_evidence(multiarch_build, host, python):
    target = f"multiarch-retag-{uuid.uuid4().hex[:8]}"
    result = run_dag("retag_images", {"source_branch": "main", "target_branch": target, "python_versions": [python],
                                      "registry": host, "repository": REPO, "variants": ["slim"]})
    assert result.returncode == 0, result.output[-5000:]
    raw = RawRegistry(host)
    source, copied = raw.manifest(slim(python), "latest"), raw.manifest(slim(python, target), "latest")
    assert copied.headers["Docker-Content-Digest"] == source.headers["Docker-Content-Digest"]
    assert copied.headers["Content-Type"] == OCI_INDEX
    for child in copied.json()["manifests"]:
        assert raw.manifest(slim(python, target), child["digest"]).status_code == 200
    verified = evidence_cli("verify", f"{host}/{slim(python, target)}:latest", "--public-key", str(STACK_PUBLIC_KEY),
                            "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert '"linux/arm64"' in verified.stdout
