"""Release policy (AIP-26), pure: the release request, which tags a release publishes, which released
images need a rebuild.

:data:`RELEASE_SCHEMA` is the release_images DAG's request: its trigger form and, through
:func:`validate_release_request`, its validation. :func:`plan_release_tags` decides the tags of a release
from the tags the registry already holds - moving tags only forward; :func:`plan_rebuilds` decides which
released images need a rebuild because their Python base got a new digest (the nightly wires it).
:mod:`airflow_image_factory.services.release` does the registry I/O, :mod:`airflow_image_factory.tasks.release`
the Airflow steps.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests, ReleaseRefused
from airflow_image_factory.policy.naming import LATEST, VARIANTS, release_tag
from airflow_image_factory.policy.request import (
    _GIT_HOST,
    BRANCH,
    PLATFORMS,
    PROD_VARIANTS,
    PYTHON_VERSIONS,
    REGISTRY,
    REPOSITORY,
    RequestRecord,
    conf_object,
    invalid,
    show,
    validate_request,
    version_error,
)
from airflow_image_factory.policy.schema import Field, RequestSchema, refuse, setting
from airflow_image_factory.policy.settings import Settings

# A released Airflow version: final X.Y.Z, or a pre-release X.Y.Z{a,b,rc}N (no dev/post builds), in its
# canonical PEP 440 form (request.version_error): "03.3.2" would publish tags no other release matches.
_RELEASE_VERSION = re.compile(r"(?P<minor>\d+\.\d+)\.\d+(?:(?:a|b|rc)\d+)?", re.ASCII)
# Tags of released images: X.Y.Z[-pythonA.B] (X.Y-pythonA.B and latest say nothing new about versions).
_RELEASED_TAG = re.compile(r"(?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)(?:-python(?P<python>3\.\d+))?", re.ASCII)
_RELEASE_EXAMPLE = "released version such as 3.3.2 or 3.4.0rc1"
# The constraints URL template: these placeholders only, bare ({version}, never {version:>9}, {version!r},
# {version.__class__} or {python[0]}), in an https:// URL made of plain URL characters.
CONSTRAINTS_PLACEHOLDERS = ("version", "python")
MAX_CONSTRAINTS_URL_LENGTH = 2000
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#&+=%,-]+", re.ASCII)


# ---- the release request: one schema makes the trigger form and the validation ---------------------


def constraints_template_error(template: str) -> str | None:
    """None when ``template`` is empty or an https:// URL whose only placeholders are a bare ``{version}``
    and ``{python}`` in its path; otherwise what is wrong (without echoing more than a few characters)."""
    if not template:
        return None
    if len(template) > MAX_CONSTRAINTS_URL_LENGTH:
        return f"must be at most {MAX_CONSTRAINTS_URL_LENGTH} characters"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone '{' or '}'
        return f"is not a valid template ({exc}): placeholders are written {{version}} and {{python}}"
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in CONSTRAINTS_PLACEHOLDERS or spec or conversion is not None:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return (f"placeholder {show(written, 30)} is not allowed: only {{version}} and {{python}}, "
                    "without format spec, conversion, attribute or index")
    if not template.startswith("https://"):
        return "must be an https:// URL (or empty: no constraints)"
    head = parsed[0][0] if parsed else template
    if "/" not in head[len("https://"):]:
        return "must name its host literally: {version} and {python} belong in the path"
    url = template.format(version="0.0.0", python="3.0")
    if not _URL_CHARS.fullmatch(url):
        return "must hold only letters, digits and . _ ~ : / ? # & + = % , - (no spaces, quotes or braces)"
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return "must not hold credentials"
    try:
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        return "has a port out of range"
    if not parts.hostname or not _GIT_HOST.fullmatch(parts.hostname):
        return "must name a host (letters, digits, '.' and '-', not starting with '-')"
    if any(segment in ("..", ".") for segment in parts.path.split("/")):
        return "must not hold '.' or '..' path segments"
    return None


def constraints_location(template: str, version: str, python: str) -> str:
    """The constraints URL of one build; refuses a template :func:`constraints_template_error` rejects."""
    if problem := constraints_template_error(template):
        raise InvalidBuildRequest("constraints_url", problem)
    return template.format(version=version, python=python) if template else ""


@dataclass(frozen=True)
class ReleaseRequest(RequestRecord):
    version: str
    python_versions: tuple[str, ...]
    default_python: str
    registry: str
    repository: str
    cache_branch: str
    constraints_url: str  # template with {version} and {python}; "" means no constraints
    build: Mapping[str, Any] = field(default_factory=dict)  # the BuildRequest the build steps reuse

    def constraints_for(self, python: str) -> str:
        return constraints_location(self.constraints_url, self.version, python)


# release_images: the build request's fields it shares keep their rules (cache_branch is BRANCH renamed).
RELEASE_SCHEMA = RequestSchema("release request", (
    Field("version", "string", "Airflow version", "The released version, X.Y.Z (or X.Y.ZrcN).",
          default=setting("airflow_version"),
          rule=refuse(lambda value: version_error(value, _RELEASE_VERSION, _RELEASE_EXAMPLE))),
    replace(PYTHON_VERSIONS, description="Python versions (X.Y) to release, one image each."),
    PROD_VARIANTS,
    PLATFORMS,
    Field("default_python", "string", "Default Python", "Its image is also tagged X.Y.Z and (when newest) latest.",
          default=lambda settings: settings.release_default_python or settings.default_python_version),
    REGISTRY,
    replace(REPOSITORY, description="Release images are REGISTRY/REPOSITORY:TAG."),
    replace(BRANCH, name="cache_branch", title="Cache branch", default=setting("branch"),
            description="The branch whose latest images are the build cache."),
    Field("constraints_url", ("null", "string"), "Constraints",
          "URL template with {version} and {python}; empty: none.",
          default=setting("release_constraints_url"), rule=refuse(constraints_template_error)),
))


def validate_release_request(conf: Mapping[str, Any] | None, settings: Settings) -> ReleaseRequest:
    """``conf`` over the settings → a ReleaseRequest; raises InvalidBuildRequests naming every bad field.

    Pure: the index lookup of the version (:func:`airflow_image_factory.clients.index.check_airflow_release`) is
    the DAG's validate task's second step.
    """
    values, errors = RELEASE_SCHEMA.check(conf, settings)
    bad = {e.field for e in errors}
    if not bad & {"default_python", "python_versions"} and values["default_python"] not in values["python_versions"]:
        errors.append(InvalidBuildRequest(
            "default_python",
            f"{show(values['default_python'])} must be one of the release's python_versions "
            f"({', '.join(values['python_versions'])})",
        ))
    # The settings' template is checked as strictly as a conf's, and the error says where it came from.
    if "constraints_url" not in conf_object(conf, RELEASE_SCHEMA.what):
        errors = [InvalidBuildRequest(e.field, f"{e.message} (the release_constraints_url setting)")
                  if e.field == "constraints_url" else e for e in errors]
    if errors:
        raise invalid(errors, RELEASE_SCHEMA.what)
    # The build steps reuse a build request: the fields the release does not name come from the settings
    # (and are checked there, under the release's names where it has them).
    try:
        build = validate_request({
            "branch": values["cache_branch"], "python_versions": values["python_versions"],
            "variants": values["variants"], "platforms": values["platforms"], "registry": values["registry"],
            "repository": values["repository"],
            "airflow_version": values["version"],
            "push": True, "cache": "pulled", "upgrade_to_newer_dependencies": False, "commit_sha": None,
            "test_command": None,
        }, settings)
    except InvalidBuildRequests as exc:
        renamed = {"branch": "cache_branch", "airflow_version": "version"}
        raise invalid([InvalidBuildRequest(renamed.get(e.field, e.field), e.message) for e in exc.errors],
                      RELEASE_SCHEMA.what) from None
    return ReleaseRequest(
        version=values["version"],
        python_versions=build.python_versions,
        default_python=values["default_python"],
        registry=build.registry,
        repository=build.repository,
        cache_branch=build.branch,
        constraints_url=values["constraints_url"] or "",
        build=build.to_dict(),
    )


# ---- which tags a release publishes --------------------------------------------------------------


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def released_versions(tags: Iterable[str]) -> set[Version]:
    """Every Airflow version the registry's tags show as released (final releases only)."""
    found = set()
    for tag in tags:
        match = _RELEASED_TAG.fullmatch(tag)
        version = _version(match.group("version")) if match else None
        if version is not None and not version.is_prerelease:
            found.add(version)
    return found


def is_newest(version: str, existing_tags: Iterable[str], *, same_minor: bool = False) -> bool:
    """True when ``version`` is at least every final release the tags show (within its X.Y if asked).

    Re-publishing the newest version counts as newest (a rebuild moves its tags to the new digest).
    """
    wanted = Version(version)
    if wanted.is_prerelease:
        return False
    others = released_versions(existing_tags)
    if same_minor:
        others = {v for v in others if v.release[:2] == wanted.release[:2]}
    return all(wanted >= other for other in others)


@dataclass(frozen=True)
class ReleaseTag:
    tag: str
    python: str
    reason: str


def plan_release_tags(
    version: str, python_versions: Sequence[str], default_python: str, existing_tags: Iterable[str],
    variant: str = "regular",
) -> tuple[ReleaseTag, ...]:
    """The tags a release publishes, from what the registry already holds (AIP-26 names).

    Each PROD variant has its own family of tags, decided from that family only: the slim variant's
    are the regular names with Airflow's ``slim-`` prefix (``slim-3.3.2-python3.11``, ``slim-latest``).

    * ``X.Y.Z-pythonA.B`` for every Python version, always;
    * ``X.Y-pythonA.B`` when X.Y.Z is the newest release of X.Y (a back-ported 3.2.9 after 3.2.10 does
      not move ``3.2-python3.11`` back);
    * ``X.Y.Z`` for the default Python;
    * ``latest`` for the default Python only when X.Y.Z is the newest release of all.
    Pre-releases (``3.4.0rc1``) get only their own version's tags.
    """
    if default_python not in python_versions:
        raise ReleaseRefused(f"default Python {default_python} is not one of {', '.join(python_versions)}")
    prefix = VARIANTS[variant].release_prefix
    if prefix:
        existing = [t.removeprefix(prefix) for t in existing_tags if t.startswith(prefix)]
    else:
        existing = [t for t in existing_tags if not _is_prefixed(t)]
    minor = _RELEASE_VERSION.fullmatch(version)
    if not minor:
        raise ReleaseRefused(f"{show(version)} is not a released version")
    newest_in_minor = is_newest(version, existing, same_minor=True)
    newest = is_newest(version, existing)
    tags = []
    for python in python_versions:
        tags.append(ReleaseTag(release_tag(version, python, variant), python, "the release, per Python version"))
        if newest_in_minor:
            line = minor.group("minor")
            tags.append(ReleaseTag(release_tag(line, python, variant), python, f"newest {line}.x"))
    tags.append(ReleaseTag(release_tag(version, variant=variant), default_python, "the release, default Python"))
    if newest:
        tags.append(ReleaseTag(prefix + LATEST, default_python, "newest release, default Python"))
    return tuple(tags)


def _is_prefixed(tag: str) -> bool:
    """A tag of another variant's family (``slim-…``)."""
    return any(v.release_prefix and tag.startswith(v.release_prefix) for v in VARIANTS.values())


# ---- which released images need a rebuild (the nightly calls this) --------------------------------


@dataclass(frozen=True)
class ReleasedImage:
    """One released ``X.Y.Z-pythonA.B`` image and the Python base digest it was built on (its
    ``org.opencontainers.image.base.digest`` label; None when it carries none)."""

    version: str
    python: str
    base_digest: str | None

    @property
    def tag(self) -> str:
        return release_tag(self.version, self.python)


@dataclass(frozen=True)
class Rebuild:
    version: str
    python: str
    old_base_digest: str
    new_base_digest: str

    @property
    def tag(self) -> str:
        return release_tag(self.version, self.python)


def released_images(tags: Iterable[str]) -> list[tuple[str, str]]:
    """(version, python) of every ``X.Y.Z-pythonA.B`` tag (final releases; the per-Python images)."""
    found = []
    for tag in tags:
        match = _RELEASED_TAG.fullmatch(tag)
        if match and match.group("python") and not Version(match.group("version")).is_prerelease:
            found.append((match.group("version"), match.group("python")))
    return sorted(found, key=lambda vp: (Version(vp[0]), Version(vp[1])))


def plan_rebuilds(
    released: Iterable[ReleasedImage], current_base_digests: Mapping[str, str], *, newest_patch_only: bool = False
) -> tuple[Rebuild, ...]:
    """Released images whose Python base has a new digest upstream (AIP-26: security fixes reach released
    images). Rebuilt images are republished under the same tags (:func:`plan_release_tags` decides).

    An image without a recorded base digest, or for a Python version with no known current digest, is
    left alone: nothing says it is stale. ``newest_patch_only`` limits rebuilds to the newest X.Y.Z of
    each X.Y line (older patches are superseded by it).
    """
    images = list(released)
    if newest_patch_only:
        newest: dict[tuple[int, ...], Version] = {}
        for image in images:
            v = Version(image.version)
            newest[v.release[:2]] = max(newest.get(v.release[:2], v), v)
        images = [i for i in images if Version(i.version) == newest[Version(i.version).release[:2]]]
    rebuilds = []
    for image in images:
        current = current_base_digests.get(image.python)
        if image.base_digest and current and image.base_digest != current:
            rebuilds.append(Rebuild(image.version, image.python, image.base_digest, current))
    return tuple(sorted(rebuilds, key=lambda r: (Version(r.version), Version(r.python))))


# ---- what a release publishes from ------------------------------------------------------------------


def staged_digests(
    staged: Iterable[Mapping[str, Any] | None], python_versions: Sequence[str], variants: Sequence[str]
) -> dict[tuple[str, str], str]:
    """(python, variant) → the tested digest staged for it, from the staging steps' results; refuses the
    release unless every Python version of every variant has one (all-or-nothing: nothing is published)."""
    found = {(s["python"], variant): digest for s in staged if s
             for variant, digest in (s.get("digests") or {}).items() if digest}
    missing = [f"{p} ({v})" for p in python_versions for v in variants if (p, v) not in found]
    if missing:
        raise ReleaseRefused(f"no tested image for Python {', '.join(missing)}: nothing is published")
    return found
