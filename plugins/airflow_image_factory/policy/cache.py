"""The one place that decides a build's cache: ``pulled`` / ``local`` / ``disabled`` and the fallbacks.

Pure: what the registry holds is handed in (image ref → exists), so this is tested without Docker.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_image_factory.exceptions import CacheImageMissing
from airflow_image_factory.policy.naming import LATEST, VARIANTS, ImageKind, ImageSet


class CacheStrategy(str, enum.Enum):
    PULLED = "pulled"  # the registry's images are the build cache
    LOCAL = "local"  # only what the engine already has
    DISABLED = "disabled"  # build everything from scratch

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CachePlan:
    requested: CacheStrategy
    effective: CacheStrategy
    cache_from: tuple[str, ...] = ()
    no_cache: bool = False
    # Inline cache metadata makes every pushed image usable as a later build's --cache-from.
    inline_cache: bool = True
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return {
            "requested": self.requested.value,
            "effective": self.effective.value,
            "cache_from": list(self.cache_from),
            "no_cache": self.no_cache,
            "inline_cache": self.inline_cache,
            "notes": list(self.notes),
        }


# The images whose latest a build of each kind reuses as its cache, most useful first.
CACHE_SOURCES: Mapping[ImageKind, tuple[ImageKind, ...]] = {
    ImageKind.CI: (ImageKind.CI,),
    # each PROD variant: its build stage from its own, its image from its build stage and its own
    **{kind: sources for v in VARIANTS.values()
       for kind, sources in ((v.prod_build, (v.prod_build,)), (v.prod, (v.prod_build, v.prod)))},
}


def cache_images(kind: ImageKind, own: ImageSet, default_branch: ImageSet | None = None) -> list[str]:
    """The ``latest`` refs a build of ``kind`` may reuse: its branch's own, then (for a branch other than
    the default one) the default branch's, so a new branch starts from main's cache instead of cold."""
    sets = [own] if default_branch is None else [own, default_branch]
    return [images[source].ref(LATEST) for images in sets for source in CACHE_SOURCES[kind]]


def plan_cache(
    strategy: CacheStrategy | str,
    cache_images: Sequence[str],
    present: Mapping[str, bool],
    *,
    tag: str = LATEST,
    resolved: Mapping[str, str] | None = None,
) -> CachePlan:
    """Decide the cache inputs of one build.

    ``cache_images`` are the refs (``name:tag``) the build would reuse, most useful first;
    ``present`` says which of them the registry holds for the build's platform, and ``resolved`` what to
    hand BuildKit for each (an index's child for that platform, ``name@sha256:...``): no platform's build
    takes another's cache. With ``pulled``:

    * all present → use them;
    * ``latest`` wanted and none present (first build of a new repository or branch) → fall back to
      ``local`` and say so; some present → use those and name the missing ones;
    * a specific tag wanted (a SHA) and missing → :class:`CacheImageMissing`: the run asked for an
      exact image, and silently building something else would be wrong.
    """
    strategy = CacheStrategy(strategy)
    if strategy is CacheStrategy.DISABLED:
        return CachePlan(strategy, strategy, no_cache=True, notes=("cache disabled: building every layer",))
    if strategy is CacheStrategy.LOCAL:
        return CachePlan(strategy, strategy, notes=("using the engine's local cache only",))

    missing = [ref for ref in cache_images if not present.get(ref, False)]
    found = tuple(ref for ref in cache_images if present.get(ref, False))
    if missing and tag != LATEST:
        raise CacheImageMissing(
            f"cache image(s) {', '.join(missing)} not found in the registry; a specific tag ({tag}) "
            "was asked for, so the build will not fall back to another cache"
        )
    if not found:
        return CachePlan(
            strategy,
            CacheStrategy.LOCAL,
            notes=(
                f"no {tag} cache image in the registry yet ({', '.join(missing) or 'none named'}): "
                "switching to 'local' cache for this build",
            ),
        )
    cache_from = tuple((resolved or {}).get(ref, ref) for ref in found)
    notes = [f"cache from registry: {', '.join(cache_from)}"]
    if missing:
        notes.append(f"not in the registry, skipped as cache: {', '.join(missing)}")
    return CachePlan(strategy, strategy, cache_from=cache_from, notes=tuple(notes))


# ---- the compiled UI (branch builds of PROD) ----------------------------------------------------


class UiAssetsSource(str, enum.Enum):
    IMAGE = "image"  # the registry's REPO/ui-assets:<key> (present, or built and pushed first)
    BUILD = "build"  # compiled inside this build (no image may be published, or the cache is local)


@dataclass(frozen=True)
class UiAssetsPlan:
    source: UiAssetsSource
    # Build the ui-assets image first (and push it), so this and later builds take it from the registry.
    publish_first: bool
    no_cache: bool
    note: str


def plan_ui_assets(
    strategy: CacheStrategy | str, ref: str, present: bool, *, may_push: bool
) -> UiAssetsPlan:
    """Where a PROD build of a branch takes the compiled UI from.

    ``ref`` is the content-keyed ``REG/REPO/ui-assets:<key>``; ``present`` whether the registry holds it.
    ``pulled``: the registry's image when present, else built and pushed first when the run may push
    (a worker without build cache then compiles no UI the registry has), else compiled in the build.
    ``disabled``: compiled anew (every layer built) and pushed first when the run may push.
    ``local``: compiled in the build (the engine's cache decides; the registry is not asked).
    """
    strategy = CacheStrategy(strategy)
    if strategy is CacheStrategy.PULLED and present:
        return UiAssetsPlan(UiAssetsSource.IMAGE, False, False, f"compiled UI from {ref}")
    if strategy is not CacheStrategy.LOCAL and may_push:
        why = "cache disabled" if strategy is CacheStrategy.DISABLED else "not in the registry yet"
        return UiAssetsPlan(UiAssetsSource.IMAGE, True, strategy is CacheStrategy.DISABLED,
                            f"compiled UI: {ref} {why}: compiling it and pushing it first")
    why = "the cache is local" if strategy is CacheStrategy.LOCAL else f"{ref} is missing and this run pushes nothing"
    return UiAssetsPlan(UiAssetsSource.BUILD, False, strategy is CacheStrategy.DISABLED,
                        f"compiled UI: compiled in the build ({why})")


# ---- build avoidance: an image already published under the build's content key ------------------


@dataclass(frozen=True)
class ReusePlan:
    # The published image (name:tag) whose content key equals this build's: reuse its digest. None: build.
    reuse: str | None
    note: str


def reuse_blocker(strategy: CacheStrategy | str, key: str | None, *, rebuild: bool, push: bool) -> str | None:
    """Why this build may not reuse a published image, or None when it may look for one.

    Only with ``pulled`` (the run trusts the registry), a key (an eager upgrade has none: it resolves
    against the index as it is at build time, so the same inputs need not give the same image), push
    on (what is reused is the registry's image; a run that pushes nothing wants a local one), and
    ``rebuild`` off (a user who asks for a build gets one).
    """
    if rebuild:
        return "rebuild was asked for"
    if CacheStrategy(strategy) is not CacheStrategy.PULLED:
        return f"cache is {CacheStrategy(strategy).value}"
    if not push:
        return "push is off: the image must be built here"
    if key is None:
        return "an eager upgrade resolves the dependencies against the index at build time"
    return None


def plan_reuse(candidates: Sequence[str], published: Mapping[str, str | None], key: str) -> ReusePlan:
    """The first of ``candidates`` (refs, most specific first) whose published content key (``published``:
    ref → the key its label holds, None when missing or unlabelled) equals ``key``."""
    for ref in candidates:
        if published.get(ref) == key:
            return ReusePlan(ref, f"content key {key[:12]} is published as {ref}: reusing it, nothing to build")
    seen = ", ".join(f"{ref} ({(published.get(ref) or 'none')[:12]})" for ref in candidates)
    return ReusePlan(None, f"content key {key[:12]} is not published ({seen or 'nothing to compare'}): building")
