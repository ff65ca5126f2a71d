"""include/stack/seed_constraints.py: the stand-in's constraints branches, as Airflow's own, resolved as PyPI
stood at the pinned release (read from the stack's source repository that `make stack` seeded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_image_factory.policy.constraints import parse_pins
from tests.support.dag_runs import stack_versions

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "include" / "stack" / "seed_constraints.py"
AIRFLOW_DISTRIBUTIONS = {"apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk"}


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True).stdout


def run_seed(repo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--repo", repo, *args], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.parametrize("branch", ["main", "v3-3-test"])
def test_each_branch_has_constraints_for_every_stack_python_as_of_the_release(stack_env, branch):
    repo = os.environ["IMAGE_FACTORY_SOURCE_REPO"]
    head = git(repo, "rev-parse", f"refs/heads/{branch}").strip()
    for python in stack_versions():
        text = git(repo, "show", f"constraints-{branch}:constraints-{python}.txt")
        assert f"on Python {python}\n# Generated 2026-09-17T08:40:00Z" in text
        assert f"# Commit {head}" in text
        pins = parse_pins(text)
        assert len(pins) > 300  # the regular image's extras: every provider and its dependencies
        assert not set(pins) & AIRFLOW_DISTRIBUTIONS  # the sources are Airflow, as in Airflow's files
        # What PyPI had at the release: celery 5.6.3 (5.7.0 came in November and breaks the executor).
        assert pins["celery"] == "5.6.3" and "apache-airflow-providers-celery" in pins
        assert pins["sshtunnel"]  # the additional requirement the regular image installs


def test_a_second_run_keeps_what_is_there_even_a_nightlys_own_file(stack_env, tmp_path):
    clone = str(tmp_path / "source.git")
    subprocess.run(["git", "clone", "-q", "--bare", os.environ["IMAGE_FACTORY_SOURCE_REPO"], clone], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", "-b", "constraints-main", clone, str(work)], check=True)
    python = stack_versions()[0]
    (work / f"constraints-{python}.txt").write_text("# a nightly's file\ncelery==5.6.2\n")
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(work), *identity, "commit", "-qam", "nightly"], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", "constraints-main"], check=True)
    before = git(clone, "rev-parse", "constraints-main")

    result = run_seed(clone, "--python", python)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [f"present: constraints-main ({python})",
                                               f"present: constraints-v3-3-test ({python})"]
    assert git(clone, "rev-parse", "constraints-main") == before
    assert git(clone, "show", f"constraints-main:constraints-{python}.txt") == "# a nightly's file\ncelery==5.6.2\n"


def test_a_branch_the_repository_lacks_is_named(stack_env, tmp_path):
    clone = str(tmp_path / "source.git")
    subprocess.run(["git", "clone", "-q", "--bare", os.environ["IMAGE_FACTORY_SOURCE_REPO"], clone], check=True)
    result = run_seed(clone, "--python", "3.11", "--branch", "no-such-branch")
    assert result.returncode != 0
    assert f"{clone} has no branch no-such-branch" in result.stderr
