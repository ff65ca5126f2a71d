"""Which images are pushed when, and the all-or-nothing gate in front of ``latest``.

Pure: gets the run's outcomes as data and answers with a plan; a service carries it out, under the lock
of :mod:`airflow_image_factory.clients.locks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_image_factory.policy.naming import VARIANTS, ImageKind, ImageSet, variant_kinds
from airflow_image_factory.policy.platforms import platform_tag

# Pushed with their commit SHA on every build (seed 000: only final images are needed per commit).
SHA_PUSHED = (ImageKind.CI, *(variant.prod for variant in VARIANTS.values()))
# The images whose tested :SHA digest is re-tagged; the others are first pushed at promotion.
RETAGGED = SHA_PUSHED


def promoted_kinds(variants: tuple[str, ...] = ("regular",)) -> tuple[ImageKind, ...]:
    """What a run publishes as the "last good" images, only when every test of the run passed: the Python
    base, each PROD variant's build stage and the CI manifest (pushed with latest only), CI, each PROD."""
    kinds = variant_kinds(variants)
    return (
        ImageKind.PYTHON_BASE,
        *(k for k in kinds if k not in SHA_PUSHED),
        ImageKind.CI_MANIFEST,
        ImageKind.CI,
        *(k for k in kinds if k in SHA_PUSHED),
    )


@dataclass(frozen=True)
class VersionOutcome:
    """What happened to one Python version of a run."""

    python: str
    passed: bool
    digests: Mapping[str, str] = field(default_factory=dict)  # ImageKind value → digest of the :SHA push
    failures: tuple[str, ...] = ()
    # A build stage of several platforms some of which were reused (content key): ImageKind value →
    # platform → the published image's digest (not on this worker to push; tagged in the registry instead)
    platform_digests: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "python": self.python,
            "passed": self.passed,
            "digests": dict(self.digests),
            "failures": list(self.failures),
            "platform_digests": {kind: dict(found) for kind, found in self.platform_digests.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> VersionOutcome:
        return cls(
            python=data["python"],
            passed=bool(data["passed"]),
            digests=dict(data.get("digests", {})),
            failures=tuple(data.get("failures", ())),
            platform_digests={kind: dict(found) for kind, found in (data.get("platform_digests") or {}).items()},
        )


@dataclass(frozen=True)
class PromotionStep:
    kind: ImageKind
    python: str
    target: str  # name:tag that will point at the image
    source_digest: str | None  # the tested digest to re-tag; None: push the local image as is
    local_image: str | None = None
    # Several platforms: (platform, local image or the digest of a published one, the name:tag-<arch> it is
    # pushed or tagged as) each; the target then becomes their index (policy/platforms.py), local_image None.
    platform_images: tuple[tuple[str, str, str], ...] = ()

    def to_dict(self) -> dict:
        return {
            "kind": self.kind.value,
            "python": self.python,
            "target": self.target,
            "source_digest": self.source_digest,
            "local_image": self.local_image,
            "platform_images": [list(entry) for entry in self.platform_images],
        }

    @property
    def targets(self) -> tuple[str, ...]:
        """Every name:tag the step moves: its target, and each platform's image of an index."""
        return (*(child for _, _, child in self.platform_images), self.target)


@dataclass(frozen=True)
class PromotionPlan:
    allowed: bool
    reason: str
    steps: tuple[PromotionStep, ...] = ()

    @property
    def pushes(self) -> tuple[PromotionStep, ...]:
        return tuple(s for s in self.steps if s.source_digest is None)

    @property
    def retags(self) -> tuple[PromotionStep, ...]:
        return tuple(s for s in self.steps if s.source_digest is not None)


def plan_promotion(
    *,
    push: bool,
    python_versions: tuple[str, ...],
    outcomes: Mapping[str, VersionOutcome],
    images: Mapping[str, ImageSet],
    local_images: Mapping[str, Mapping[str, str | Mapping[str, str]]] | None = None,
    variants: tuple[str, ...] = ("regular",),
) -> PromotionPlan:
    """All versions passed → a plan that moves ``latest`` for every version; otherwise nothing moves.

    ``local_images`` maps python → ImageKind value → the engine's image id or tag for the images
    pushed for the first time at promotion (Python base, PROD build stage, CI manifest), or platform →
    tag for an image built for several platforms (pushed as ``latest-<arch>`` each, ``latest`` their
    index); one of them with a digest in the outcome (a PROD build stage reused from the registry) is
    re-tagged instead.
    Pushes come first and re-tags last, so a failed upload leaves every ``latest`` of CI and PROD
    where it was; the re-tags are manifest PUTs only.
    """
    if not push:
        return PromotionPlan(False, "push is off for this run: nothing is published")
    missing = [v for v in python_versions if v not in outcomes]
    if missing:
        return PromotionPlan(False, f"no result for Python {', '.join(missing)}: latest stays where it is")
    failed = [o for o in outcomes.values() if o.python in python_versions and not o.passed]
    if failed:
        detail = "; ".join(f"{o.python}: {', '.join(o.failures) or 'failed'}" for o in failed)
        return PromotionPlan(False, f"tests failed ({detail}): no latest changes for any Python version")

    local_images = local_images or {}
    pushes: list[PromotionStep] = []
    retags: list[PromotionStep] = []
    for version in python_versions:
        image_set = images[version]
        outcome = outcomes[version]
        for kind in promoted_kinds(variants):
            image = image_set[kind]
            target = image.ref(image.promoted_tag)
            digest = outcome.digests.get(kind.value)
            if kind in RETAGGED or digest:  # an image reused from the registry is re-tagged too
                if not digest:
                    return PromotionPlan(
                        False, f"Python {version}: no tested {kind.value} digest was recorded; nothing moves"
                    )
                retags.append(PromotionStep(kind, version, target, digest))
            else:
                local = local_images.get(version, {}).get(kind.value)
                if not local:
                    return PromotionPlan(
                        False, f"Python {version}: the {kind.value} image is not available to push; nothing moves"
                    )
                if isinstance(local, Mapping):
                    children = tuple((platform, ref, image.ref(platform_tag(image.promoted_tag, platform)))
                                     for platform, ref in local.items())
                    pushes.append(PromotionStep(kind, version, target, None, None, children))
                else:
                    pushes.append(PromotionStep(kind, version, target, None, local))
    return PromotionPlan(True, "every Python version passed its tests", tuple(pushes + retags))


def _same_repository(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.strip().rstrip("/").removesuffix(".git").lower()

    return norm(a) == norm(b)


def fork_mode_reason(*, source_repo: str, canonical_source: str, can_write: bool, registry: str) -> str | None:
    """Why this run must push and commit nothing (fork mode), or None when it may publish."""
    if not _same_repository(source_repo, canonical_source):
        return f"source repository {source_repo} is not the canonical {canonical_source}"
    if not can_write:
        return f"no write access to {registry} (no docker Connection with push rights)"
    return None
