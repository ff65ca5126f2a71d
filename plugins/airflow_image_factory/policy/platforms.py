"""Platforms as a matrix axis: which ``os/arch`` a run builds, and how a platform's image is named.

Pure. One platform: the image is a plain manifest at ``name:SHA``, as always. Several: each platform's
image is pushed as ``name:SHA-<arch>`` and ``name:SHA`` is an OCI image index over them (assembled by a
manifest PUT, nothing re-uploaded); ``latest`` and release tags then move to the index digest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# What the build DAG builds unless told otherwise (the nightly and release DAGs read the platforms setting).
DEFAULT_PLATFORMS = ("linux/amd64",)
# What Airflow publishes; another architecture's steps run under QEMU user emulation on the same engine.
SUPPORTED_PLATFORMS = ("linux/amd64", "linux/arm64")


def arch_of(platform: str) -> str:
    """``amd64`` of ``linux/amd64`` (``arm64-v8`` of ``linux/arm64/v8``): what a platform's tag ends in."""
    _, _, rest = platform.partition("/")
    return rest.replace("/", "-")


def is_index(platforms: Sequence[str]) -> bool:
    """Whether a run of ``platforms`` publishes an index (several platforms) or a plain manifest."""
    return len(platforms) > 1


def platform_tag(tag: str, platform: str) -> str:
    """The tag of one platform's image of an index published as ``tag``: ``<tag>-<arch>``."""
    return f"{tag}-{arch_of(platform)}"


def platform_tags(tag: str, platforms: Sequence[str]) -> dict[str, str]:
    """Platform → the tag its image is built and pushed as: ``tag`` itself for one platform, ``<tag>-<arch>``
    for each of several (then ``tag`` names their index)."""
    if not is_index(platforms):
        return {platform: tag for platform in platforms}
    return {platform: platform_tag(tag, platform) for platform in platforms}


def in_platform_order(chosen: Sequence[str]) -> tuple[str, ...]:
    """One order, whatever the conf's: the index lists its children in it, so equal runs make equal indexes."""
    return tuple(p for p in SUPPORTED_PLATFORMS if p in chosen)


def built_platforms(build: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The per-platform parts of a build step's summary: its ``platforms`` list, or the summary itself
    (one platform). Each has ``platform``, ``image`` (the local ref), and ``reused``/``digest`` when reused."""
    if not isinstance(build, Mapping):
        return []
    return list(build.get("platforms") or [build])


def platforms_for(request: Any, kind: Any) -> tuple[str, ...]:
    """The platforms one image of a run (``request``: a BuildRequest) is built for: the CI image (and its
    manifest image) for ``request.ci_platforms``, every other image for ``request.platforms``."""
    if str(kind) in ("ci", "ci-manifest"):
        return tuple(request.ci_platforms)
    return tuple(request.platforms)
