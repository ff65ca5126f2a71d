"""retag_images on the local stack, for real: `airflow dags test` against the registry that `make run` filled.

The DAG talks to the registry through a counting proxy (tests/support/fault_proxy.py, no faults queued),
so every request the retag makes is seen: it must copy by manifest and mount blobs, never GET one.
Targets are fresh branch names under apache/airflow/; nothing under apache/airflow/main/ is written.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from tests.support.dag_runs import run_dag, stack_versions
from tests.support.evidence import STACK_PUBLIC_KEY, evidence_cli
from tests.support.fault_proxy import fault_proxy

pytestmark = [pytest.mark.stack]

REPO = "apache/airflow"
KINDS = ("ci", "ci-manifest", "prod", "prod-build")


def _debian(version: str) -> str:
    return "trixie" if version == "3.13" else "bookworm"


def branch_refs(branch: str) -> list[tuple[str, str]]:
    refs = []
    for version in stack_versions():
        refs += [(f"{REPO}/{branch}/{kind}/python{version}", "latest") for kind in KINDS]
        refs.append((f"{REPO}/{branch}/python", f"{version}-slim-{_debian(version)}"))
    return refs


@pytest.fixture(scope="module")
def registry(stack_env) -> RegistryClient:
    return RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))


@pytest.fixture(scope="module")
def main_digests(registry, main_build) -> dict[tuple[str, str], str | None]:
    digests = {ref: registry.manifest_digest(*ref) for ref in branch_refs("main")}
    missing = [f"{path}:{tag}" for (path, tag), d in digests.items() if d is None]
    assert not missing, f"main's build did not publish its latest images: {missing}"
    return digests


@pytest.fixture
def proxy(stack_env):
    with fault_proxy(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")) as counting:
        yield counting


def new_branch() -> str:
    return f"retag-test-{uuid.uuid4().hex[:10]}"


def conf(proxy, target: str, **extra) -> dict:
    return {"source_branch": "main", "target_branch": target, "python_versions": stack_versions(),
            "registry": proxy.host, "repository": REPO, **extra}


def writes(proxy) -> list[str]:
    return [f"{e.method} {e.path}" for e in proxy.events if e.method not in ("GET", "HEAD")]


def test_retag_copies_main_to_a_new_branch_with_identical_digests_and_no_blob_download(
    registry, main_digests, proxy
):
    target = new_branch()
    result = run_dag("retag_images", conf(proxy, target))
    assert result.returncode == 0, result.output[-5000:]

    for (path, tag), digest in main_digests.items():
        copied = registry.manifest_digest(path.replace(f"{REPO}/main/", f"{REPO}/{target}/", 1), tag)
        assert copied == digest, f"{path}:{tag}"

    blob_gets = [e.path for e in proxy.events if e.method == "GET" and "/blobs/" in e.path]
    assert blob_gets == [], f"the retag downloaded blobs: {blob_gets[:5]}"
    uploads = [e for e in proxy.events if e.method in ("PATCH", "PUT") and "/blobs/uploads/" in e.path]
    assert uploads == [], "the retag uploaded blob data instead of mounting"
    mounts = [e for e in proxy.events if e.method == "POST" and "/blobs/uploads/" in e.path]
    assert mounts, "no cross-repository mounts were made"
    manifest_puts = [e.path.rsplit("/manifests/", 1)[1] for e in proxy.events
                     if e.method == "PUT" and "/manifests/" in e.path]
    # the names, then each tested image's signed evidence: 3 artifacts (by digest), each added to the
    # referrers tag schema's index (sha256-<hex>) of that image
    assert len([ref for ref in manifest_puts if not ref.startswith("sha256")]) == len(main_digests)
    tested = 2 * len(stack_versions())  # CI and PROD of each version
    assert len([ref for ref in manifest_puts if ref.startswith("sha256:")]) == 3 * tested
    assert len({ref for ref in manifest_puts if ref.startswith("sha256-")}) == tested
    for version in stack_versions():
        verified = evidence_cli("verify", f"{registry.registry}/{REPO}/{target}/prod/python{version}:latest",
                                "--public-key", str(STACK_PUBLIC_KEY))
        assert verified.returncode == 0, verified.stdout + verified.stderr

    # Idempotent: a second run finds every target at the source digest and writes nothing.
    proxy.events.clear()
    again = run_dag("retag_images", conf(proxy, target))
    assert again.returncode == 0, again.output[-3000:]
    assert writes(proxy) == []
    assert "unchanged" in again.output


def test_dry_run_lists_changes_and_changes_nothing(registry, main_digests, proxy):
    target = new_branch()
    result = run_dag("retag_images", conf(proxy, target, dry_run=True))
    assert result.returncode == 0, result.output[-5000:]
    output = result.output
    assert "DRY RUN" in output
    for path, tag in branch_refs(target):
        assert f"{proxy.host}/{path}:{tag}" in output  # every name that would change is listed
        assert registry.manifest_digest(path, tag) is None
    assert writes(proxy) == []
    assert {e.method for e in proxy.events} <= {"HEAD", "GET"}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        # One of the retag request's own rules and one of the trigger form's schema, each a real run; the
        # whole table of bad confs goes through the same two layers in tests/reliability/test_malformed_confs.py.
        ({"target_branch": "main"}, "target_branch"),  # same as the source
        ({"python_versions": ["2.7"]}, "python_versions"),
    ],
)
def test_bad_conf_fails_naming_the_field_before_any_registry_request(proxy, bad, field):
    result = run_dag("retag_images", {**conf(proxy, new_branch()), **bad})
    assert result.returncode != 0
    # Our own message ("field: ...") or the trigger form's ("param field: ..."), naming the field.
    assert re.search(rf"(invalid retag request \(|param ){field}\b", result.output)
    assert proxy.events == []


def test_missing_source_copies_nothing(registry, proxy):
    target = new_branch()
    result = run_dag("retag_images", {**conf(proxy, target), "source_branch": "no-such-branch-" + uuid.uuid4().hex[:6]})
    assert result.returncode != 0
    assert "RetagSourceMissing" in result.output and "source image(s) missing, nothing was copied" in result.output
    assert writes(proxy) == []
    assert json.dumps(registry.list_tags(f"{REPO}/{target}/ci/python{stack_versions()[0]}")) == "[]"
