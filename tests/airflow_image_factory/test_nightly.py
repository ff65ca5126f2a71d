import pytest

from airflow_image_factory.policy.constraints import PinChange
from airflow_image_factory.policy.nightly import BaseFindings, DependencyFindings, decide, revision_reason

UP = "localhost:5000/library/python:3.11-slim-bookworm"
OURS = "localhost:5000/apache/airflow/main/python:3.11-slim-bookworm"
SAME_DEPS = DependencyFindings(resolved_count=140, upgrades=(), constraints_source="3.11", own_file=True)


def base(**kw):
    values = {"upstream": UP, "upstream_digest": "sha256:new", "published": OURS, "published_present": True,
              "recorded_digest": "sha256:new"}
    return BaseFindings(**(values | kw))


def test_nothing_changed_means_no_rebuild_and_says_why():
    decision = decide("3.11", base=base(), dependencies=SAME_DEPS)
    assert not decision.rebuild
    line = decision.log_line()
    assert line.startswith("Python 3.11: up to date, nothing to do")
    assert "Python base unchanged (sha256:new)" in line and "all 140 dependencies match" in line


def test_a_new_upstream_digest_rebuilds():
    decision = decide("3.11", base=base(recorded_digest="sha256:old"), dependencies=SAME_DEPS)
    assert decision.rebuild
    assert "our base was built on sha256:old" in decision.log_line()


def test_missing_published_base_or_images_rebuild():
    assert decide("3.11", base=base(published_present=False, recorded_digest=None), dependencies=SAME_DEPS).rebuild
    decision = decide("3.11", base=base(), dependencies=SAME_DEPS, missing_images=["x/ci/python3.11:latest"])
    assert decision.rebuild and "not published yet: x/ci/python3.11:latest" in decision.reasons


@pytest.mark.parametrize(
    ("upstream_python", "published_python", "rebuild"),
    [("3.11.2 (main)", "3.11.2 (main)", False), ("3.11.9 (main)", "3.11.2 (main)", True), (None, None, True)],
)
def test_without_the_label_the_seeds_sys_version_comparison_decides(upstream_python, published_python, rebuild):
    findings = base(recorded_digest=None, upstream_python=upstream_python, published_python=published_python)
    assert findings.needs_fallback
    assert decide("3.11", base=findings, dependencies=SAME_DEPS).rebuild is rebuild


def test_newer_dependencies_rebuild_and_are_listed():
    deps = DependencyFindings(
        resolved_count=140, upgrades=tuple(PinChange(f"p{i}", "1", "2") for i in range(10)),
        constraints_source="3.11", own_file=True,
    )
    decision = decide("3.11", base=base(), dependencies=deps)
    assert decision.rebuild
    assert "10 of 140 dependencies have newer versions than constraints-3.11.txt: p0 1 -> 2" in decision.log_line()
    assert "and 2 more" in decision.log_line()


def test_a_new_python_version_without_its_own_file_rebuilds_to_create_it():
    deps = DependencyFindings(resolved_count=140, upgrades=(), constraints_source="3.11", own_file=False)
    decision = decide("3.13", base=base(), dependencies=deps)
    assert decision.rebuild and "no constraints-3.13.txt yet (starting from constraints-3.11.txt)" in decision.reasons


def test_no_constraints_at_all_rebuilds():
    deps = DependencyFindings(resolved_count=140, upgrades=(), constraints_source=None, own_file=False)
    assert decide("3.11", base=base(), dependencies=deps).rebuild


def test_latest_images_of_an_older_commit_rebuild_and_say_which():
    head = "b" * 40
    moved = revision_reason(head, {"r/ci/python3.11:latest": "a" * 40, "r/prod/python3.11:latest": head})
    decision = decide("3.11", base=base(), dependencies=SAME_DEPS, revision=moved)
    assert decision.rebuild
    assert f"the branch head moved to {'b' * 12}: r/ci/python3.11:latest is of {'a' * 12}" in decision.log_line()
    same = revision_reason(head, {"r/ci/python3.11:latest": head, "r/prod/python3.11:latest": head})
    assert not decide("3.11", base=base(), dependencies=SAME_DEPS, revision=same).rebuild
    unlabelled = revision_reason(head, {"r/ci/python3.11:latest": None})
    assert unlabelled[0] and "an unknown commit" in unlabelled[1]
