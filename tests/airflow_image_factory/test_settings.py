from __future__ import annotations

import json

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import SettingsError


def test_file_defaults():
    settings = load_settings(env={})
    assert settings.registry == "ghcr.io"
    assert settings.python_base_source == "docker.io/library/python"
    assert settings.debian_for("3.13") == "trixie"
    assert settings.debian_for("3.11") == "bookworm"
    assert settings.push is True


def test_environment_overrides_file():
    settings = load_settings(
        env={
            "IMAGE_FACTORY_REGISTRY": "localhost:5000",
            "IMAGE_FACTORY_PYTHON_VERSIONS": '["3.11", "3.13"]',
            "IMAGE_FACTORY_PUSH": "false",
            "IMAGE_FACTORY_PYTHON_BASE_MIRROR": "localhost:5000/library/python",
            "IMAGE_FACTORY_COMMIT_SHA": "1234567",
            "IMAGE_FACTORY_BUILD_POOL_SLOTS": "3",
        }
    )
    assert settings.registry == "localhost:5000"
    assert settings.python_versions == ("3.11", "3.13")
    assert settings.push is False
    assert settings.commit_sha == "1234567"
    assert settings.build_pool_slots == 3
    assert settings.python_base_source == "localhost:5000/library/python"
    assert settings.request_defaults()["python_versions"] == ["3.11", "3.13"]


def test_comma_list_in_environment():
    assert load_settings(env={"IMAGE_FACTORY_NIGHTLY_BRANCHES": "main, v3-1-test"}).nightly_branches == (
        "main",
        "v3-1-test",
    )


def test_variable_overrides_environment():
    settings = load_settings(
        env={"IMAGE_FACTORY_REGISTRY": "localhost:5000"}, variable=json.dumps({"registry": "registry.example.com"})
    )
    assert settings.registry == "registry.example.com"
    assert settings.sources[-1] == "Variable image_factory_settings"


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"IMAGE_FACTORY_PUSH": "maybe"}, None, "push must be true or false"),
        ({"IMAGE_FACTORY_BUILD_POOL_SLOTS": "two"}, None, "build_pool_slots"),
        ({}, "{not json", "not valid JSON"),
        ({}, '["a"]', "must be a JSON object"),
        ({}, '{"regsitry": "x"}', "unknown setting"),
        ({}, '{"python_versions": [3]}', "list of strings"),
    ],
)
def test_bad_overrides_are_named(env, variable, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env, variable=variable)


def test_defaults_file_can_be_moved(tmp_path):
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(env={"IMAGE_FACTORY_DEFAULTS_FILE": str(tmp_path / "missing.toml")})


def test_the_code_defaults_of_debian_and_the_python_base_match_the_settings_file():
    from airflow_image_factory.policy.settings import DEFAULT_DEBIAN, DEFAULT_PYTHON_BASE_UPSTREAM

    settings = load_settings(env={})
    assert settings.default_debian == DEFAULT_DEBIAN
    assert settings.python_base_upstream == DEFAULT_PYTHON_BASE_UPSTREAM


def test_a_request_without_debian_or_base_source_falls_back_to_the_settings_defaults():
    from airflow_image_factory.policy.naming import images_for
    from airflow_image_factory.policy.request import BuildRequest
    from airflow_image_factory.policy.settings import DEFAULT_DEBIAN, DEFAULT_PYTHON_BASE_UPSTREAM

    request = BuildRequest(
        branch="main", python_versions=("3.12",), registry="ghcr.io", repository="apache/airflow",
        source_repo="https://github.com/apache/airflow.git", commit_sha=None, cache="pulled", push=False,
        upgrade_to_newer_dependencies=False, airflow_version="3.0.0", test_command=None, naming="slash",
    )
    assert request.python_base_source == DEFAULT_PYTHON_BASE_UPSTREAM
    assert images_for(request, "3.12").upstream_python_base.ref() == (
        f"{DEFAULT_PYTHON_BASE_UPSTREAM}:3.12-slim-{DEFAULT_DEBIAN}"
    )


@pytest.mark.parametrize("literal", ["bookworm", "docker.io/library/python"])
def test_one_module_owns_each_default(literal):
    """The default Debian release and Python base repository are spelled once, in settings.py."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spelled = sorted(
        str(path.relative_to(root))
        for path in [*(root / "plugins").rglob("*.py"), *(root / "dags").glob("*.py"),
                     *(root / "include").rglob("*.py"), *(root / "benchmarks").glob("*.py")]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value == literal
    )
    assert spelled == ["plugins/airflow_image_factory/policy/settings.py"]


def test_settings_need_nothing_from_the_request_module():
    """request.py builds on settings.py; the other way round would be an import cycle (even a deferred one)."""
    import ast
    from pathlib import Path

    from airflow_image_factory.policy import request, settings

    tree = ast.parse(Path(settings.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not {name for name in imported if name and name.startswith("airflow_image_factory")} - {
        "airflow_image_factory.exceptions"
    }
    assert request.PARAM_NAMES is settings.PARAM_NAMES
    assert set(load_settings(env={}).request_defaults()) == set(settings.PARAM_NAMES)
