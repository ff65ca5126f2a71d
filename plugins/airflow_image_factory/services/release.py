"""Release images in the registry: publish a tested release all-or-nothing, and read the released images
whose Python base moved on (the nightly rebuilds those).

The decisions are :mod:`airflow_image_factory.policy.release`; here the registry calls around them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_image_factory.clients.registry import config_labels
from airflow_image_factory.exceptions import ReleaseRefused
from airflow_image_factory.policy.naming import images_for, release_image, release_staging_image, release_tag
from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.policy.release import ReleasedImage, plan_rebuilds, plan_release_tags, released_images
from airflow_image_factory.policy.request import BuildRequest
from airflow_image_factory.services.copy import TagJournal


def publish_release(
    client: Any, release: Any, staged: Mapping[tuple[str, str], str], variants: Sequence[str],
    log: Callable[..., None], evidence_problems: Callable[[str, str], list[str]] | None = None,
) -> list[dict[str, str]]:
    """Copy each (python, variant)'s tested digest from the staging repository to its release tags.

    ``release`` is a ReleaseRequest; ``staged`` maps (python, variant) to the digest staged and tested
    for it. Tags are decided from the registry's tags before anything moves; every staged digest is
    checked first (still there; its signed evidence verifying, when ``evidence_problems`` is given), then
    each tag is a verified copy of exactly the tested digest, its evidence along. All-or-nothing: when
    any copy or read-back fails, every tag is put back where it was (:class:`TagJournal`).
    """
    target = release_image(release.registry, release.repository)
    staging = release_staging_image(release.registry, release.repository)
    existing = client.list_tags(target.path)
    plan = [(variant, item) for variant in variants for item in plan_release_tags(
        release.version, release.python_versions, release.default_python, existing, variant)]
    for (python, variant), digest in staged.items():
        if client.manifest_digest(staging.path, digest) is None:
            raise ReleaseRefused(f"tested digest {digest} of Python {python} ({variant}) is gone from "
                                 f"{staging}; nothing was published")
        problems = evidence_problems(staging.path, digest) if evidence_problems else []
        if problems:
            raise ReleaseRefused(f"the signed evidence of Python {python} ({variant}) {digest} does not verify: "
                                 f"{'; '.join(problems)}; nothing was published")
    journal = TagJournal(client, log)
    for _variant, item in plan:
        journal.remember(target.path, item.tag)
    published: list[dict[str, str]] = []
    with journal.all_or_nothing(refused=ReleaseRefused):
        for variant, item in plan:
            digest = journal.copy(staging.path, staged[(item.python, variant)], target.path, item.tag)
            published.append({"image": target.ref(item.tag), "python": item.python, "digest": digest,
                              "variant": variant, "reason": item.reason})
    width = max(len(r["image"]) for r in published)
    log("Published release %s:\n%s", release.version, "\n".join(
        f"{r['image'].ljust(width)}  {r['digest']}  ({r['reason']})" for r in published))
    skipped = {"latest", f"{release.version.rsplit('.', 1)[0]}-python{release.default_python}"} - {
        name_and_tag(r["image"])[1] for r in published}
    if skipped:
        log("Not moved (a newer release owns them): %s", ", ".join(sorted(skipped)))
    return published


def read_released_images(client: Any, repository: str) -> list[ReleasedImage]:
    """The registry's ``X.Y.Z-pythonA.B`` images with the base digest each records in its labels.

    Reads manifests and config blobs only (no layers); the input :func:`plan_rebuilds` needs.
    """
    found = []
    for version, python in released_images(client.list_tags(repository)):
        labels = config_labels(client.image_config(repository, release_tag(version, python)))
        found.append(ReleasedImage(version, python, labels.get(BASE_DIGEST_LABEL) or None))
    return found


def releases_to_rebuild(
    request: BuildRequest, open_client: Callable[[str], Any], log: Callable[..., None],
) -> list[dict[str, Any]]:
    """Released ``X.Y.Z-pythonA.B`` images whose Python base has a new digest upstream (AIP-26), as one
    ``release_images`` conf per release to rebuild (newest patch of each X.Y line).

    ``open_client(registry)`` gives a registry client (a context manager). Reads tags, manifests and config
    labels only.
    """
    released_repo = release_image(request.registry, request.repository)
    with open_client(request.registry) as client:
        released = read_released_images(client, released_repo.path)
    if not released:
        log("No released images in %s: nothing to rebuild", released_repo)
        return []
    current: dict[str, str] = {}
    for python in sorted({image.python for image in released}):
        upstream = images_for(request, python).upstream_python_base
        with open_client(upstream.registry) as client:
            digest = client.manifest_digest(upstream.path, upstream.fixed_tag)
        if digest:
            current[python] = digest
    rebuilds = plan_rebuilds(released, current, newest_patch_only=True)
    by_version: dict[str, list[str]] = {}
    for rebuild in rebuilds:
        log("Released %s:%s is on base %s; upstream is now %s: rebuilding", released_repo, rebuild.tag,
            rebuild.old_base_digest, rebuild.new_base_digest)
        by_version.setdefault(rebuild.version, []).append(rebuild.python)
    if not by_version:
        log("All %d released images are on their Python base's current digest", len(released))
    return [
        {"version": version, "python_versions": pythons, "registry": request.registry,
         "repository": request.repository}
        for version, pythons in sorted(by_version.items())
    ]
