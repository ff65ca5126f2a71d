"""sources.py: a checkout's distributions, their metadata wheels (installed by a real pip), staging."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_image_factory.clients.sources import (
    UI_SOURCE_DIRS,
    Distribution,
    SourceTree,
    internal_requirements,
    read_source_tree,
    source_path_included,
    stage_sources,
    ui_sources_key,
    write_metadata_wheels,
)
from airflow_image_factory.exceptions import SourceTreeInvalid

META = """
[project]
name = "apache-airflow"
version = "3.4.0.dev0"
requires-python = ">=3.10"
dependencies = ["apache-airflow-task-sdk==1.4.0.dev0", "apache-airflow-core==3.4.0.dev0"]
[project.optional-dependencies]
"all-core" = ["apache-airflow-core[statsd]"]
"sqlite" = ["apache-airflow-core[sqlite]; python_version >= '3.10'"]
"""
CORE = """
[project]
name = "apache-airflow-core"
version = "3.4.0.dev0"
dependencies = ["apache-airflow-task-sdk==1.4.0.dev0"]
[project.optional-dependencies]
"statsd" = ["statsd>=3.3.0"]
"sqlite" = []
"""
SDK = """
[project]
name = "apache-airflow-task-sdk"
dynamic = ["version"]
dependencies = []
[tool.hatch.version]
path = "src/airflow/sdk/__init__.py"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for relative, text in {
        "pyproject.toml": META,
        "generated/PYPI_README.md": "readme",
        "airflow-core/pyproject.toml": CORE,
        "airflow-core/src/airflow/__init__.py": '__version__ = "3.4.0.dev0"\n',
        "airflow-core/src/airflow/ui/package.json": "{}",
        "airflow-core/src/airflow/ui/dist/index.html": "compiled",
        "airflow-core/src/airflow/ui/node_modules/x/index.js": "x",
        "airflow-core/src/airflow/__pycache__/x.pyc": "",
        "airflow-core/docs/index.rst": "docs",
        "task-sdk/pyproject.toml": SDK,
        "task-sdk/src/airflow/sdk/__init__.py": '__version__ = "1.4.0.dev0"\n',
        "providers/amazon/pyproject.toml": "[project]\nname='x'",
        ".git/HEAD": "ref: refs/heads/main",
        "dev/breeze/README.md": "breeze",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_distributions_and_the_version_of_the_sources(checkout):
    tree = read_source_tree(checkout)
    assert {name: d.version for name, d in tree.distributions.items()} == {
        "apache-airflow": "3.4.0.dev0", "apache-airflow-core": "3.4.0.dev0", "apache-airflow-task-sdk": "1.4.0.dev0",
    }
    assert tree.version == "3.4.0.dev0"  # airflow-core's: what `airflow version` prints


def test_a_checkout_without_the_monorepo_layout_is_refused_naming_the_file(tmp_path):
    (tmp_path / "README.md").write_text("only a readme")
    with pytest.raises(SourceTreeInvalid, match=r"no \./pyproject.toml"):
        read_source_tree(tmp_path)


def test_a_dynamic_version_without_its_file_is_refused(checkout):
    (checkout / "task-sdk/src/airflow/sdk/__init__.py").write_text("# no version here\n")
    with pytest.raises(SourceTreeInvalid, match=r"task-sdk/src/airflow/sdk/__init__\.py has no __version__"):
        read_source_tree(checkout)


def test_a_bad_requirement_is_refused_naming_the_file(checkout):
    (checkout / "airflow-core/pyproject.toml").write_text(CORE.replace("statsd>=3.3.0", "statsd >>> 3"))
    with pytest.raises(SourceTreeInvalid, match=r"airflow-core/pyproject\.toml"):
        read_source_tree(checkout)


def test_metadata_wheels_are_byte_for_byte_reproducible(checkout, tmp_path):
    tree = read_source_tree(checkout)
    first = write_metadata_wheels(tree, tmp_path / "a")
    second = write_metadata_wheels(tree, tmp_path / "b")
    assert [w.name for w in first] == [w.name for w in second]
    assert [w.read_bytes() for w in first] == [w.read_bytes() for w in second]
    assert {w.name for w in first} == {
        "apache_airflow-3.4.0.dev0+metadata-py3-none-any.whl",
        "apache_airflow_core-3.4.0.dev0+metadata-py3-none-any.whl",
        "apache_airflow_task_sdk-1.4.0.dev0+metadata-py3-none-any.whl",
    }
    with zipfile.ZipFile(tmp_path / "a" / "apache_airflow-3.4.0.dev0+metadata-py3-none-any.whl") as wheel:
        metadata = wheel.read("apache_airflow-3.4.0.dev0+metadata.dist-info/METADATA").decode()
    assert 'Requires-Dist: apache-airflow-core[sqlite]; (python_version >= "3.10") and extra == "sqlite"' in metadata


def test_pip_installs_the_declared_dependencies_from_the_metadata_wheels(checkout, tmp_path):
    """A real pip resolves the metadata wheels: the development pins, the extras and their markers."""
    wheels = tmp_path / "wheels"
    write_metadata_wheels(read_source_tree(checkout), wheels)
    # statsd (an extra's dependency) is the only package from outside: a wheel stands in for it.
    write_metadata_wheels(SourceTree({"statsd": Distribution(name="statsd", version="3.3.0")}), wheels)
    target = tmp_path / "site"
    meta = next(wheels.glob("apache_airflow-*.whl"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--target", str(target),
         "--report", str(tmp_path / "report.json"), f"apache-airflow[all-core] @ {meta.as_uri()}"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    installed = sorted(p.name for p in target.glob("*.dist-info"))
    assert installed == [
        "apache_airflow-3.4.0.dev0+metadata.dist-info",
        "apache_airflow_core-3.4.0.dev0+metadata.dist-info",
        "apache_airflow_task_sdk-1.4.0.dev0+metadata.dist-info",
        "statsd-3.3.0+metadata.dist-info",
    ]


def test_internal_requirements_pin_every_distribution_to_the_sources(checkout):
    assert internal_requirements(read_source_tree(checkout), ["postgres", "mysql"]) == [
        "apache-airflow[postgres,mysql]==3.4.0.dev0",
        "apache-airflow-core==3.4.0.dev0",
        "apache-airflow-task-sdk==1.4.0.dev0",
    ]


@pytest.mark.parametrize(("path", "included"), [
    ("pyproject.toml", True),
    ("airflow-core/src/airflow/models/dag.py", True),
    ("airflow-core/src/airflow/ui/src/main.tsx", True),
    ("shared/logging/src/airflow_shared/logging/__init__.py", True),
    ("airflow-core/src/airflow/ui/dist/index.html", False),
    ("airflow-core/src/airflow/ui/node_modules/react/index.js", False),
    ("airflow-core/src/airflow/__pycache__/x.pyc", False),
    ("airflow-core/docs/index.rst", False),
    ("providers/amazon/pyproject.toml", False),
    (".git/HEAD", False),
    ("dev/breeze/README.md", False),
])
def test_the_filter_keeps_the_distributions_and_drops_the_rest(path, included):
    assert source_path_included(path) is included


def test_staging_copies_only_what_the_filter_allows_and_keeps_symlinks(checkout, tmp_path):
    (checkout / "shared/logging/src/airflow_shared/logging").mkdir(parents=True)
    (checkout / "shared/logging/src/airflow_shared/logging/__init__.py").write_text("x = 1\n")
    shared = checkout / "airflow-core/src/airflow/_shared"
    shared.mkdir()
    (shared / "logging").symlink_to("../../../../shared/logging/src/airflow_shared/logging")
    dest = tmp_path / "staged"
    files, _ = stage_sources(checkout, dest)
    staged = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert "airflow-core/src/airflow/ui/package.json" in staged
    assert not [p for p in staged if "node_modules" in p or "/dist/" in p or p.startswith(("providers", ".git", "dev"))]
    assert (dest / "airflow-core/src/airflow/_shared/logging").is_symlink()
    assert (dest / "airflow-core/src/airflow/_shared/logging/__init__.py").read_text() == "x = 1\n"
    assert files == len([p for p in staged if not (dest / p).is_symlink()])


# ---- the content key of the compiled UI ---------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recipe(tmp_path: Path) -> list[Path]:
    path = tmp_path / "recipe" / "Dockerfile"
    path.parent.mkdir()
    path.write_text("FROM scratch AS ui-build\n")
    return [path]


def _write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)


def test_the_ui_key_follows_the_ui_sources_and_the_recipe_only(checkout, recipe):
    key = ui_sources_key(checkout, recipe)
    assert len(key) == 64 and key == ui_sources_key(checkout, recipe)  # stable
    _write(checkout, "airflow-core/src/airflow/models.py", "changed = True\n")  # Python only
    _write(checkout, "airflow-core/pyproject.toml", CORE.replace("3.4.0.dev0", "3.4.0.dev7"))  # a version bump
    assert ui_sources_key(checkout, recipe) == key
    _write(checkout, "airflow-core/src/airflow/ui/src/main.tsx", "export {}\n")  # a UI file added
    with_ui_change = ui_sources_key(checkout, recipe)
    assert with_ui_change != key
    _write(checkout, f"{UI_SOURCE_DIRS[1]}/package.json", "{}")  # the other UI
    assert ui_sources_key(checkout, recipe) != with_ui_change
    before_recipe = ui_sources_key(checkout, recipe)
    recipe[0].write_text("FROM scratch AS ui-build\nARG PNPM_VERSION=11\n")
    assert ui_sources_key(checkout, recipe) != before_recipe


def test_the_ui_key_tells_a_renamed_file_and_a_mode_change_apart(checkout, recipe):
    ui = checkout / UI_SOURCE_DIRS[0]
    key = ui_sources_key(checkout, recipe)
    (ui / "package.json").rename(ui / "package2.json")
    renamed = ui_sources_key(checkout, recipe)
    assert renamed != key
    (ui / "package2.json").chmod(0o755)
    assert ui_sources_key(checkout, recipe) != renamed


def test_the_ui_dirs_are_the_ones_the_dockerfile_compiles():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY --from=airflow-sources /(\S+) ", dockerfile, re.MULTILINE)
    assert tuple(copied) == UI_SOURCE_DIRS
