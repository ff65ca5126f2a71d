"""DAG params → one validated :class:`BuildRequest`. Every rule and message about input lives here.

Knows nothing of Airflow, Docker or HTTP. Values that pass validation are safe to use as git refs,
image path components and argv items: no value is ever interpolated into a shell.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.settings import Settings, plain

PARAM_NAMES = (
    "branch",
    "python_versions",
    "registry",
    "repository",
    "source_repo",
    "commit_sha",
    "cache",
    "push",
    "upgrade_to_newer_dependencies",
    "airflow_version",
    "test_command",
    "naming",
)

CACHE_MODES = ("pulled", "local", "disabled")

# One path component of an image name (distribution's reference grammar).
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
_REGISTRY = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::(?P<port>\d{{1,5}}))?")
_PYTHON_VERSION = re.compile(r"3\.\d{1,2}")
_SHA = re.compile(r"[0-9a-f]{7,40}")
_AIRFLOW_VERSION = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?")
# Characters a git URL or path may hold here; nothing a shell or git would read as syntax.
_SOURCE_REPO_CHARS = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+")
_SOURCE_REPO_FORMS = re.compile(r"(?:https?|ssh|git|file)://[^/\s]*/?.*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:.+|/.+")
_GIT_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
MAX_BRANCH_LENGTH = 100
MAX_TEST_COMMAND_LENGTH = 4000


def _branch_error(value: str) -> str | None:
    """git check-ref-format rules plus image-path rules (the branch becomes part of image names)."""
    if not value:
        return "must not be empty"
    if len(value) > MAX_BRANCH_LENGTH:
        return f"must be at most {MAX_BRANCH_LENGTH} characters"
    if _GIT_REF_FORBIDDEN.search(value):
        return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if ".." in value or "@{" in value or "//" in value:
        return "must not contain '..', '@{' or '//'"
    if value.startswith(("/", "-", ".")) or value.endswith(("/", ".", ".lock")):
        return "must not start with '/', '-' or '.', nor end with '/', '.' or '.lock'"
    if value != value.lower():
        return "must be lower case (it becomes part of image names, which registries require lower case)"
    for component in value.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            return (
                f"component {component!r} is not a valid image path component "
                "(lower-case letters, digits, and '.', '_', '-' between them)"
            )
    return None


_Record = TypeVar("_Record", bound="RequestRecord")


class RequestRecord:
    """A frozen request as it travels between tasks: a plain dict (lists, dicts) out, tuples back in."""

    python_versions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[_Record], data: Mapping[str, Any]) -> _Record:
        return cls(**{**data, "python_versions": tuple(data["python_versions"])})


@dataclass(frozen=True)
class BuildRequest(RequestRecord):
    """Everything a run needs to know, validated once; travels between tasks as a plain dict."""

    branch: str
    python_versions: tuple[str, ...]
    registry: str
    repository: str
    source_repo: str
    commit_sha: str | None
    cache: str
    push: bool
    upgrade_to_newer_dependencies: bool
    airflow_version: str
    test_command: str | None
    naming: str
    # Derived from settings at validation time, so later tasks never re-read settings.
    debian: Mapping[str, str] = field(default_factory=dict)
    python_base_source: str = "docker.io/library/python"

    def with_sha(self, sha: str) -> BuildRequest:
        return BuildRequest.from_dict({**self.to_dict(), "commit_sha": sha})


def validate_request(
    conf: Mapping[str, Any] | None, settings: Settings, *, allowed_extra: tuple[str, ...] = ()
) -> BuildRequest:
    """Merge ``conf`` over the settings' defaults and validate every field.

    Raises :class:`InvalidBuildRequests` listing every bad field at once.
    """
    from airflow_image_factory.naming import CONVENTIONS

    conf = dict(conf or {})
    errors: list[InvalidBuildRequest] = []

    def fail(name: str, message: str) -> None:
        errors.append(InvalidBuildRequest(name, message))

    unknown = sorted(set(conf) - set(PARAM_NAMES) - set(allowed_extra))
    for name in unknown:
        fail(name, f"unknown field; known fields are {', '.join(PARAM_NAMES)}")

    values = {**settings.request_defaults(), **{k: v for k, v in conf.items() if k in PARAM_NAMES}}

    def text(name: str, *, optional: bool = False) -> str | None:
        value = values.get(name)
        if value is None or (optional and value == ""):
            if optional:
                return None
            fail(name, "is required")
            return None
        if not isinstance(value, str):
            fail(name, f"must be a string, got {type(value).__name__}")
            return None
        return value

    def flag(name: str) -> bool:
        value = values.get(name)
        if not isinstance(value, bool):
            fail(name, f"must be true or false, got {value!r}")
            return False
        return value

    branch = text("branch")
    if branch is not None and (problem := _branch_error(branch)):
        fail("branch", problem)

    python_versions: tuple[str, ...] = ()
    raw_versions = values.get("python_versions")
    if not isinstance(raw_versions, (list, tuple)) or not raw_versions:
        fail("python_versions", f'must be a non-empty list like ["3.11", "3.13"], got {raw_versions!r}')
    else:
        seen: list[str] = []
        for item in raw_versions:
            if not isinstance(item, str) or not _PYTHON_VERSION.fullmatch(item):
                fail("python_versions", f'{item!r} is not a Python version of the form "3.Y"')
            elif item not in settings.supported_python_versions:
                fail(
                    "python_versions",
                    f"{item} is not supported; supported: {', '.join(settings.supported_python_versions)}",
                )
            elif item in seen:
                fail("python_versions", f"{item} is listed twice")
            else:
                seen.append(item)
        python_versions = tuple(seen)

    registry = text("registry")
    if registry is not None:
        registry = registry.lower()
        match = _REGISTRY.fullmatch(registry)
        if not match:
            fail("registry", f"{registry!r} is not a registry host[:port] such as ghcr.io or localhost:5000")
        elif match.group("port") and not 0 < int(match.group("port")) < 65536:
            fail("registry", f"port {match.group('port')} is out of range")

    repository = text("repository")
    if repository is not None:
        # Registries require lower case; the seeds lower-case the GitHub repository the same way.
        repository = repository.lower()
        if not repository or not all(_PATH_COMPONENT.fullmatch(c) for c in repository.split("/")):
            fail("repository", f"{repository!r} is not an image repository path such as apache/airflow")

    source_repo = text("source_repo")
    if source_repo is not None:
        if source_repo.startswith("-") or not _SOURCE_REPO_CHARS.fullmatch(source_repo):
            fail(
                "source_repo",
                "must be a git URL or an absolute path without spaces, quotes or shell characters",
            )
        elif ".." in source_repo.split("/") or not _SOURCE_REPO_FORMS.fullmatch(source_repo):
            fail(
                "source_repo",
                f"{source_repo!r} is neither a git URL (https://, ssh://, git://, file://, user@host:path) "
                "nor an absolute path",
            )

    commit_sha = text("commit_sha", optional=True)
    if commit_sha is not None:
        commit_sha = commit_sha.lower()
        if not _SHA.fullmatch(commit_sha):
            fail("commit_sha", f"{commit_sha!r} is not a hexadecimal commit id of 7 to 40 characters")

    cache = text("cache")
    if cache is not None and cache not in CACHE_MODES:
        fail("cache", f"{cache!r} is not one of {', '.join(CACHE_MODES)}")

    push = flag("push")
    upgrade = flag("upgrade_to_newer_dependencies")

    airflow_version = text("airflow_version")
    if airflow_version is not None and not _AIRFLOW_VERSION.fullmatch(airflow_version):
        fail("airflow_version", f"{airflow_version!r} is not a release version such as 3.3.2 or 3.4.0rc1")

    test_command = text("test_command", optional=True)
    if test_command is not None:
        if "\x00" in test_command:
            fail("test_command", "must not contain NUL characters")
        elif len(test_command) > MAX_TEST_COMMAND_LENGTH:
            fail("test_command", f"must be at most {MAX_TEST_COMMAND_LENGTH} characters")
        elif not test_command.strip():
            test_command = None

    naming = text("naming")
    if naming is not None and naming not in CONVENTIONS:
        fail("naming", f"{naming!r} is not one of {', '.join(CONVENTIONS)}")

    if errors:
        raise InvalidBuildRequests(errors)
    return BuildRequest(
        branch=branch,
        python_versions=python_versions,
        registry=registry,
        repository=repository,
        source_repo=source_repo,
        commit_sha=commit_sha,
        cache=cache,
        push=push,
        upgrade_to_newer_dependencies=upgrade,
        airflow_version=airflow_version,
        test_command=test_command,
        naming=naming,
        debian={version: settings.debian_for(version) for version in python_versions},
        python_base_source=settings.python_base_source,
    )
