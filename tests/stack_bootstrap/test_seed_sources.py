"""include/stack/seed_sources.py: the stand-in for apache/airflow made from the PyPI sdists.

Needs PyPI (pip download of three sdists, once per module: the cache is shared), no engine."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "include" / "stack" / "seed_sources.py"
RELEASE_BRANCH = "v3-3-test"
# The same sdists give these on every machine; update them only when the script's output changes on purpose.
EXPECTED_SHAS = {
    RELEASE_BRANCH: "744417371bdc423f9a617be95482674881bfdb17",
    "main": "3f7cb09320c5a7892df89b72ce13520c98d501b0",
}
UI_DIST = ("airflow-core/src/airflow/ui/dist/", "airflow-core/src/airflow/api_fastapi/auth/managers/simple/ui/dist/")

slow = pytest.mark.slow


def run_seed(repo: Path, cache: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--repo", str(repo), "--cache", str(cache)],
                          capture_output=True, text=True, timeout=900, **kwargs)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def head(repo: Path, branch: str) -> str:
    return git(repo, "rev-parse", f"refs/heads/{branch}")


def names(repo: Path, ref: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdists")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, cache) -> tuple[Path, Path]:
    """Two runs into two paths with the shared cache; the second in another cwd, with another umask and
    a caller's GIT_* settings and time zone, none of which may change a SHA."""
    first = tmp_path_factory.mktemp("first") / "source.git"
    result = run_seed(first, cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created:" in result.stdout
    second = tmp_path_factory.mktemp("second") / "source.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "Someone Else", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
           "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "TZ": "Asia/Tokyo"}
    result = run_seed(second, cache, env=env, umask=0o077, cwd=tmp_path_factory.getbasetemp())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sdists: cached" in result.stdout  # the cache was reused: no second download
    return first, second


@slow
def test_two_runs_give_the_same_shas(seeded):
    first, second = seeded
    for branch in (RELEASE_BRANCH, "main"):
        assert head(first, branch) == head(second, branch)
    assert {b: head(first, b) for b in EXPECTED_SHAS} == EXPECTED_SHAS
    assert git(first, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(first, "for-each-ref", "--format=%(refname)").splitlines() == [
        "refs/heads/main", f"refs/heads/{RELEASE_BRANCH}"]


@slow
def test_main_starts_the_next_minor_on_top_of_the_release(seeded):
    repo, _ = seeded
    assert git(repo, "rev-parse", "main^") == head(repo, RELEASE_BRANCH)
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "Start 3.4.0 development", "Apache Airflow 3.3.2 sources (from the PyPI sdists)"]
    core_main = git(repo, "show", "main:airflow-core/pyproject.toml")
    core_release = git(repo, "show", f"{RELEASE_BRANCH}:airflow-core/pyproject.toml")
    assert '\nversion = "3.4.0.dev0"\n' in core_main and '"apache-airflow-task-sdk==1.4.0.dev0"' in core_main
    assert '\nversion = "3.3.2"\n' in core_release and '"apache-airflow-task-sdk==1.3.2"' in core_release
    root_main = git(repo, "show", "main:pyproject.toml")
    assert '\nversion = "3.4.0.dev0"\n' in root_main
    assert '"apache-airflow-core==3.4.0.dev0"' in root_main and '"apache-airflow-task-sdk==1.4.0.dev0"' in root_main
    assert '\n__version__ = "3.4.0.dev0"\n' in git(repo, "show", "main:airflow-core/src/airflow/__init__.py")
    assert '\n__version__ = "1.4.0.dev0"\n' in git(repo, "show", "main:task-sdk/src/airflow/sdk/__init__.py")
    assert '"apache-airflow-core<3.5.0,>=3.4.0.dev0"' in git(repo, "show", "main:task-sdk/pyproject.toml")
    changed = git(repo, "diff", "--name-only", RELEASE_BRANCH, "main").splitlines()
    assert changed == ["airflow-core/pyproject.toml", "airflow-core/src/airflow/__init__.py", "pyproject.toml",
                       "task-sdk/pyproject.toml", "task-sdk/src/airflow/sdk/__init__.py"]


@slow
def test_the_tree_is_what_git_holds(seeded):
    repo, _ = seeded
    for ref in (RELEASE_BRANCH, "main"):
        files = names(repo, ref)
        assert not [f for f in files if f.startswith(UI_DIST)]
        assert not [f for f in files if f.rsplit("/", 1)[-1] == "PKG-INFO"]
        assert "airflow-core/src/airflow/git_version" not in files
        for path in ("airflow-core/src/airflow/ui/package.json", "airflow-core/src/airflow/ui/pnpm-lock.yaml",
                     "pyproject.toml", "LICENSE", "NOTICE", "generated/PYPI_README.md", "README.md", ".gitignore",
                     "airflow-core/pyproject.toml", "airflow-core/src/airflow/_shared/timezones/__init__.py",
                     "task-sdk/pyproject.toml", "task-sdk/src/airflow/sdk/__init__.py"):
            assert path in files, path
        modes = {line.split()[0] for line in git(repo, "ls-tree", "-r", ref).splitlines()}
        assert modes == {"100644"}  # nothing is executable in these sdists


@slow
def test_a_second_run_on_an_existing_repo_is_a_no_op(seeded, cache):
    repo, _ = seeded
    refs = git(repo, "for-each-ref")
    listing = sorted(p.name for p in repo.parent.iterdir())
    result = run_seed(repo, cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("present:")
    assert "sdists" not in result.stdout  # not even the cache was looked at
    assert git(repo, "for-each-ref") == refs
    assert sorted(p.name for p in repo.parent.iterdir()) == listing


@slow
def test_the_old_stand_in_is_moved_aside(tmp_path, cache, seeded):
    old = tmp_path / "source.git"
    subprocess.run(["git", "init", "-q", "--bare", str(old)], check=True)
    blob = subprocess.run(["git", "--git-dir", str(old), "hash-object", "-w", "--stdin"], input="# Stand-in\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    tree = subprocess.run(["git", "--git-dir", str(old), "mktree"], input=f"100644 blob {blob}\tREADME.md\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.invalid",
           "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.invalid"}
    commit = subprocess.run(["git", "--git-dir", str(old), "commit-tree", tree, "-m", "old"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    git(old, "update-ref", "refs/heads/main", commit)
    git(old, "update-ref", "refs/heads/constraints-main", commit)  # what earlier runs committed

    result = run_seed(old, cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moved aside:" in result.stdout
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("source.git.old-")]
    assert head(aside, "main") == commit and head(aside, "constraints-main") == commit
    assert head(old, "main") == EXPECTED_SHAS["main"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["source.git", aside.name])  # no temp dir left


def test_something_else_at_the_path_is_refused(tmp_path):
    (tmp_path / "source.git").mkdir()
    result = run_seed(tmp_path / "source.git", tmp_path / "cache")
    assert result.returncode == 1
    assert "is not a git repository with a main branch" in result.stderr
    assert not (tmp_path / "cache").exists()  # refused before any download


def _load_script():
    spec = importlib.util.spec_from_file_location("seed_sources", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_missing_expected_text_fails_loudly_naming_file_and_text():
    seed = _load_script()
    release = seed.Release("3.3.2", "1.3.2")
    files = {
        "pyproject.toml": '\nversion = "3.3.2"\n"apache-airflow-task-sdk==1.3.2"\n"apache-airflow-core==3.3.2"\n',
        "airflow-core/pyproject.toml": '\nversion = "3.3.2"\n"apache-airflow-task-sdk==1.3.2"\n',
        "airflow-core/src/airflow/__init__.py": '\n__version__ = "3.3.2"\n',
        "task-sdk/src/airflow/sdk/__init__.py": '\n__version__ = "1.3.2"\n',
        "task-sdk/pyproject.toml": '\ndynamic = ["version"]\n"apache-airflow-core<3.4.0,>=3.3.0"\n',
    }
    tree = {path: seed.File("100644", text.encode()) for path, text in files.items()}
    bumped = seed.bump_for_main(release, tree)
    assert bumped["task-sdk/pyproject.toml"].data.decode().endswith('"apache-airflow-core<3.5.0,>=3.4.0.dev0"\n')

    tree["airflow-core/pyproject.toml"] = seed.File("100644", b'\nversion = "3.3.2"\n"apache-airflow-task-sdk>=1.3"\n')
    expected = r"airflow-core/pyproject.toml should contain .*apache-airflow-task-sdk==1\.3\.2"
    with pytest.raises(seed.SeedError, match=expected):
        seed.bump_for_main(release, tree)
