"""retag against an in-memory registry (no Airflow): all-or-nothing - a failure at any step, the last
read-back included, leaves every target name as it was; a dry run moves nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_image_factory.exceptions import RetagRefused, RetagSourceMissing
from airflow_image_factory.policy.retag import COPY, UNCHANGED, plan_retag
from airflow_image_factory.services.retag import retag
from tests.services.fakes import REGISTRY, FakeRegistry, Log, calls_of, digest, leaves_every_tag_as_it_was


def request(dry_run=False):
    return SimpleNamespace(source_branch="main", target_branch="v3-3-test", python_versions=("3.11", "3.13"),
                           registry=REGISTRY, repository="apache/airflow", naming="slash", debian={},
                           variants=("regular",), dry_run=dry_run)


STEPS_OF_PLAN = plan_retag(request())


def world(**kwargs) -> FakeRegistry:
    """Every source exists; the first target already holds its source's digest, the second an older one,
    the rest do not exist yet."""
    registry = FakeRegistry(**kwargs)
    for n, step in enumerate(STEPS_OF_PLAN):
        registry.put(step.source.path, step.tag, digest(n + 1))
    registry.put(STEPS_OF_PLAN[0].target.path, STEPS_OF_PLAN[0].tag, digest(1))
    registry.put(STEPS_OF_PLAN[1].target.path, STEPS_OF_PLAN[1].tag, digest(99))
    return registry


def run(registry):
    return retag(registry, request(), Log())


STEPS = calls_of(world(), run)


def test_a_retag_copies_what_differs():
    registry = world()
    log = Log()
    actions = retag(registry, request(), log)
    assert [a.action for a in actions[:2]] == [UNCHANGED, COPY] and {a.action for a in actions[2:]} == {COPY}
    for step in STEPS_OF_PLAN:
        assert registry.tags[(step.target.path, step.tag)] == registry.tags[(step.source.path, step.tag)]
    assert log.lines[0].startswith(f"Retagged main → v3-3-test ({len(actions) - 1} of {len(actions)} names changed)")
    assert log.lines[1].startswith("registry traffic: ")


def test_the_last_step_is_the_read_back_of_the_last_copy():
    registry = world()
    retag(registry, request(), Log())
    last = STEPS_OF_PLAN[-1]
    assert registry.calls[STEPS - 1][:3] == ("manifest_digest", last.target.path, last.tag)


def test_a_copy_that_lands_on_another_digest_is_refused_and_put_back():
    registry = world()
    registry.rewrites[digest(len(STEPS_OF_PLAN))] = digest(77)
    leaves_every_tag_as_it_was(registry, run, RetagRefused)


def test_a_missing_source_copies_nothing():
    registry = world()
    del registry.tags[(STEPS_OF_PLAN[3].source.path, STEPS_OF_PLAN[3].tag)]
    before = dict(registry.tags)
    with pytest.raises(RetagSourceMissing):
        retag(registry, request(), Log())
    assert registry.tags == before and registry.writes() == []


def test_a_dry_run_moves_nothing():
    registry = world()
    before = dict(registry.tags)
    log = Log()
    retag(registry, request(dry_run=True), log)
    assert registry.tags == before and registry.writes() == []
    assert log.lines[0].startswith("DRY RUN, nothing changed:")
