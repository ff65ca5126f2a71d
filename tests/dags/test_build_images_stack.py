"""build_images on the local stack, for real: engine, registry, git remote, Airflow (`airflow dags test`).

Main's build (the ``main_build`` session fixture in tests/conftest.py) builds every stack Python
version; the other tests reuse its images and the registry it filled.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from tests.support.dag_runs import run_dag, stack_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = "apache/airflow"


@pytest.fixture(scope="session")
def registry(stack_env) -> RegistryClient:
    return RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))


@pytest.fixture(scope="session")
def branch_sha(stack_env) -> str:
    source = os.environ["IMAGE_FACTORY_SOURCE_REPO"]
    out = subprocess.run(["git", "ls-remote", source, "refs/heads/main"], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def digest(registry: RegistryClient, path: str, tag: str) -> str | None:
    return registry.manifest_digest(path, tag)


def test_registry_holds_exactly_the_spec_names(main_build, registry, branch_sha):
    repos = {r for r in registry.catalog() if r.startswith(f"{REPO}/main/")}
    expected = {f"{REPO}/main/python"}
    for version in stack_versions():
        expected |= {f"{REPO}/main/{kind}/python{version}" for kind in ("ci", "ci-manifest", "prod", "prod-build")}
    assert repos == expected
    for version in stack_versions():
        for kind in ("ci", "prod"):
            assert set(registry.list_tags(f"{REPO}/main/{kind}/python{version}")) >= {"latest", branch_sha}
        for kind in ("ci-manifest", "prod-build"):
            assert registry.list_tags(f"{REPO}/main/{kind}/python{version}") == ["latest"]
    base_tags = set(registry.list_tags(f"{REPO}/main/python"))
    assert {f"{v}-slim-{'trixie' if v == '3.13' else 'bookworm'}" for v in stack_versions()} <= base_tags


def test_latest_is_the_tested_sha_digest(main_build, registry, branch_sha):
    for version in stack_versions():
        for kind in ("ci", "prod"):
            path = f"{REPO}/main/{kind}/python{version}"
            sha_digest = digest(registry, path, branch_sha)
            assert sha_digest is not None
            assert digest(registry, path, "latest") == sha_digest
            # the digest the run reported after testing is the one published
            assert sha_digest in main_build.output


def test_pushed_images_left_the_engine(main_build, branch_sha):
    """tidy_engine: the registry holds every image of the run, so the worker's engine keeps none."""
    log = main_build.output
    host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    for version in stack_versions():
        for kind in ("ci", "ci-manifest", "prod", "prod-build"):
            ref = f"{host}/{REPO}/main/{kind}/python{version}:{branch_sha}"
            assert f"removed {ref} from the engine (the registry holds it)" in log
            gone = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
            assert gone.returncode != 0, f"{ref} is still on the engine"
    assert "build cache trimmed to" in log


def test_the_compiled_ui_is_published_once_by_content_key(main_build, registry):
    """The first PROD build stage compiles the UI and pushes REPO/ui-assets:<key>; every other PROD build of
    the run (the other Python version, both PROD images) takes it from there and runs no node."""
    out = main_build.output
    compiled = re.findall(r"/ui-assets:([0-9a-f]{64}) not in the registry yet: compiling it and pushing it first", out)
    assert len(compiled) == 1, compiled  # once in the run
    # (a stack that built other UI sources or build scripts before holds their keys too)
    assert compiled[0] in registry.list_tags(f"{REPO}/ui-assets")
    assert f"compiled UI from {registry.registry}/{REPO}/ui-assets:{compiled[0]}" in out  # the second version
    assert out.count("compiled UI: as the PROD build stage") == len(stack_versions())
    ran = re.findall(r"steps that ran: (.*)", out)
    assert not [line for line in ran if "[ui-build" in line], "a build compiled the UI in its own stages"


def test_prod_image_runs_airflow_as_non_root(main_build):
    registry_host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    image = f"{registry_host}/{REPO}/main/prod/python{stack_versions()[0]}:latest"
    subprocess.run(["docker", "pull", "-q", image], check=True, capture_output=True)
    out = subprocess.run(
        ["docker", "run", "--rm", image, "bash", "-c", "id -u && airflow version"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out[0] != "0"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", out[1])


def test_failing_tests_change_no_latest(main_build, registry):
    before = {
        (v, k): digest(registry, f"{REPO}/main/{k}/python{v}", "latest")
        for v in stack_versions() for k in ("ci", "prod", "prod-build", "ci-manifest")
    }
    # One version is enough to show the gate (and keeps the suite fast): its CI tests fail.
    result = run_dag(
        "build_images", {"branch": "main", "python_versions": stack_versions()[:1], "test_command": "exit 3"}
    )
    assert result.returncode != 0
    after = {key: digest(registry, f"{REPO}/main/{key[1]}/python{key[0]}", "latest") for key in before}
    assert after == before
    assert "VerificationFailed" in result.output


def test_a_second_identical_run_builds_nothing_and_reuses_the_published_images(main_build, registry, branch_sha):
    """Build avoidance by content key: the same commit, constraints, base, Dockerfiles and checks are
    published already, so no build runs, no check runs again, :SHA is tagged from the published digest
    (no layer pulled or pushed) and every latest stays the digest it was."""
    version = stack_versions()[0]  # the same logic for every version; one keeps the suite fast
    kinds = ("ci", "prod", "prod-build")
    before = {k: digest(registry, f"{REPO}/main/{k}/python{version}", "latest") for k in kinds}
    result = run_dag("build_images", {"branch": "main", "python_versions": [version]})
    assert result.returncode == 0, result.output[-4000:]
    assert not re.findall(r"Built \S+: \S+, [\d.]+ MB", result.output)
    reused = dict(re.findall(r"Reused \S+/main/(\S+)/python[\d.]+:\S+: (sha256:[0-9a-f]{64}), [\d.]+s, content key "
                             r"[0-9a-f]{64}", result.output))
    assert reused == before, reused
    assert result.output.count("passed these checks before it was published: not run again") == 2
    for kind in ("ci", "prod"):
        assert digest(registry, f"{REPO}/main/{kind}/python{version}", branch_sha) == before[kind]
    after = {k: digest(registry, f"{REPO}/main/{k}/python{version}", "latest") for k in kinds}
    assert after == before


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"branch": "Not Valid"}, "branch"),  # passes the form's schema, rejected by the build request
        ({"cache": "sometimes"}, "cache"),  # rejected by the param schema before any task runs
    ],
)
def test_rejected_conf_builds_nothing(stack_env, registry, conf, field):
    # the repositories of this conf's default repository (the other test stream pushes to its own)
    before = [repo for repo in registry.catalog() if repo.startswith(f"{REPO}/")]
    result = run_dag("build_images", conf, timeout=300)
    assert result.returncode != 0
    assert field in result.output
    assert "Built " not in result.output
    assert [repo for repo in registry.catalog() if repo.startswith(f"{REPO}/")] == before


def _published(registry: RegistryClient, prefix: str) -> dict[str, str | None]:
    return {
        f"{repo}:{tag}": registry.manifest_digest(repo, tag)
        for repo in registry.catalog() if repo.startswith(prefix)
        for tag in registry.list_tags(repo)
    }


def test_fork_mode_rebuilds_from_the_registry_cache_tests_and_pushes_nothing(main_build, registry, branch_sha,
                                                                               tmp_path):
    """A fork's sources (not the canonical source_repo), with ``rebuild``: everything is built again, every
    step from the canonical images in the registry (the fork's cache), and verified; nothing is published."""
    fork = tmp_path / "fork.git"
    subprocess.run(["git", "clone", "-q", "--bare", os.environ["IMAGE_FACTORY_SOURCE_REPO"], str(fork)], check=True)
    before = _published(registry, f"{REPO}/")
    version = stack_versions()[0]
    result = run_dag("build_images", {"branch": "main", "python_versions": [version], "source_repo": str(fork),
                                      "rebuild": True})
    log = result.output
    assert result.returncode == 0, log[-4000:]
    assert "not looking for a published image (rebuild was asked for)" in log
    reports = re.findall(r"Built (\S+): \S+, [\d.]+ MB, [\d.]+s, (\d+)/(\d+) steps cached", log)
    assert len(reports) == 3, reports  # ci, prod-build, prod
    for image, cached, steps in reports:
        # every step of the build came from the cache (a FROM is not a step: it resolves the base)
        assert int(steps) > 0 and int(cached) == int(steps), (image, cached, steps)
    assert log.count("FORK MODE: source repository") == 1
    assert "is not the canonical" in log
    assert "check tests" in log and "api-server health answered" in log  # verified all the same
    assert _published(registry, f"{REPO}/") == before
    # nothing was pushed, so tidy_engine keeps the fork's images on the engine for the user
    assert "push is off for this run: its images stay on the engine" in log
    host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    prod = f"{host}/{REPO}/main/prod/python{version}:{branch_sha}"  # the fork is a clone: same commit
    assert subprocess.run(["docker", "image", "inspect", prod], capture_output=True, check=False).returncode == 0
