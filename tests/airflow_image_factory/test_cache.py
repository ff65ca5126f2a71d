from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import CacheImageMissing
from airflow_image_factory.policy.cache import CacheStrategy, plan_cache, plan_reuse, plan_ui_assets, reuse_blocker

PROD = "ghcr.io/apache/airflow/main/prod/python3.11:latest"
BUILD = "ghcr.io/apache/airflow/main/prod-build/python3.11:latest"


def test_pulled_uses_every_present_image():
    plan = plan_cache("pulled", [BUILD, PROD], {BUILD: True, PROD: True})
    assert plan.effective is CacheStrategy.PULLED
    assert plan.cache_from == (BUILD, PROD)
    assert not plan.no_cache and plan.inline_cache


def test_pulled_falls_back_to_local_when_latest_does_not_exist_yet():
    plan = plan_cache("pulled", [BUILD, PROD], {})
    assert plan.requested is CacheStrategy.PULLED
    assert plan.effective is CacheStrategy.LOCAL
    assert plan.cache_from == ()
    assert "switching to 'local'" in plan.notes[0]
    assert BUILD in plan.notes[0]


def test_pulled_keeps_what_exists_and_names_what_does_not():
    plan = plan_cache("pulled", [BUILD, PROD], {PROD: True})
    assert plan.effective is CacheStrategy.PULLED
    assert plan.cache_from == (PROD,)
    assert any(BUILD in note for note in plan.notes)


def test_pulled_fails_when_a_specific_tag_is_missing():
    ref = "ghcr.io/apache/airflow/main/ci/python3.11:0123abc"
    with pytest.raises(CacheImageMissing, match="0123abc"):
        plan_cache("pulled", [ref], {ref: False}, tag="0123abc")


def test_pulled_with_a_specific_tag_present():
    ref = "ghcr.io/apache/airflow/main/ci/python3.11:0123abc"
    assert plan_cache("pulled", [ref], {ref: True}, tag="0123abc").cache_from == (ref,)


def test_local_ignores_the_registry():
    plan = plan_cache("local", [PROD], {PROD: True})
    assert plan.effective is CacheStrategy.LOCAL and plan.cache_from == () and not plan.no_cache


def test_disabled_builds_without_cache():
    plan = plan_cache(CacheStrategy.DISABLED, [PROD], {PROD: True})
    assert plan.no_cache and plan.cache_from == ()
    assert plan.to_dict()["effective"] == "disabled"


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError):
        plan_cache("remote", [], {})


def test_a_branch_other_than_main_also_reuses_mains_cache_after_its_own():
    from airflow_image_factory.clients.settings_loader import load_settings
    from airflow_image_factory.policy.cache import cache_images
    from airflow_image_factory.policy.naming import ImageKind, images_for
    from airflow_image_factory.policy.request import validate_request

    settings = load_settings(env={})
    feature = validate_request({"branch": "v3-1-test", "python_versions": ["3.11"]}, settings)
    main = validate_request({"branch": "main", "python_versions": ["3.11"]}, settings)
    refs = cache_images(ImageKind.PROD, images_for(feature, "3.11"), images_for(main, "3.11"))
    assert refs == [
        "ghcr.io/apache/airflow/v3-1-test/prod-build/python3.11:latest",
        "ghcr.io/apache/airflow/v3-1-test/prod/python3.11:latest",
        BUILD,
        PROD,
    ]
    assert cache_images(ImageKind.CI, images_for(main, "3.11")) == ["ghcr.io/apache/airflow/main/ci/python3.11:latest"]


# ---- the compiled UI ------------------------------------------------------------------------------

UI_REF = "reg.example/apache/airflow/ui-assets:" + "k" * 64


@pytest.mark.parametrize(
    ("strategy", "present", "may_push", "source", "publish_first", "no_cache"),
    [
        ("pulled", True, True, "image", False, False),  # the registry has it: no UI is compiled
        ("pulled", True, False, "image", False, False),  # read-only use, even when nothing is pushed
        ("pulled", False, True, "image", True, False),  # compiled once, pushed, then taken from there
        ("pulled", False, False, "build", False, False),  # nothing may be pushed: compiled in the build
        ("disabled", True, True, "image", True, True),  # every layer built: compiled anew
        ("disabled", False, False, "build", False, True),
        ("local", True, True, "build", False, False),  # the registry is not asked
        ("local", False, False, "build", False, False),
    ],
)
def test_where_the_compiled_ui_comes_from(strategy, present, may_push, source, publish_first, no_cache):
    plan = plan_ui_assets(strategy, UI_REF, present, may_push=may_push)
    assert (plan.source.value, plan.publish_first, plan.no_cache) == (source, publish_first, no_cache)
    assert plan.note.startswith("compiled UI")


# ---- build avoidance by content key -------------------------------------------------------------

KEY = "a" * 64


@pytest.mark.parametrize(
    ("strategy", "key", "rebuild", "push", "blocked_by"),
    [
        ("pulled", KEY, False, True, None),
        ("pulled", KEY, True, True, "rebuild"),
        ("local", KEY, False, True, "cache is local"),
        ("disabled", KEY, False, True, "cache is disabled"),
        ("pulled", KEY, False, False, "push is off"),
        ("pulled", None, False, True, "eager upgrade"),
    ],
)
def test_when_a_build_may_reuse_a_published_image(strategy, key, rebuild, push, blocked_by):
    why = reuse_blocker(strategy, key, rebuild=rebuild, push=push)
    if blocked_by is None:
        assert why is None
    else:
        assert why is not None and blocked_by in why


def test_reuse_takes_the_first_candidate_published_under_the_key():
    sha, latest = "reg/ci:abc", "reg/ci:latest"
    assert plan_reuse([sha, latest], {sha: KEY, latest: KEY}, KEY).reuse == sha
    assert plan_reuse([sha, latest], {sha: None, latest: KEY}, KEY).reuse == latest
    assert plan_reuse([sha, latest], {latest: KEY}, KEY).reuse == latest  # :SHA not published


def test_no_reuse_when_no_candidate_carries_the_key():
    plan = plan_reuse(["reg/ci:abc", "reg/ci:latest"], {"reg/ci:abc": None, "reg/ci:latest": "b" * 64}, KEY)
    assert plan.reuse is None
    assert "building" in plan.note and "bbbbbbbbbbbb" in plan.note
