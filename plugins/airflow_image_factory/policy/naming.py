"""The one place that makes image names: naming conventions as strategies, and registry web links.

Pure: no I/O. ``REPO`` is the lower-cased source repository (``apache/airflow``), ``BRANCH`` the
branch, ``X.Y`` the Python version, ``REG`` the registry host.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow_image_factory.policy.reference import split_repository
from airflow_image_factory.policy.settings import DEFAULT_DEBIAN

if TYPE_CHECKING:
    from airflow_image_factory.policy.request import BuildRequest

LATEST = "latest"


class ImageKind(str, enum.Enum):
    PYTHON_BASE = "python"
    CI = "ci"
    CI_MANIFEST = "ci-manifest"
    PROD = "prod"
    PROD_BUILD = "prod-build"
    PROD_SLIM = "prod-slim"
    PROD_SLIM_BUILD = "prod-slim-build"
    KUBERNETES = "kubernetes"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Variant:
    """A PROD image variant as Airflow publishes them: its image kinds, its extras and its release tags.

    ``regular`` installs Airflow's default extras (what users deploy); ``slim`` installs none, so only
    the providers apache-airflow-core itself depends on. Each has its own PROD image and build stage.
    """

    name: str
    prod: ImageKind
    prod_build: ImageKind
    extras_setting: str  # the Settings field holding its extras
    python_deps_setting: str  # the Settings field holding its other Python requirements
    release_prefix: str  # release tags: ``slim-3.3.2-python3.11``, ``slim-latest``

    def release_tag(self, tag: str) -> str:
        return f"{self.release_prefix}{tag}"

    @property
    def task_suffix(self) -> str:
        """What its steps' task ids end in: nothing for regular (``build_prod``), ``_slim`` for slim."""
        return "" if self.name == "regular" else f"_{self.name}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("regular", ImageKind.PROD, ImageKind.PROD_BUILD, "airflow_extras", "additional_python_deps", ""),
        Variant("slim", ImageKind.PROD_SLIM, ImageKind.PROD_SLIM_BUILD, "slim_airflow_extras",
                "slim_additional_python_deps", "slim-"),
    )
}
REGULAR = VARIANTS["regular"]


def variant_of(kind: ImageKind) -> Variant | None:
    """The PROD variant an image kind belongs to (its image or its build stage); None for the others."""
    return next((v for v in VARIANTS.values() if kind in (v.prod, v.prod_build)), None)


def variant_kinds(variants: tuple[str, ...] | list[str]) -> tuple[ImageKind, ...]:
    """The PROD images and build stages of ``variants``, in the order of :data:`VARIANTS`."""
    return tuple(kind for v in VARIANTS.values() if v.name in variants for kind in (v.prod_build, v.prod))


@dataclass(frozen=True)
class ImageName:
    """A repository in a registry. The Python base carries its own tag (``X.Y-slim-<debian>``)."""

    registry: str
    path: str
    fixed_tag: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.path}" if self.registry else self.path

    def ref(self, tag: str | None = None) -> str:
        """``name:tag``; the fixed tag when the image has one and none is given."""
        chosen = tag or self.fixed_tag
        if chosen is None:
            raise ValueError(f"{self.name} has no fixed tag; name one")
        return f"{self.name}@{chosen}" if chosen.startswith("sha256:") else f"{self.name}:{chosen}"

    @property
    def promoted_tag(self) -> str:
        """The tag that means "last tested good": ``latest``, or the base's fixed tag."""
        return self.fixed_tag or LATEST

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class NamingContext:
    registry: str
    repository: str
    branch: str
    python: str
    debian: str

    @property
    def base_tag(self) -> str:
        return f"{self.python}-slim-{self.debian}"


class NamingConvention(ABC):
    """How one registry lays out the images of one branch and Python version."""

    key: str
    description: str

    @abstractmethod
    def path(self, kind: ImageKind, ctx: NamingContext) -> str: ...

    def image(self, kind: ImageKind, ctx: NamingContext) -> ImageName:
        fixed_tag = ctx.base_tag if kind is ImageKind.PYTHON_BASE else None
        return ImageName(ctx.registry, self.path(kind, ctx), fixed_tag)


class SlashConvention(NamingConvention):
    """``REG/REPO/BRANCH/ci/pythonX.Y`` — the current convention (seed 000)."""

    key = "slash"
    description = 'Current "/" convention: REPO/BRANCH/<kind>/pythonX.Y'

    def path(self, kind: ImageKind, ctx: NamingContext) -> str:
        if kind is ImageKind.PYTHON_BASE:
            return f"{ctx.repository}/{ctx.branch}/python"
        return f"{ctx.repository}/{ctx.branch}/{kind.value}/python{ctx.python}"


# Legacy names put everything into one path component with a -v2 suffix (seed 001).
_LEGACY_SUFFIX = {
    ImageKind.CI: "-ci-v2",
    ImageKind.CI_MANIFEST: "-ci-v2-manifest",
    ImageKind.PROD: "-v2",
    ImageKind.PROD_BUILD: "-build-v2",
    ImageKind.PROD_SLIM: "-slim-v2",
    ImageKind.PROD_SLIM_BUILD: "-slim-build-v2",
    ImageKind.KUBERNETES: "-v2-kubernetes",
}


def _legacy_image_name(kind: ImageKind, ctx: NamingContext) -> str:
    if kind is ImageKind.PYTHON_BASE:
        return "python-v2"
    return f"{ctx.branch.replace('/', '-')}-python{ctx.python}{_LEGACY_SUFFIX[kind]}"


class GhcrV2Convention(NamingConvention):
    """``ghcr.io/REPO-BRANCH-pythonX.Y-ci-v2`` — ghcr.io before the "/" switch."""

    key = "ghcr-v2"
    description = "Older ghcr.io convention: REPO-BRANCH-pythonX.Y-ci-v2"

    def path(self, kind: ImageKind, ctx: NamingContext) -> str:
        return f"{ctx.repository}-{_legacy_image_name(kind, ctx)}"


class GitHubPackagesConvention(NamingConvention):
    """``docker.pkg.github.com/REPO/BRANCH-pythonX.Y-ci-v2`` — GitHub Packages needs OWNER/REPO/NAME."""

    key = "github-packages"
    description = "GitHub Packages: REPO/BRANCH-pythonX.Y-ci-v2"

    def path(self, kind: ImageKind, ctx: NamingContext) -> str:
        return f"{ctx.repository}/{_legacy_image_name(kind, ctx)}"


CONVENTIONS: dict[str, NamingConvention] = {
    c.key: c for c in (SlashConvention(), GhcrV2Convention(), GitHubPackagesConvention())
}


def convention(key: str) -> NamingConvention:
    try:
        return CONVENTIONS[key]
    except KeyError:
        raise ValueError(f"unknown naming convention {key!r}; known: {', '.join(CONVENTIONS)}") from None


@dataclass(frozen=True)
class ImageSet:
    """Every image name of one branch and Python version, made once and passed downstream."""

    python: str
    python_base: ImageName
    ci: ImageName
    ci_manifest: ImageName
    prod: ImageName
    prod_build: ImageName
    prod_slim: ImageName
    prod_slim_build: ImageName
    kubernetes: ImageName
    upstream_python_base: ImageName
    local_ci_manifest: ImageName

    def __getitem__(self, kind: ImageKind) -> ImageName:
        return getattr(self, kind.name.lower())

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        return {
            key: {"registry": image.registry, "path": image.path, "fixed_tag": image.fixed_tag}
            for key, image in self.__dict__.items()
            if isinstance(image, ImageName)
        } | {"python": self.python}  # type: ignore[dict-item]

    @classmethod
    def from_dict(cls, data: dict) -> ImageSet:
        return cls(
            python=data["python"],
            **{key: ImageName(**value) for key, value in data.items() if key != "python"},
        )


def image_set(
    *, registry: str, repository: str, branch: str, python: str, debian: str, naming: str,
    python_base_source: str,
) -> ImageSet:
    ctx = NamingContext(registry=registry, repository=repository, branch=branch, python=python, debian=debian)
    strategy = convention(naming)
    upstream_registry, upstream_path = split_repository(python_base_source)
    return ImageSet(
        python=python,
        upstream_python_base=ImageName(upstream_registry, upstream_path, ctx.base_tag),
        # The local manifest image never leaves the engine, so it has no registry (seed 000).
        local_ci_manifest=ImageName("", f"local-airflow-ci-manifest/{branch}/python{python}"),
        **{kind.name.lower(): strategy.image(kind, ctx) for kind in ImageKind},
    )


def images_for(request: BuildRequest, python: str) -> ImageSet:
    return image_set(
        registry=request.registry,
        repository=request.repository,
        branch=request.branch,
        python=python,
        debian=request.debian.get(python, DEFAULT_DEBIAN),
        naming=request.naming,
        python_base_source=request.python_base_source,
    )


def probe_image(branch: str, python: str, upgraded: Iterable[str]) -> str:
    """The local, never pushed image of one bisection probe: the published CI image plus the ``upgraded``
    packages, ``local-airflow-ci-probe/BRANCH/pythonX.Y:probe-<hash of the set>`` (no registry, like the
    local CI manifest: it is removed from the engine once its tests ran)."""
    digest = hashlib.sha256("\n".join(sorted(set(upgraded))).encode()).hexdigest()[:16]
    return ImageName("", f"local-airflow-ci-probe/{branch.lower()}/python{python}").ref(f"probe-{digest}")


# ---- released images (AIP-26) -----------------------------------------------------------------


def release_image(registry: str, repository: str) -> ImageName:
    """Released images live in ``REG/REPO`` itself, told apart by tag: ``REG/REPO:3.3.2-python3.11``."""
    return ImageName(registry, repository)


def release_staging_image(registry: str, repository: str) -> ImageName:
    """Where a release's tested images wait until every Python version passed: ``REG/REPO/release-staging``.

    Promotion copies them into :func:`release_image` by digest, so users never see a half release.
    """
    return ImageName(registry, f"{repository}/release-staging")


def ui_assets_image(registry: str, repository: str) -> ImageName:
    """The compiled UIs of one content of the UI sources: ``REG/REPO/ui-assets:<content key>``.

    Not per branch or Python version: every build whose UI sources are the same shares one image."""
    return ImageName(registry, f"{repository}/ui-assets")


def release_tag(version: str, python: str | None = None, variant: str = "regular") -> str:
    """``X.Y.Z-pythonA.B`` (or ``X.Y-pythonA.B``), or the bare version when no Python is named; the slim
    variant's tags have Airflow's ``slim-`` prefix (``slim-3.3.2-python3.11``, ``slim-3.3.2``)."""
    return VARIANTS[variant].release_tag(f"{version}-python{python}" if python else version)


# ---- registry web pages ---------------------------------------------------------------------


def _github_container_page(image: ImageName) -> str:
    # ghcr shows a package under its owner; a "/" inside the package name is percent-encoded.
    owner, _, package = image.path.partition("/")
    repo = package.split("/", 1)[0].split("-", 1)[0]
    return f"https://github.com/{owner}/{repo}/pkgs/container/{quote(package, safe='')}"


def _github_packages_page(image: ImageName) -> str:
    owner, repo, *_ = image.path.split("/")
    return f"https://github.com/{owner}/{repo}/packages"


def _docker_hub_page(image: ImageName) -> str:
    path = image.path.removeprefix("library/")
    return f"https://hub.docker.com/_/{path}" if "/" not in path else f"https://hub.docker.com/r/{path}/tags"


_WEB_PAGES = {
    "ghcr.io": _github_container_page,
    "docker.pkg.github.com": _github_packages_page,
    "docker.io": _docker_hub_page,
}


def web_url(image: ImageName) -> str:
    """Where a person looks at the image: the registry's web page, or its tags list for plain registries."""
    page = _WEB_PAGES.get(image.registry)
    if page:
        return page(image)
    host = image.registry.split(":")[0]
    local = host == "localhost" or host.startswith("127.") or host == "[::1]"
    return f"{'http' if local else 'https'}://{image.registry}/v2/{image.path}/tags/list"
