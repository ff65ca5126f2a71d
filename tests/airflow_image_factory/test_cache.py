from __future__ import annotations

import pytest

from airflow_image_factory.cache import CacheStrategy, plan_cache
from airflow_image_factory.exceptions import CacheImageMissing

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
