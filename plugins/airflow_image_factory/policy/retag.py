"""The retag request and plan, pure: which of a branch's ``latest`` images go to which names of another
branch, and what each copy does given the registry's digests.

:data:`RETAG_SCHEMA` is the retag_images DAG's request: its trigger form and, through
:func:`validate_retag_request`, its validation. :mod:`airflow_image_factory.services.retag` carries the plan
out; the operator is :mod:`airflow_image_factory.tasks.retag`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_image_factory.exceptions import InvalidBuildRequest, RetagSourceMissing
from airflow_image_factory.policy.naming import ImageKind, ImageName, image_set, variant_kinds
from airflow_image_factory.policy.request import (
    BRANCH,
    NAMING,
    PROD_VARIANTS,
    PYTHON_VERSIONS,
    REGISTRY,
    REPOSITORY,
    Fail,
    RequestRecord,
    _branch_error,
    invalid,
)
from airflow_image_factory.policy.schema import Field, RequestSchema, constant, setting
from airflow_image_factory.policy.settings import DEFAULT_DEBIAN, DEFAULT_PYTHON_BASE_UPSTREAM, Settings

# ---- the retag request: one schema makes the trigger form and the validation -----------------------


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


def _target_branch(value: str, fail: Fail) -> str:
    if not value:
        fail("is required: the branch whose names receive the images")
    elif problem := _branch_error(value):
        fail(problem)
    return value


# retag_images: the build request's fields it shares keep their rules (source_branch is BRANCH renamed).
RETAG_SCHEMA = RequestSchema("retag request", (
    replace(BRANCH, name="source_branch", title="Source branch", default=setting("branch"),
            description="The branch whose latest images are copied."),
    Field("target_branch", "string", "Target branch",
          "The branch whose image names receive the source's latest images.",
          default=constant(""), rule=_target_branch),
    replace(PYTHON_VERSIONS, description="Python versions (X.Y) whose images are copied."),
    REGISTRY,
    REPOSITORY,
    NAMING,
    replace(PROD_VARIANTS, description="PROD variants whose images (and build stages) are copied."),
    Field("dry_run", "boolean", "Dry run", "List what would change only.", default=constant(False)),
))


def validate_retag_request(conf: Mapping[str, Any] | None, settings: Settings) -> RetagRequest:
    """``conf`` over the settings → a RetagRequest; raises InvalidBuildRequests naming every bad field."""
    values, errors = RETAG_SCHEMA.check(conf, settings)
    if not {e.field for e in errors} & {"source_branch", "target_branch"} \
            and values["target_branch"] == values["source_branch"]:
        errors.append(InvalidBuildRequest("target_branch", "must differ from source_branch"))
    if errors:
        raise invalid(errors, RETAG_SCHEMA.what)
    return RetagRequest(**values, debian={python: settings.debian_for(python) for python in values["python_versions"]})


# ---- the plan ------------------------------------------------------------------------------------------


# What a branch's "last good" set is made of (seed 000's retag list); KUBERNETES is built per deploy.
def retagged_kinds(variants: tuple[str, ...]) -> tuple[ImageKind, ...]:
    """The set of one Python version: CI, CI manifest, the Python base, and each PROD variant's image and
    build stage (the regular ones first, in seed 000's order)."""
    return (ImageKind.CI_MANIFEST, ImageKind.CI, *variant_kinds(variants), ImageKind.PYTHON_BASE)


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
    """Every (source, target) pair of ``request``, named by its naming convention.

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
