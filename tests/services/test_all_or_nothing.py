"""Promotion, release publish and retag, each failed at every one of its registry and engine calls in turn
(before the call takes effect, and after it - the reply lost), the last read-back included: every tag is
exactly as it was before the run."""

from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import PromotionRefused, RegistryError, ReleaseRefused, RetagRefused
from tests.services import test_promotion, test_release, test_retag
from tests.services.fakes import leaves_every_tag_as_it_was


def promotion(**kwargs):
    registry, engine, lock = test_promotion.world(**kwargs)
    return registry, lambda _: test_promotion.promote(registry, engine, lock)


def index_promotion(**kwargs):
    """The promotion of a run for several platforms: its build stages pushed per platform, then indexed."""
    registry, engine, lock = test_promotion.platform_world(**kwargs)
    return registry, lambda _: test_promotion.promote(registry, engine, lock, test_promotion.platform_plan())


FLOWS = {
    "promotion": (promotion, test_promotion.STEPS, PromotionRefused),
    "index-promotion": (index_promotion, test_promotion.PLATFORM_STEPS, PromotionRefused),
    "release": (lambda **kw: (test_release.world(**kw), test_release.publish), test_release.STEPS, ReleaseRefused),
    "retag": (lambda **kw: (test_retag.world(**kw), test_retag.run), test_retag.STEPS, RetagRefused),
}


@pytest.mark.parametrize("fail_after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(("flow", "step"), [(f, n) for f, (_, steps, _) in FLOWS.items() for n in range(1, steps + 1)])
def test_a_failure_at_any_step_leaves_every_tag_as_it_was(flow, step, fail_after):
    make, _, refused = FLOWS[flow]
    registry, run = make(fail_at=step, fail_after=fail_after)
    leaves_every_tag_as_it_was(registry, run, (RegistryError, refused))
    if flow.endswith("promotion"):
        assert all(held for *_, held in registry.calls)  # putting back happens under the lock too
