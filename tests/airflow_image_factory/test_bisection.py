"""The culprit search of a nightly whose upgrades break the tests (policy/bisection), against oracles:
a probe 'fails' when it upgrades every package of a planted culprit set."""

from __future__ import annotations

import math

import pytest

from airflow_image_factory.policy.bisection import (
    Hold,
    held_pins,
    hold_lines,
    next_step,
    parse_holds,
    probe_budget,
    probe_pins,
)
from airflow_image_factory.policy.constraints import parse_pins


def _search(upgrades: list[str], fails) -> tuple[object, list[tuple[str, ...]], int]:
    """Run the search to its verdict; ``fails(upgraded set) -> bool``. Returns (verdict, probes, steps)."""
    results: dict[tuple[str, ...], bool] = {}
    probes: list[tuple[str, ...]] = []
    for steps in range(1, 200):
        step = next_step(upgrades, results)
        if step.verdict is not None:
            return step.verdict, probes, steps
        assert 1 <= len(step.probes) <= 2, step.probes  # two build side by side, never more
        for probe in step.probes:
            assert probe not in results, f"probe {probe} asked twice"
            results[probe] = not fails(set(probe))
            probes.append(probe)
    raise AssertionError("the search did not end")


def _names(count: int) -> list[str]:
    return [f"pkg-{i:02d}" for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 16, 33])
def test_one_culprit_is_found_wherever_it_is_within_two_log2_n_plus_two_probes(count):
    upgrades = _names(count)
    for culprit in upgrades:
        verdict, probes, _ = _search(upgrades, lambda s, c=culprit: c in s)
        assert verdict.kind == "culprits" and verdict.culprits == (culprit,), (culprit, probes)
        assert len(probes) <= 2 * math.ceil(math.log2(max(count, 2))) + 2 == probe_budget(count), (culprit, probes)
        assert probes[:2] == [(), tuple(sorted(upgrades))]  # the failure is confirmed first


@pytest.mark.parametrize(("a", "b"), [(0, 1), (0, 7), (3, 4), (2, 13), (14, 15)])
def test_two_upgrades_that_fail_only_together_are_both_named(a, b):
    upgrades = _names(16)
    pair = {upgrades[a], upgrades[b]}
    verdict, probes, _ = _search(upgrades, lambda s: pair <= s)
    assert verdict.kind == "culprits" and set(verdict.culprits) == pair, probes
    assert len(probes) <= probe_budget(16, interacting=2)


def test_a_group_of_three_is_named_whole():
    upgrades = _names(12)
    group = {upgrades[1], upgrades[6], upgrades[11]}
    verdict, _, _ = _search(upgrades, lambda s: group <= s)
    assert set(verdict.culprits) == group


def test_either_of_two_independent_culprits_is_named_minimal():
    """Two packages that each break the tests alone: one is a minimal failing set; the other shows up
    in the next nightly's verification of the culprit-free set (the search is not told to find all)."""
    upgrades = _names(8)
    verdict, _, _ = _search(upgrades, lambda s: bool({"pkg-02", "pkg-05"} & s))
    assert verdict.culprits in (("pkg-02",), ("pkg-05",))


def test_a_failure_without_any_upgrade_blames_no_package():
    verdict, probes, _ = _search(_names(5), lambda s: True)
    assert verdict.kind == "fails_without_upgrades" and verdict.culprits == () and len(probes) == 2


def test_a_failure_the_probes_do_not_reproduce_blames_no_package():
    verdict, probes, _ = _search(_names(5), lambda s: False)
    assert verdict.kind == "not_reproduced" and len(probes) == 2


def test_the_state_is_only_the_results_so_names_are_normalised_and_order_does_not_matter():
    first = next_step(["Foo_Bar", "baz"], {})
    assert set(first.probes) == {(), ("baz", "foo-bar")}
    again = next_step(["baz", "foo-bar"], {(): True, ("foo-bar", "baz"): False})
    assert again.verdict is None and set(again.probes) == {("baz",), ("foo-bar",)}


def test_a_probe_upgrades_only_its_packages():
    current = {"celery": "5.6.3", "kombu": "5.5.0", "redis": "6.0.0"}
    resolved = {"celery": "5.7.0", "kombu": "5.6.0", "redis": "6.0.0", "brand-new": "1.0"}
    assert probe_pins(current, resolved, ["Celery"]) == {"celery": "5.7.0", "kombu": "5.5.0", "redis": "6.0.0"}
    assert probe_pins(current, resolved, []) == current


def test_held_constraints_keep_the_culprit_and_say_why_and_a_later_nightly_reads_the_hold():
    resolved = {"celery": "5.7.0", "kombu": "5.6.0", "brand-new": "2.0"}
    current = {"celery": "5.6.3", "kombu": "5.5.0"}
    holds = [Hold("celery", "5.6.3", "5.7.0", "scheduled__2026-12-06"), Hold("brand-new", None, "2.0", "r1")]
    pins = held_pins(resolved, current, holds)
    assert pins == {"celery": "5.6.3", "kombu": "5.6.0"}
    lines = hold_lines(holds)
    assert "brand-new!=2.0" in lines
    text = "\n".join(["# header", *lines, *(f"{n}=={v}" for n, v in pins.items())]) + "\n"
    assert parse_holds(text) == {"celery": "5.7.0", "brand-new": "2.0"}
    assert parse_pins(text) == pins  # the hold comments are no pins
