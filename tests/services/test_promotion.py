"""Promotion.apply against an in-memory registry, engine and lock (no Airflow): the gate, and
all-or-nothing - a failure at any step, the last read-back included, leaves every tag as it was."""

from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import PromotionRefused
from airflow_image_factory.policy.naming import ImageKind, image_set
from airflow_image_factory.policy.promotion import VersionOutcome, plan_promotion
from airflow_image_factory.policy.reference import repository_and_reference
from airflow_image_factory.services.promotion import Promotion
from tests.services.fakes import (
    REGISTRY,
    FakeEngine,
    FakeLock,
    FakeRegistry,
    Log,
    calls_of,
    digest,
)

VERSIONS = ("3.11", "3.13")
SHA = "a" * 40
IMAGES = {
    v: image_set(registry=REGISTRY, repository="apache/airflow", branch="main", python=v, debian="bookworm",
                 naming="slash", python_base_source=f"{REGISTRY}/library/python")
    for v in VERSIONS
}
TESTED = {v: {"ci": digest(f"1{i}"), "prod": digest(f"2{i}")} for i, v in enumerate(VERSIONS)}
LOCAL = {v: {"python": f"base-{v}", "prod-build": f"build-{v}", "ci-manifest": f"manifest-{v}"} for v in VERSIONS}
LOCAL_DIGESTS = {ref: digest(f"3{n}") for n, ref in enumerate(r for refs in LOCAL.values() for r in refs.values())}


def plan(**passed):
    outcomes = {v: VersionOutcome(v, passed.get(v.replace(".", "_"), True), TESTED[v]) for v in VERSIONS}
    return plan_promotion(push=True, python_versions=VERSIONS, outcomes=outcomes, images=IMAGES, local_images=LOCAL)


def world(**kwargs):
    """The registry before the promotion: the tested :SHA images, and an older latest for some targets
    (3.11's) while 3.13's have never been published."""
    registry = FakeRegistry(**kwargs)
    for v in VERSIONS:
        for kind in (ImageKind.CI, ImageKind.PROD):
            registry.put(IMAGES[v][kind].path, SHA, TESTED[v][kind.value])
    for n, step in enumerate(s for s in plan().steps if s.python == "3.11"):
        registry.put(*repository_and_reference(step.target), digest(f"9{n}"))
    registry.lock = lock = FakeLock()
    return registry, FakeEngine(registry, LOCAL_DIGESTS), lock


def promote(registry, engine, lock, the_plan=None, log=None):
    return Promotion(registry=registry, engine=engine, lock=lock, log=log or Log()).apply(the_plan or plan(), SHA)


STEPS = calls_of((fake := world())[0], lambda _: promote(*fake))


def test_a_promotion_publishes_every_latest_under_the_lock():
    registry, engine, lock = world()
    log = Log()
    published = promote(registry, engine, lock, log=log)
    assert len(published) == len(plan().steps) == 10
    for item in published:
        assert registry.tags[repository_and_reference(item["image"])] == item["digest"]
    assert {item["digest"] for item in published if item["kind"] in ("ci", "prod")} == {
        d for tested in TESTED.values() for d in tested.values()}
    assert all(held for *_, held in registry.calls) and lock.taken == 1 and not lock.held
    # the log lines the stack tests read
    assert log.lines[0] == "promotion lock acquired: fake promotion lock (waited 0.0s)"
    assert f"latest set verified: 10 images, all from commit {SHA}" in log.lines
    assert log.lines[-1] == "promotion lock released: fake promotion lock"
    assert any(line.startswith("promoted ") and line.endswith("(tested digest, manifest only)") for line in log.lines)
    assert any(line.startswith("pushed ") for line in log.lines)
    assert set(published[0]) == {"python", "kind", "image", "digest"}


def test_the_last_step_is_the_read_back_of_the_last_latest():
    registry, engine, lock = world()
    promote(registry, engine, lock)
    assert registry.calls[STEPS - 1][0] == "manifest_digest"
    assert registry.writes()[-1][0] == "tag"


def test_a_latest_read_back_as_another_digest_is_refused_and_put_back():
    registry, engine, lock = world()
    before = dict(registry.tags)
    last = plan().retags[-1]
    registry.others_move[repository_and_reference(last.target)] = digest("77")
    with pytest.raises(PromotionRefused, match="not the tested"):
        promote(registry, engine, lock)
    assert registry.tags == before


def test_a_tested_digest_gone_from_the_registry_moves_nothing():
    registry, engine, lock = world()
    registry.manifests.discard((IMAGES["3.13"].prod.path, TESTED["3.13"]["prod"]))
    before = dict(registry.tags)
    with pytest.raises(PromotionRefused, match="is gone; nothing moved"):
        promote(registry, engine, lock)
    assert registry.tags == before and registry.writes() == []


def test_the_gate_a_plan_that_refuses_moves_nothing():
    registry, engine, lock = world()
    before = dict(registry.tags)
    refused = plan(**{"3_13": False})
    assert not refused.allowed
    with pytest.raises(PromotionRefused, match="tests failed"):
        promote(registry, engine, lock, refused)
    assert registry.tags == before and registry.calls == [] and lock.taken == 0


def test_a_tested_digest_without_verifying_evidence_moves_nothing_and_is_named():
    registry, engine, lock = world()
    before = dict(registry.tags)
    asked = []
    unsigned = (IMAGES["3.13"].prod.path, TESTED["3.13"]["prod"])

    def problems(repository, tested):
        asked.append((repository, tested))
        return ["no signed SBOM about it"] if (repository, tested) == unsigned else []

    with pytest.raises(PromotionRefused, match=f"{unsigned[0]}@{unsigned[1]}: no signed SBOM"):
        Promotion(registry=registry, engine=engine, lock=lock, log=Log(), evidence_problems=problems).apply(plan(), SHA)
    assert registry.tags == before and registry.writes() == []
    # only the tested images are asked (CI and PROD of each version), not the base, stage or manifest
    assert sorted(asked) == sorted((IMAGES[v][k].path, TESTED[v][k.value]) for v in VERSIONS
                                   for k in (ImageKind.CI, ImageKind.PROD))


def test_evidence_that_verifies_lets_the_promotion_through():
    registry, engine, lock = world()
    log = Log()
    published = Promotion(registry=registry, engine=engine, lock=lock, log=log,
                          evidence_problems=lambda repository, tested: []).apply(plan(), SHA)
    assert len(published) == 10
    assert sum(line.startswith("evidence of ") and line.endswith(" verifies") for line in log.lines) == 4


# ---- several platforms: the images first pushed at promotion become indexes --------------------------------
PLATFORMS = ("linux/amd64", "linux/arm64")
LOCAL_BY_PLATFORM = {v: {**LOCAL[v], "prod-build": {p: f"build-{v}-{p}" for p in PLATFORMS}} for v in VERSIONS}
PLATFORM_DIGESTS = {**LOCAL_DIGESTS, **{f"build-{v}-{p}": digest(f"4{i}{j}") for i, v in enumerate(VERSIONS)
                                        for j, p in enumerate(PLATFORMS)}}


def platform_plan():
    outcomes = {v: VersionOutcome(v, True, TESTED[v]) for v in VERSIONS}
    return plan_promotion(push=True, python_versions=VERSIONS, outcomes=outcomes, images=IMAGES,
                          local_images=LOCAL_BY_PLATFORM)


def platform_world(**kwargs):
    registry, _, lock = world(**kwargs)
    return registry, FakeEngine(registry, PLATFORM_DIGESTS), lock


def test_a_stage_built_for_several_platforms_is_pushed_per_platform_and_published_as_their_index():
    registry, engine, lock = platform_world()
    published = promote(registry, engine, lock, platform_plan())
    for v in VERSIONS:
        stage = IMAGES[v].prod_build
        [item] = [i for i in published if i["python"] == v and i["kind"] == "prod-build"]
        index = registry.indexes[item["digest"]]
        assert registry.tags[(stage.path, "latest")] == item["digest"] and index.is_index
        assert [(c["platform"]["architecture"], c["digest"]) for c in index.children] == [
            (p.split("/")[1], registry.tags[(stage.path, f"latest-{p.split('/')[1]}")]) for p in PLATFORMS]
        assert [c["digest"] for c in index.children] == [PLATFORM_DIGESTS[f"build-{v}-{p}"] for p in PLATFORMS]


PLATFORM_STEPS = calls_of((fake := platform_world())[0], lambda _: promote(*fake, platform_plan()))



def test_a_platform_reused_from_the_registry_is_tagged_not_pushed_and_joins_the_index():
    registry, engine, lock = platform_world()
    stage = IMAGES["3.11"].prod_build
    published_arm = digest("55")
    registry.put(stage.path, "older-arm64", published_arm)  # what the arm64 build reused (content key)
    local = {v: {**LOCAL_BY_PLATFORM[v]} for v in VERSIONS}
    local["3.11"]["prod-build"] = {"linux/amd64": "build-3.11-linux/amd64", "linux/arm64": published_arm}
    outcomes = {v: VersionOutcome(v, True, TESTED[v]) for v in VERSIONS}
    mixed = plan_promotion(push=True, python_versions=VERSIONS, outcomes=outcomes, images=IMAGES, local_images=local)
    published = promote(registry, engine, lock, mixed)
    [item] = [i for i in published if i["python"] == "3.11" and i["kind"] == "prod-build"]
    assert [c["digest"] for c in registry.indexes[item["digest"]].children] == [
        PLATFORM_DIGESTS["build-3.11-linux/amd64"], published_arm]
    assert ("engine.push", f"{stage.ref('latest-arm64')}", True) not in registry.calls
    assert registry.tags[(stage.path, "latest-arm64")] == published_arm
