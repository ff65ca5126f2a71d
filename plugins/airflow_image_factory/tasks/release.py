"""Release images (AIP-26): build the PROD image of a released Airflow X.Y.Z from PyPI with that release's
constraints, verify it, and publish ``X.Y.Z-pythonA.B``, ``X.Y-pythonA.B``, and for the default Python
``X.Y.Z`` and ``latest`` — moving tags only forward.

Policy (pure, tested with tables): :func:`plan_release_tags` decides which tags a release publishes from
the tags the registry already holds; :func:`plan_rebuilds` decides which released images need a rebuild
because their Python base got a new digest (the nightly wires it). Operators reuse the build, verify and
push steps of a branch build with the release's names; promotion copies tested digests by manifest.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperator
from packaging.version import InvalidVersion, Version

from airflow_image_factory.clients.registry import config_labels
from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests, ReleaseRefused
from airflow_image_factory.policy.naming import (
    LATEST,
    REGULAR,
    VARIANTS,
    ImageKind,
    ImageSet,
    images_for,
    release_image,
    release_staging_image,
    release_tag,
    variant_of,
)
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.policy.request import (
    _GIT_HOST,
    BuildRequest,
    RequestRecord,
    invalid,
    screen_conf,
    show,
    validate_request,
    version_error,
)
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, release_asset
from airflow_image_factory.tasks.links import RegistryImageLink, record_image_ref
from airflow_image_factory.tasks.operators import (
    BuildImageOperator,
    PushImageOperator,
    TidyEngineOperator,
    VerifyImageOperator,
    fails_at_once,
)

RELEASE_PARAM_NAMES = (
    "version",
    "python_versions",
    "variants",
    "default_python",
    "registry",
    "repository",
    "cache_branch",
    "constraints_url",
)
# A released Airflow version: final X.Y.Z, or a pre-release X.Y.Z{a,b,rc}N (no dev/post builds), in its
# canonical PEP 440 form (request.version_error): "03.3.2" would publish tags no other release matches.
_RELEASE_VERSION = re.compile(r"(?P<minor>\d+\.\d+)\.\d+(?:(?:a|b|rc)\d+)?", re.ASCII)
_RELEASE_EXAMPLE = "released version such as 3.3.2 or 3.4.0rc1"
# Tags of released images: X.Y.Z[-pythonA.B] (X.Y-pythonA.B and latest say nothing new about versions).
_RELEASED_TAG = re.compile(r"(?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)(?:-python(?P<python>3\.\d+))?", re.ASCII)
# The constraints URL template: these placeholders only, bare ({version}, never {version:>9}, {version!r},
# {version.__class__} or {python[0]}), in an https:// URL made of plain URL characters.
CONSTRAINTS_PLACEHOLDERS = ("version", "python")
MAX_CONSTRAINTS_URL_LENGTH = 2000
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#&+=%,-]+", re.ASCII)


# ---- the request -------------------------------------------------------------------------------


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


def release_defaults(settings: Settings) -> dict[str, Any]:
    d = settings.request_defaults()
    return {
        "version": d["airflow_version"],
        "python_versions": d["python_versions"],
        "variants": d["variants"],
        "default_python": settings.release_default_python or settings.default_python_version,
        "registry": d["registry"],
        "repository": d["repository"],
        "cache_branch": d["branch"],
        "constraints_url": settings.release_constraints_url,
    }


def validate_release_request(conf: Mapping[str, Any] | None, settings: Settings) -> ReleaseRequest:
    """``conf`` over the settings → a ReleaseRequest; raises InvalidBuildRequests naming every bad field.

    Pure: the index lookup of the version (:func:`airflow_image_factory.clients.index.check_airflow_release`) is
    the DAG's validate task's second step.
    """
    conf, errors = screen_conf(conf, RELEASE_PARAM_NAMES, what="release request")
    values = {**release_defaults(settings), **conf}

    version = values["version"]
    version_problem = (
        f"must be a string, got {type(version).__name__}" if not isinstance(version, str)
        else version_error(version, _RELEASE_VERSION, _RELEASE_EXAMPLE)
    )
    if version_problem:
        errors.append(InvalidBuildRequest("version", version_problem))

    constraints = values["constraints_url"]
    # The settings' template is checked as strictly as a conf's, and the error says where it came from.
    origin = "" if "constraints_url" in conf else " (the release_constraints_url setting)"
    if constraints is None:
        constraints = ""
    if not isinstance(constraints, str):
        errors.append(InvalidBuildRequest("constraints_url", f"must be text, got {type(constraints).__name__}"))
    elif problem := constraints_template_error(constraints):
        errors.append(InvalidBuildRequest("constraints_url", f"{problem}{origin}"))

    # Shared fields follow the build request's own rules (the build steps reuse that request).
    build = None
    shared = {
        "branch": values["cache_branch"], "python_versions": values["python_versions"],
        "variants": values["variants"],
        "registry": values["registry"], "repository": values["repository"],
        "airflow_version": "0.0.0" if version_problem else version,
        "push": True, "cache": "pulled", "upgrade_to_newer_dependencies": False, "commit_sha": None,
        "test_command": None,
    }
    try:
        build = validate_request(shared, settings)
    except InvalidBuildRequests as exc:
        renamed = {"branch": "cache_branch", "airflow_version": "version"}
        errors.extend(InvalidBuildRequest(renamed.get(e.field, e.field), e.message) for e in exc.errors)

    default_python = values["default_python"]
    if build is not None and default_python not in build.python_versions:
        errors.append(InvalidBuildRequest(
            "default_python",
            f"{show(default_python)} must be one of the release's python_versions "
            f"({', '.join(build.python_versions)})",
        ))

    if errors or build is None:
        raise invalid(errors, "release request")
    return ReleaseRequest(
        version=version,
        python_versions=build.python_versions,
        default_python=default_python,
        registry=build.registry,
        repository=build.repository,
        cache_branch=build.branch,
        constraints_url=constraints,
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


def read_released_images(client: Any, repository: str) -> list[ReleasedImage]:
    """The registry's ``X.Y.Z-pythonA.B`` images with the base digest each records in its labels.

    Reads manifests and config blobs only (no layers); the input :func:`plan_rebuilds` needs.
    """
    from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL

    found = []
    for version, python in released_images(client.list_tags(repository)):
        labels = config_labels(client.image_config(repository, release_tag(version, python)))
        found.append(ReleasedImage(version, python, labels.get(BASE_DIGEST_LABEL) or None))
    return found


# ---- operators -----------------------------------------------------------------------------------


class ReleaseImagesMixin:
    """A branch build's steps, renamed for a release: the PROD image is staged as
    ``REG/REPO/release-staging:X.Y.Z-pythonA.B`` (the "SHA" of a release build is its version tag)."""

    @property
    def images(self) -> ImageSet:
        request = self.request  # type: ignore[attr-defined]
        images = images_for(request, self.python)  # type: ignore[attr-defined]
        staging = release_staging_image(request.registry, request.repository)
        return replace(images, prod=staging, prod_slim=staging)

    @property
    def sha(self) -> str:
        variant = variant_of(getattr(self, "kind", ImageKind.PROD)) or REGULAR
        return release_tag(self.request.airflow_version, self.python, variant.name)  # type: ignore[attr-defined]


class ReleaseBuildOperator(ReleaseImagesMixin, BuildImageOperator):
    """Build the PROD image of a released version: ``apache-airflow==X.Y.Z`` from PyPI, with the release's
    constraints (the Dockerfile's AIRFLOW_CONSTRAINTS_LOCATION). The branch's images are the build cache."""

    template_fields: Sequence[str] = (*BuildImageOperator.template_fields, "constraints_url")
    from_sources = False
    # A release image is built anew from the index each time it is asked for, never reused.
    reuses_published = False

    def __init__(self, *, kind: str = "prod", constraints_url: str | Any = "", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)
        self.constraints_url = constraints_url

    def build_args(self, settings: Settings) -> dict[str, str]:
        args = super().build_args(settings)
        location = constraints_location(self.constraints_url or "", self.request.airflow_version, self.python)
        if not location:
            self.log.warning("No constraints for release %s: its dependencies are resolved afresh",
                             self.request.airflow_version)
        args["AIRFLOW_CONSTRAINTS_LOCATION"] = location
        args["REVISION"] = ""  # built from released distributions, not from a commit
        args["VERSION"] = self.request.airflow_version
        return args


class ReleaseVerifyOperator(ReleaseImagesMixin, VerifyImageOperator):
    """The PROD checks of a branch build, run on the release candidate."""

    from_sources = False  # built from the index: the image's extras decide the providers expected

    def __init__(self, *, kind: str = "prod", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)


class ReleaseStageOperator(ReleaseImagesMixin, PushImageOperator):
    """Push the verified candidate to the staging repository; returns its digest."""

    def __init__(self, *, kind: str = "prod", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)


class ReleaseTidyOperator(TidyEngineOperator):
    """tidy_engine for a release run: its one local image per Python version is the staged candidate."""

    def droppable(self, request: BuildRequest) -> list[str]:
        staging = release_staging_image(request.registry, request.repository)
        return [staging.ref(release_tag(request.airflow_version, python, variant))
                for python in request.python_versions for variant in request.variants]


class PublishReleaseOperator(BaseOperator):
    """All-or-nothing: when every Python version staged a tested digest, copy each to its release tags.

    Tags are decided from the registry's tags before anything moves; every staged digest is checked
    first; each tag is then a manifest PUT of exactly the tested digest (blobs mounted, never pulled).
    Emits an asset event for every published tag (through :data:`PUBLISHED_IMAGES_ALIAS`).
    """

    template_fields: Sequence[str] = ("release_request", "staged")
    ui_color = "#e8f1fb"
    operator_extra_links = (RegistryImageLink(),)

    def __init__(self, *, release_request: dict[str, Any] | Any, staged: Sequence[Mapping[str, Any]] | Any,
                 **kwargs: Any):
        kwargs.setdefault("outlets", [PUBLISHED_IMAGES_ALIAS])
        super().__init__(**kwargs)
        self.release_request = release_request
        self.staged = staged

    @fails_at_once  # a refused release (an untested Python, a moved tag) is not retried
    def execute(self, context: Any) -> list[dict[str, str]]:
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        release = ReleaseRequest.from_dict(self.release_request)
        variants = tuple(release.build.get("variants") or (REGULAR.name,))
        # Airflow hands a single mapped result over as itself rather than a one-item list.
        items = [self.staged] if isinstance(self.staged, Mapping) else list(self.staged or [])
        # (python, variant) → the tested digest staged for it
        staged = {(s["python"], variant): digest for s in items if s
                  for variant, digest in (s.get("digests") or {}).items() if digest}
        missing = [f"{p} ({v})" for p in release.python_versions for v in variants if (p, v) not in staged]
        if missing:
            raise ReleaseRefused(f"no tested image for Python {', '.join(missing)}: nothing is published")
        target = release_image(release.registry, release.repository)
        staging = release_staging_image(release.registry, release.repository)
        hook = RegistryHook(release.registry, settings=run_settings())
        published: list[dict[str, str]] = []
        with hook.get_conn() as client:
            existing = client.list_tags(target.path)
            plan = [(variant, item) for variant in variants for item in plan_release_tags(
                release.version, release.python_versions, release.default_python, existing, variant)]
            for (python, variant), digest in staged.items():
                if client.manifest_digest(staging.path, digest) is None:
                    raise ReleaseRefused(f"tested digest {digest} of Python {python} ({variant}) is gone from "
                                         f"{staging}; nothing was published")
            for variant, item in plan:
                tested = staged[(item.python, variant)]
                digest = client.copy(staging.path, tested, target.path, item.tag)
                if digest != tested:
                    raise ReleaseRefused(f"{target.ref(item.tag)} became {digest}, not the tested {tested}")
                published.append({"image": target.ref(item.tag), "python": item.python, "digest": digest,
                                  "variant": variant, "reason": item.reason})
        events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
        for row in published:
            events.add(release_asset(release.registry, release.repository, name_and_tag(row["image"])[1]),
                       extra={"digest": row["digest"]})
        default_ref = target.ref(release_tag(release.version, release.default_python, variants[0]))
        record_image_ref(context, default_ref)
        width = max(len(r["image"]) for r in published)
        self.log.info("Published release %s:\n%s", release.version, "\n".join(
            f"{r['image'].ljust(width)}  {r['digest']}  ({r['reason']})" for r in published))
        skipped = {"latest", f"{release.version.rsplit('.', 1)[0]}-python{release.default_python}"} - {
            name_and_tag(r["image"])[1] for r in published}
        if skipped:
            self.log.info("Not moved (a newer release owns them): %s", ", ".join(sorted(skipped)))
        return published


# ---- wiring shared with the DAG file -------------------------------------------------------------


def release_python_images(build_request: Any, constraints_url: Any, pool: str):
    """A task group, mapped over Python versions: base → PROD build → PROD checks → staged push."""
    from airflow.sdk import task, task_group

    from airflow_image_factory.tasks.operators import PreparePythonBaseOperator

    # Every variant's chain is in the group; those the release does not build are skipped (no failure).
    @task(trigger_rule="none_failed")
    @fails_at_once
    def staged(python: str, digests: dict[str, str | None]) -> dict[str, Any]:
        return {"python": python, "digests": {variant: d for variant, d in digests.items() if d}}

    @task_group(group_id="python")
    def per_version(python: str):
        common = {"build_request": build_request, "python": python, "map_index_template": "{{ task.python }}"}
        base = PreparePythonBaseOperator(task_id="python_base", **common)
        digests = {}
        for variant in VARIANTS.values():
            suffix = variant.task_suffix
            kind = variant.prod.value
            build = ReleaseBuildOperator(task_id=f"build_prod{suffix}", kind=kind, python_base=base.output,
                                         constraints_url=constraints_url, pool=pool, **common)
            verify = ReleaseVerifyOperator(task_id=f"verify_prod{suffix}", kind=kind, **common)
            stage = ReleaseStageOperator(task_id=f"stage_prod{suffix}", kind=kind, **common)
            build >> verify >> stage
            digests[variant.name] = stage.output
        return {"staged": staged(python, digests)}

    return per_version
