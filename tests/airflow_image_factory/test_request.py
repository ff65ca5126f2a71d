"""Every bad value is rejected with the field's name; good values come out normalised."""

from __future__ import annotations

import pytest

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.request import BuildRequest, validate_request
from airflow_image_factory.settings import load_settings

SETTINGS = load_settings(env={})


def valid(**conf):
    return validate_request(conf, SETTINGS)


def test_defaults_make_a_valid_request():
    request = valid()
    assert request.branch == "main"
    assert request.registry == "ghcr.io"
    assert request.repository == "apache/airflow"
    assert request.cache == "pulled"
    assert request.commit_sha is None
    assert request.debian["3.13"] == "trixie" and request.debian["3.11"] == "bookworm"
    assert request.python_base_source == "docker.io/library/python"


def test_values_are_normalised():
    request = valid(
        repository="Apache/Airflow", registry="LOCALHOST:5000", commit_sha="ABCDEF1", test_command="  ",
        python_versions=["3.13", "3.11"],
    )
    assert request.repository == "apache/airflow"
    assert request.registry == "localhost:5000"
    assert request.commit_sha == "abcdef1"
    assert request.test_command is None
    assert request.python_versions == ("3.13", "3.11")


def test_round_trip_through_xcom_dict():
    request = valid(branch="v2-1-test", commit_sha="a" * 40, test_command="pytest -k 'not slow'")
    assert BuildRequest.from_dict(request.to_dict()) == request
    assert request.with_sha("b" * 40).commit_sha == "b" * 40


@pytest.mark.parametrize(
    "branch", ["main", "v2-1-test", "feature/new-image", "release_3.3", "a", "constraints-main"]
)
def test_good_branches(branch):
    assert valid(branch=branch).branch == branch


BAD = [
    ("branch", ""),
    ("branch", "has space"),
    ("branch", "a..b"),
    ("branch", "Main"),
    ("branch", "main;rm -rf /"),
    ("branch", "$(reboot)"),
    ("branch", "`id`"),
    ("branch", "-main"),
    ("branch", "main/"),
    ("branch", "x.lock"),
    ("branch", "a//b"),
    ("branch", "tag@{1}"),
    ("branch", "a" * 101),
    ("branch", 7),
    ("branch", None),
    ("python_versions", []),
    ("python_versions", "3.11"),
    ("python_versions", ["3.11", "3.11"]),
    ("python_versions", ["3.99"]),
    ("python_versions", ["2.7"]),
    ("python_versions", ["3.11; id"]),
    ("python_versions", [3.11]),
    ("registry", "ghcr io"),
    ("registry", "https://ghcr.io"),
    ("registry", "localhost:99999"),
    ("registry", "ghcr.io/apache"),
    ("registry", ""),
    ("repository", "apache//airflow"),
    ("repository", "apache/air flow"),
    ("repository", "apache/airflow;ls"),
    ("repository", "-apache/airflow"),
    ("source_repo", "--upload-pack=evil"),
    ("source_repo", "https://example.com/repo.git; rm -rf /"),
    ("source_repo", "relative/path"),
    ("source_repo", "/srv/../etc"),
    ("source_repo", "https://exa mple.com/x"),
    ("commit_sha", "not-a-sha"),
    ("commit_sha", "abc"),
    ("commit_sha", "g" * 40),
    ("commit_sha", 12345678),
    ("cache", "remote"),
    ("cache", ""),
    ("push", "yes"),
    ("push", 1),
    ("upgrade_to_newer_dependencies", "false"),
    ("airflow_version", "latest"),
    ("airflow_version", "3.3"),
    ("airflow_version", "3.3.2; id"),
    ("test_command", ["pytest"]),
    ("test_command", "a\x00b"),
    ("naming", "dash"),
    ("unknown_field", "x"),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}"[:60] for f, v in BAD])
def test_bad_values_name_their_field(field, value):
    with pytest.raises(InvalidBuildRequest) as error:
        valid(**{field: value})
    assert error.value.field == field
    assert field in str(error.value)


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(InvalidBuildRequests) as error:
        valid(branch="Bad Branch", cache="nope", commit_sha="xyz")
    assert {e.field for e in error.value.errors} == {"branch", "cache", "commit_sha"}
    message = str(error.value)
    assert "branch" in message and "cache" in message and "commit_sha" in message


def test_allowed_extra_fields_pass():
    assert validate_request({"dry_run": True}, SETTINGS, allowed_extra=("dry_run",)).branch == "main"
