"""Signed evidence: the statements (pure), DSSE signing and verifying (securesystemslib), the referrers of an
image in a real distribution registry (no referrers API: the OCI 1.1 tag schema), the attest → verify round
trip with its tampered cases, and the ``image-factory`` CLI."""

from __future__ import annotations

import base64
import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_image_factory import cli
from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.clients.registry.manifest import OCI_INDEX, artifact_manifest, referrers_tag
from airflow_image_factory.clients.signing import EvidenceSigner, EvidenceVerifier, generate_key_pair, public_key
from airflow_image_factory.exceptions import EvidenceError, EvidenceRefused, SigningKeyInvalid
from airflow_image_factory.policy.evidence import (
    ARTIFACT_TYPE,
    PROVENANCE,
    SBOM,
    STATEMENT_TYPE,
    TEST_RESULT,
    Opened,
    checks_result_predicate,
    index_test_result,
    judge,
    provenance_predicate,
    statement,
)
from airflow_image_factory.policy.nightly import REVISION_LABEL
from airflow_image_factory.services.evidence import (
    Attestor,
    attest_index,
    cyclonedx_sbom,
    evidence_problems,
    verify_image,
)
from tests.support.oci_images import push_image, push_index
from tests.support.registry_servers import RegistryServer, unique_repo

pytest_plugins = ["tests.support.registry_fixtures"]

SHA = "c0ffee" + "0" * 34
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
INVENTORY = {
    "python": [["apache-airflow", "3.3.2", "Apache-2.0"], ["Jinja2", "3.1.6", ""]],
    "debian": [["libc6", "2.36-9+deb12u10", "amd64"], ["tzdata", "2025b-0+deb12u1", "all"]],
    "os": {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"},
}


def provenance(sha: str = SHA) -> dict:
    return provenance_predicate(
        source_repo="https://example.test/airflow.git", branch="main", sha=sha, kind="prod", python="3.11",
        dockerfile="Dockerfile", dockerfile_digest="1" * 64, target=None, build_args={"B": "2", "A": "1"},
        base_image="localhost:5000/library/python:3.11-slim-bookworm", base_digest="sha256:" + "e" * 64,
        constraints_digest="f" * 64, builder_id="urn:airflow-image-factory:dag:build_images",
        builder_version={"airflow-image-factory": "0.1.0"}, invocation_id="build_images/manual__1",
        started_on="2026-12-07T10:00:00Z", finished_on="2026-12-07T10:05:00Z",
    )


def statements(digest: str = DIGEST, *, sha: str = SHA, passed: bool = True) -> list[dict]:
    checks = [{"check": "airflow version", "passed": True}, {"check": "pip check", "passed": passed}]
    return [
        statement(name="img", digest=digest, predicate_type=SBOM,
                  predicate=cyclonedx_sbom(INVENTORY, image="img:sha", digest=digest)),
        statement(name="img", digest=digest, predicate_type=PROVENANCE, predicate=provenance(sha)),
        statement(name="img", digest=digest, predicate_type=TEST_RESULT,
                  predicate=checks_result_predicate(checks, url="airflow:build_images/r/verify_prod")),
    ]


def opened(docs: list[dict]) -> list[Opened]:
    return [Opened(f"sha256:{n:064d}", doc) for n, doc in enumerate(docs)]


# ---- the statements and the verdict (pure) ---------------------------------------------------------------
def test_a_statement_is_in_toto_v1_about_the_digest():
    doc = statements()[1]
    assert doc["_type"] == STATEMENT_TYPE and doc["predicateType"] == PROVENANCE
    assert doc["subject"] == [{"name": "img", "digest": {"sha256": "ab" * 32}}]
    dependencies = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[0] == {"uri": "git+https://example.test/airflow.git@refs/heads/main",
                               "digest": {"gitCommit": SHA}}
    base = {"uri": "oci://localhost:5000/library/python:3.11-slim-bookworm", "digest": {"sha256": "e" * 64}}
    assert base in dependencies
    assert {"uri": "constraints-3.11.txt", "digest": {"sha256": "f" * 64}} in dependencies
    assert list(doc["predicate"]["buildDefinition"]["externalParameters"]["buildArgs"]) == ["A", "B"]


def test_the_sbom_lists_python_distributions_and_debian_packages_with_purls():
    sbom = cyclonedx_sbom(INVENTORY, image="reg/apache/airflow/main/prod/python3.11:sha", digest=DIGEST)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    purls = {c["purl"] for c in sbom["components"]}
    assert {"pkg:pypi/apache-airflow@3.3.2", "pkg:pypi/jinja2@3.1.6",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12"} <= purls
    assert sbom["metadata"]["component"]["type"] == "container"
    assert sbom["metadata"]["component"]["version"] == DIGEST


def test_test_results_pass_only_when_something_ran_and_nothing_failed():
    assert checks_result_predicate([{"check": "a", "passed": True}], url="u")["result"] == "PASSED"
    failed = checks_result_predicate([{"check": "a", "passed": True}, {"check": "b", "passed": False}], url="u")
    assert failed["result"] == "FAILED" and failed["failedTests"] == ["b"]
    assert checks_result_predicate([], url="u")["result"] == "FAILED"


def test_three_good_statements_about_the_digest_are_enough():
    verdict = judge(DIGEST, opened(statements()), revision=SHA)
    assert verdict.ok and set(verdict.accepted) == {SBOM, PROVENANCE, TEST_RESULT}


@pytest.mark.parametrize(
    ("docs", "revision", "expected"),
    [
        (statements()[1:], SHA, f"no signed SBOM about {DIGEST}"),
        (statements(OTHER), SHA, "no signed SBOM about " + DIGEST + " (1 signed for another digest)"),
        (statements(sha="1" * 40), SHA, f"provenance: says commit {'1' * 40}, the image's revision label says {SHA}"),
        (statements(passed=False), SHA, "test evidence: result 'FAILED' (failed: pip check)"),
    ],
    ids=["missing", "another digest", "another commit", "tests failed"],
)
def test_what_is_not_enough_is_named(docs, revision, expected):
    verdict = judge(DIGEST, opened(docs), revision=revision)
    assert not verdict.ok and expected in verdict.problems


def test_rejected_envelopes_are_said_when_something_is_missing():
    verdict = judge(DIGEST, [], ["sha256:1: no valid signature of a trusted key"], revision=None)
    assert verdict.problems[-1] == "envelopes that did not verify: sha256:1: no valid signature of a trusted key"


# ---- signing -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    return generate_key_pair(), generate_key_pair()


def test_an_envelope_opens_with_the_key_that_signed_it_only(keys):
    (private, public), (_, other_public) = keys
    envelope = EvidenceSigner.from_pem(private).sign(statements()[0])
    document = json.loads(envelope)
    assert document["payloadType"] == "application/vnd.in-toto+json" and len(document["signatures"]) == 1
    assert EvidenceVerifier.from_pems([public]).open(envelope)["predicateType"] == SBOM
    with pytest.raises(EvidenceError, match="no valid signature of a trusted key"):
        EvidenceVerifier.from_pems([other_public]).open(envelope)
    # a changed payload under the old signature
    document["payload"] = base64.b64encode(json.dumps(statements(OTHER)[0]).encode()).decode()
    with pytest.raises(EvidenceError, match="no valid signature"):
        EvidenceVerifier.from_pems([public]).open(json.dumps(document).encode())
    with pytest.raises(EvidenceError, match="not a DSSE envelope"):
        EvidenceVerifier.from_pems([public]).open(b"[]")


def test_bad_keys_are_named_and_never_shown():
    with pytest.raises(SigningKeyInvalid, match="the password of Connection 'x' is not an unencrypted PEM") as err:
        EvidenceSigner.from_pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
                                where="the password of Connection 'x'")
    assert "c2VjcmV0" not in str(err.value) and err.value.field == "signing_connection"
    with pytest.raises(SigningKeyInvalid, match="trusted public key 1 is not a PEM public key"):
        EvidenceVerifier.from_pems(["nope"])
    with pytest.raises(SigningKeyInvalid, match="no trusted public key"):
        EvidenceVerifier.from_pems([])


def test_the_signers_public_key_is_its_own_and_its_repr_shows_no_private_key(keys):
    (private, public), _ = keys
    signer = EvidenceSigner.from_pem(private)
    assert signer.keyid == public_key(public).keyid
    assert "_signer" not in repr(signer) and "PRIVATE" not in repr(signer)


# ---- the registry: artifacts and their referrers (a real distribution registry) ---------------------------
def attest(plain_registry: RegistryServer, private: str, *, labels=None, docs=None):
    client = plain_registry.client()
    repository = unique_repo("evidence")
    image = push_image(client, repository, "sha", labels=labels if labels is not None else {REVISION_LABEL: SHA})
    attached = Attestor(client, EvidenceSigner.from_pem(private)).attach(
        repository, image.digest, docs if docs is not None else statements(image.digest))
    return client, repository, image, attached


def test_evidence_is_stored_under_the_referrers_tag_schema_and_verifies(plain_registry, keys):
    (private, public), _ = keys
    client, repository, image, attached = attest(plain_registry, private)
    index = client.get_manifest(repository, referrers_tag(image.digest))
    assert index.media_type == OCI_INDEX
    assert [m["digest"] for m in index.children] == [a["artifact"] for a in attached]
    assert {m["annotations"]["in-toto.io/predicate-type"] for m in index.children} == {SBOM, PROVENANCE, TEST_RESULT}
    assert {m["artifactType"] for m in index.children} == {ARTIFACT_TYPE}
    artifact = client.get_manifest(repository, attached[0]["artifact"]).document
    assert artifact["subject"] == {"mediaType": image.manifest.media_type, "digest": image.digest,
                                   "size": len(image.manifest.raw)}
    [found] = verify_image(client, repository, "sha", EvidenceVerifier.from_pems([public]))
    assert found.verdict.ok and found.revision == SHA and found.digest == image.digest


def test_a_copy_to_another_repository_takes_the_evidence_along(plain_registry, keys):
    (private, public), _ = keys
    client, repository, image, _ = attest(plain_registry, private)
    target = unique_repo("evidence-copy")
    client.copy(repository, image.digest, target, "latest")
    assert client.copy_referrers(repository, image.digest, target) == 3
    [found] = verify_image(client, target, "latest", EvidenceVerifier.from_pems([public]))
    assert found.verdict.ok


@pytest.mark.parametrize("tamper", ["another key", "another digest", "no revision match"])
def test_tampered_evidence_does_not_verify(plain_registry, keys, tamper):
    (private, public), (other_private, _) = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-tampered")
    image = push_image(client, repository, "sha", labels={REVISION_LABEL: SHA})
    signer, docs = private, statements(image.digest)
    if tamper == "another key":
        signer = other_private  # re-signed by someone else
    elif tamper == "another digest":
        docs = statements(OTHER)  # genuine statements about another image, hung on this one
    else:
        docs = statements(image.digest, sha="2" * 40)
    Attestor(client, EvidenceSigner.from_pem(signer)).attach(repository, image.digest, docs)
    found = verify_image(client, repository, "sha", EvidenceVerifier.from_pems([public]))
    problems = evidence_problems(found)
    assert problems and not found[0].verdict.ok
    expected = {"another key": "no valid signature of a trusted key", "another digest": "signed for another digest",
                "no revision match": "the image's revision label says"}[tamper]
    assert any(expected in problem for problem in problems), problems


def test_an_image_without_evidence_says_so(plain_registry, keys):
    (_, public), _ = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-none")
    image = push_image(client, repository, "sha")
    assert client.referrers(repository, image.digest) == []
    [found] = verify_image(client, repository, "sha", EvidenceVerifier.from_pems([public]))
    assert len(found.verdict.problems) == 3


def test_an_index_is_judged_platform_by_platform(plain_registry, keys):
    (private, public), _ = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-index")
    index = push_index(client, repository, "latest")
    amd64, _arm64 = index.children
    Attestor(client, EvidenceSigner.from_pem(private)).attach(repository, amd64.digest, statements(amd64.digest))
    found = verify_image(client, repository, "latest", EvidenceVerifier.from_pems([public]))
    assert [(e.platform, e.verdict.ok) for e in found] == [("linux/amd64", True), ("linux/arm64", False),
                                                           ("index", False)]
    assert {p.split(": ")[0] for p in evidence_problems(found)} == {"linux/arm64", "index"}
    # the index's own evidence is made from its children's: not while one of them does not verify
    with pytest.raises(EvidenceRefused, match="linux/arm64 child's evidence does not verify"):
        attest_index(client, Attestor(client, EvidenceSigner.from_pem(private)), repository, index.digest,
                     EvidenceVerifier.from_pems([public]), image=f"{repository}:sha")
    assert client.referrers(repository, index.digest) == []


def attest_children(client, repository, index, private, *, passed=(True, True)):
    signer = EvidenceSigner.from_pem(private)
    for child, ok in zip(index.children, passed, strict=True):
        Attestor(client, signer).attach(repository, child.digest, statements(child.digest, passed=ok))


def test_an_index_gets_evidence_of_its_own_made_from_its_childrens(plain_registry, keys):
    (private, public), _ = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-index-own")
    index = push_index(client, repository, "latest")
    attest_children(client, repository, index, private)
    verifier = EvidenceVerifier.from_pems([public])
    attestor = Attestor(client, EvidenceSigner.from_pem(private))
    attached = attest_index(client, attestor, repository, index.digest, verifier, image=f"{repository}:sha")
    assert sorted(a["predicateType"] for a in attached) == sorted([SBOM, PROVENANCE, TEST_RESULT])
    found = verify_image(client, repository, "latest", verifier)
    assert [(e.platform, e.verdict.ok) for e in found] == [("linux/amd64", True), ("linux/arm64", True),
                                                           ("index", True)]
    own = {o.predicate_type: o.document for o in found[-1].opened}
    assert all(d["subject"][0]["digest"]["sha256"] == index.digest.split(":")[1] for d in own.values())
    amd64, arm64 = (c.digest for c in index.children)
    # SBOM: each child a container with its platform, depending on its own libraries
    sbom = own[SBOM]["predicate"]
    containers = {c["version"]: c for c in sbom["components"] if c["type"] == "container"}
    assert set(containers) == {amd64, arm64}
    assert containers[arm64]["properties"] == [{"name": "airflow-image-factory:platform", "value": "linux/arm64"}]
    libraries = {c["purl"] for c in sbom["components"] if c["type"] == "library"}
    assert "pkg:pypi/apache-airflow@3.3.2" in libraries
    depends = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    assert "pkg:pypi/apache-airflow@3.3.2" in depends[containers[amd64]["bom-ref"]]
    # provenance: the children's commit, every platform, each child by digest
    provenance = own[PROVENANCE]["predicate"]["buildDefinition"]
    assert provenance["externalParameters"]["image"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert "platform" not in provenance["externalParameters"]["image"]
    children = [d for d in provenance["resolvedDependencies"] if "platform" in d.get("annotations", {})]
    assert [(d["annotations"]["platform"], "sha256:" + d["digest"]["sha256"]) for d in children] == [
        ("linux/amd64", amd64), ("linux/arm64", arm64)]
    assert provenance["resolvedDependencies"][0]["digest"]["gitCommit"] == SHA
    # test result: every platform's checks, by name
    tests = own[TEST_RESULT]["predicate"]
    assert tests["result"] == "PASSED" and "linux/arm64: pip check" in tests["passedTests"]
    # an index that has its own evidence gets none again
    assert attest_index(client, attestor, repository, index.digest, verifier, image=f"{repository}:sha") == []


def test_an_index_whose_child_failed_its_checks_is_refused_its_own_evidence(plain_registry, keys):
    (private, public), _ = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-index-failed")
    index = push_index(client, repository, "latest")
    attest_children(client, repository, index, private, passed=(True, False))
    with pytest.raises(EvidenceRefused, match=r"linux/arm64 child's evidence does not verify: test evidence"):
        attest_index(client, Attestor(client, EvidenceSigner.from_pem(private)), repository, index.digest,
                     EvidenceVerifier.from_pems([public]), image=f"{repository}:sha")


def test_the_index_test_result_fails_when_one_platform_failed():
    passed = checks_result_predicate([{"check": "a", "passed": True}], url="u")
    failed = checks_result_predicate([{"check": "a", "passed": False}], url="u")
    result = index_test_result([("linux/amd64", DIGEST, passed), ("linux/arm64", OTHER, failed)])
    assert result["result"] == "FAILED" and result["failedTests"] == ["linux/arm64: a"]
    assert result["passedTests"] == ["linux/amd64: a"]
    assert index_test_result([])["result"] == "FAILED"
    # a child with no checks but a failed result still names it
    assert index_test_result([("linux/arm64", OTHER, {"result": "FAILED"})])["failedTests"] == [
        "linux/arm64: result 'FAILED'"]


def test_an_index_whose_own_provenance_names_another_commit_does_not_verify(plain_registry, keys):
    (private, public), _ = keys
    client = plain_registry.client()
    repository = unique_repo("evidence-index-commit")
    index = push_index(client, repository, "latest", labels={REVISION_LABEL: SHA})
    attest_children(client, repository, index, private)
    Attestor(client, EvidenceSigner.from_pem(private)).attach(
        repository, index.digest, statements(index.digest, sha="f" * 40))
    found = verify_image(client, repository, "latest", EvidenceVerifier.from_pems([public]))
    assert [e.verdict.ok for e in found] == [True, True, False]
    assert found[-1].revision == SHA
    assert any("says commit ffff" in p for p in found[-1].verdict.problems)


def test_an_index_copied_to_another_repository_keeps_its_digest_and_its_childrens_evidence(plain_registry, keys):
    (private, public), _ = keys
    client = plain_registry.client()
    repository, target = unique_repo("evidence-index-src"), unique_repo("evidence-index-dst")
    index = push_index(client, repository, "latest")
    attest_children(client, repository, index, private)
    verifier = EvidenceVerifier.from_pems([public])
    attest_index(client, Attestor(client, EvidenceSigner.from_pem(private)), repository, index.digest, verifier,
                 image=f"{repository}:sha")
    assert client.copy(repository, index.digest, target, "latest") == index.digest
    assert client.copy_referrers(repository, index.digest, target) == 9
    found = verify_image(client, target, "latest", verifier)
    assert [(e.platform, e.verdict.ok) for e in found] == [("linux/amd64", True), ("linux/arm64", True),
                                                           ("index", True)]


# ---- the CLI ------------------------------------------------------------------------------------------
def test_the_cli_makes_keys_and_verifies_as_an_outsider_would(plain_registry, tmp_path, capsys, keys):
    assert cli.main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert "airflow connections add image_factory_signing" in out and "BEGIN" not in out
    assert cli.main(["keygen", "--out", str(tmp_path / "k")]) == 2  # never overwrites a key
    private = (tmp_path / "k.pem").read_text()
    _, repository, image, _ = attest(plain_registry, private)
    ref = f"{plain_registry.host}/{repository}:sha"
    assert cli.main(["verify", ref, "--public-key", str(tmp_path / "k.pub.pem")]) == 0
    assert f"OK   {ref} {image.digest}: SBOM, provenance, test evidence" in capsys.readouterr().out
    (tmp_path / "other.pub.pem").write_text(keys[1][1])
    assert cli.main(["verify", ref, "--public-key", str(tmp_path / "other.pub.pem")]) == 1
    assert "FAIL" in capsys.readouterr().out


# ---- a registry with the referrers API ------------------------------------------------------------------
class _ReferrersApi(BaseHTTPRequestHandler):
    """An OCI 1.1 registry's referrers API (distribution 2.8 has none, so this loopback fake stands in):
    lists one artifact, and answers a manifest PUT with ``OCI-Subject``. Records every request."""

    seen: list = []

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path))
        if self.path == "/v2/":
            return self._reply(200, b"{}")
        if "/referrers/" in self.path:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": OTHER, "size": 1,
                 "artifactType": ARTIFACT_TYPE}]}
            return self._reply(200, json.dumps(index).encode(), {"Content-Type": OCI_INDEX})
        return self._reply(404)

    def do_PUT(self) -> None:
        self.seen.append(("PUT", self.path))
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply(201, headers={"OCI-Subject": DIGEST, "Docker-Content-Digest": self.path.rsplit("/", 1)[1]})


@pytest.fixture
def referrers_api():
    handler = type("Handler", (_ReferrersApi,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()


def test_a_registry_with_the_referrers_api_is_asked_and_keeps_the_list_itself(referrers_api):
    host, seen = referrers_api
    client = RegistryClient(host, retries=0)
    assert [m["digest"] for m in client.referrers("apache/airflow", DIGEST)] == [OTHER]
    artifact = artifact_manifest(artifact_type=ARTIFACT_TYPE, subject={"mediaType": "m", "digest": DIGEST, "size": 1},
                                 layer={"mediaType": "l", "digest": OTHER, "size": 1}, annotations={})
    assert client.attach_referrer("apache/airflow", artifact) == artifact.digest
    # no tag schema: neither its index read nor written
    assert not [path for _, path in seen if f"/manifests/{referrers_tag(DIGEST)}" in path]
    assert ("PUT", f"/v2/apache/airflow/manifests/{artifact.digest}") in seen
