"""DAG params → one validated :class:`BuildRequest`. Every rule and message about input lives here.

Knows nothing of Airflow, Docker or HTTP. Values that pass validation are safe to use as git refs,
image path components and argv items: no value is ever interpolated into a shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.naming import CONVENTIONS, VARIANTS
from airflow_image_factory.policy.platforms import (
    DEFAULT_PLATFORMS,
    SUPPORTED_PLATFORMS,
    in_platform_order,
)
from airflow_image_factory.policy.reference import is_path_component
from airflow_image_factory.policy.schema import (  # noqa: F401 - the conf screening is imported from here too
    MAX_SHOWN,
    Fail,
    Field,
    RequestSchema,
    conf_object,
    invalid,
    refuse,
    screen_conf,
    show,
    show_name,
)
from airflow_image_factory.policy.settings import DEFAULT_PYTHON_BASE_UPSTREAM, PARAM_NAMES, Settings, plain  # noqa: F401

CACHE_MODES = ("pulled", "local", "disabled")

# Every pattern is ASCII-only (re.ASCII): \d must not match other scripts' digits (FULLWIDTH DIGIT THREE).
# An image path component is checked by reference.is_path_component (explicit [a-z0-9] ranges: ASCII too).
_HOST_LABEL = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
_REGISTRY = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::(?P<port>\d{{1,5}}))?", re.ASCII)
_PYTHON_VERSION = re.compile(r"3\.\d{1,2}", re.ASCII)
_SHA = re.compile(r"[0-9a-f]{7,40}")
_AIRFLOW_VERSION = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?", re.ASCII)
# Characters a git URL or path may hold here; nothing a shell or git would read as syntax.
_SOURCE_REPO_CHARS = re.compile(r"[A-Za-z0-9._~:/@%+=,-]+", re.ASCII)
_SOURCE_REPO_FORMS = re.compile(r"(?:https?|ssh|git|file)://[^/\s]*/?.*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:.+|/.+")
_SOURCE_REPO_URL = re.compile(r"(?P<scheme>[a-z]+)://(?P<authority>[^/]*)(?P<path>.*)", re.ASCII)
_SOURCE_REPO_SCP = re.compile(r"(?P<user>[^@/:]+)@(?P<host>[^:/]+):(?P<path>.+)", re.ASCII)
# A host name as git hands it to ssh or a socket: letters/digits/'-' labels; never starting with '-'.
_GIT_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_GIT_HOST = re.compile(rf"{_GIT_LABEL}(?:\.{_GIT_LABEL})*", re.ASCII)
_GIT_USER = re.compile(r"[A-Za-z0-9._~][A-Za-z0-9._~-]*", re.ASCII)
_GIT_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
MAX_BRANCH_LENGTH = 100
MAX_TEST_COMMAND_LENGTH = 4000
MAX_SOURCE_REPO_LENGTH = 1000
MAX_VERSION_LENGTH = 40


def version_error(value: str, pattern: re.Pattern[str], example: str) -> str | None:
    """None when ``value`` matches ``pattern`` and is its own canonical PEP 440 form (``3.3.2``, not
    ``03.3.2`` or ``3.3.02``, whose tags would differ from the version installed)."""
    if len(value) > MAX_VERSION_LENGTH or not pattern.fullmatch(value):
        return f"{show(value)} is not a {example}"
    try:
        canonical = str(Version(value))
    except InvalidVersion:
        return f"{show(value)} is not a {example}"
    if canonical != value:
        return f"{show(value)} is not in canonical form: write {show(canonical)}"
    return None


def _source_repo_error(value: str) -> str | None:
    """A git URL (https, ssh, git, file, or scp-like user@host:path) or an absolute path that neither a
    shell nor git nor ssh reads as an option or as syntax."""
    if len(value) > MAX_SOURCE_REPO_LENGTH:
        return f"must be at most {MAX_SOURCE_REPO_LENGTH} characters"
    if value.startswith("-") or not _SOURCE_REPO_CHARS.fullmatch(value):
        return "must be a git URL or an absolute path without spaces, quotes or shell characters"
    if ".." in value.split("/") or not _SOURCE_REPO_FORMS.fullmatch(value):
        return (
            f"{show(value)} is neither a git URL (https://, ssh://, git://, file://, user@host:path) "
            "nor an absolute path"
        )
    user = host = port = ""
    if url := _SOURCE_REPO_URL.fullmatch(value):
        user, _, hostport = url["authority"].rpartition("@")
        host, _, port = hostport.partition(":")
        if url["scheme"] == "file" and not url["authority"]:
            return None
    elif scp := _SOURCE_REPO_SCP.fullmatch(value):
        user, host = scp["user"], scp["host"]
    if (url or scp) and not _GIT_HOST.fullmatch(host):
        return f"host {show(host)} is not a host name (letters, digits, '.' and '-', not starting with '-')"
    if user and not _GIT_USER.fullmatch(user):
        return f"user {show(user)} must be letters, digits, '.', '_', '~' or '-', not starting with '-' (no password)"
    if port and not (port.isdigit() and port.isascii() and 0 < int(port) < 65536):
        return f"port {show(port)} is not a port number"
    return None


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
    for component in value.split("/"):
        # git check-ref-format: no component starts with '.' or ends with '.lock' (not just the last one).
        if component.startswith(".") or component.endswith(".lock"):
            return f"component {show(component)} must not start with '.' nor end with '.lock'"
    if value != value.lower():
        return "must be lower case (it becomes part of image names, which registries require lower case)"
    for component in value.split("/"):
        if not is_path_component(component):
            return (
                f"component {show(component)} is not a valid image path component "
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
        tuples = {name: tuple(data[name]) for name in ("python_versions", "variants", "platforms", "ci_platforms")
                  if name in data}
        return cls(**{**data, **tuples})


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
    # Build even where an image of the same content key is published (content.py).
    rebuild: bool = False
    # The PROD variants built, verified and published (naming.VARIANTS; the CI image is one per version).
    variants: tuple[str, ...] = ("regular",)
    # os/arch every image is built for (policy/platforms.py); several: each image is an OCI index.
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    # Derived from settings at validation time, so later tasks never re-read settings: the CI image's
    # platforms (settings: ci_platforms), the Debian release per Python version, the base's repository.
    ci_platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    # Derived from settings at validation time, so later tasks never re-read settings.
    debian: Mapping[str, str] = field(default_factory=dict)
    python_base_source: str = DEFAULT_PYTHON_BASE_UPSTREAM

    def with_sha(self, sha: str) -> BuildRequest:
        return BuildRequest.from_dict({**self.to_dict(), "commit_sha": sha})


# ---- the build request's fields: one spec each makes its form entry and its check --------------------


def _python_version_error(item: Any, supported: Sequence[str]) -> str | None:
    if not isinstance(item, str) or not _PYTHON_VERSION.fullmatch(item):
        return f'{show(item)} is not a Python version of the form "3.Y"'
    if item not in supported:
        return f"{item} is not supported; supported: {', '.join(supported)}"
    return None


def _registry(value: str, fail: Fail) -> str:
    # ASCII first: str.lower() turns some lookalikes into ASCII (KELVIN SIGN → "k").
    match = _REGISTRY.fullmatch(value.lower()) if value.isascii() else None
    if not match:
        fail(f"{show(value)} is not a registry host[:port] such as ghcr.io or localhost:5000")
        return value
    if match.group("port") and not 0 < int(match.group("port")) < 65536:
        fail(f"port {match.group('port')} is out of range")
    return value.lower()


def _repository(value: str, fail: Fail) -> str:
    # Registries require lower case; the seeds lower-case the GitHub repository the same way.
    if value.isascii():
        value = value.lower()
    components = value.split("/") if value.isascii() else [""]
    if not value or not all(is_path_component(c) for c in components):
        fail(f"{show(value)} is not an image repository path such as apache/airflow")
    return value


def _commit_sha(value: str, fail: Fail) -> str:
    value = value.lower()
    if not _SHA.fullmatch(value):
        fail(f"{show(value)} is not a hexadecimal commit id of 7 to 40 characters")
    return value


def _variant_error(item: Any, known: Sequence[str]) -> str | None:
    return None if item in known else f"{show(item)} is not a PROD variant; known: {', '.join(known)}"


def _in_variant_order(chosen: tuple[str, ...], _fail: Fail) -> tuple[str, ...]:
    return tuple(v for v in VARIANTS if v in chosen)  # one order, whatever the conf's


def _airflow_version_error(value: str) -> str | None:
    return version_error(value, _AIRFLOW_VERSION, "release version such as 3.3.2 or 3.4.0rc1")


def _test_command(value: str, fail: Fail) -> str | None:
    if "\x00" in value:
        fail("must not contain NUL characters")
    elif len(value) > MAX_TEST_COMMAND_LENGTH:
        fail(f"must be at most {MAX_TEST_COMMAND_LENGTH} characters")
    elif not value.strip():
        return None
    return value


# Shared by every request that names these (release and retag take some of them under their own names:
# dataclasses.replace(BRANCH, name="source_branch", title=..., default=setting("branch"))).
BRANCH = Field("branch", "string", "Branch", "Branch of the sources to build.", rule=refuse(_branch_error))
PYTHON_VERSIONS = Field(
    "python_versions", "array", "Python versions", "Python versions (X.Y) to build, one image set each.",
    choices=lambda settings: settings.supported_python_versions, example='["3.11", "3.13"]',
    item_rule=_python_version_error,
)
REGISTRY = Field("registry", "string", "Registry", "Registry host[:port].", rule=_registry)
REPOSITORY = Field("repository", "string", "Repository",
                   "Image repository prefix (the source repository, lower-cased).", rule=_repository)
SOURCE_REPO = Field("source_repo", "string", "Source repository", "Git URL or path of the sources.",
                    rule=refuse(_source_repo_error))
COMMIT_SHA = Field("commit_sha", ("null", "string"), "Commit SHA",
                   "Build this commit instead of the branch head (optional).", rule=_commit_sha)
CACHE = Field("cache", "string", "Cache",
              "pulled: registry images as cache; local: engine cache only; disabled: none.", choices=CACHE_MODES)
PUSH = Field("push", "boolean", "Push", "Push :SHA and, when tests pass, latest.")
UPGRADE_TO_NEWER_DEPENDENCIES = Field(
    "upgrade_to_newer_dependencies", "boolean", "Upgrade to newer dependencies",
    "Resolve dependencies eagerly instead of using the constraints.",
)
REBUILD = Field(
    "rebuild", "boolean", "Rebuild",
    "Build every image even where one of the same content key (same sources, constraints, base, Dockerfiles, "
    "build args and checks) is already published.",
)
PROD_VARIANTS = Field(
    "variants", "array", "PROD variants",
    "PROD images to build, as Airflow publishes them: regular (Airflow's default extras) and slim (no extras: "
    "the providers airflow-core needs).",
    choices=tuple(VARIANTS), example='["regular", "slim"]', item_rule=_variant_error, rule=_in_variant_order,
    form={"minItems": 1, "uniqueItems": True},
)
PLATFORMS = Field(
    "platforms", "array", "Platforms",
    "os/arch each image is built for. Several: each platform's image is built (another architecture under QEMU "
    "emulation, many times slower), verified and pushed as :SHA-<arch>, and :SHA is one OCI image index over them.",
    choices=SUPPORTED_PLATFORMS, example='["linux/amd64", "linux/arm64"]',
    rule=lambda chosen, _fail: in_platform_order(chosen),
    form={"minItems": 1, "uniqueItems": True},
)
AIRFLOW_VERSION = Field(
    "airflow_version", "string", "Airflow version",
    "Installed from the index only where no sources are built (release images); a branch build installs its "
    "sources' own version.",
    rule=refuse(_airflow_version_error),
)
TEST_COMMAND = Field("test_command", ("null", "string"), "Test command",
                     "Run inside the CI image as the tests; empty: the image verification suite.",
                     rule=_test_command, templates_allowed=True)
NAMING = Field("naming", "string", "Naming convention",
               "How image names are made: " + "; ".join(f"{key}: {c.description}" for key, c in CONVENTIONS.items())
               + ".",
               choices=tuple(CONVENTIONS))

# build_images: every field a build request has, in the form's order.
BUILD_SCHEMA = RequestSchema("build request", (
    BRANCH, PYTHON_VERSIONS, REGISTRY, REPOSITORY, SOURCE_REPO, COMMIT_SHA, CACHE, PUSH,
    UPGRADE_TO_NEWER_DEPENDENCIES, REBUILD, PROD_VARIANTS, PLATFORMS, AIRFLOW_VERSION, TEST_COMMAND, NAMING,
))
# smoke_deploy takes a build request: the same fields and rules, but for ``variants``; its form says what
# the fields mean to a deploy of images already published. A smoke deploy runs the chart's defaults (the
# FAB auth manager, Celery): only the regular PROD image has their providers, so it is the one deployed
# and a conf may not ask for another variant.
SMOKE_FIXED_MESSAGE = ("is not a field of a smoke deploy: it deploys the regular PROD image, whose providers "
                       "the chart's defaults need")
SMOKE_SCHEMA = BUILD_SCHEMA.describing({
    "commit_sha": "Deploy the PROD image of this commit of the branch (its :SHA tag); empty: latest.",
    "python_versions": "Python versions whose (regular) PROD images are deployed, one deploy each.",
}).fixing({"variants": SMOKE_FIXED_MESSAGE}, what="smoke deploy request")
# nightly_images decides these itself: each configured branch, its head, newest dependencies.
NIGHTLY_FIXED_MESSAGE = "is not a field of the nightly run (set nightly_branches instead)"
NIGHTLY_SCHEMA = BUILD_SCHEMA.fixing(
    dict.fromkeys(("branch", "commit_sha", "upgrade_to_newer_dependencies"), NIGHTLY_FIXED_MESSAGE),
    what="nightly request",
)
# The schema of each DAG that takes a build request's fields (its trigger form and its validation).
SCHEMAS: Mapping[str, RequestSchema] = {
    "build_images": BUILD_SCHEMA, "nightly_images": NIGHTLY_SCHEMA, "smoke_deploy": SMOKE_SCHEMA,
}


def validate_request(
    conf: Mapping[str, Any] | None, settings: Settings, *, allowed_extra: tuple[str, ...] = ()
) -> BuildRequest:
    """Merge ``conf`` over the settings' defaults and validate every field (:data:`BUILD_SCHEMA`).

    Raises :class:`InvalidBuildRequests` listing every bad field at once (a conf that is not an object,
    or a value too deep or too big to look at, included).
    """
    values = BUILD_SCHEMA.validate(conf, settings, allowed_extra=allowed_extra)
    return BuildRequest(
        **values,
        ci_platforms=ci_platforms_of(settings),
        debian={version: settings.debian_for(version) for version in values["python_versions"]},
        python_base_source=settings.python_base_source,
    )


def ci_platforms_of(settings: Settings) -> tuple[str, ...]:
    """The ci_platforms setting, checked like a conf's platforms (an error names the setting)."""
    unknown = [p for p in settings.ci_platforms if p not in SUPPORTED_PLATFORMS]
    if unknown or not settings.ci_platforms:
        problem = (f"the ci_platforms setting {show(list(settings.ci_platforms))} must list some of "
                   f"{', '.join(SUPPORTED_PLATFORMS)}")
        raise invalid([InvalidBuildRequest("ci_platforms", problem)], "build request")
    return in_platform_order(settings.ci_platforms)


def validate_smoke_request(conf: Mapping[str, Any] | None, settings: Settings) -> BuildRequest:
    """A smoke deploy's conf: a build request without the fields :data:`SMOKE_SCHEMA` fixes."""
    shared, errors = SMOKE_SCHEMA.screen(conf)
    request = None
    try:
        request = validate_request(shared, settings)
    except InvalidBuildRequests as exc:
        errors.extend(exc.errors)
    if errors or request is None:
        raise invalid(errors, SMOKE_SCHEMA.what)
    return request


def validate_nightly_request(
    conf: Mapping[str, Any] | None, settings: Settings, *, branches: Iterable[str],
    fixed_fields: Iterable[str] | None = None,
) -> list[BuildRequest]:
    """The nightly run's conf, checked once before any of its tasks runs (each branch's group and the
    released-images check): the request of every branch in ``branches``, plus the branch-less one the
    released-images check reads. The fixed fields (:data:`NIGHTLY_SCHEMA`'s, or ``fixed_fields``) are the
    nightly's own decisions; a conf may not set them.
    """
    schema = NIGHTLY_SCHEMA if fixed_fields is None else BUILD_SCHEMA.fixing(
        dict.fromkeys(fixed_fields, NIGHTLY_FIXED_MESSAGE), what="nightly request")
    shared, errors = schema.screen(conf)
    found: list[BuildRequest] = []
    for overrides in [{}, *({"branch": b, "upgrade_to_newer_dependencies": True} for b in branches)]:
        try:
            found.append(validate_request({**shared, **overrides}, settings))
        except InvalidBuildRequests as exc:
            errors.extend(exc.errors)
    if errors:
        raise invalid(errors, schema.what)
    return found[1:]
