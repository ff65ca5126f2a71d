"""build_images builds the branch's own sources: a branch's change is in its images, an older commit
builds that commit, a broken commit publishes nothing, a commit of another branch is refused.

The branches are made here, in the stack's source repository (a real Airflow tree, see
include/stack/seed_sources.py), and removed when the module ends; their images are not pushed
(``push: false``), so they stay on the engine to be run, and are removed at the end too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from tests.support.dag_runs import run_dag, stack_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = "apache/airflow"
FEATURE = "image-factory-test/feature"
BROKEN = "image-factory-test/broken"
PROBE_MODULE = "airflow-core/src/airflow/image_factory_probe.py"
CORE_INIT = "airflow-core/src/airflow/__init__.py"
CORE_PYPROJECT = "airflow-core/pyproject.toml"


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env).stdout.strip()


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def commit(work: Path, message: str) -> str:
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture(scope="module")
def source_repo(stack_env) -> str:
    return os.environ["IMAGE_FACTORY_SOURCE_REPO"]


@pytest.fixture(scope="module")
def branches(source_repo, tmp_path_factory):
    """feature: main + a new module and a version bump (commit ``first``), then a Python-only change
    (``second``, the head); broken: main + a syntax error in airflow-core."""
    work = tmp_path_factory.mktemp("sources") / "work"
    git("clone", "-q", "--branch", "main", source_repo, str(work))
    main_version = re.search(r'__version__ = "([^"]+)"', (work / CORE_INIT).read_text()).group(1)
    new_version = main_version.replace(".dev0", ".dev7")
    assert new_version != main_version, main_version
    git("checkout", "-q", "-b", FEATURE, cwd=work)
    (work / PROBE_MODULE).write_text('VALUE = "first"\n')
    replace_in(work / CORE_INIT, f'__version__ = "{main_version}"', f'__version__ = "{new_version}"')
    replace_in(work / CORE_PYPROJECT, f'version = "{main_version}"', f'version = "{new_version}"')
    # The meta package follows (its version and its pin of airflow-core), as a release bump does.
    replace_in(work / "pyproject.toml", f'version = "{main_version}"', f'version = "{new_version}"')
    core_pin = '"apache-airflow-core=={}"'
    replace_in(work / "pyproject.toml", core_pin.format(main_version), core_pin.format(new_version))
    first = commit(work, "Add a probe module, bump the version")
    (work / PROBE_MODULE).write_text('VALUE = "second"\n')
    second = commit(work, "Change the probe module only")
    git("checkout", "-q", "-b", BROKEN, "main", cwd=work)
    with (work / CORE_INIT).open("a") as init:
        init.write("\ndef broken(:\n")
    broken = commit(work, "Break airflow-core")
    git("push", "-q", "origin", FEATURE, BROKEN, cwd=work)
    yield {"first": first, "second": second, "broken": broken, "version": new_version, "main_version": main_version}
    git("push", "-q", "origin", "--delete", FEATURE, BROKEN, cwd=work)
    host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    images = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, check=True).stdout.split()
    ours = [i for i in images if i.startswith(f"{host}/{REPO}/image-factory-test/")]
    if ours:
        subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, check=False)


def image(branch: str, kind: str, sha: str) -> str:
    host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    return f"{host}/{REPO}/{branch}/{kind}/python{stack_versions()[0]}:{sha}"


def run_in(ref: str, *command: str) -> str:
    return subprocess.run(["docker", "run", "--rm", ref, *command], capture_output=True, text=True,
                          check=True).stdout.strip()


def build(branch: str, **conf) -> object:
    return run_dag("build_images", {"branch": branch, "python_versions": stack_versions()[:1], "push": False, **conf})


@pytest.fixture(scope="module")
def feature_head(main_build, branches):
    """The feature branch has no images of its own yet: its builds take main's as their cache."""
    result = build(FEATURE)
    assert result.returncode == 0, result.output[-6000:]
    return result


def test_both_images_hold_the_branch_change_and_report_its_version(branches, feature_head):
    for kind in ("ci", "prod"):
        ref = image(FEATURE, kind, branches["second"])
        assert run_in(ref, "airflow", "version").splitlines()[-1] == branches["version"]
        assert run_in(ref, "python", "-c", "import airflow.image_factory_probe as p; print(p.VALUE)") == "second"
        labels = json.loads(subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
                                           capture_output=True, text=True, check=True).stdout)
        assert labels["org.opencontainers.image.revision"] == branches["second"]
        assert labels["org.opencontainers.image.version"] == branches["version"]


def test_the_ci_image_has_the_sources_at_opt_airflow_installed_editable(branches, feature_head):
    ref = image(FEATURE, "ci", branches["second"])
    where = run_in(ref, "python", "-c", "import airflow; print(airflow.__file__)")
    assert where == "/opt/airflow/airflow-core/src/airflow/__init__.py"


def test_the_prod_image_serves_the_compiled_ui_and_has_no_node(branches, feature_head):
    log = feature_head.output
    assert re.search(r"UI served: / loads static/assets/index-\S+\.js", log), "verify_prod did not load the UI"
    ref = image(FEATURE, "prod", branches["second"])
    assert run_in(ref, "bash", "-c", "for p in node npm pnpm npx; do command -v $p; done; echo none") == "none"
    index = run_in(ref, "python", "-c", "import airflow, pathlib; "
                   "print((pathlib.Path(airflow.__file__).parent / 'ui/dist/index.html').is_file())")
    assert index == "True"


def test_the_ui_stage_did_not_run_when_the_ui_sources_are_unchanged(branches, feature_head):
    """main's images hold the UI of these very UI sources; the feature branch changed Python only, so
    its first build (main's latest as the cache) compiles no UI."""
    assert "cache from registry: " in feature_head.output and "/main/prod-build/" in feature_head.output
    ran = re.findall(r"steps that ran: (.*)", feature_head.output)
    assert len(ran) == 3, "every build reports the steps that ran"
    assert not [line for line in ran if "[ui-build" in line], ran


def test_an_older_commit_of_the_branch_builds_that_commits_code(branches, feature_head):
    result = build(FEATURE, commit_sha=branches["first"])
    assert result.returncode == 0, result.output[-6000:]
    for kind in ("ci", "prod"):
        ref = image(FEATURE, kind, branches["first"])
        assert run_in(ref, "python", "-c", "import airflow.image_factory_probe as p; print(p.VALUE)") == "first"
    # A Python-only difference: the dependency layers came from the cache.
    ran = "\n".join(re.findall(r"steps that ran: (.*)", result.output))
    assert "install_airflow.sh dependencies" not in ran, ran


def test_main_images_are_not_touched(main_build, branches, feature_head):
    registry = RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))
    main_prod = f"{REPO}/main/prod/python{stack_versions()[0]}"
    latest = registry.manifest_digest(main_prod, "latest")
    config = registry.image_config(main_prod, "latest")
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == branches["main_version"]
    assert registry.manifest_digest(main_prod, "latest") == latest


def test_a_commit_that_breaks_airflow_fails_the_run_and_publishes_nothing(branches):
    registry = RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))
    result = run_dag("build_images", {"branch": BROKEN, "python_versions": stack_versions()[:1]})
    assert result.returncode != 0
    assert "SyntaxError" in result.output
    assert not [r for r in registry.catalog() if r.startswith(f"{REPO}/{BROKEN}/")]


def test_a_commit_of_another_branch_is_refused_before_anything_is_built(branches):
    result = build("main", commit_sha=branches["second"])
    assert result.returncode != 0
    assert f"commit_sha: {branches['second']} is not a commit of branch 'main'" in result.output
    assert "Built " not in result.output
