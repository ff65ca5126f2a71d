"""The retag plan, pure: which of a branch's ``latest`` images go to which names of another branch, and what
each copy does given the registry's digests.

:mod:`airflow_image_factory.services.retag` carries it out; the request and the operator are
:mod:`airflow_image_factory.tasks.retag`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_image_factory.exceptions import RetagSourceMissing
from airflow_image_factory.policy.naming import ImageKind, ImageName, image_set, variant_kinds
from airflow_image_factory.policy.settings import DEFAULT_DEBIAN, DEFAULT_PYTHON_BASE_UPSTREAM


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


def plan_retag(request: Any) -> tuple[RetagStep, ...]:
    """Every (source, target) pair of ``request`` (a ``tasks.retag.RetagRequest``), named by its naming convention.

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
