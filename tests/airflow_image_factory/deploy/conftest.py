"""Published images the deploy stack tests run, by reference: they build nothing themselves (the session's
``official_build`` publishes them, once, unless ``SMOKE_*_PROD_IMAGE`` names others), and a missing image
fails the test with what to publish (never a skip).

The references default to main's ``latest`` PROD images of Python 3.11 with the product's extras (regular:
Airflow's default extras, fab among them; slim: none), which the suite publishes under its own repository
``official/airflow`` (tests/conftest.py's ``official_build``; ``REG/apache/airflow/...`` holds the suite's
light builds, without fab). ``SMOKE_REGULAR_PROD_IMAGE`` / ``SMOKE_SLIM_PROD_IMAGE`` name others.
"""

from __future__ import annotations

import os

import pytest
import requests

from airflow_image_factory.clients.engine import Engine
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.nightly import EXTRAS_LABEL
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.policy.settings import extras_of
from tests.conftest import OFFICIAL_REPOSITORY

PYTHON = "3.11"
REPOSITORY = OFFICIAL_REPOSITORY


def published_image(variant: str, override: str) -> str:
    """The image, pulled so the engine has the registry's tag (a tag left on the engine by an older build
    would test the wrong image); fails when the registry has no such tag."""
    settings = load_settings()
    ref = os.environ.get(override) or f"{settings.registry}/{REPOSITORY}/main/{variant}/python{PYTHON}:latest"
    name, tag = name_and_tag(ref)
    registry, _, repository = name.partition("/")
    try:
        answer = requests.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10)
        tags = (answer.json().get("tags") or []) if answer.ok else []
    except (requests.RequestException, ValueError) as exc:
        pytest.fail(f"cannot ask the registry {registry} for {repository}'s tags: {exc}")
    if tag not in tags:
        pytest.fail(f"{ref} is not published (tags: {tags or 'none'}): publish the {variant} PROD image first "
                    f"(build_images for main with repository {REPOSITORY} and variants regular and slim, as the "
                    f"official_build fixture does), or name another with {override}; these tests build no image")
    Engine(cli=settings.docker_cli).pull(ref)
    return ref


def image_extras(ref: str) -> set[str]:
    """The extras the image was built with (its extras label)."""
    labels = Engine(cli=load_settings().docker_cli).inspect(ref)["Config"].get("Labels") or {}
    return set(extras_of(labels.get(EXTRAS_LABEL) or ""))


@pytest.fixture(scope="module")
def settings(stack_env):
    return load_settings()


@pytest.fixture(scope="module")
def engine(settings) -> Engine:
    return Engine(cli=settings.docker_cli)


@pytest.fixture(scope="session")
def official_images(request, stack_env) -> None:
    """The session's real regular and slim images, built by tests/conftest.py's ``official_build`` before the
    first deploy test needs them (these modules run before tests/dags/); not when both are named."""
    if not (os.environ.get("SMOKE_REGULAR_PROD_IMAGE") and os.environ.get("SMOKE_SLIM_PROD_IMAGE")):
        request.getfixturevalue("official_build")


@pytest.fixture(scope="session")
def regular_prod_image(official_images) -> str:
    ref = published_image("prod", "SMOKE_REGULAR_PROD_IMAGE")
    if "fab" not in image_extras(ref):  # say so here, not as a failing deploy of the wrong image
        pytest.fail(f"{ref} is not a regular PROD image: its extras {sorted(image_extras(ref))} lack fab")
    return ref


@pytest.fixture(scope="session")
def slim_prod_image(official_images) -> str:
    ref = published_image("prod-slim", "SMOKE_SLIM_PROD_IMAGE")
    if "fab" in image_extras(ref):
        pytest.fail(f"{ref} is not a slim PROD image: its extras {sorted(image_extras(ref))} hold fab")
    return ref
