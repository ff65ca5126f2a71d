"""Release policy: the tags a release publishes (a table), rebuilds after a new Python base, and the
release request's rules. Pure: no registry, no engine."""

from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import InvalidBuildRequests, ReleaseRefused
from airflow_image_factory.release import (
    ReleasedImage,
    ReleaseRequest,
    is_newest,
    plan_rebuilds,
    plan_release_tags,
    released_images,
    validate_release_request,
)
from airflow_image_factory.settings import load_settings

SETTINGS = load_settings(env={})
PYS = ("3.11", "3.13")


def tags_of(version, existing, pythons=PYS, default="3.11"):
    return {(t.tag, t.python) for t in plan_release_tags(version, pythons, default, existing)}


FULL_332 = {("3.3.2-python3.11", "3.11"), ("3.3.2-python3.13", "3.13"), ("3.3-python3.11", "3.11"),
            ("3.3-python3.13", "3.13"), ("3.3.2", "3.11"), ("latest", "3.11")}


@pytest.mark.parametrize(
    ("version", "existing", "expected"),
    [
        # first release into an empty repository: all four kinds of tags
        ("3.3.2", [], FULL_332),
        # newer than everything there
        ("3.3.2", ["3.3.1", "3.3.1-python3.11", "3.2.9", "latest", "3.3-python3.11"], FULL_332),
        # republishing the newest (a rebuild with a new base) moves its tags again
        ("3.3.2", ["3.3.2", "3.3.2-python3.11", "3.3.1"], FULL_332),
        # a patch of an older line: its own X.Y moves, latest stays with 3.3.x
        ("3.2.10", ["3.3.2", "3.2.9", "3.2.9-python3.11"],
         {("3.2.10-python3.11", "3.11"), ("3.2.10-python3.13", "3.13"), ("3.2-python3.11", "3.11"),
          ("3.2-python3.13", "3.13"), ("3.2.10", "3.11")}),
        # a back-port older than its line's newest: neither X.Y nor latest move back
        ("3.2.8", ["3.3.2", "3.2.9"],
         {("3.2.8-python3.11", "3.11"), ("3.2.8-python3.13", "3.13"), ("3.2.8", "3.11")}),
        # newer only per-Python tags exist (the default Python's bare tag may be missing): still older
        ("3.3.1", ["3.3.2-python3.13"],
         {("3.3.1-python3.11", "3.11"), ("3.3.1-python3.13", "3.13"), ("3.3.1", "3.11")}),
        # version order is numeric, not lexical
        ("3.10.0", ["3.9.5", "3.9.5-python3.11"],
         {("3.10.0-python3.11", "3.11"), ("3.10.0-python3.13", "3.13"), ("3.10-python3.11", "3.11"),
          ("3.10-python3.13", "3.13"), ("3.10.0", "3.11"), ("latest", "3.11")}),
        # a release candidate gets only its own tags, and never blocks a final release
        ("3.4.0rc1", ["3.3.2"],
         {("3.4.0rc1-python3.11", "3.11"), ("3.4.0rc1-python3.13", "3.13"), ("3.4.0rc1", "3.11")}),
        ("3.3.2", ["3.4.0rc1", "3.4.0rc1-python3.11", "nightly", "3.3-python3.11"], FULL_332),
    ],
)
def test_release_tags(version, existing, expected):
    assert tags_of(version, existing) == expected


def test_default_python_gets_the_bare_version_and_latest():
    tags = tags_of("3.3.2", [], default="3.13")
    assert ("3.3.2", "3.13") in tags and ("latest", "3.13") in tags


def test_default_python_must_be_released():
    with pytest.raises(ReleaseRefused, match="default Python"):
        plan_release_tags("3.3.2", PYS, "3.12", [])


def test_is_newest():
    assert is_newest("3.3.2", [])
    assert not is_newest("3.3.2", ["3.3.3-python3.11"])
    assert is_newest("3.2.10", ["3.3.0", "3.2.9"], same_minor=True)
    assert not is_newest("3.3.0rc1", [])


# ---- rebuilds ----------------------------------------------------------------------------------


def test_released_images_reads_per_python_release_tags_only():
    tags = ["latest", "3.3.2", "3.3-python3.11", "3.3.2-python3.11", "3.3.2-python3.13", "3.2.9-python3.11",
            "3.4.0rc1-python3.11", "main"]
    assert released_images(tags) == [("3.2.9", "3.11"), ("3.3.2", "3.11"), ("3.3.2", "3.13")]


OLD, NEW, OTHER = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


@pytest.mark.parametrize(
    ("released", "current", "newest_only", "expected"),
    [
        # the base moved: rebuild; it did not: leave alone
        ([ReleasedImage("3.3.2", "3.11", OLD), ReleasedImage("3.3.2", "3.13", OTHER)],
         {"3.11": NEW, "3.13": OTHER}, False, ["3.3.2-python3.11"]),
        # every released patch on that Python, or only the newest of each X.Y line
        ([ReleasedImage("3.3.1", "3.11", OLD), ReleasedImage("3.3.2", "3.11", OLD),
          ReleasedImage("3.2.9", "3.11", OLD)],
         {"3.11": NEW}, False, ["3.2.9-python3.11", "3.3.1-python3.11", "3.3.2-python3.11"]),
        ([ReleasedImage("3.3.1", "3.11", OLD), ReleasedImage("3.3.2", "3.11", OLD),
          ReleasedImage("3.2.9", "3.11", OLD)],
         {"3.11": NEW}, True, ["3.2.9-python3.11", "3.3.2-python3.11"]),
        # nothing recorded, or no current digest for that Python: nothing says it is stale
        ([ReleasedImage("3.3.2", "3.11", None), ReleasedImage("3.3.2", "3.10", OLD)], {"3.11": NEW}, False, []),
        ([], {"3.11": NEW}, False, []),
    ],
)
def test_plan_rebuilds(released, current, newest_only, expected):
    rebuilds = plan_rebuilds(released, current, newest_patch_only=newest_only)
    assert [r.tag for r in rebuilds] == expected
    assert all(r.new_base_digest == current[r.python] for r in rebuilds)


# ---- the request -------------------------------------------------------------------------------


def test_release_request_defaults_and_constraints():
    r = validate_release_request({"version": "3.3.2", "python_versions": ["3.11", "3.13"],
                                  "default_python": "3.11", "registry": "localhost:5000"}, SETTINGS)
    assert r.constraints_for("3.13") == (
        "https://raw.githubusercontent.com/apache/airflow/constraints-3.3.2/constraints-3.13.txt"
    )
    assert r.build["airflow_version"] == "3.3.2" and r.build["branch"] == "main" and r.build["push"] is True
    assert ReleaseRequest.from_dict(r.to_dict()) == r
    none = validate_release_request({"version": "3.3.2", "default_python": "3.12", "constraints_url": ""}, SETTINGS)
    assert none.constraints_for("3.12") == ""


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"version": "3.3"}, "version"),
        ({"version": "3.3.2.dev0"}, "version"),
        ({"version": "latest"}, "version"),
        ({"default_python": "3.10", "python_versions": ["3.11"]}, "default_python"),
        ({"python_versions": ["2.7"]}, "python_versions"),
        ({"repository": "Bad Repo"}, "repository"),
        ({"cache_branch": "no spaces"}, "cache_branch"),
        ({"constraints_url": "https://x/{branch}.txt"}, "constraints_url"),
        ({"constraints_url": "ftp://x/c.txt"}, "constraints_url"),
        ({"sha": "abc"}, "sha"),
    ],
)
def test_bad_release_request_names_the_field(conf, field):
    with pytest.raises(InvalidBuildRequests) as info:
        validate_release_request({"default_python": "3.12", **conf}, SETTINGS)
    assert field in [e.field for e in info.value.errors]
    assert str(info.value).startswith("invalid release request")
