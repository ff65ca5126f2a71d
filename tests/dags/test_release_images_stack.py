"""release_images on the local stack, for real: `airflow dags test` builds the PROD image of a released
Airflow from PyPI (mostly cached: main's build made the same layers), verifies it, stages it, and publishes
the release tags by digest. Each test uses a fresh repository under releasetest/.

Constraints: the stack cannot reach GitHub, so these runs pass ``constraints_url=""`` (the URL template is
covered by the unit tests in tests/airflow_image_factory/test_release.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.policy.release import plan_rebuilds
from airflow_image_factory.services.release import read_released_images
from tests.support.dag_runs import run_dag, stack_versions
from tests.support.evidence import STACK_PUBLIC_KEY, evidence_cli, names_and_referrers
from tests.support.oci_images import push_image

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(stack_env) -> RegistryClient:
    return RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))


def fresh_repository() -> str:
    return f"releasetest/airflow-{uuid.uuid4().hex[:8]}"


def release(repository: str, pythons: list[str], default: str, version: str = "3.3.2"):
    conf = {"version": version, "python_versions": pythons, "default_python": default,
            "repository": repository, "constraints_url": ""}
    return run_dag("release_images", conf, timeout=3600)


def asset_event_uris(prefix: str) -> set[str]:
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT a.uri FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri LIKE ?", (prefix + "%",)
        ).fetchall()
    return {uri for (uri,) in rows}


def test_a_first_release_publishes_the_four_tags_by_tested_digest(registry):
    repository = fresh_repository()
    pythons = stack_versions()
    default = pythons[0]
    result = release(repository, pythons, default)
    assert result.returncode == 0, result.output[-6000:]

    tags, referrers = names_and_referrers(registry.list_tags(repository))
    expected = {"3.3.2", "latest"} | {f"3.3.2-python{p}" for p in pythons} | {f"3.3-python{p}" for p in pythons}
    assert tags == expected
    digest = {tag: registry.manifest_digest(repository, tag) for tag in tags}
    # each published image's signed evidence came along from staging, and verifies where it is published
    assert referrers == {d.replace(":", "-") for d in digest.values()}
    verified = evidence_cli("verify", f"{registry.registry}/{repository}:latest", "--public-key", str(STACK_PUBLIC_KEY),
                            "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [report] = json.loads(verified.stdout)
    assert report["revision"] in (None, "") and set(report["accepted"]) == {"SBOM", "provenance", "test evidence"}
    staged = {p: registry.manifest_digest(f"{repository}/release-staging", f"3.3.2-python{p}") for p in pythons}
    for python in pythons:
        # every tag of a Python version is exactly the digest that was tested and staged
        assert digest[f"3.3.2-python{python}"] == digest[f"3.3-python{python}"] == staged[python] is not None
    assert digest["3.3.2"] == digest["latest"] == staged[default]
    assert len(set(staged.values())) == len(pythons)  # one image per Python version
    assert staged[default] in result.output  # the run reported what it published
    for python in pythons:  # tidy_engine: the registry holds each staged candidate, the engine need not
        assert f"removed {registry.registry}/{repository}/release-staging:3.3.2-python{python} from the engine" \
            in result.output

    # The published image is the released Airflow, not the branch's sources.
    host = registry.registry
    out = subprocess.run(
        ["docker", "run", "--rm", f"{host}/{repository}:latest", "airflow", "version"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == "3.3.2"

    # The nightly's rebuild check reads what each released image was built on from its labels: nothing
    # is stale against today's bases; a new base digest for one Python rebuilds exactly its image.
    released = read_released_images(registry, repository)
    assert sorted((r.version, r.python) for r in released) == sorted(("3.3.2", p) for p in pythons)
    mirror = os.environ["IMAGE_FACTORY_PYTHON_BASE_MIRROR"].split("/", 1)[1]
    debian = {p: "trixie" if p == "3.13" else "bookworm" for p in pythons}
    current = {p: registry.manifest_digest(mirror, f"{p}-slim-{debian[p]}") for p in pythons}
    assert {r.python: r.base_digest for r in released} == current
    assert plan_rebuilds(released, current) == ()
    newer_base = {**current, default: "sha256:" + "f" * 64}
    assert [r.tag for r in plan_rebuilds(released, newer_base)] == [f"3.3.2-python{default}"]

    # An asset event for every published tag (DAGs can be scheduled on REG/REPO:latest).
    assert asset_event_uris(f"oci://{host}/{repository}:") >= {f"oci://{host}/{repository}:{t}" for t in expected}


def test_an_older_release_does_not_move_latest(registry):
    repository = fresh_repository()
    python = stack_versions()[0]
    # The registry already holds a newer release 3.4.0 as latest (a tiny stand-in image).
    newer = push_image(registry, repository, "3.4.0")
    registry.put_manifest(repository, "latest", newer.manifest)
    result = release(repository, [python], python)
    assert result.returncode == 0, result.output[-6000:]

    tags, _ = names_and_referrers(registry.list_tags(repository))
    assert tags == {"3.4.0", "latest", "3.3.2", f"3.3.2-python{python}", f"3.3-python{python}"}
    assert registry.manifest_digest(repository, "latest") == newer.digest  # latest stays with 3.4.0
    tested = registry.manifest_digest(repository, f"3.3.2-python{python}")
    assert registry.manifest_digest(repository, "3.3.2") == tested
    assert "Not moved (a newer release owns them): latest" in result.output


def test_a_bad_release_request_fails_before_any_build(registry):
    repository = fresh_repository()
    result = run_dag("release_images", {"version": "3.3", "repository": repository,
                                        "python_versions": stack_versions(), "default_python": "3.12"})
    assert result.returncode != 0
    output = result.output
    assert "invalid release request (version, default_python)" in output
    assert "starting task_id=python.build_prod" not in output
    assert registry.list_tags(repository) == []
