"""Content keys: equal inputs give equal keys; every input that reaches the image changes the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_image_factory.clients.content import VOLATILE_BUILD_ARGS, content_key

ARGS = {"PYTHON_BASE_IMAGE": "reg/python@sha256:" + "1" * 64, "REVISION": "f" * 40, "CREATED": "2026-12-03T00:00:00Z"}


def make_context(root: Path) -> Path:
    (root / "airflow-sources/airflow-core/src/airflow").mkdir(parents=True)
    (root / "airflow-sources/airflow-core/src/airflow/__init__.py").write_text("__version__ = '3.4.0.dev0'\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "include/docker/scripts").mkdir(parents=True)
    (root / "include/docker/scripts/install_airflow.sh").write_text("#!/bin/bash\n")
    return root


def key(context: Path, **overrides) -> str:
    arguments = {"kind": "prod", "context": context, "dockerfile": "Dockerfile", "target": None,
                 "build_args": ARGS, "checks": ("contract v1",)} | overrides
    return content_key(**arguments)


def test_the_same_inputs_give_the_same_key_in_another_directory(tmp_path):
    assert key(make_context(tmp_path / "a")) == key(make_context(tmp_path / "b"))


@pytest.mark.parametrize("name", sorted(VOLATILE_BUILD_ARGS))
def test_volatile_build_args_do_not_change_the_key(tmp_path, name):
    context = make_context(tmp_path)
    assert key(context) == key(context, build_args={**ARGS, name: "something else"})


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "ci"},
        {"dockerfile": "Dockerfile.ci"},
        {"target": "airflow-build-image"},
        {"build_args": {**ARGS, "REVISION": "e" * 40}},
        {"build_args": {**ARGS, "PYTHON_BASE_IMAGE": "reg/python@sha256:" + "2" * 64}},
        {"build_args": {**ARGS, "AIRFLOW_EXTRAS": "postgres"}},
        {"checks": ("contract v2",)},
    ],
)
def test_what_reaches_the_image_changes_the_key(tmp_path, change):
    context = make_context(tmp_path)
    assert key(context) != key(context, **change)


def test_a_source_change_a_new_file_and_an_executable_bit_change_the_key(tmp_path):
    context = make_context(tmp_path)
    before = key(context)
    module = context / "airflow-sources/airflow-core/src/airflow/__init__.py"
    module.write_text("__version__ = '3.4.0.dev1'\n")
    edited = key(context)
    (context / "docker-context-files").mkdir()
    (context / "docker-context-files/constraints.txt").write_text("requests==2.32.3\n")
    constrained = key(context)
    script = context / "include/docker/scripts/install_airflow.sh"
    script.chmod(0o700)
    assert len({before, edited, constrained, key(context)}) == 4
