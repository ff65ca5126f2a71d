"""Airflow Assets for published images, so other DAGs (``smoke_deploy``, users' own) can be scheduled on them.

One asset per published "last good" image reference (``latest``, the Python base's fixed tag, a release
tag). Its ``uri`` is ``oci://REG/PATH:TAG`` and its ``name`` the plain image reference, both made from
:mod:`naming` so a producer and a consumer always agree on the key. Producers whose images are known only
at run time (which Python versions a run publishes) emit through :data:`PUBLISHED_IMAGES_ALIAS`.

Pure: builds Asset objects, touches nothing.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from airflow_image_factory.policy.naming import (
    LATEST,
    ImageKind,
    ImageName,
    NamingContext,
    convention,
    release_image,
)
from airflow_image_factory.policy.reference import split_tag

ASSET_GROUP = "container-image"
# Every run that publishes images adds one event per published reference through this alias.
PUBLISHED_IMAGES_ALIAS = AssetAlias(name="image_factory_published_images", group=ASSET_GROUP)
# The nightly held an upgrade back (its bisection named a culprit): one event per branch and run, its
# extra the bisection's summary, so a user's DAG scheduled on it can open an issue or notify. Emitted
# through the alias: a task's plain outlet would get an event on every success, culprit or not.
UPGRADE_BLOCKED = Asset(name="image_factory_upgrade_blocked", group="image-factory")
UPGRADE_BLOCKED_ALIAS = AssetAlias(name="image_factory_upgrade_blocked_events", group="image-factory")


def image_asset(image_ref: str) -> Asset:
    """The asset of one image reference ``REG/PATH:TAG`` (a tag, not a digest: the name that moves)."""
    if "@" in image_ref:
        raise ValueError(f"{image_ref}: an asset names a tag that moves, not a digest")
    if split_tag(image_ref)[1] is None:
        raise ValueError(f"{image_ref}: expected REGISTRY/PATH:TAG")
    return Asset(name=image_ref, uri=f"oci://{image_ref}", group=ASSET_GROUP)


def latest_asset(image_name: ImageName | str) -> Asset:
    """The asset of an image's promoted tag: ``latest``, or the Python base's fixed tag.

    ``image_name`` is an :class:`ImageName` or a ``REG/PATH`` string (``:latest`` is added).
    """
    if isinstance(image_name, ImageName):
        return image_asset(image_name.ref(image_name.promoted_tag))
    return image_asset(f"{image_name}:{LATEST}")


def prod_latest_asset(registry: str, repository: str, branch: str, python: str, naming: str = "slash") -> Asset:
    """``REG/REPO/BRANCH/prod/pythonX.Y:latest`` (in the given naming convention) as an asset."""
    ctx = NamingContext(registry=registry, repository=repository, branch=branch, python=python, debian="")
    return latest_asset(convention(naming).image(ImageKind.PROD, ctx))


def ci_latest_asset(registry: str, repository: str, branch: str, python: str, naming: str = "slash") -> Asset:
    """``REG/REPO/BRANCH/ci/pythonX.Y:latest`` (in the given naming convention) as an asset."""
    ctx = NamingContext(registry=registry, repository=repository, branch=branch, python=python, debian="")
    return latest_asset(convention(naming).image(ImageKind.CI, ctx))


def release_asset(registry: str, repository: str, tag: str) -> Asset:
    """A released image tag (``REG/REPO:3.3.2-python3.11``, ``REG/REPO:latest``) as an asset."""
    return image_asset(release_image(registry, repository).ref(tag))
