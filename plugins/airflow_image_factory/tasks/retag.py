"""Copy one branch's ``latest`` images to another branch's names, inside the registry (seed 000's retag script).

Used when a release branch is cut: CI, CI manifest, PROD, PROD build stage and the Python base of every
Python version are copied by manifest (blobs mounted across repositories, never downloaded), so the
target names point at the very same digests. ``dry_run`` lists what would change and changes nothing.

:class:`RetagRequest` / :func:`validate_retag_request` and :func:`plan_retag` / :func:`decide_retag` are
pure; :class:`RetagImagesOperator` does the registry I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseOperator

from airflow_image_factory.exceptions import (
    InvalidBuildRequest,
    InvalidBuildRequests,
    RetagRefused,
    RetagSourceMissing,
)
from airflow_image_factory.policy.naming import ImageKind, ImageName, image_set, variant_kinds
from airflow_image_factory.policy.request import (
    RequestRecord,
    _branch_error,
    invalid,
    screen_conf,
    show,
    validate_request,
)
from airflow_image_factory.policy.settings import DEFAULT_DEBIAN, DEFAULT_PYTHON_BASE_UPSTREAM, Settings
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, image_asset
from airflow_image_factory.tasks.operators import fails_at_once

RETAG_PARAM_NAMES = (
    "source_branch",
    "target_branch",
    "python_versions",
    "registry",
    "repository",
    "naming",
    "variants",
    "dry_run",
)


# What a branch's "last good" set is made of (seed 000's retag list); KUBERNETES is built per deploy.
def retagged_kinds(variants: tuple[str, ...]) -> tuple[ImageKind, ...]:
    """The set of one Python version: CI, CI manifest, the Python base, and each PROD variant's image and
    build stage (the regular ones first, in seed 000's order)."""
    return (ImageKind.CI_MANIFEST, ImageKind.CI, *variant_kinds(variants), ImageKind.PYTHON_BASE)


@dataclass(frozen=True)
class RetagRequest(RequestRecord):
    source_branch: str
    target_branch: str
    python_versions: tuple[str, ...]
    registry: str
    repository: str
    naming: str
    dry_run: bool
    debian: Mapping[str, str] = field(default_factory=dict)
    variants: tuple[str, ...] = ("regular",)


def retag_defaults(settings: Settings) -> dict[str, Any]:
    d = settings.request_defaults()
    return {
        "source_branch": d["branch"],
        "target_branch": "",
        "python_versions": d["python_versions"],
        "registry": d["registry"],
        "repository": d["repository"],
        "naming": d["naming"],
        "variants": d["variants"],
        "dry_run": False,
    }


def validate_retag_request(conf: Mapping[str, Any] | None, settings: Settings) -> RetagRequest:
    """``conf`` over the settings → a RetagRequest; raises InvalidBuildRequests naming every bad field."""
    conf, errors = screen_conf(conf, RETAG_PARAM_NAMES, what="retag request")
    values = {**retag_defaults(settings), **conf}

    # The fields a build request shares are checked by the build request's own rules, under our names.
    shared = {
        "branch": values["source_branch"],
        "python_versions": values["python_versions"],
        "registry": values["registry"],
        "repository": values["repository"],
        "naming": values["naming"],
        "variants": values["variants"],
    }
    build = None
    try:
        build = validate_request(shared, settings)
    except InvalidBuildRequests as exc:
        for error in exc.errors:
            name = "source_branch" if error.field == "branch" else error.field
            errors.append(InvalidBuildRequest(name, error.message))

    target = values["target_branch"]
    if not isinstance(target, str) or not target:
        errors.append(InvalidBuildRequest("target_branch", "is required: the branch whose names receive the images"))
    elif problem := _branch_error(target):
        errors.append(InvalidBuildRequest("target_branch", problem))
    elif target == values["source_branch"]:
        errors.append(InvalidBuildRequest("target_branch", "must differ from source_branch"))

    dry_run = values["dry_run"]
    if not isinstance(dry_run, bool):
        errors.append(InvalidBuildRequest("dry_run", f"must be true or false, got {show(dry_run)}"))

    if errors or build is None:
        raise invalid(errors, "retag request")
    return RetagRequest(
        source_branch=build.branch,
        target_branch=target,
        python_versions=build.python_versions,
        registry=build.registry,
        repository=build.repository,
        naming=build.naming,
        dry_run=dry_run,
        debian=dict(build.debian),
        variants=build.variants,
    )


@dataclass(frozen=True)
class RetagStep:
    python: str
    kind: ImageKind
    source: ImageName
    target: ImageName

    @property
    def tag(self) -> str:
        return self.source.promoted_tag

    @property
    def source_ref(self) -> str:
        return self.source.ref(self.tag)

    @property
    def target_ref(self) -> str:
        return self.target.ref(self.tag)


def plan_retag(request: RetagRequest) -> tuple[RetagStep, ...]:
    """Every (source, target) pair, named by the request's naming convention.

    The Python base is shared by all versions of a branch (one repository, one tag per version), so it
    appears once per version with that version's ``X.Y-slim-<debian>`` tag.
    """
    steps = []
    for python in request.python_versions:
        common = {
            "registry": request.registry, "repository": request.repository, "python": python,
            "debian": request.debian.get(python, DEFAULT_DEBIAN), "naming": request.naming,
            "python_base_source": DEFAULT_PYTHON_BASE_UPSTREAM,  # unused: only branch images move
        }
        source = image_set(branch=request.source_branch, **common)
        target = image_set(branch=request.target_branch, **common)
        steps.extend(RetagStep(python, kind, source[kind], target[kind]) for kind in retagged_kinds(request.variants))
    return tuple(steps)


COPY, UNCHANGED = "copy", "unchanged"


@dataclass(frozen=True)
class RetagAction:
    step: RetagStep
    action: str  # COPY or UNCHANGED
    digest: str
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": self.step.python,
            "kind": self.step.kind.value,
            "source": self.step.source_ref,
            "target": self.step.target_ref,
            "action": self.action,
            "digest": self.digest,
            "previous": self.previous,
        }


def decide_retag(
    steps: Sequence[RetagStep], source_digests: Mapping[str, str | None], target_digests: Mapping[str, str | None]
) -> tuple[RetagAction, ...]:
    """What each step does, given the registry's digests (by ref). All-or-nothing: a missing source fails.

    A target already at the source's digest is left alone (the retag is idempotent).
    """
    missing = [s.source_ref for s in steps if not source_digests.get(s.source_ref)]
    if missing:
        raise RetagSourceMissing(
            f"source image(s) missing, nothing was copied: {', '.join(missing)} "
            "(has the source branch published latest for these Python versions?)"
        )
    actions = []
    for step in steps:
        digest = source_digests[step.source_ref]
        previous = target_digests.get(step.target_ref)
        actions.append(RetagAction(step, UNCHANGED if previous == digest else COPY, digest, previous))  # type: ignore[arg-type]
    return tuple(actions)


def format_actions(actions: Sequence[RetagAction], *, dry_run: bool) -> str:
    width = max((len(a.step.target_ref) for a in actions), default=6)
    verb = {COPY: "would copy" if dry_run else "copied", UNCHANGED: "unchanged"}
    lines = [f"{'TARGET'.ljust(width)}  {'ACTION'.ljust(10)}  DIGEST (previous)"]
    for a in actions:
        before = f" (was {a.previous})" if a.previous and a.action == COPY else ""
        lines.append(f"{a.step.target_ref.ljust(width)}  {verb[a.action].ljust(10)}  {a.digest}{before}")
    return "\n".join(lines)


class RetagImagesOperator(BaseOperator):
    """Carry out a retag: HEAD every source and target, then copy what differs (or only list it)."""

    template_fields: Sequence[str] = ("retag_request",)
    ui_color = "#e8f1fb"

    def __init__(self, *, retag_request: dict[str, Any] | Any, **kwargs: Any):
        # The target branch's latest images are published images too: DAGs scheduled on them hear of it.
        kwargs.setdefault("outlets", [PUBLISHED_IMAGES_ALIAS])
        super().__init__(**kwargs)
        self.retag_request = retag_request

    @fails_at_once  # a missing source image is permanent: not retried
    def execute(self, context: Any) -> list[dict[str, Any]]:
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        request = RetagRequest.from_dict(self.retag_request)
        steps = plan_retag(request)
        hook = RegistryHook(request.registry, settings=run_settings())
        with hook.get_conn() as client:
            sources = {s.source_ref: client.manifest_digest(s.source.path, s.tag) for s in steps}
            targets = {s.target_ref: client.manifest_digest(s.target.path, s.tag) for s in steps}
            actions = decide_retag(steps, sources, targets)  # a missing source is permanent: no retry
            if not request.dry_run:
                for action in actions:
                    if action.action != COPY:
                        continue
                    step = action.step
                    # By digest, so the target gets exactly what was looked at above.
                    digest = client.copy(step.source.path, action.digest, step.target.path, step.tag)
                    if digest != action.digest:
                        raise RetagRefused(f"{step.target_ref} became {digest}, not {action.digest}")
            stats = client.stats.snapshot()
        changed = sum(a.action == COPY for a in actions)
        self.log.info(
            "%s %s → %s (%d of %d names %s):\n%s",
            "DRY RUN, nothing changed:" if request.dry_run else "Retagged",
            request.source_branch, request.target_branch, changed, len(actions),
            "would change" if request.dry_run else "changed", format_actions(actions, dry_run=request.dry_run),
        )
        self.log.info("registry traffic: %s", stats)
        if not request.dry_run:
            events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
            for action in actions:
                if action.action == COPY:
                    events.add(image_asset(action.step.target_ref), extra={"digest": action.digest})
        return [a.to_dict() | {"dry_run": request.dry_run} for a in actions]
