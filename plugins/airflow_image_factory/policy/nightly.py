"""What the nightly run rebuilds, and why. Pure: the checks' findings in, one decision per version out.

A version is rebuilt when its published images are missing, when they were built from another commit
than the branch's head (their ``revision`` label), when upstream's Python base moved away from the
digest recorded on our published base (or, for an old base without that label, when the Python inside
differs), or when dependencies have newer versions than the branch's constraints.
Otherwise nothing is built, pushed or committed for it, and the log says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_image_factory.policy.constraints import PinChange

BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
BASE_NAME_LABEL = "org.opencontainers.image.base.name"
REVISION_LABEL = "org.opencontainers.image.revision"
VERSION_LABEL = "org.opencontainers.image.version"
EXTRAS_LABEL = "org.apache.airflow.extras"  # the extras a PROD (or CI) image was built with
MAX_LISTED_UPGRADES = 8


@dataclass(frozen=True)
class BaseFindings:
    """What the registry said about the Python base, without pulling a layer."""

    upstream: str
    upstream_digest: str
    published: str
    published_present: bool
    recorded_digest: str | None  # the base.digest label on our published base; None: no label
    # The seeds' fallback, only when the label is missing: sys.version in each image.
    upstream_python: str | None = None
    published_python: str | None = None

    @property
    def needs_fallback(self) -> bool:
        return self.published_present and self.recorded_digest is None


@dataclass(frozen=True)
class DependencyFindings:
    resolved_count: int
    upgrades: tuple[PinChange, ...]
    constraints_source: str | None  # Python version whose file was compared; None: no file at all
    own_file: bool  # the version has its own constraints-X.Y.txt

    @property
    def changed(self) -> bool:
        return bool(self.upgrades) or not self.own_file


@dataclass(frozen=True)
class VersionDecision:
    python: str
    rebuild: bool
    reasons: tuple[str, ...] = field(default=())

    def log_line(self) -> str:
        verdict = "rebuild" if self.rebuild else "up to date, nothing to do"
        return f"Python {self.python}: {verdict} — " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"python": self.python, "rebuild": self.rebuild, "reasons": list(self.reasons)}


def base_reason(base: BaseFindings) -> tuple[bool, str]:
    """(changed, why) for the Python base."""
    if not base.published_present:
        return True, f"no published Python base {base.published} yet"
    if base.recorded_digest is not None:
        if base.recorded_digest != base.upstream_digest:
            return True, (
                f"upstream {base.upstream} is now {base.upstream_digest}; "
                f"our base was built on {base.recorded_digest}"
            )
        return False, f"Python base unchanged ({base.upstream_digest})"
    # Old image without the label: the seeds' comparison of the Python inside.
    if base.upstream_python is None or base.published_python is None:
        return True, f"{base.published} records no base digest and its Python could not be compared"
    if base.upstream_python != base.published_python:
        return True, (
            f"{base.published} records no base digest; its Python {base.published_python!r} differs "
            f"from upstream's {base.upstream_python!r}"
        )
    return False, f"Python base unchanged (no digest label; same Python {base.published_python!r})"


def dependency_reason(deps: DependencyFindings, python: str) -> tuple[bool, str]:
    if deps.constraints_source is None:
        return True, f"no constraints yet; {deps.resolved_count} dependencies resolved to their newest versions"
    if deps.upgrades:
        listed = ", ".join(str(c) for c in deps.upgrades[:MAX_LISTED_UPGRADES])
        more = len(deps.upgrades) - MAX_LISTED_UPGRADES
        return True, (
            f"{len(deps.upgrades)} of {deps.resolved_count} dependencies have newer versions than "
            f"constraints-{deps.constraints_source}.txt: {listed}{f' and {more} more' if more > 0 else ''}"
        )
    if not deps.own_file:
        return True, f"no constraints-{python}.txt yet (starting from constraints-{deps.constraints_source}.txt)"
    return False, f"all {deps.resolved_count} dependencies match constraints-{python}.txt"


def revision_reason(head: str, published_revisions: dict[str, str | None]) -> tuple[bool, str]:
    """(changed, why): were the published ``latest`` images built from the branch head ``head``?

    ``published_revisions`` maps each published image to its ``revision`` label (None: no label).
    """
    moved = {image: rev for image, rev in sorted(published_revisions.items()) if rev != head}
    if not moved:
        return False, f"latest images are of the branch head {head[:12]}"
    listed = ", ".join(f"{image} is of {rev[:12] if rev else 'an unknown commit'}" for image, rev in moved.items())
    return True, f"the branch head moved to {head[:12]}: {listed}"


def decide(
    python: str, *, base: BaseFindings, dependencies: DependencyFindings, missing_images: Sequence[str] = (),
    revision: tuple[bool, str] | None = None,
) -> VersionDecision:
    reasons: list[str] = []
    rebuild = False
    if missing_images:
        rebuild = True
        reasons.append("not published yet: " + ", ".join(missing_images))
    elif revision is not None:
        rebuild = revision[0]
        reasons.append(revision[1])
    for changed, why in (base_reason(base), dependency_reason(dependencies, python)):
        rebuild = rebuild or changed
        reasons.append(why)
    return VersionDecision(python=python, rebuild=rebuild, reasons=tuple(reasons))
