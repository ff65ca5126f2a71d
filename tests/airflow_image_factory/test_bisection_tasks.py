"""The nightly's bisection tasks without Airflow services or an engine: the round and verdict task bodies
with a stand-in context, the probe operator over a fake engine, and the constraints generated from a held
image."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_image_factory.clients.engine import RunResult
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.bisection import HOLD_PREFIX, parse_holds
from airflow_image_factory.policy.constraints import parse_pins, render
from tests.services.fakes import FakeProbeEngine

CURRENT = "# current\ncelery==5.6.3\nkombu==5.5.0\nredis==6.0.0\n"
RESOLVED = {"celery": "5.7.0", "kombu": "5.6.0", "redis": "6.0.0"}
UPGRADED = render(RESOLVED, python="3.11", airflow_version="3.4.0.dev0", sha="a" * 40, generated="now",
                  source="the resolver's newest allowed versions")
CI = "localhost:5000/apache/airflow/main/ci/python3.11@sha256:" + "1" * 64
PLAN = {
    "rebuild": ["3.11"], "constraints": {"3.11": UPGRADED}, "decisions": [],
    "bisection": {"3.11": {"current": CURRENT, "resolved": RESOLVED, "upgrades": ["celery", "kombu"],
                           "ci_image": CI}},
}
REQUEST = {"branch": "main", "python_versions": ["3.11"]}


class Events:
    def __init__(self):
        self.added = []

    def add(self, asset, extra=None):
        self.added.append((asset, extra))


@pytest.fixture
def context(monkeypatch):
    from airflow_image_factory.tasks import assets, groups

    events = Events()
    monkeypatch.setattr(groups, "get_current_context", lambda: {
        "run_id": "scheduled__2026-12-07", "outlet_events": {assets.UPGRADE_BLOCKED_ALIAS: events}})
    return events


def _result(upgraded, passed, number=0):
    return {"python": "3.11", "round": number, "upgraded": sorted(upgraded), "passed": passed,
            "output_tail": "" if passed else "E   AssertionError: celery 5.7.0"}


def test_round_zero_probes_every_upgrade_and_a_round_with_nothing_to_probe_skips():
    from airflow.sdk.exceptions import AirflowSkipException

    from airflow_image_factory.tasks.groups import bisection_round

    assert bisection_round.function(REQUEST, PLAN, probed=[]) == [{"python": "3.11", "upgraded": ["celery", "kombu"]}]
    # every upgrade passes: nothing to bisect; later rounds skip
    passed = [[_result(["celery", "kombu"], True)]]
    with pytest.raises(AirflowSkipException):
        bisection_round.function(REQUEST, PLAN, probed=passed)
    # a plan without searches (a base image rebuild): round 0 already skips
    with pytest.raises(AirflowSkipException):
        bisection_round.function(REQUEST, {**PLAN, "bisection": {}}, probed=[])


def test_a_later_round_reads_every_earlier_rounds_results_a_skipped_round_gave_none():
    from airflow_image_factory.tasks.groups import bisection_round

    round0 = [_result([], True), _result(["celery", "kombu"], False)]
    # one mapped instance comes as the value itself; a skipped round as None
    halves = [{"python": "3.11", "upgraded": ["celery"]}, {"python": "3.11", "upgraded": ["kombu"]}]
    assert bisection_round.function(REQUEST, PLAN, probed=[round0]) == halves
    assert bisection_round.function(REQUEST, PLAN, probed=[round0[0], None, round0[1]]) == halves


def test_the_verdict_holds_the_culprit_says_it_and_emits_the_blocked_event(context, caplog):
    from airflow_image_factory.tasks.assets import UPGRADE_BLOCKED
    from airflow_image_factory.tasks.groups import bisection_verdict, upgraded_constraints

    probed = [[_result([], True), _result(["celery", "kombu"], False)],
              [_result(["celery"], False, 1), _result(["kombu"], True, 1)], None]
    with caplog.at_level("INFO"):
        verdict = bisection_verdict.function(REQUEST, PLAN, probed=probed)
    held = verdict["constraints"]["3.11"]
    assert parse_pins(held) == {"celery": "5.6.3", "kombu": "5.6.0", "redis": "6.0.0"}
    assert f"{HOLD_PREFIX}celery==5.7.0 failed the tests (run scheduled__2026-12-07)" in held
    assert held.startswith("#\n# Constraints for Apache Airflow 3.4.0.dev0 on Python 3.11")
    # the rebuild installs the held set
    assert upgraded_constraints.function(PLAN, verdict) == {"3.11": held}
    summary = verdict["summary"]
    assert summary["versions"]["3.11"]["culprits"] == ["celery"]
    assert summary["versions"]["3.11"]["output_tail"] == "E   AssertionError: celery 5.7.0"
    assert [(a, e) for a, e in context.added] == [(UPGRADE_BLOCKED, summary)]
    assert "culprit celery==5.7.0 (kept at 5.6.3)" in caplog.text and "ROUND  PYTHON" in caplog.text


@pytest.mark.parametrize(
    ("probed", "kind"),
    [
        ([[_result(["celery", "kombu"], True)]], "upgrades_pass"),
        ([[_result(["celery", "kombu"], False)], [_result([], True)]], "undecided"),  # the rounds ran out
        ([None], "undecided"),  # round 0's probes failed to run (engine, registry): nothing held
    ],
)
def test_without_culprits_nothing_is_held_and_no_event_is_emitted(context, probed, kind):
    from airflow_image_factory.tasks.groups import bisection_verdict, upgraded_constraints

    verdict = bisection_verdict.function(REQUEST, PLAN, probed=probed)
    assert verdict["constraints"] == {} and context.added == []
    assert verdict["summary"]["versions"]["3.11"]["kind"] == kind
    assert upgraded_constraints.function(PLAN, verdict) == {"3.11": UPGRADED}


def test_tests_failing_without_any_upgrade_stop_the_branch_after_saying_so(context, caplog):
    """All or nothing: a version that cannot pass with its current constraints publishes nothing, so no
    version of the branch is built; the summary (with the failing output of the probe of none) is logged
    first, and no hold or event is made."""
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_image_factory.exceptions import TestsFailWithoutUpgrades
    from airflow_image_factory.tasks.groups import bisection_verdict

    probed = [[_result(["celery", "kombu"], False)], [_result([], False)]]
    # permanent: Airflow fails the task without a retry (the probes would only say it again)
    with caplog.at_level("INFO"), pytest.raises(AirflowFailException) as raised:
        bisection_verdict.function(REQUEST, PLAN, probed=probed)
    assert "Python 3.11: the tests fail with the branch's current constraints" in str(raised.value)
    assert "nothing of main is built or published" in str(raised.value)
    assert isinstance(raised.value.__cause__, TestsFailWithoutUpgrades)
    assert "the tests fail with the current constraints too" in caplog.text
    assert "| E   AssertionError: celery 5.7.0" in caplog.text  # the probe of none's output
    assert context.added == []


def test_a_verdict_after_a_failed_check_holds_nothing(context):
    from airflow_image_factory.tasks.groups import bisection_verdict

    assert bisection_verdict.function(None, None, probed=[None])["constraints"] == {}


@pytest.fixture
def engine(monkeypatch):
    from airflow_image_factory.tasks import nightly_operators

    fake = FakeProbeEngine(run=RunResult(1, "collected 9 items\nE   AssertionError: celery 5.7.0 breaks it"))
    monkeypatch.setattr(nightly_operators, "run_settings", lambda: load_settings(env={}))
    monkeypatch.setattr(nightly_operators, "EngineHook", lambda settings: SimpleNamespace(get_conn=lambda: fake))
    monkeypatch.setattr(nightly_operators.ProbeUpgradesOperator, "registry_hook",
                        lambda self, settings, registry=None: SimpleNamespace(credentials=("bot", "secret")))
    return fake


def _request(**kw):
    from airflow_image_factory.policy.request import validate_request

    conf = {"branch": "main", "python_versions": ["3.11"], "registry": "localhost:5000", **kw}
    return {**validate_request(conf, load_settings(env={})).to_dict(), "commit_sha": "a" * 40}


def test_the_probe_operator_installs_the_upgrade_set_at_its_versions_and_reports_a_failure(engine):
    from airflow_image_factory.tasks.nightly_operators import ProbeUpgradesOperator

    probe = ProbeUpgradesOperator(task_id="probe_upgrades_1", build_request=_request(test_command="pytest -x"),
                                  plan=PLAN, python="3.11", upgraded=["celery"], round_number=1)
    result = probe.execute({})
    assert result == {"python": "3.11", "round": 1, "upgraded": ["celery"], "passed": False,
                      "output_tail": result["output_tail"]}
    assert result["output_tail"].endswith("E   AssertionError: celery 5.7.0 breaks it")
    [spec] = engine.built
    assert spec.build_args == {"CI_IMAGE": CI}  # the published CI image, by digest
    # the whole upgrade set at this probe's versions: celery upgraded, kombu at its current pin
    assert engine.contexts["probe/requirements.txt"] == "celery==5.7.0\nkombu==5.5.0\n"
    assert engine.contexts["probe/constraints.txt"] == "celery==5.7.0\nkombu==5.5.0\nredis==6.0.0\n"
    assert engine.runs == [(spec.tags[0], ("bash", "-c", "pytest -x"))]  # the run's test command, as verify_ci
    assert engine.removed == [spec.tags[0]] and spec.tags[0].startswith("local-airflow-ci-probe/main/python3.11:")
    assert engine.logins == [{"localhost:5000": ("bot", "secret")}]  # to pull the CI image


def test_the_probe_operator_is_retried_on_an_engine_fault_not_counted_as_failed(engine):
    from airflow_image_factory.exceptions import EngineError
    from airflow_image_factory.tasks.nightly_operators import ProbeUpgradesOperator

    engine._run = EngineError("the Docker engine does not answer")
    probe = ProbeUpgradesOperator(task_id="probe_upgrades_0", build_request=_request(), plan=PLAN, python="3.11",
                                  upgraded=[], round_number=0)
    with pytest.raises(EngineError):
        probe.execute({})
    # the empty probe: the upgrade set at the current constraints, whatever the CI image holds
    assert engine.contexts["probe/requirements.txt"] == "celery==5.6.3\nkombu==5.5.0\n"


def test_constraints_generated_from_a_held_image_keep_the_hold_lines(monkeypatch):
    from airflow_image_factory.tasks import nightly_operators

    held = (f"#\n# Constraints\n#\n{HOLD_PREFIX}celery==5.7.0 failed the tests (run r1)\n"
            "celery==5.6.3\nkombu==5.6.0\n")
    freeze = RunResult(0, "celery==5.6.3\nkombu==5.6.0\npytest==8.4.0\n-e file:///opt/airflow\n")
    image = SimpleNamespace(
        has_image=lambda ref: True, inspect=lambda ref: {"Config": {"Labels": {}}},
        run=lambda ref, command, on_line, timeout: freeze,
    )
    monkeypatch.setattr(nightly_operators, "run_settings", lambda: load_settings(env={}))
    monkeypatch.setattr(nightly_operators, "EngineHook", lambda settings: SimpleNamespace(get_conn=lambda: image))
    generate = nightly_operators.GenerateConstraintsOperator(
        task_id="constraints", build_request=_request(), python="3.11", constraints={"3.11": held})
    text = generate.execute({})["text"]
    assert parse_holds(text) == {"celery": "5.7.0"}
    assert parse_pins(text) == {"celery": "5.6.3", "kombu": "5.6.0", "pytest": "8.4.0"}


def _decide(current: str, resolved: dict[str, str], *, base_moved: bool = False):
    from airflow_image_factory.policy.nightly import BaseFindings
    from airflow_image_factory.tasks.nightly_operators import CheckForUpdatesOperator

    check = CheckForUpdatesOperator(task_id="check_for_updates", build_request=_request())
    base = BaseFindings("up", "sha256:new", "ours", True, "sha256:old" if base_moved else "sha256:new")
    upgraded: dict[str, str] = {}
    decision = check._decide("3.11", SimpleNamespace(version="3.4.0.dev0"), {"3.11": current}, base, [], None,
                             resolved, upgraded)
    return decision, upgraded.get("3.11")


def test_a_standing_hold_is_no_upgrade_and_a_rebuild_for_another_reason_keeps_it():
    held = f"# c\n{HOLD_PREFIX}celery==5.7.0 failed the tests (run r1)\ncelery==5.6.3\nkombu==5.6.0\n"
    decision, upgraded = _decide(held, {"celery": "5.7.0", "kombu": "5.6.0"})
    assert not decision.rebuild and upgraded is None  # the newest celery is still the one that failed
    decision, upgraded = _decide(held, {"celery": "5.7.0", "kombu": "5.6.0"}, base_moved=True)
    assert decision.rebuild and parse_pins(upgraded) == {"celery": "5.6.3", "kombu": "5.6.0"}
    assert parse_holds(upgraded) == {"celery": "5.7.0"}  # carried: the committed file still names it
    decision, upgraded = _decide(held, {"celery": "5.7.1", "kombu": "5.6.0"})
    assert decision.rebuild and parse_pins(upgraded)["celery"] == "5.7.1" and parse_holds(upgraded) == {}
