"""Run-time choices of the smoke operators (unit tier)."""

from __future__ import annotations

import shutil

import pytest

from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.tasks.deploy_operators import resolve_mode, smoke_run_id


def test_auto_mode_follows_the_kind_binary():
    assert resolve_mode("auto") == ("kind" if shutil.which("kind") else "docker")
    assert resolve_mode("kind") == "kind" and resolve_mode("docker") == "docker"
    with pytest.raises(SettingsError, match="smoke_mode"):
        resolve_mode("minikube")


def test_the_teardown_finds_the_deploys_run_by_its_id():
    assert smoke_run_id("manual__2026", "3.11") == smoke_run_id("manual__2026", "3.11")
    assert smoke_run_id("manual__2026", "3.11") != smoke_run_id("manual__2026", "3.13")
    assert smoke_run_id("manual__2026", "3.11") != smoke_run_id("scheduled__2026", "3.11")
