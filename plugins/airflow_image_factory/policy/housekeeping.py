"""What a run may drop from the engine when it ends: only images the registry holds byte for byte.

Builds take their cache from the registry (see :mod:`cache`), so once a run's images are pushed the
worker's engine needs none of them. Kept, they fill a long-lived worker's disk run after run (about
2.5 GB per Python version whenever dependencies or the base change). The rules are plain functions;
the engine and registry calls belong to the operator that applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_image_factory.policy.naming import VARIANTS, ImageKind, ImageSet, variant_kinds
from airflow_image_factory.policy.reference import ImageReference, parse_reference

# The run's images that are pushed (as :SHA, or by the promotion) and so may leave the engine.
# The Python base stays: later builds start FROM it, and its layers are upstream's anyway.
DROPPABLE_KINDS = (ImageKind.CI, ImageKind.CI_MANIFEST, *variant_kinds(tuple(VARIANTS)))
_GIB = 1024**3


def droppable_refs(images: ImageSet, sha: str) -> list[str]:
    """The local ``name:SHA`` references a run of ``sha`` made for one Python version."""
    return [images[kind].ref(sha) for kind in DROPPABLE_KINDS]


def pushed_digests(ref: str, repo_digests: Iterable[str]) -> list[str]:
    """The manifest digests the engine recorded when it pushed ``ref``'s image to ``ref``'s repository.

    ``repo_digests`` is the image's ``RepoDigests`` (``name@sha256:...``, one per repository it was
    pushed to or pulled from). Digests of other repositories say nothing about this one.
    """
    own = _repository_of(parse_reference(ref))
    digests = []
    for entry in repo_digests:
        try:
            parsed = parse_reference(entry)
        except ValueError:
            continue
        if "@" in entry and _repository_of(parsed) == own:
            digests.append(parsed.reference)
    return digests


def keep_bytes(build_cache_keep_gb: int) -> int | None:
    """The setting as BuildKit's ``keep-storage`` in bytes; ``None`` leaves the cache to the engine's GC."""
    return None if build_cache_keep_gb < 0 else build_cache_keep_gb * _GIB


@dataclass
class TidyReport:
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # ref → why it stays
    build_cache_reclaimed: int = 0

    def to_dict(self) -> dict:
        return {"removed": self.removed, "kept": self.kept, "build_cache_reclaimed": self.build_cache_reclaimed}


def _repository_of(reference: ImageReference) -> tuple[str, str]:
    return reference.registry, reference.repository
