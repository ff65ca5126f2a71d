"""Release images (AIP-26): build the PROD image of a released Airflow X.Y.Z from PyPI with that release's
constraints, verify it, and publish ``X.Y.Z-pythonA.B``, ``X.Y-pythonA.B``, and for the default Python
``X.Y.Z`` and ``latest`` — moving tags only forward.

Here: the release request and its rules, and the Airflow steps. Which tags a release publishes and which
released images need a rebuild is :mod:`airflow_image_factory.policy.release` (pure); publishing and
reading released images is :mod:`airflow_image_factory.services.release`. Operators reuse the build,
verify and push steps of a branch build with the release's names.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperator

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.naming import (
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
from airflow_image_factory.policy.release import _RELEASE_VERSION, staged_digests
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
# The released versions a request may name: policy.release._RELEASE_VERSION.
_RELEASE_EXAMPLE = "released version such as 3.3.2 or 3.4.0rc1"
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

    The registry work is :func:`airflow_image_factory.services.release.publish_release`: tags decided from
    the registry's tags before anything moves, every staged digest checked first, each tag a verified copy
    of exactly the tested digest, and every tag put back when any step fails.
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
        from airflow_image_factory.services.release import publish_release
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        release = ReleaseRequest.from_dict(self.release_request)
        variants = tuple(release.build.get("variants") or (REGULAR.name,))
        # Airflow hands a single mapped result over as itself rather than a one-item list.
        items = [self.staged] if isinstance(self.staged, Mapping) else list(self.staged or [])
        staged = staged_digests(items, release.python_versions, variants)
        with RegistryHook(release.registry, settings=run_settings()).get_conn() as client:
            published = publish_release(client, release, staged, variants, log=self.log.info)
        events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
        for row in published:
            events.add(release_asset(release.registry, release.repository, name_and_tag(row["image"])[1]),
                       extra={"digest": row["digest"]})
        target = release_image(release.registry, release.repository)
        record_image_ref(context, target.ref(release_tag(release.version, release.default_python, variants[0])))
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
