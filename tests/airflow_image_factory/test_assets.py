"""Assets of published images: one key per image reference, the same from producer and consumer side."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_image_factory.policy.naming import ImageKind, image_set
from airflow_image_factory.tasks.assets import (
    PUBLISHED_IMAGES_ALIAS,
    ci_latest_asset,
    image_asset,
    latest_asset,
    prod_latest_asset,
    release_asset,
)


def test_prod_latest_asset_is_the_published_reference():
    asset = prod_latest_asset("localhost:5000", "apache/airflow", "main", "3.11")
    assert isinstance(asset, Asset)
    assert asset.name == "localhost:5000/apache/airflow/main/prod/python3.11:latest"
    assert asset.uri == "oci://localhost:5000/apache/airflow/main/prod/python3.11:latest"
    assert asset.group == "container-image"


def test_producer_and_consumer_agree():
    """What PromoteImagesOperator emits (image_asset of the promoted ref) is what smoke_deploy schedules on."""
    images = image_set(registry="ghcr.io", repository="apache/airflow", branch="v3-1-test", python="3.13",
                       debian="trixie", naming="slash", python_base_source="docker.io/library/python")
    published_ref = images.prod.ref(images.prod.promoted_tag)
    assert image_asset(published_ref) == prod_latest_asset("ghcr.io", "apache/airflow", "v3-1-test", "3.13")
    assert latest_asset(images.prod) == prod_latest_asset("ghcr.io", "apache/airflow", "v3-1-test", "3.13")
    assert latest_asset(images.ci) == ci_latest_asset("ghcr.io", "apache/airflow", "v3-1-test", "3.13")
    # the Python base's "latest" is its fixed tag
    base = latest_asset(images[ImageKind.PYTHON_BASE])
    assert base.name == "ghcr.io/apache/airflow/v3-1-test/python:3.13-slim-trixie"


def test_assets_follow_the_naming_convention_and_differ_per_image():
    legacy = prod_latest_asset("ghcr.io", "apache/airflow", "main", "3.11", naming="ghcr-v2")
    assert legacy.name == "ghcr.io/apache/airflow-main-python3.11-v2:latest"
    keys = {
        prod_latest_asset("ghcr.io", "apache/airflow", branch, python).uri
        for branch in ("main", "v3-1-test") for python in ("3.11", "3.13")
    }
    assert len(keys) == 4


def test_generic_latest_asset_and_release_assets():
    ci = latest_asset("ghcr.io/apache/airflow/main/ci/python3.11")
    assert ci.name == "ghcr.io/apache/airflow/main/ci/python3.11:latest"
    latest = release_asset("localhost:5000", "releasetest/airflow", "latest")
    assert latest.uri == "oci://localhost:5000/releasetest/airflow:latest"
    versioned = release_asset("ghcr.io", "apache/airflow", "3.3.2-python3.11")
    assert versioned.name == "ghcr.io/apache/airflow:3.3.2-python3.11"


@pytest.mark.parametrize(
    "bad", ["ghcr.io/apache/airflow@sha256:" + "a" * 64, "ghcr.io/apache/airflow", "localhost:5000/x"]
)
def test_an_asset_names_a_tag(bad):
    with pytest.raises(ValueError):
        image_asset(bad)


def test_the_alias_is_an_outlet_of_every_publishing_operator():
    from airflow_image_factory.tasks.operators import PromoteImagesOperator
    from airflow_image_factory.tasks.release import PublishReleaseOperator
    from airflow_image_factory.tasks.retag import RetagImagesOperator

    assert isinstance(PUBLISHED_IMAGES_ALIAS, AssetAlias)
    promote = PromoteImagesOperator(task_id="p", build_request={}, outcomes=[], python_bases=[])
    publish = PublishReleaseOperator(task_id="r", release_request={}, staged=[])
    retag = RetagImagesOperator(task_id="t", retag_request={})
    for operator in (promote, publish, retag):
        assert PUBLISHED_IMAGES_ALIAS in operator.outlets
