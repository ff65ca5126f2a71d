"""The retag plan and its input rules: pure, no registry."""

from __future__ import annotations

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequests, RetagRefused
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.policy.retag import (
    COPY,
    UNCHANGED,
    decide_retag,
    format_actions,
    plan_retag,
    validate_retag_request,
)

SETTINGS = load_settings(env={})


def request(**conf):
    return validate_retag_request({"target_branch": "v3-3-test", **conf}, SETTINGS)


def test_defaults_and_normalisation():
    r = request(registry="LOCALHOST:5000", repository="Apache/Airflow", python_versions=["3.11", "3.13"])
    assert (r.source_branch, r.target_branch) == ("main", "v3-3-test")
    assert (r.registry, r.repository, r.naming, r.dry_run) == ("localhost:5000", "apache/airflow", "slash", False)
    assert r.debian == {"3.11": "bookworm", "3.13": "trixie"}


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"target_branch": ""}, "target_branch"),
        ({"target_branch": "main"}, "target_branch"),
        ({"target_branch": "V3-Test"}, "target_branch"),
        ({"target_branch": "a..b"}, "target_branch"),
        ({"source_branch": "bad branch"}, "source_branch"),
        ({"python_versions": ["3.9"]}, "python_versions"),
        ({"python_versions": []}, "python_versions"),
        ({"registry": "not a host"}, "registry"),
        ({"repository": "UPPER/../x"}, "repository"),
        ({"naming": "dots"}, "naming"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"push": True}, "push"),  # a build field is not a retag field
    ],
)
def test_bad_values_name_the_field(conf, field):
    with pytest.raises(InvalidBuildRequests) as info:
        request(**conf)
    assert field in [e.field for e in info.value.errors]
    assert str(info.value).startswith("invalid retag request")


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidBuildRequests) as info:
        validate_retag_request({"target_branch": "", "dry_run": 1, "python_versions": ["2.7"]}, SETTINGS)
    assert {e.field for e in info.value.errors} == {"target_branch", "dry_run", "python_versions"}


def test_plan_covers_the_five_images_of_every_version_in_slash_names():
    steps = plan_retag(request(registry="localhost:5000", python_versions=["3.11", "3.13"]))
    assert len(steps) == 10
    pairs = {(s.source_ref, s.target_ref) for s in steps}
    assert (
        "localhost:5000/apache/airflow/main/ci/python3.11:latest",
        "localhost:5000/apache/airflow/v3-3-test/ci/python3.11:latest",
    ) in pairs
    assert (
        "localhost:5000/apache/airflow/main/python:3.13-slim-trixie",
        "localhost:5000/apache/airflow/v3-3-test/python:3.13-slim-trixie",
    ) in pairs
    assert {s.kind for s in steps} == {
        ImageKind.CI, ImageKind.CI_MANIFEST, ImageKind.PROD, ImageKind.PROD_BUILD, ImageKind.PYTHON_BASE
    }


def test_plan_follows_the_naming_convention():
    steps = plan_retag(request(naming="ghcr-v2", python_versions=["3.11"]))
    targets = {s.target_ref for s in steps}
    assert "ghcr.io/apache/airflow-v3-3-test-python3.11-ci-v2:latest" in targets
    assert "ghcr.io/apache/airflow-python-v2:3.11-slim-bookworm" in targets


def test_decide_copies_what_differs_and_leaves_the_rest():
    steps = plan_retag(request(python_versions=["3.11"]))
    sources = {s.source_ref: f"sha256:{i:064x}" for i, s in enumerate(steps)}
    targets = {steps[0].target_ref: sources[steps[0].source_ref], steps[1].target_ref: "sha256:" + "f" * 64}
    actions = decide_retag(steps, sources, targets)
    assert [a.action for a in actions] == [UNCHANGED] + [COPY] * (len(steps) - 1)
    assert actions[1].previous == "sha256:" + "f" * 64
    assert all(a.digest == sources[a.step.source_ref] for a in actions)
    table = format_actions(actions, dry_run=True)
    assert "would copy" in table and "unchanged" in table and steps[1].target_ref in table


def test_a_missing_source_refuses_the_whole_retag():
    steps = plan_retag(request(python_versions=["3.11"]))
    sources = {s.source_ref: "sha256:" + "a" * 64 for s in steps}
    sources[steps[2].source_ref] = None
    with pytest.raises(RetagRefused, match="nothing was copied"):
        decide_retag(steps, sources, {})


def test_request_round_trips_through_xcom_form():
    r = request(python_versions=["3.11"], dry_run=True)
    assert type(r).from_dict(r.to_dict()) == r


# ---- hardening: the conf's shape, git's ref rules, capped messages --------------------------------


@pytest.mark.parametrize("conf", [["target_branch", "v3-3-test"], "v3-3-test", 3, [], ""])
def test_a_retag_conf_that_is_not_an_object_is_refused(conf):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_retag_request(conf, SETTINGS)
    assert str(info.value).startswith("invalid retag request (conf): conf: must be an object")


@pytest.mark.parametrize("branch", ["v3.lock/test", "v3/.x", "release.lock/3"])
def test_branch_components_git_refuses_are_refused(branch):
    for field in ("target_branch", "source_branch"):
        with pytest.raises(InvalidBuildRequests) as info:
            request(**{field: branch})
        assert [e.field for e in info.value.errors] == [field]


def test_deep_or_huge_retag_values_name_their_field_in_short_messages():
    deep: object = "v3"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidBuildRequests) as info:
        validate_retag_request({"target_branch": deep, "source_branch": "m" * 100_000, "z" * 5000: 1,
                                "dry_run": ["x" * 1000]}, SETTINGS)
    from airflow_image_factory.policy.request import show_name

    assert {e.field for e in info.value.errors} == {"target_branch", "source_branch", show_name("z" * 5000), "dry_run"}
    assert len(show_name("z" * 5000)) <= 40
    assert all(len(str(e)) < 300 for e in info.value.errors)
    # the refused target_branch is reported for its shape only, not also as missing
    assert [e.message for e in info.value.errors if e.field == "target_branch"] == [
        "is nested more than 32 levels deep"
    ]


def test_a_retag_copies_each_requested_variant_with_its_build_stage():
    both = validate_retag_request({"target_branch": "v3-3-test", "python_versions": ["3.11"],
                                   "variants": ["slim", "regular"]}, load_settings(env={}))
    kinds = [step.kind for step in plan_retag(both)]
    assert kinds == [ImageKind.CI_MANIFEST, ImageKind.CI, ImageKind.PROD_BUILD, ImageKind.PROD,
                     ImageKind.PROD_SLIM_BUILD, ImageKind.PROD_SLIM, ImageKind.PYTHON_BASE]
    regular = validate_retag_request({"target_branch": "v3-3-test", "python_versions": ["3.11"]}, load_settings(env={}))
    assert ImageKind.PROD_SLIM not in {step.kind for step in plan_retag(regular)}
