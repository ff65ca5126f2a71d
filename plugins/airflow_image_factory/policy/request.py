"""DAG params → one validated :class:`BuildRequest`. Every rule and message about input lives here.

Knows nothing of Airflow, Docker or HTTP. Values that pass validation are safe to use as git refs,
image path components and argv items: no value is ever interpolated into a shell.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.reference import is_path_component
from airflow_image_factory.policy.settings import DEFAULT_PYTHON_BASE_UPSTREAM, PARAM_NAMES, Settings, plain

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

# ---- the shape of a conf, and how errors show a user's values -------------------------------------

MAX_SHOWN = 60  # characters of a user's value an error message echoes
MAX_SHOWN_NAME = 40  # characters of an unknown field's name
MAX_CONF_DEPTH = 32  # nesting levels of lists/objects in one field
MAX_FIELD_SIZE = 64 * 1024  # characters of text (strings and keys) in one field
MAX_FIELD_ITEMS = 10_000  # values (lists, objects, scalars) in one field
MAX_UNKNOWN_REPORTED = 5  # unknown fields named one by one; the rest are counted
MAX_ERRORS_PER_FIELD = 5  # distinct messages per field; the rest are counted
# Jinja's markers: no value is ever rendered, so one holding them was meant for something else.
_TEMPLATE_MARKERS = ("{{", "{%")
# ...except a shell command for the CI container, where `docker inspect -f '{{.Id}}'` is ordinary.
_MAY_HOLD_TEMPLATE_MARKERS = frozenset({"test_command"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)


class _ShortRepr(reprlib.Repr):
    """reprlib with small limits, and no full repr of anything that could be huge or foreign."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxstring = self.maxother = MAX_SHOWN
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 4
        self.maxlong = 24

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a huge int is slow, and refused past 4300 digits
            return f"<{x.bit_length()}-bit integer>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        if x is None or isinstance(x, (bool, float)):
            return repr(x)
        return f"<{type(x).__name__}>"


_SHORT_REPR = _ShortRepr()


def show(value: Any, limit: int = MAX_SHOWN) -> str:
    """A user's value as an error message echoes it: a short repr, non-ASCII escaped (lookalikes show
    as ``\\u0430``), at most ``limit`` characters. Every validator uses this, never ``{value!r}``."""
    text = _SHORT_REPR.repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def show_name(name: Any) -> str:
    """A field name as an error names it: itself when short and plain, else :func:`show`'s form."""
    if isinstance(name, str) and len(name) <= MAX_SHOWN_NAME and _PLAIN_NAME.fullmatch(name):
        return name
    return show(name, MAX_SHOWN_NAME)


def _shape_error(value: Any, *, markers_allowed: bool = False) -> str | None:
    """What makes a field's value unfit to look at further, found without recursion: too deep, too
    big, not JSON, a NUL or a template marker anywhere in it."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    items = 1
    size = 0
    while stack:
        item, depth = stack.pop()
        texts: Iterable[Any] = ()
        if isinstance(item, str):
            texts = (item,)
        elif isinstance(item, (Mapping, list, tuple)):
            if depth > MAX_CONF_DEPTH:
                return f"is nested more than {MAX_CONF_DEPTH} levels deep"
            items += len(item)
            if items > MAX_FIELD_ITEMS:
                return f"holds more than {MAX_FIELD_ITEMS} values"
            if isinstance(item, Mapping):
                if not all(isinstance(key, str) for key in item):
                    return "has an object whose keys are not all text"
                texts = tuple(item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
        elif not (item is None or isinstance(item, (bool, int, float))):
            return f"holds a {type(item).__name__}; only JSON values (text, numbers, true/false, null, lists, objects)"
        for text in texts:
            size += len(text)
            if size > MAX_FIELD_SIZE:
                return f"is too large (more than {MAX_FIELD_SIZE} characters of text)"
            if "\x00" in text:
                return "must not contain NUL characters"
            if not markers_allowed and any(marker in text for marker in _TEMPLATE_MARKERS):
                return "must not contain template markers ('{{' or '{%'): no value is ever rendered"
    return None


class _ShapeError(InvalidBuildRequest):
    """A field :func:`screen_conf` refused: its default took its place, so later errors about it are moot."""


def conf_object(conf: Any, what: str = "build request") -> dict[str, Any]:
    """A run's conf as a dict to add fields to: None is empty, anything but an object is refused."""
    if conf is None:
        return {}
    if not isinstance(conf, Mapping):
        raise InvalidBuildRequests(
            [InvalidBuildRequest("conf", f"must be an object of field names and values, got {type(conf).__name__}")],
            what,
        )
    return dict(conf)


def screen_conf(
    conf: Any, known: Iterable[str], *, what: str = "build request"
) -> tuple[dict[str, Any], list[InvalidBuildRequest]]:
    """The checks every validator runs first: ``conf`` is an object (raises at once otherwise), its
    unknown fields are named (a few, the rest counted), and each known field's value is JSON of
    bounded depth and size. Returns the fields fit to validate and the errors found so far."""
    conf = conf_object(conf, what)
    known = tuple(known)
    errors: list[InvalidBuildRequest] = []
    unknown = sorted((show_name(name) for name in conf if name not in known), key=str)
    for name in unknown[:MAX_UNKNOWN_REPORTED]:
        errors.append(InvalidBuildRequest(name, f"unknown field; known fields are {', '.join(known)}"))
    if len(unknown) > MAX_UNKNOWN_REPORTED:
        errors.append(InvalidBuildRequest("conf", f"and {len(unknown) - MAX_UNKNOWN_REPORTED} more unknown fields"))
    fit: dict[str, Any] = {}
    for name in known:
        if name not in conf:
            continue
        if problem := _shape_error(conf[name], markers_allowed=name in _MAY_HOLD_TEMPLATE_MARKERS):
            errors.append(_ShapeError(name, problem))
        else:
            fit[name] = conf[name]
    return fit, errors


def invalid(errors: Iterable[InvalidBuildRequest], what: str = "build request") -> InvalidBuildRequests:
    """One exception for every error, each message once: a repeated one says how often, and a field
    with many different problems shows the first few and counts the rest. A field the screen refused
    reports only that (not what its default, judged in its place, lacks)."""
    errors = list(errors)
    refused = {e.field for e in errors if isinstance(e, _ShapeError)}
    counts: dict[tuple[str, str], int] = {}
    for error in errors:
        if error.field in refused and not isinstance(error, _ShapeError):
            continue
        key = (error.field, error.message)
        counts[key] = counts.get(key, 0) + 1
    shown: list[InvalidBuildRequest] = []
    per_field: dict[str, int] = {}
    for (name, message), count in counts.items():
        per_field[name] = per_field.get(name, 0) + 1
        if per_field[name] <= MAX_ERRORS_PER_FIELD:
            shown.append(InvalidBuildRequest(name, message if count == 1 else f"{message} (repeated {count} times)"))
    for name, count in per_field.items():
        if count > MAX_ERRORS_PER_FIELD:
            shown.append(InvalidBuildRequest(name, f"and {count - MAX_ERRORS_PER_FIELD} more problems"))
    return InvalidBuildRequests(shown, what)


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
        tuples = {name: tuple(data[name]) for name in ("python_versions", "variants") if name in data}
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
    # Derived from settings at validation time, so later tasks never re-read settings.
    debian: Mapping[str, str] = field(default_factory=dict)
    python_base_source: str = DEFAULT_PYTHON_BASE_UPSTREAM

    def with_sha(self, sha: str) -> BuildRequest:
        return BuildRequest.from_dict({**self.to_dict(), "commit_sha": sha})


def validate_request(
    conf: Mapping[str, Any] | None, settings: Settings, *, allowed_extra: tuple[str, ...] = ()
) -> BuildRequest:
    """Merge ``conf`` over the settings' defaults and validate every field.

    Raises :class:`InvalidBuildRequests` listing every bad field at once (a conf that is not an object,
    or a value too deep or too big to look at, included).
    """
    from airflow_image_factory.policy.naming import CONVENTIONS, VARIANTS

    conf, errors = screen_conf(conf, (*PARAM_NAMES, *allowed_extra))

    def fail(name: str, message: str) -> None:
        errors.append(InvalidBuildRequest(name, message))

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
            fail(name, f"must be true or false, got {show(value)}")
            return False
        return value

    branch = text("branch")
    if branch is not None and (problem := _branch_error(branch)):
        fail("branch", problem)

    python_versions: tuple[str, ...] = ()
    raw_versions = values.get("python_versions")
    if not isinstance(raw_versions, (list, tuple)) or not raw_versions:
        fail("python_versions", f'must be a non-empty list like ["3.11", "3.13"], got {show(raw_versions)}')
    else:
        seen: list[str] = []
        for item in raw_versions:
            if not isinstance(item, str) or not _PYTHON_VERSION.fullmatch(item):
                fail("python_versions", f'{show(item)} is not a Python version of the form "3.Y"')
            elif item not in settings.supported_python_versions:
                fail(
                    "python_versions",
                    f"{item} is not supported; supported: {', '.join(settings.supported_python_versions)}",
                )
            elif item in seen:
                fail("python_versions", f"{item} is listed more than once")
            else:
                seen.append(item)
        python_versions = tuple(seen)

    registry = text("registry")
    if registry is not None:
        # ASCII first: str.lower() turns some lookalikes into ASCII (KELVIN SIGN → "k").
        match = _REGISTRY.fullmatch(registry.lower()) if registry.isascii() else None
        if match:
            registry = registry.lower()
        if not match:
            fail("registry", f"{show(registry)} is not a registry host[:port] such as ghcr.io or localhost:5000")
        elif match.group("port") and not 0 < int(match.group("port")) < 65536:
            fail("registry", f"port {match.group('port')} is out of range")

    repository = text("repository")
    if repository is not None:
        # Registries require lower case; the seeds lower-case the GitHub repository the same way.
        if repository.isascii():
            repository = repository.lower()
        components = repository.split("/") if repository.isascii() else [""]
        if not repository or not all(is_path_component(c) for c in components):
            fail("repository", f"{show(repository)} is not an image repository path such as apache/airflow")

    source_repo = text("source_repo")
    if source_repo is not None and (problem := _source_repo_error(source_repo)):
        fail("source_repo", problem)

    commit_sha = text("commit_sha", optional=True)
    if commit_sha is not None:
        commit_sha = commit_sha.lower()
        if not _SHA.fullmatch(commit_sha):
            fail("commit_sha", f"{show(commit_sha)} is not a hexadecimal commit id of 7 to 40 characters")

    cache = text("cache")
    if cache is not None and cache not in CACHE_MODES:
        fail("cache", f"{show(cache)} is not one of {', '.join(CACHE_MODES)}")

    push = flag("push")
    upgrade = flag("upgrade_to_newer_dependencies")
    rebuild = flag("rebuild")

    variants: tuple[str, ...] = ()
    raw_variants = values.get("variants")
    if not isinstance(raw_variants, (list, tuple)) or not raw_variants:
        fail("variants", f'must be a non-empty list like ["regular", "slim"], got {show(raw_variants)}')
    else:
        chosen: list[str] = []
        for item in raw_variants:
            if item not in VARIANTS:
                fail("variants", f"{show(item)} is not a PROD variant; known: {', '.join(VARIANTS)}")
            elif item in chosen:
                fail("variants", f"{item} is listed more than once")
            else:
                chosen.append(item)
        variants = tuple(v for v in VARIANTS if v in chosen)  # one order, whatever the conf's

    airflow_version = text("airflow_version")
    if airflow_version is not None and (
        problem := version_error(airflow_version, _AIRFLOW_VERSION, "release version such as 3.3.2 or 3.4.0rc1")
    ):
        fail("airflow_version", problem)

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
        fail("naming", f"{show(naming)} is not one of {', '.join(CONVENTIONS)}")

    if errors:
        raise invalid(errors)
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
        rebuild=rebuild,
        variants=variants,
        debian={version: settings.debian_for(version) for version in python_versions},
        python_base_source=settings.python_base_source,
    )


def validate_nightly_request(
    conf: Mapping[str, Any] | None, settings: Settings, *, branches: Iterable[str], fixed_fields: Iterable[str]
) -> list[BuildRequest]:
    """The nightly run's conf, checked once before any of its tasks runs (each branch's group and the
    released-images check): the request of every branch in ``branches``, plus the branch-less one the
    released-images check reads. ``fixed_fields`` are the nightly's own decisions; a conf may not set them.
    """
    screened, errors = screen_conf(conf, PARAM_NAMES, what="nightly request")
    fixed = tuple(fixed_fields)
    for name in fixed:
        if name in screened:
            errors.append(InvalidBuildRequest(name, "is not a field of the nightly run (set nightly_branches instead)"))
    shared = {k: v for k, v in screened.items() if k not in fixed}
    found: list[BuildRequest] = []
    for overrides in [{}, *({"branch": b, "upgrade_to_newer_dependencies": True} for b in branches)]:
        try:
            found.append(validate_request({**shared, **overrides}, settings))
        except InvalidBuildRequests as exc:
            errors.extend(exc.errors)
    if errors:
        raise invalid(errors, "nightly request")
    return found[1:]
