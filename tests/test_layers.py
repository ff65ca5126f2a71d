"""The layer contract (pyproject.toml ``[tool.importlinter]``) holds on the tree and fails on a planted
violation: ``make lint`` would not catch one otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(plugins: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH comes before the editable install's path, so the copy is the package analysed; --no-cache:
    # the copy shares module names with the tree, and a cache could hide the planted line.
    return subprocess.run(
        [str(LINT_IMPORTS), str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=plugins, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(plugins)},
    )


@pytest.fixture
def planted(tmp_path):
    """A copy of the package in which a test plants one import."""
    plugins = tmp_path / "plugins"
    shutil.copytree(REPO_ROOT / "plugins" / "airflow_image_factory", plugins / "airflow_image_factory",
                    ignore=shutil.ignore_patterns("__pycache__"))

    def plant(module: str, line: str) -> subprocess.CompletedProcess[str]:
        path = plugins / "airflow_image_factory" / f"{module}.py"
        path.write_text(path.read_text() + f"\n{line}\n")
        return _lint(plugins)

    return plant


def test_the_tree_keeps_every_contract():
    result = _lint(REPO_ROOT / "plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "named"),
    [
        ("policy/naming", "import requests", "Policy is pure", "airflow_image_factory.policy.naming -> requests"),
        ("policy/cache", "import subprocess", "Policy is pure", "airflow_image_factory.policy.cache -> subprocess"),
        ("clients/registry/transport", "from airflow.sdk import BaseHook", "Only the tasks layer imports Airflow",
         "airflow_image_factory.clients.registry.transport -> airflow"),
        ("clients/registry/transport", "from airflow_image_factory.clients.registry import auth", "Registry client",
         "airflow_image_factory.clients.registry.transport ->"),  # the output wraps after the arrow
        ("clients/registry/manifest", "from airflow_image_factory.clients.registry import transport",
         "Registry client",
         "airflow_image_factory.clients.registry.manifest ->"),
        ("clients/registry/auth", "from airflow_image_factory.clients.registry import RegistryClient",
         "Registry client", "airflow_image_factory.clients.registry.client"),
        ("services/chart", "from airflow_image_factory.tasks import hooks", "Layers",
         "airflow_image_factory.services.chart -> airflow_image_factory.tasks.hooks"),
        ("policy/request", "from airflow_image_factory.clients import engine", "Layers",
         "airflow_image_factory.policy.request -> airflow_image_factory.clients.engine"),
    ],
)
def test_a_planted_violation_fails_the_lint_and_names_the_import(planted, module, line, broken, named):
    result = planted(module, line)
    assert result.returncode != 0, result.stdout
    verdicts = [line for line in result.stdout.splitlines() if line.startswith(broken)]
    assert verdicts and verdicts[0].endswith("BROKEN"), result.stdout
    assert named in result.stdout
