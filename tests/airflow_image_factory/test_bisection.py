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
        assert probes[:2] == [tuple(sorted(upgrades)), ()]  # every upgrade fails, none passes: confirmed first


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


def test_upgrades_that_pass_together_cost_one_probe():
    """The usual nightly: its upgrades break nothing, so the probe with all of them is the only one."""
    verdict, probes, _ = _search(_names(5), lambda s: False)
    assert verdict.kind == "upgrades_pass" and probes == [tuple(_names(5))]


def test_the_state_is_only_the_results_so_names_are_normalised_and_order_does_not_matter():
    first = next_step(["Foo_Bar", "baz"], {})
    assert first.probes == (("baz", "foo-bar"),)
    assert next_step(["baz", "foo-bar"], {("foo-bar", "baz"): False}).probes == ((),)
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


# ---- the nightly's rounds and holds -------------------------------------------------------------------

from airflow_image_factory.policy.bisection import (  # noqa: E402 - the rounds' part of the module, below
    HOLD_PREFIX,
    UNDECIDED,
    bisection_search,
    bisection_summary,
    culprit_holds,
    next_round,
    recorded_hold_lines,
    rounds_needed,
    standing_holds,
    verdict_of,
    with_holds,
)
from airflow_image_factory.policy.constraints import render  # noqa: E402


def _rounds(searches: dict[str, list[str]], fails: dict[str, set[str]], rounds: int) -> tuple[dict, list[dict]]:
    """The DAG's rounds, simulated: each round asks next_round, a fake probe 'fails' when it upgrades every
    package of that version's planted set; the verdict is read after the last round."""
    probed: list[dict] = []
    for number in range(rounds):
        probes = next_round(searches, probed)
        if not probes:
            break
        assert len([p for p in probes if p["python"] == "3.11"]) <= 2  # two build side by side per version
        probed += [{**p, "round": number, "passed": not fails[p["python"]] <= set(p["upgraded"]),
                    "output_tail": f"FAILED {sorted(fails[p['python']])}"} for p in probes]
    return {python: verdict_of(upgrades, probed, python) for python, upgrades in searches.items()}, probed


def test_the_rounds_find_the_one_planted_culprit_among_500_upgrades_within_the_default_rounds():
    from airflow_image_factory.clients.settings_loader import load_settings

    rounds = load_settings(env={}).bisection_rounds
    upgrades = [f"pkg-{i:03d}" for i in range(500)]
    for culprit in ("pkg-000", "pkg-137", "pkg-499"):
        verdicts, probed = _rounds({"3.11": upgrades, "3.13": upgrades[:40]},
                                   {"3.11": {culprit}, "3.13": {"pkg-007"}}, rounds)
        assert verdicts["3.11"].culprits == (culprit,) and verdicts["3.13"].culprits == ("pkg-007",)
        mine = [p for p in probed if p["python"] == "3.11"]
        assert len(mine) <= probe_budget(500)
        assert max(p["round"] for p in mine) + 1 <= rounds_needed(500) == 11


def test_the_default_rounds_bound_an_interacting_pair_among_512_upgrades():
    from airflow_image_factory.clients.settings_loader import load_settings

    rounds = load_settings(env={}).bisection_rounds
    assert rounds >= rounds_needed(512, interacting=2) == 19
    upgrades = [f"pkg-{i:03d}" for i in range(512)]
    for pair in ({"pkg-000", "pkg-511"}, {"pkg-255", "pkg-256"}, {"pkg-100", "pkg-101"}):
        verdicts, _ = _rounds({"3.11": upgrades}, {"3.11": pair}, rounds)
        assert set(verdicts["3.11"].culprits) == pair


def test_rounds_that_run_out_hold_nothing():
    upgrades = [f"pkg-{i:03d}" for i in range(64)]
    verdicts, _ = _rounds({"3.11": upgrades}, {"3.11": {"pkg-031"}}, rounds=3)
    assert verdicts["3.11"].kind == UNDECIDED and verdicts["3.11"].culprits == ()


def test_a_probe_that_could_not_run_leaves_its_search_undecided():
    probed = [{"python": "3.11", "upgraded": [], "passed": True}]  # the 'every upgrade' probe never came back
    assert verdict_of(["a", "b"], probed, "3.11").kind == UNDECIDED
    assert next_round({"3.11": ["a", "b"]}, probed) == [{"python": "3.11", "upgraded": ["a", "b"]}]


CURRENT = "# header\ncelery==5.6.3\nkombu==5.5.0\nredis==6.0.0\n"


def test_a_search_is_what_the_probes_need_and_nothing_upgraded_is_no_search():
    upgraded = "# newest\ncelery==5.7.0\nkombu==5.5.0\nredis==6.1.0\nbrand-new==1.0\n"
    search = bisection_search(CURRENT, upgraded, "reg/ci/python3.11@sha256:1")
    assert search == {"current": CURRENT, "resolved": {"celery": "5.7.0", "kombu": "5.5.0", "redis": "6.1.0",
                                                      "brand-new": "1.0"},
                      "upgrades": ["brand-new", "celery", "redis"], "ci_image": "reg/ci/python3.11@sha256:1"}
    assert bisection_search(CURRENT, CURRENT, "reg/ci/python3.11@sha256:1") is None


def _held_file(run_id: str = "scheduled__1") -> str:
    """The rebuild's constraints after a verdict named celery 5.7.0 and the new brand-new 1.0."""
    resolved = {"celery": "5.7.0", "kombu": "5.6.0", "redis": "6.0.0", "brand-new": "1.0"}
    upgraded = render(resolved, python="3.11", airflow_version="3.4.0.dev0", sha="a" * 40, generated="now",
                      source="the resolver")
    verdict = verdict_of(["brand-new", "celery", "kombu"], [
        {"python": "3.11", "upgraded": [], "passed": True},
        {"python": "3.11", "upgraded": ["brand-new", "celery", "kombu"], "passed": False},
        {"python": "3.11", "upgraded": ["brand-new"], "passed": True},
        {"python": "3.11", "upgraded": ["celery", "kombu"], "passed": True},
        {"python": "3.11", "upgraded": ["brand-new", "celery"], "passed": False},
        {"python": "3.11", "upgraded": ["brand-new", "kombu"], "passed": True},
    ], "3.11")
    assert verdict.culprits == ("brand-new", "celery")
    holds = culprit_holds(verdict, parse_pins(CURRENT), resolved, run_id)
    return with_holds(upgraded, parse_pins(CURRENT), holds)


def test_held_constraints_keep_the_culprits_the_header_and_name_why():
    text = _held_file()
    assert text.startswith("#\n# Constraints for Apache Airflow 3.4.0.dev0 on Python 3.11")
    assert parse_pins(text) == {"celery": "5.6.3", "kombu": "5.6.0", "redis": "6.0.0"}
    assert "brand-new!=1.0" in text.splitlines()
    assert f"{HOLD_PREFIX}celery==5.7.0 failed the tests (run scheduled__1)" in text
    assert parse_holds(text) == {"celery": "5.7.0", "brand-new": "1.0"}


def test_hold_lines_survive_into_the_constraints_generated_from_the_tested_image():
    """pip freeze knows nothing of holds: the generated file carries the lines of the file the image was
    built with, so the committed file names them and a later nightly reads them."""
    built_with = _held_file()
    freeze = {"celery": "5.6.3", "kombu": "5.6.0", "redis": "6.0.0", "pytest": "8.4.0"}
    committed = render(freeze, python="3.11", airflow_version="3.4.0.dev0", sha="a" * 40, generated="later",
                       source="pip freeze", notes=recorded_hold_lines(built_with))
    assert parse_holds(committed) == {"celery": "5.7.0", "brand-new": "1.0"}
    assert "brand-new!=1.0" in committed.splitlines()
    assert parse_pins(committed) == freeze
    assert recorded_hold_lines(CURRENT) == []


def test_a_held_package_is_retried_only_when_a_newer_version_appears():
    committed = _held_file()
    # the next nightly: celery and brand-new still newest at the versions that failed; redis moved
    same = {"celery": "5.7.0", "kombu": "5.6.0", "redis": "6.2.0", "brand-new": "1.0"}
    pins, lines = standing_holds(committed, same)
    assert pins == {"celery": "5.6.3", "kombu": "5.6.0", "redis": "6.2.0"}  # held: no upgrade to probe
    assert lines == recorded_hold_lines(committed)
    search = bisection_search(committed, "\n".join(f"{n}=={v}" for n, v in pins.items()), "ci@sha256:1")
    assert search["upgrades"] == ["redis"]
    # a newer celery: an upgrade candidate again, and its hold is not carried (a pass lifts it)
    newer = {**same, "celery": "5.7.1"}
    pins, lines = standing_holds(committed, newer)
    assert pins["celery"] == "5.7.1" and "brand-new" not in pins
    assert parse_holds("\n".join(lines)) == {"brand-new": "1.0"} and "brand-new!=1.0" in lines
    assert "celery" in bisection_search(committed, "\n".join(f"{n}=={v}" for n, v in pins.items()),
                                        "ci@sha256:1")["upgrades"]


def test_the_summary_names_the_culprit_its_failing_output_and_the_probes():
    upgrades = [f"pkg-{i:02d}" for i in range(8)]
    verdicts, probed = _rounds({"3.11": upgrades, "3.13": upgrades}, {"3.11": {"pkg-05"}, "3.13": {"not-an-upgrade"}},
                               rounds=19)
    assert verdicts["3.13"].kind == "upgrades_pass"
    resolved = {name: "2.0" for name in upgrades}
    holds = {"3.11": culprit_holds(verdicts["3.11"], {name: "1.0" for name in upgrades}, resolved, "r1")}
    summary = bisection_summary(branch="main", run_id="r1", verdicts=verdicts, holds=holds, probed=probed)
    assert summary["versions"]["3.11"]["held"] == [{"name": "pkg-05", "kept": "1.0", "failed": "2.0"}]
    assert summary["versions"]["3.11"]["output_tail"] == "FAILED ['pkg-05']"
    assert summary["versions"]["3.13"]["held"] == []
    text = summary["text"]
    assert "Python 3.11: culprit pkg-05==2.0 (kept at 1.0)" in text and "| FAILED ['pkg-05']" in text
    assert "Python 3.13: every upgrade together passed" in text
    # round 0 probes every upgrade, round 1 none: both in the table
    assert text.count("\n      0  3.11") == 1 and text.count("\n      1  3.11") == 1
    assert len(summary["probes"]) == len(probed) and {"round", "python", "upgraded", "passed"} == set(
        summary["probes"][0])


def test_a_probe_image_is_local_and_named_by_its_upgrades():
    from airflow_image_factory.policy.naming import probe_image

    ref = probe_image("Feature/X", "3.11", ["b", "a"])
    assert ref.startswith("local-airflow-ci-probe/feature/x/python3.11:probe-")
    assert ref == probe_image("Feature/X", "3.11", ["a", "b", "a"]) != probe_image("Feature/X", "3.11", ["a"])
