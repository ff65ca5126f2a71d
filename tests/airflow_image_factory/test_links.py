"""Registry web links of pushed images (ghcr's percent-encoded form) and the plugin that registers them."""

from __future__ import annotations

import pytest

from airflow_image_factory.tasks.links import RegistryImageLink, image_web_url
from airflow_image_factory.tasks.operators import PromoteImagesOperator, PushImageOperator
from airflow_image_factory.tasks.release import PublishReleaseOperator, ReleaseStageOperator


@pytest.mark.parametrize(
    ("ref", "url"),
    [
        ("ghcr.io/apache/airflow/main/ci/python3.8:latest",
         "https://github.com/apache/airflow/pkgs/container/airflow%2Fmain%2Fci%2Fpython3.8"),
        ("ghcr.io/apache/airflow/v2-1-test/prod/python3.9@sha256:" + "a" * 64,
         "https://github.com/apache/airflow/pkgs/container/airflow%2Fv2-1-test%2Fprod%2Fpython3.9"),
        ("ghcr.io/apache/airflow-main-python3.8-ci-v2:latest",
         "https://github.com/apache/airflow/pkgs/container/airflow-main-python3.8-ci-v2"),
        ("docker.pkg.github.com/apache/airflow/main-python3.8-ci-v2:latest",
         "https://github.com/apache/airflow/packages"),
        ("apache/airflow:3.3.2-python3.11", "https://hub.docker.com/r/apache/airflow/tags"),
        ("localhost:5000/releasetest/airflow:latest", "http://localhost:5000/v2/releasetest/airflow/tags/list"),
        ("registry.example.com:5000/a/b:1", "https://registry.example.com:5000/v2/a/b/tags/list"),
        ("", ""),
        (None, ""),
    ],
)
def test_image_web_url(ref, url):
    assert image_web_url(ref) == url


def test_pushing_and_publishing_operators_carry_the_link():
    for operator in (PushImageOperator, PromoteImagesOperator, ReleaseStageOperator, PublishReleaseOperator):
        assert any(isinstance(link, RegistryImageLink) for link in operator.operator_extra_links), operator


def test_the_plugin_registers_the_link():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    ours = [p for p in plugins if p.name == "airflow_image_factory"]
    assert len(ours) == 1  # through the entry point (plugins/.airflowignore keeps the directory loader out)
    # A stale plugins/airflow_image_factory.egg-info (left by a `pip install -e` not run through
    # `make venv`) is a second copy of the same distribution on Airflow's sys.path: tolerated here, as
    # Airflow skips it; anything else is a real plugin error.
    assert all("already registered" in message for message in errors.values()), errors
    assert any(isinstance(link, RegistryImageLink) for link in plugins_manager.get_operator_extra_links())
