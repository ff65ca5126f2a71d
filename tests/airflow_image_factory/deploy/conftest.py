"""Published images the deploy stack tests run, by reference: they build nothing, and a missing image fails
the test with what to publish (never a skip)."""

from __future__ import annotations

import pytest
import requests

from airflow_image_factory.engine import Engine
from airflow_image_factory.settings import load_settings

PYTHON = "3.11"


def published_image(variant: str) -> str:
    """``REG/apache/airflow/main/<variant>/python3.11:latest``, pulled so the engine has the registry's
    ``latest`` (a tag left on the engine by an older build would test the wrong image)."""
    settings = load_settings()
    repository = f"apache/airflow/main/{variant}/python{PYTHON}"
    ref = f"{settings.registry}/{repository}:latest"
    try:
        answer = requests.get(f"http://{settings.registry}/v2/{repository}/tags/list", timeout=10)
        tags = answer.json().get("tags") or [] if answer.ok else []
    except (requests.RequestException, ValueError) as exc:
        pytest.fail(f"cannot ask the registry {settings.registry} for {repository}'s tags: {exc}")
    if "latest" not in tags:
        pytest.fail(f"{ref} is not published (tags: {tags or 'none'}): run build_images for main with the "
                    f"{variant} PROD image first; these tests deploy published images and build none")
    Engine(cli=settings.docker_cli).pull(ref)
    return ref


@pytest.fixture(scope="session")
def regular_prod_image(stack_env) -> str:
    return published_image("prod")


@pytest.fixture(scope="session")
def slim_prod_image(stack_env) -> str:
    return published_image("prod-slim")
