"""Airflow itself: importable, the CLI answers, the version is the one the image claims."""

from __future__ import annotations

import os
import shutil

import pytest


def test_airflow_imports():
    import airflow

    assert airflow.__version__


def test_expected_airflow_version():
    import airflow

    expected = os.environ.get("IMAGE_AIRFLOW_VERSION")
    if not expected:
        pytest.skip("IMAGE_AIRFLOW_VERSION is not set: the image was built without a pinned version")
    assert airflow.__version__ == expected


def test_airflow_version_command(run, airflow_bin):
    import airflow

    proc = run([airflow_bin, "version"], timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == airflow.__version__


def test_airflow_config_is_readable(run, airflow_bin):
    proc = run([airflow_bin, "config", "get-value", "core", "executor"], timeout=300)
    assert proc.stdout.strip()


def test_task_sdk_imports():
    from airflow.sdk import DAG, task  # noqa: F401


@pytest.mark.parametrize("program", ["node", "npm", "yarn", "pnpm"])
def test_no_node_tooling(program):
    # The images ship compiled UI assets only (seeds: "no node/npm in the PROD image").
    assert shutil.which(program) is None, f"{program} found at {shutil.which(program)}"
