"""nightly_images on the local stack, for real: three runs through `airflow dags test`.

Isolated from the manual build's images: its own image repository, its own mirror of the Python bases
(so a "new upstream base" can be pushed without touching the stack's mirror) and its own clone of
the source repository (so its constraints commits stay its own).

1. builds, publishes and commits constraints for its Python version;
2. finds nothing changed: no push, no commit, a log line saying why;
3. after a new upstream base is pushed to the mirror, and with three packages of the committed
   constraints moved back to older versions (so the run upgrades them) under a test command that fails
   when one of them is upgraded: bisects the upgrades, holds that one back, rebuilds and republishes the
   version with the other two upgraded, commits constraints naming the hold; and has a release made on
   the old base rebuilt (a release_images run);
4. with the held package's newest version still the one that failed, and a test command that fails
   whatever is installed: keeps the hold, finds the tests failing with no upgrade at all, builds and
   publishes nothing, fails the run and says why.

Runs 3 and 4 write their run's note through the REST API of a real api-server on the suite's own
metadata database, started as `make dag` starts it (tests/support/home_api.py), where it is read back.

One Python version (the stack's first): every step here is per version, and ``airflow dags test``
runs a second version's tasks after the first's, doubling the module's time for no new proof. That
a rebuild is narrowed to the versions that changed is tested in tests/airflow_image_factory/test_tasks.py;
main's build covers the second version's base.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from airflow_image_factory.clients.git import BranchFiles, branch_head
from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.policy.bisection import parse_holds, probe_budget
from airflow_image_factory.policy.constraints import parse_pins
from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL
from tests.support.dag_runs import DagRun, run_dag, stack_versions
from tests.support.home_api import HomeApi, home_api

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.fresh_content]

REPOSITORY = "nightlytest/airflow"
MIRROR_PATH = "nightlytest/python-mirror"
DISPOSABLE_REPOSITORIES = ("nightlytest/",)  # deleted when the module ends (tests/conftest.py)
SOURCES_VERSION = "3.4.0.dev0"  # main of the stack's source repository (include/stack/seed_sources.py)
AIRFLOW_DISTRIBUTIONS = {"apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk"}
VERSIONS = stack_versions()[:1]
# Older releases of packages every CI image holds, that nothing pins from below; run 3 moves the committed
# constraints back to them, and its test command fails when CULPRIT is upgraded from its older version.
OLDER = {"idna": "3.7", "certifi": "2024.8.30", "tzdata": "2024.1"}
CULPRIT = "idna"
BREAKS_ON_UPGRADE = (
    "python -c 'import importlib.metadata as m, sys; v = m.version(\"idna\"); "
    "sys.exit(0 if v == \"3.7\" else \"idna \" + v + \" breaks the tests\")'"
)
ALWAYS_FAILS = "python -c 'import sys; sys.exit(\"the branch fails its own tests\")'"


def debian(version: str) -> str:
    return "trixie" if version == "3.13" else "bookworm"


class Nightly:
    def __init__(self, registry: RegistryClient, source: str, api: HomeApi):
        self.registry = registry
        self.api = api
        self.host = registry.registry
        self.source = source
        self.runs = 0

    def env(self) -> dict[str, str]:
        return {
            "IMAGE_FACTORY_REPOSITORY": REPOSITORY,
            "IMAGE_FACTORY_PYTHON_BASE_MIRROR": f"{self.host}/{MIRROR_PATH}",
            "IMAGE_FACTORY_SOURCE_REPO": self.source,
            "IMAGE_FACTORY_NIGHTLY_BRANCHES": '["main"]',
            "IMAGE_FACTORY_PYTHON_VERSIONS": json.dumps(VERSIONS),
            # The build cache is kept between the runs (a rebuild on a new base reuses the downloads); the
            # module's end empties it (DISPOSABLE_REPOSITORIES, tests/conftest.py).
        }

    def run(self, conf: dict | None = None, *, note_api: bool = False) -> DagRun:
        """One nightly; ``note_api``: its tasks get the Connection to the api-server (its note is written)."""
        self.runs += 1
        env = self.env()
        if note_api:
            self.api.wait_ready()
            env.update(self.api.connection_env())
        return run_dag("nightly_images", conf or {}, name=f"nightly_images-{self.runs}", env=env)

    def note(self, run: DagRun) -> str:
        """The run's note, read over the REST API."""
        note = self.api.note("nightly_images", run.run_id)
        assert note is not None, "the api-server did not answer (test-artifacts/home-api-server.log)"
        return note

    def commit_constraints(self, name: str, text: str) -> None:
        """Commit ``name`` with ``text`` to the clone's constraints-main, as a maintainer's push would."""
        with tempfile.TemporaryDirectory(prefix="nightly-constraints-") as work:
            git = ["git", "-C", work, "-c", "user.name=tests", "-c", "user.email=tests@example.invalid"]
            subprocess.run(["git", "clone", "-q", "--branch", "constraints-main", self.source, work], check=True)
            Path(work, name).write_text(text)
            subprocess.run([*git, "commit", "-q", "-am", f"tests: {name} moved back"], check=True)
            subprocess.run([*git, "push", "-q", "origin", "constraints-main"], check=True)

    def published(self) -> dict[str, str]:
        """Every tag of the test's repositories → digest, read over the registry API."""
        out = {}
        for repo in self.registry.catalog():
            if repo.startswith(REPOSITORY + "/"):
                for tag in self.registry.list_tags(repo):
                    out[f"{repo}:{tag}"] = self.registry.manifest_digest(repo, tag)
        return out

    def constraints(self) -> dict[str, str]:
        with BranchFiles(self.source, "constraints-main") as files:
            return {name: files.read(name) or "" for name in files.names()}


@pytest.fixture(scope="module")
def api(stack_env):
    with home_api() as server:  # starts while run 1 builds; runs 3 and 4 wait for it
        yield server


@pytest.fixture(scope="module")
def nightly(stack_env, api) -> Nightly:
    registry = RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))
    stack_mirror = os.environ["IMAGE_FACTORY_PYTHON_BASE_MIRROR"].split("/", 1)[1]
    for version in VERSIONS:
        tag = f"{version}-slim-{debian(version)}"
        registry.copy(stack_mirror, tag, MIRROR_PATH, tag)
    source = Path(tempfile.mkdtemp(prefix="nightly-source-")) / "source.git"
    subprocess.run(["git", "clone", "-q", "--bare", os.environ["IMAGE_FACTORY_SOURCE_REPO"], str(source)],
                   check=True)
    return Nightly(registry, str(source), api)


@pytest.fixture(scope="module")
def first(nightly):
    result = nightly.run()
    assert result.returncode == 0, result.output[-6000:]
    return {"result": result, "published": nightly.published(), "constraints": nightly.constraints(),
            "constraints_head": branch_head(nightly.source, "constraints-main")}


def test_first_run_builds_publishes_and_commits_constraints(first, nightly):
    published = first["published"]
    sha = branch_head(nightly.source, "main")
    for version in VERSIONS:
        for kind in ("ci", "prod"):
            repo = f"{REPOSITORY}/main/{kind}/python{version}"
            assert published[f"{repo}:latest"] == published[f"{repo}:{sha}"]
        for kind in ("ci-manifest", "prod-build"):
            assert f"{REPOSITORY}/main/{kind}/python{version}:latest" in published
        # The published base records the upstream digest it was made from: tomorrow's check reads it.
        tag = f"{version}-slim-{debian(version)}"
        config = nightly.registry.image_config(f"{REPOSITORY}/main/python", tag)
        assert config["config"]["Labels"][BASE_DIGEST_LABEL] == nightly.registry.manifest_digest(MIRROR_PATH, tag)
        text = first["constraints"][f"constraints-{version}.txt"]
        # The branch's own version (the stack's main is a development version), and its commit.
        assert text.startswith(f"#\n# Constraints for Apache Airflow {SOURCES_VERSION} on Python {version}")
        assert f"# Commit {sha}" in text
        pins = parse_pins(text)
        # Airflow's own distributions are the sources, not pins (as in Airflow's constraints files).
        assert not set(pins) & AIRFLOW_DISTRIBUTIONS
        assert "pytest" in pins  # frozen from the tested CI image, test tooling included
    # The PROD image runs with exactly the committed versions.
    version = VERSIONS[0]
    prod = f"{nightly.host}/{REPOSITORY}/main/prod/python{version}:latest"
    freeze = subprocess.run(["docker", "run", "--rm", prod, "python", "-m", "pip", "freeze"],
                            capture_output=True, text=True, check=True).stdout
    committed = parse_pins(first["constraints"][f"constraints-{version}.txt"])
    for name, pinned in parse_pins(freeze).items():
        if name not in AIRFLOW_DISTRIBUTIONS:
            assert committed.get(name) == pinned, f"{name} {pinned} in PROD, {committed.get(name)} committed"


@pytest.fixture(scope="module")
def second(first, nightly):
    result = nightly.run()
    assert result.returncode == 0, result.output[-6000:]
    return result


def test_second_run_changes_nothing_and_says_why(second, first, nightly):
    assert nightly.published() == first["published"]
    assert branch_head(nightly.source, "constraints-main") == first["constraints_head"]
    log = second.output
    for version in VERSIONS:
        assert f"Python {version}: up to date, nothing to do" in log
    assert "Nothing changed for any Python version" in log
    assert "BuildImageOperator" not in log and "PushImageOperator" not in log


@pytest.fixture(scope="module")
def third(second, first, nightly):
    version = VERSIONS[0]
    tag = f"{version}-slim-{debian(version)}"
    mirror = f"{nightly.host}/{MIRROR_PATH}:{tag}"
    with tempfile.TemporaryDirectory() as ctx:
        # A "security fix" upstream: same Python, one more layer, a new digest.
        Path(ctx, "Dockerfile").write_text(f"FROM {mirror}\nRUN echo nightly-test-fix > /etc/upstream-fix\n")
        subprocess.run(["/usr/bin/docker", "build", "-q", "-t", mirror, ctx], check=True, capture_output=True,
                       env={**os.environ, "DOCKER_BUILDKIT": "1"})
    subprocess.run(["docker", "push", mirror], check=True, capture_output=True)
    # Upgrades to bisect: three packages of the committed constraints back at older versions (as if the
    # last nightly had committed those), and a test command that fails when the first is upgraded.
    name = f"constraints-{version}.txt"
    pins = parse_pins(nightly.constraints()[name])
    moved = {package: old for package, old in OLDER.items() if package in pins and pins[package] != old}
    assert CULPRIT in moved and len(moved) >= 2, (moved, {p: pins.get(p) for p in OLDER})
    text = nightly.constraints()[name]
    for package, old in moved.items():
        text = text.replace(f"\n{package}=={pins[package]}\n", f"\n{package}=={old}\n")
    nightly.commit_constraints(name, text)
    # A release of this version's image, made on the old base: the same run must have it rebuilt too.
    old_prod = nightly.registry.manifest_digest(f"{REPOSITORY}/main/prod/python{version}", "latest")
    nightly.registry.copy(f"{REPOSITORY}/main/prod/python{version}", old_prod, REPOSITORY, f"3.3.2-python{version}")
    before = nightly.published()
    result = nightly.run({"test_command": BREAKS_ON_UPGRADE}, note_api=True)
    assert result.returncode == 0, result.output[-6000:]
    return {"result": result, "before": before, "after": nightly.published(), "version": version, "tag": tag,
            "moved": moved, "newest": {package: pins[package] for package in moved}}


def test_a_new_upstream_base_rebuilds_and_republishes_the_version(third, nightly):
    version, before, after = third["version"], third["before"], third["after"]
    for key, digest in before.items():
        rebuilt = f"/python{version}:" in key or key.endswith(f"/main/python:{third['tag']}")
        if rebuilt and (key.endswith(":latest") or key.endswith(third["tag"])):
            assert after[key] != digest, f"{key} was not republished"
        elif not rebuilt:
            assert after[key] == digest, f"{key} changed although its version did not"
    config = nightly.registry.image_config(f"{REPOSITORY}/main/python", third["tag"])
    assert config["config"]["Labels"][BASE_DIGEST_LABEL] == nightly.registry.manifest_digest(MIRROR_PATH, third["tag"])
    log = third["result"].output
    assert f"Python {version}: rebuild" in log and "our base was built on" in log


def test_released_images_on_an_old_base_are_rebuilt_by_release_runs(third, nightly):
    """A released X.Y.Z-pythonA.B image whose base label is older than upstream → a release_images run."""
    version = third["version"]
    log = third["result"].output
    assert f"Released {nightly.host}/{REPOSITORY}:3.3.2-python{version} is on base" in log
    runs = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db").execute(
        "SELECT conf FROM dag_run WHERE dag_id = 'release_images' ORDER BY id DESC LIMIT 1"
    ).fetchall()
    assert runs, "no release_images run was triggered"
    conf = runs[0][0]
    conf = json.loads(conf) if isinstance(conf, (str, bytes)) else conf
    assert conf["version"] == "3.3.2" and conf["python_versions"] == [version]
    assert conf["repository"] == REPOSITORY


def test_the_upgrade_that_breaks_the_tests_is_found_held_back_and_the_rest_published(third, nightly):
    version, moved, newest = third["version"], third["moved"], third["newest"]
    log = third["result"].output
    failed = newest[CULPRIT]
    assert f"culprit {CULPRIT}=={failed} (kept at {OLDER[CULPRIT]})" in log, log[-6000:]
    assert f"{CULPRIT} {failed} breaks the tests" in log  # the failing probe's output, in the summary
    # at most 2 + 2*ceil(log2 N) probes for one culprit among N upgrades (N: the moved three, and any
    # package the index released since run 1)
    probes = re.findall(r"Round \d+, Python [\d.]+: probing \d+ of (\d+) upgrades", log)
    assert probes and 4 <= len(probes) <= probe_budget(int(probes[0])), probes
    committed = nightly.constraints()[f"constraints-{version}.txt"]
    pins = parse_pins(committed)
    assert pins[CULPRIT] == OLDER[CULPRIT]  # held back, in the tested image's freeze
    assert parse_holds(committed) == {CULPRIT: failed}
    for package in set(moved) - {CULPRIT}:
        assert pins[package] == newest[package], package  # the others' upgrades are published
    events = sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db").execute(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.name = 'image_factory_upgrade_blocked' ORDER BY e.id DESC LIMIT 1"
    ).fetchall()
    assert events, "no image_factory_upgrade_blocked event"
    extra = json.loads(events[0][0]) if isinstance(events[0][0], (str, bytes)) else events[0][0]
    assert extra["versions"][version]["held"][0]["name"] == CULPRIT


def test_the_runs_note_names_the_culprit(third, nightly):
    note = nightly.note(third["result"])
    assert note.startswith("Upgrade bisection of main"), note
    assert f"culprit {CULPRIT}=={third['newest'][CULPRIT]} (kept at {OLDER[CULPRIT]})" in note, note


def test_a_standing_hold_is_kept_and_tests_failing_without_upgrades_publish_nothing(third, nightly):
    """Run 4: the culprit's newest version is still the one that failed (its hold stands, it is not probed);
    another package is moved back again, so there is an upgrade to probe, under a test command that fails
    whatever is installed: the probe of no upgrade fails too, so nothing is held, nothing is built or
    published, no constraints are committed, and the run fails saying why, in its log and its note."""
    version = VERSIONS[0]
    name = f"constraints-{version}.txt"
    text = nightly.constraints()[name]
    moved = next(package for package in third["moved"] if package != CULPRIT)
    pin = f"\n{moved}=={third['newest'][moved]}\n"
    assert pin in text, (moved, pin)
    nightly.commit_constraints(name, text.replace(pin, f"\n{moved}=={OLDER[moved]}\n"))
    head = branch_head(nightly.source, "constraints-main")
    published = nightly.published()
    result = nightly.run({"test_command": ALWAYS_FAILS}, note_api=True)
    log = result.output
    assert result.returncode != 0, log[-6000:]
    assert f"{CULPRIT}=={third['newest'][CULPRIT]}" in log and "still held" in log
    # every upgrade (the moved package, and any the index released since run 3), then none
    probes = re.findall(rf"Round \d+, Python {re.escape(version)}: probing (\d+) of (\d+) upgrades", log)
    assert [int(n) for n, _ in probes] == [int(probes[0][1]), 0], probes
    assert f"Python {version}: the tests fail with the branch's current constraints" in log
    assert "the branch fails its own tests" in log  # the probe of no upgrade's output, in the summary
    assert not [task for task in result.started_tasks() if re.search(r"\.(build|push)_", task)]
    assert nightly.published() == published
    assert branch_head(nightly.source, "constraints-main") == head
    note = nightly.note(result)
    assert "the tests fail with the current constraints too" in note and "the branch fails its own tests" in note
