"""One Docker-reference parser (reference.py); the naming, operator, engine, asset and request code use it.

The edge each former parser must get right: ``localhost:5000/a/b`` holds a port colon, not a tag.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_image_factory.clients import engine as engine_module
from airflow_image_factory.clients import registry
from airflow_image_factory.clients.engine import Engine
from airflow_image_factory.policy import naming, reference
from airflow_image_factory.policy.reference import (
    ImageReference,
    is_path_component,
    is_repository,
    is_tag,
    name_and_tag,
    parse_reference,
    repository_and_reference,
    split_domain,
    split_repository,
    split_tag,
)
from airflow_image_factory.tasks.assets import image_asset

DIGEST = "sha256:" + "a" * 64


def test_registry_re_exports_the_one_parser():
    assert registry.parse_reference is reference.parse_reference
    assert registry.split_image_reference is reference.parse_reference
    assert registry.ImageReference is reference.ImageReference
    assert registry.is_digest is reference.is_digest
    assert registry.DOCKER_HUB == reference.DOCKER_HUB == "docker.io"


def test_the_naming_and_the_engine_use_the_parsers_of_reference():
    assert naming.split_repository is reference.split_repository
    assert engine_module.name_and_tag is reference.name_and_tag


PACKAGE = Path(reference.__file__).resolve().parents[1]


def _imported_modules(module: str) -> set[str]:
    """Every module ``module`` (a path under the package, ``tasks/links``) imports, at the top or inside a
    function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "module",
    ["policy/housekeeping", "tasks/links", "tasks/assets", "policy/naming", "policy/request", "tasks/operators"],
)
def test_reference_readers_do_not_import_the_registry_client_to_parse(module):
    # The registry client pulls in requests and urllib3; reading a reference needs only reference.py.
    imported = _imported_modules(module)
    assert "airflow_image_factory.policy.reference" in imported
    if module != "tasks/operators":  # the operators talk to registries; they import the client for that
        assert "airflow_image_factory.clients.registry" not in imported


@pytest.mark.parametrize(
    "module",
    [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
     if path.name not in ("reference.py", "__init__.py")],
)
def test_no_module_but_reference_spells_the_reference_grammar(module):
    # The lower-case path component of distribution's grammar, spelled once (reference.py).
    text = (PACKAGE / module).read_text()
    assert "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*" not in text


@pytest.mark.parametrize(
    ("text", "component", "repository", "tag"),
    [
        ("python3.12", True, True, True),
        ("ci-manifest", True, True, True),
        ("a__b", True, True, True),
        ("apache/airflow", False, True, False),
        ("Apache", False, False, True),
        ("-x", False, False, False),
        ("x-", False, False, True),
        ("", False, False, False),
        ("a//b", False, False, False),
        ("_x", False, False, True),
        ("x" * 129, True, True, False),
    ],
)
def test_grammar_checks(text, component, repository, tag):
    assert is_path_component(text) is component
    assert is_repository(text) is repository
    assert is_tag(text) is tag


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
def test_split_repository(name, expected):
    assert split_repository(name) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("localhost:5000/a/b", ("a/b", "latest")),
        ("localhost:5000/a/b:t", ("a/b", "t")),
        (f"localhost:5000/a/b@{DIGEST}", ("a/b", DIGEST)),
    ],
)
def test_repository_and_reference(ref, expected):
    assert repository_and_reference(ref) == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        # A plain rpartition(":") made ("localhost", "5000/a/b") of this one.
        ("localhost:5000/a/b", ("localhost:5000/a/b", "latest")),
        ("localhost:5000/a/b:t", ("localhost:5000/a/b", "t")),
        ("ghcr.io/apache/airflow/main/ci/python3.12:latest", ("ghcr.io/apache/airflow/main/ci/python3.12", "latest")),
    ],
)
def test_name_and_tag(ref, expected):
    assert name_and_tag(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "localhost:5000/a/b:t", "ghcr.io/apache/airflow:latest", "python:3.12", "a/b:", "x:y:z",
        "localhost:5000/a/b", "ghcr.io/apache/airflow", "a/b:c/d", "python",
    ],
)
def test_an_asset_names_a_tag_as_the_former_rpartition_did(ref):
    # image_asset's check was rpartition(":") with no "/" after the colon; split_tag says the same.
    _, sep, tag = ref.rpartition(":")
    had_tag = bool(sep) and "/" not in tag
    try:
        image_asset(ref)
    except ValueError:
        assert not had_tag
    else:
        assert had_tag


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


@pytest.mark.parametrize("registry", ["localhost:5000", "ghcr.io", "docker.io"])
@pytest.mark.parametrize("tag", ["3.3.2-python3.11", "latest", "3.3-python3.12"])
def test_a_release_reads_the_tag_back_from_the_reference_it_made(registry, tag):
    # PublishReleaseOperator names the asset of each published row by the tag of its image reference.
    ref = naming.release_image(registry, "apache/airflow").ref(tag)
    assert name_and_tag(ref)[1] == tag == ref.rpartition(":")[2]
