"""One Docker-reference parser (reference.py); the naming, operator and engine splits delegate to it.

The edge each former parser must get right: ``localhost:5000/a/b`` holds a port colon, not a tag.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_image_factory import reference, registry
from airflow_image_factory.engine import Engine, name_and_tag
from airflow_image_factory.naming import split_repository
from airflow_image_factory.operators import _repo_and_tag
from airflow_image_factory.reference import ImageReference, parse_reference, split_domain, split_tag

DIGEST = "sha256:" + "a" * 64


def test_registry_re_exports_the_one_parser():
    assert registry.parse_reference is reference.parse_reference
    assert registry.split_image_reference is reference.parse_reference
    assert registry.ImageReference is reference.ImageReference
    assert registry.is_digest is reference.is_digest
    assert registry.DOCKER_HUB == reference.DOCKER_HUB == "docker.io"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost:5000/a/b", ("localhost:5000/a/b", None, None)),
        ("localhost:5000/a/b:t", ("localhost:5000/a/b", "t", None)),
        (f"localhost:5000/a/b@{DIGEST}", ("localhost:5000/a/b", None, DIGEST)),
        (f"localhost:5000/a/b:t@{DIGEST}", ("localhost:5000/a/b", "t", DIGEST)),
        ("python:3.12", ("python", "3.12", None)),
        ("python", ("python", None, None)),
    ],
)
def test_split_tag(image, expected):
    assert split_tag(image) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("localhost:5000/a/b", ("localhost:5000", "a/b")),
        ("localhost/a", ("localhost", "a")),
        ("ghcr.io/apache/airflow", ("ghcr.io", "apache/airflow")),
        ("apache/airflow", (None, "apache/airflow")),
        ("python", (None, "python")),
    ],
)
def test_split_domain(name, expected):
    assert split_domain(name) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("localhost:5000/a/b", ImageReference("localhost:5000", "a/b", "latest")),
        ("localhost:5000/a/b:t", ImageReference("localhost:5000", "a/b", "t")),
        (f"localhost:5000/a/b@{DIGEST}", ImageReference("localhost:5000", "a/b", DIGEST)),
    ],
)
def test_parse_reference_port_is_not_a_tag(image, expected):
    assert parse_reference(image) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("localhost:5000/a/b", ("localhost:5000", "a/b")),
        # Unchanged by the delegation: the host as written, Docker Hub's library/ for one component.
        ("index.docker.io/library/python", ("index.docker.io", "library/python")),
        ("python", ("docker.io", "library/python")),
    ],
)
def test_naming_split_repository_delegates(name, expected):
    assert split_repository(name) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("localhost:5000/a/b", ("a/b", "latest")),
        ("localhost:5000/a/b:t", ("a/b", "t")),
        (f"localhost:5000/a/b@{DIGEST}", ("a/b", DIGEST)),
    ],
)
def test_operators_repo_and_tag_delegates(ref, expected):
    assert _repo_and_tag(ref) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        # A plain rpartition(":") made ("localhost", "5000/a/b") of this one.
        ("localhost:5000/a/b", ("localhost:5000/a/b", "latest")),
        ("localhost:5000/a/b:t", ("localhost:5000/a/b", "t")),
        ("ghcr.io/apache/airflow/main/ci/python3.12:latest", ("ghcr.io/apache/airflow/main/ci/python3.12", "latest")),
    ],
)
def test_engine_name_and_tag(ref, expected):
    assert name_and_tag(ref) == expected


class _FakeDocker:
    """Records what the engine hands the Docker SDK."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.api = SimpleNamespace(push=self._push)
        self.images = SimpleNamespace(pull=self._pull, get=self._get)

    def _push(self, name, *, tag, **_):
        self.calls.append(("push", name, tag))
        return iter([{"aux": {"Digest": DIGEST}}])

    def _pull(self, name, *, tag, **_):
        self.calls.append(("pull", name, tag))
        return SimpleNamespace(id="sha256:image")

    def _get(self, image):
        return SimpleNamespace(tag=lambda name, tag: self.calls.append(("tag", image, name, tag)) or True)


@pytest.fixture
def engine():
    engine = Engine.__new__(Engine)  # no daemon: only the calls into the Docker SDK are looked at
    engine.client = _FakeDocker()
    return engine


def test_engine_push_pull_and_tag_keep_the_port(engine):
    assert engine.push("localhost:5000/a/b:t", retries=1) == DIGEST
    engine.push("localhost:5000/a/b", retries=1)
    engine.pull("localhost:5000/a/b:t")
    engine.pull(f"localhost:5000/a/b@{DIGEST}")
    engine.tag("sha256:image", "localhost:5000/a/b")
    assert engine.client.calls == [
        ("push", "localhost:5000/a/b", "t"),
        ("push", "localhost:5000/a/b", "latest"),
        ("pull", "localhost:5000/a/b", "t"),
        ("pull", f"localhost:5000/a/b@{DIGEST}", None),
        ("tag", "sha256:image", "localhost:5000/a/b", "latest"),
    ]
