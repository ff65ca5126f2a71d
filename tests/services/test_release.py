"""publish_release and the released images against an in-memory registry (no Airflow): all-or-nothing -
a failure at any step, the last read-back included, leaves every release tag as it was."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_image_factory.exceptions import ReleaseRefused
from airflow_image_factory.policy.naming import release_image, release_staging_image
from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL
from airflow_image_factory.services.release import publish_release, read_released_images
from tests.services.fakes import REGISTRY, FakeRegistry, Log, calls_of, digest, leaves_every_tag_as_it_was

RELEASE = SimpleNamespace(version="3.3.2", python_versions=("3.11", "3.13"), default_python="3.11",
                          registry=REGISTRY, repository="apache/airflow")
VARIANTS = ("regular", "slim")
STAGED = {(p, v): digest(f"{i}{j}") for i, p in enumerate(RELEASE.python_versions) for j, v in enumerate(VARIANTS)}
TARGET = release_image(REGISTRY, "apache/airflow").path
STAGING = release_staging_image(REGISTRY, "apache/airflow").path


def world(**kwargs) -> FakeRegistry:
    """3.3.1 is published (its tags will move forward); 3.3.2's own tags are new."""
    registry = FakeRegistry(**kwargs)
    for n, value in enumerate(STAGED.values()):
        registry.put(STAGING, f"staged-{n}", value)
    for n, tag in enumerate(["3.3.1-python3.11", "3.3-python3.11", "3.3.1", "latest", "slim-latest",
                             "3.3-python3.13", "slim-3.3-python3.11"]):
        registry.put(TARGET, tag, digest(f"9{n}"))
    return registry


def publish(registry, log=None):
    return publish_release(registry, RELEASE, STAGED, VARIANTS, log=log or Log())


STEPS = calls_of(world(), publish)


def test_a_release_points_every_tag_at_its_tested_digest():
    registry = world()
    log = Log()
    published = publish(registry, log)
    for row in published:
        assert registry.tags[(TARGET, row["image"].rsplit(":", 1)[1])] == STAGED[(row["python"], row["variant"])]
    tags = {row["image"].rsplit(":", 1)[1] for row in published}
    assert {"3.3.2-python3.13", "3.3-python3.11", "3.3.2", "latest", "slim-latest"} <= tags
    assert log.lines[0].startswith("Published release 3.3.2:\n")
    assert set(published[0]) == {"image", "python", "digest", "variant", "reason"}


def test_the_last_step_is_the_read_back_of_the_last_tag():
    registry = world()
    publish(registry)
    assert registry.calls[STEPS - 1][:3] == ("manifest_digest", TARGET, "slim-latest")


def test_a_tag_that_lands_on_another_digest_refuses_the_release_and_puts_every_tag_back():
    registry = world()
    registry.rewrites[STAGED[("3.11", "slim")]] = digest("77")
    leaves_every_tag_as_it_was(registry, publish, ReleaseRefused)


def test_a_staged_digest_gone_publishes_nothing():
    registry = world()
    registry.manifests.discard((STAGING, STAGED[("3.13", "regular")]))
    before = dict(registry.tags)
    with pytest.raises(ReleaseRefused, match="nothing was published"):
        publish(registry)
    assert registry.tags == before and registry.writes() == []


def test_a_staged_digest_whose_evidence_does_not_verify_publishes_nothing():
    registry = world()
    before = dict(registry.tags)
    unsigned = STAGED[("3.13", "slim")]
    asked = []

    def problems(repository, staged):
        asked.append((repository, staged))
        return ["no signed provenance about it"] if staged == unsigned else []

    with pytest.raises(ReleaseRefused, match=rf"Python 3.13 \(slim\) {unsigned} does not verify: no signed "
                                             r"provenance about it; nothing was published"):
        publish_release(registry, RELEASE, STAGED, VARIANTS, log=Log(), evidence_problems=problems)
    assert registry.tags == before and registry.writes() == []
    assert set(asked) <= {(STAGING, d) for d in STAGED.values()} and (STAGING, unsigned) in asked


def test_the_release_tags_get_the_evidence_along():
    registry = world()
    publish_release(registry, RELEASE, STAGED, VARIANTS, log=Log(), evidence_problems=lambda *_: [])
    copied = {(c[1], c[2], c[3]) for c in registry.calls if c[0] == "copy_referrers"}
    assert copied == {(STAGING, d, TARGET) for d in STAGED.values()}


def test_released_images_are_read_with_their_base_digest():
    registry = FakeRegistry()
    registry.put(TARGET, "3.3.2-python3.11", digest(1))
    registry.put(TARGET, "3.3.2", digest(1))
    registry.configs[digest(1)] = {"config": {"Labels": {BASE_DIGEST_LABEL: digest(5)}}}
    [image] = read_released_images(registry, TARGET)
    assert (image.version, image.python, image.base_digest) == ("3.3.2", "3.11", digest(5))
