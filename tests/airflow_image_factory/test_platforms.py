"""Platforms as a matrix axis, the pure part: the param and the ci_platforms setting, the tags each
platform's image gets, the cache a platform's build may take, and which platforms each image is built for."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import InvalidBuildRequests
from airflow_image_factory.policy.cache import plan_cache
from airflow_image_factory.policy.platforms import (
    arch_of,
    built_platforms,
    is_index,
    platform_tag,
    platform_tags,
    platforms_for,
)
from airflow_image_factory.policy.release import validate_release_request
from airflow_image_factory.policy.request import BuildRequest, validate_request

SETTINGS = load_settings(env={})
BOTH = ["linux/amd64", "linux/arm64"]


def test_one_platform_keeps_the_plain_sha_tag_several_get_one_tag_each_under_the_index():
    assert platform_tags("abc", ["linux/amd64"]) == {"linux/amd64": "abc"}
    assert platform_tags("abc", ["linux/arm64"]) == {"linux/arm64": "abc"}
    assert platform_tags("abc", BOTH) == {"linux/amd64": "abc-amd64", "linux/arm64": "abc-arm64"}
    assert platform_tag("latest", "linux/arm64/v8") == "latest-arm64-v8" and arch_of("linux/amd64") == "amd64"
    assert not is_index(["linux/arm64"]) and is_index(BOTH)


def test_the_param_defaults_to_amd64_and_keeps_one_order_whatever_the_confs():
    assert validate_request({}, SETTINGS).platforms == ("linux/amd64",)
    assert validate_request({"platforms": ["linux/arm64", "linux/amd64"]}, SETTINGS).platforms == tuple(BOTH)
    # the nightly and release DAGs (and the form's default) read the platforms setting
    both = dataclasses.replace(SETTINGS, platforms=tuple(BOTH))
    assert validate_request({}, both).platforms == tuple(BOTH)
    assert BuildRequest.from_dict(validate_request({}, both).to_dict()).platforms == tuple(BOTH)
    release = validate_release_request({"version": "3.3.2"}, both)
    assert release.build["platforms"] == BOTH


@pytest.mark.parametrize("value", [["linux/s390x"], [], "linux/arm64", ["linux/arm64", "linux/arm64"], [None]])
def test_a_bad_platforms_value_names_the_field(value):
    with pytest.raises(InvalidBuildRequests) as error:
        validate_request({"platforms": value}, SETTINGS)
    assert [e.field for e in error.value.errors] == ["platforms"]


def test_the_ci_image_has_its_own_platforms_from_the_settings():
    request = validate_request({"platforms": BOTH}, SETTINGS)
    assert platforms_for(request, "ci") == platforms_for(request, "ci-manifest") == ("linux/amd64",)
    assert platforms_for(request, "prod-slim") == tuple(BOTH) and platforms_for(request, None) == tuple(BOTH)
    with pytest.raises(InvalidBuildRequests, match="ci_platforms setting") as error:
        validate_request({}, dataclasses.replace(SETTINGS, ci_platforms=("linux/ppc64le",)))
    assert [e.field for e in error.value.errors] == ["ci_platforms"]


def test_a_platforms_cache_is_pinned_to_the_manifest_found_for_it():
    refs = ["r/prod-build:latest", "r/prod:latest"]
    plan = plan_cache("pulled", refs, {refs[0]: True, refs[1]: False}, resolved={refs[0]: "r/prod-build@sha256:aa"})
    assert plan.cache_from == ("r/prod-build@sha256:aa",) and "r/prod-build@sha256:aa" in plan.notes[0]
    # none for this platform (an amd64-only latest, for an arm64 build): the local cache, said so
    assert plan_cache("pulled", refs, {}, resolved={}).effective.value == "local"


def test_a_build_summary_reads_as_its_platforms():
    single = {"image": "r:abc", "platform": "linux/amd64"}
    assert built_platforms(single) == [single]
    multi = {"image": "r:abc", "platforms": [{"image": "r:abc-amd64"}, {"image": "r:abc-arm64"}]}
    assert [p["image"] for p in built_platforms(multi)] == ["r:abc-amd64", "r:abc-arm64"]
    assert built_platforms(None) == []
