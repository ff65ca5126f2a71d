"""Airflow's sources as the builds see them: what a checkout declares, and what goes into a build.

A checkout in apache/airflow's layout holds three distributions: the ``apache-airflow`` meta package
at the root, ``apache-airflow-core`` in ``airflow-core/`` and ``apache-airflow-task-sdk`` in
``task-sdk/``. This module reads their metadata from the ``pyproject.toml`` files (no build, no
network), writes *metadata wheels* of them (a wheel holding only the metadata: the images' dependency
layer installs from these, so it depends on the declared dependencies alone), and stages the
checkout into a build context with a ``.dockerignore``-style filter.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_image_factory.clients.content import TreeHasher
from airflow_image_factory.exceptions import SourceTreeInvalid

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Distribution name → its directory in the checkout.
DISTRIBUTIONS: Mapping[str, str] = {
    "apache-airflow": ".",
    "apache-airflow-core": "airflow-core",
    "apache-airflow-task-sdk": "task-sdk",
}
CORE = "apache-airflow-core"
# The local version label of metadata wheels: "==3.4.0.dev0" still matches them, and pip prefers them
# over a same-version release on the index.
METADATA_LABEL = "metadata"

# What of a checkout reaches a build (paths relative to the checkout root, fnmatch patterns on
# the whole path). Allowed: the three distributions and the shared libraries airflow-core and
# task-sdk link in; never: VCS data, caches, node_modules and compiled UI assets (the build
# compiles the UI itself), documentation.
SOURCES_INCLUDE = (
    "pyproject.toml", "LICENSE", "NOTICE", "README.md", "generated", "generated/*",
    "airflow-core", "airflow-core/*", "task-sdk", "task-sdk/*", "shared", "shared/*",
)
SOURCES_EXCLUDE = (
    ".git", "*/.git", "*/node_modules", "*/__pycache__", "*.pyc", "*/.pytest_cache", "*/.mypy_cache",
    "*/.ruff_cache", "*.egg-info", "airflow-core/src/airflow/ui/dist",
    "airflow-core/src/airflow/api_fastapi/auth/managers/simple/ui/dist", "airflow-core/src/airflow/git_version",
    "airflow-core/docs", "task-sdk/docs", "shared/*/docs",
)

_VERSION_ASSIGNMENT = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class Distribution:
    """One distribution as its ``pyproject.toml`` declares it."""

    name: str
    version: str
    requires_python: str = ""
    dependencies: tuple[str, ...] = ()
    optional_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    build_requires: tuple[str, ...] = ()  # [build-system] requires

    def metadata(self) -> str:
        """Core metadata (``METADATA``) of the metadata wheel, version labelled ``+metadata``."""
        lines = ["Metadata-Version: 2.1", f"Name: {self.name}", f"Version: {self.version}+{METADATA_LABEL}"]
        if self.requires_python:
            lines.append(f"Requires-Python: {self.requires_python}")
        lines += [f"Requires-Dist: {dependency}" for dependency in self.dependencies]
        for extra, dependencies in sorted(self.optional_dependencies.items()):
            lines.append(f"Provides-Extra: {extra}")
            for dependency in dependencies:
                lines.append(f"Requires-Dist: {_with_extra_marker(dependency, extra)}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SourceTree:
    """The distributions of one checkout."""

    distributions: Mapping[str, Distribution]

    @property
    def version(self) -> str:
        """The version of the sources: airflow-core's (``airflow version`` prints it)."""
        return self.distributions[CORE].version

    def build_requirements(self) -> list[str]:
        """Every distribution's build requirements (pinned in Airflow's pyproject files), once each: the
        wheels are built without build isolation from one environment that has them."""
        return sorted({r for d in self.distributions.values() for r in d.build_requires})


def _with_extra_marker(dependency: str, extra: str) -> str:
    requirement = Requirement(dependency)
    marker = f'extra == "{extra}"'
    requirement.marker = None
    base = str(requirement)
    original = Requirement(dependency).marker
    return f"{base}; ({original}) and {marker}" if original else f"{base}; {marker}"


def parse_distribution(pyproject: str, *, read: Callable[[str], str | None], where: str) -> Distribution:
    """A distribution from its ``pyproject.toml`` text; ``read(path)`` reads a file next to it (a
    dynamic version from hatch's ``[tool.hatch.version] path``)."""
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError as exc:
        raise SourceTreeInvalid(f"{where}/pyproject.toml is not valid TOML: {exc}") from exc
    project = data.get("project") or {}
    name = project.get("name")
    if not name:
        raise SourceTreeInvalid(f"{where}/pyproject.toml has no [project] name")
    version = project.get("version")
    if not version and "version" in (project.get("dynamic") or []):
        path = ((data.get("tool") or {}).get("hatch") or {}).get("version", {}).get("path")
        if not path:
            raise SourceTreeInvalid(f"{where}/pyproject.toml: dynamic version without [tool.hatch.version] path")
        text = read(path)
        match = _VERSION_ASSIGNMENT.search(text or "")
        if not match:
            raise SourceTreeInvalid(f"{where}/{path} has no __version__ = '...' line")
        version = match.group(1)
    if not version:
        raise SourceTreeInvalid(f"{where}/pyproject.toml declares no version")
    dependencies = tuple(project.get("dependencies") or ())
    optional = {extra: tuple(deps) for extra, deps in (project.get("optional-dependencies") or {}).items()}
    for dependency in (*dependencies, *(d for deps in optional.values() for d in deps)):
        try:
            Requirement(dependency)
        except Exception as exc:
            raise SourceTreeInvalid(f"{where}/pyproject.toml: {dependency!r} is not a requirement: {exc}") from exc
    return Distribution(
        name=canonicalize_name(name), version=str(version), requires_python=project.get("requires-python", ""),
        dependencies=dependencies, optional_dependencies=optional,
        build_requires=tuple((data.get("build-system") or {}).get("requires") or ()),
    )


def read_source_tree(root: Path) -> SourceTree:
    """The three distributions of the checkout at ``root``; a clear error when one is missing."""
    distributions = {}
    for name, directory in DISTRIBUTIONS.items():
        base = root / directory
        pyproject = base / "pyproject.toml"
        if not pyproject.is_file():
            raise SourceTreeInvalid(
                f"the sources have no {directory}/pyproject.toml: not an Apache Airflow checkout in "
                "apache/airflow's layout (pyproject.toml of apache-airflow, airflow-core/, task-sdk/)"
            )

        def read(path: str, base: Path = base) -> str | None:
            file = (base / path).resolve()
            return file.read_text() if file.is_file() and file.is_relative_to(root.resolve()) else None

        distribution = parse_distribution(pyproject.read_text(), read=read, where=directory)
        if distribution.name != name:
            raise SourceTreeInvalid(f"{directory}/pyproject.toml names {distribution.name}, expected {name}")
        distributions[name] = distribution
    return SourceTree(distributions)


def write_metadata_wheels(tree: SourceTree, out_dir: Path) -> list[Path]:
    """One wheel per distribution holding only its metadata; byte-for-byte the same for the same
    metadata (fixed timestamps and order), so the build layer installing them is cached by content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = []
    for distribution in tree.distributions.values():
        stem = f"{distribution.name.replace('-', '_')}-{distribution.version}+{METADATA_LABEL}"
        dist_info = f"{stem}.dist-info"
        files = {
            f"{dist_info}/METADATA": distribution.metadata(),
            f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: airflow-image-factory\n"
                                  "Root-Is-Purelib: true\nTag: py3-none-any\n",
        }
        record = [f"{path},sha256={_digest(text)},{len(text.encode())}" for path, text in files.items()]
        files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
        wheel = out_dir / f"{stem}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path, text in files.items():
                info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                archive.writestr(info, text)
        wheels.append(wheel)
    return wheels


# The UIs the Dockerfile's ui-build stage compiles (its COPY --from=airflow-sources lines name the same
# directories; tests/airflow_image_factory/test_sources.py holds the two together).
UI_SOURCE_DIRS = (
    "airflow-core/src/airflow/ui",
    "airflow-core/src/airflow/api_fastapi/auth/managers/simple/ui",
)


def ui_sources_key(sources: Path, recipe: Iterable[Path]) -> str:
    """A content key of the compiled UI: SHA-256 over every file of :data:`UI_SOURCE_DIRS` in the staged
    ``sources`` (path, executable bit, bytes; symlinks by target) and the ``recipe`` files that compile
    it (the Dockerfile, its scripts). Same UI sources and recipe, same key, whatever the branch, commit
    or Python version: the compiled UI of one key is built once and reused by every build."""
    hasher = TreeHasher()
    for top in UI_SOURCE_DIRS:
        hasher.add_tree(sources, top)
    for path in recipe:
        hasher.add(f"recipe:{path.name}", path.read_bytes())
    return hasher.hexdigest()


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def source_path_included(path: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) of a checkout goes into a build context: it, or a
    directory above it, is allowed, and neither it nor any directory above it is excluded."""
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        # "*/x" patterns also match at the top ("x"): fnmatch's * needs one character before the /.
        if any(fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(f"./{prefix}", pattern)
               for pattern in SOURCES_EXCLUDE):
            return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in SOURCES_INCLUDE)


def stage_sources(checkout: Path, dest: Path) -> tuple[int, int]:
    """Copy what :func:`source_path_included` allows of ``checkout`` to ``dest`` (hard links where
    the filesystem allows: the checkout is a read-only cache). Returns (files, bytes)."""
    files = size = 0
    for directory, dirnames, filenames in os.walk(checkout):
        relative_dir = Path(directory).relative_to(checkout)
        kept = []
        for name in sorted(dirnames):
            relative = (relative_dir / name).as_posix()
            if not source_path_included(relative):
                continue
            if (Path(directory) / name).is_symlink():  # git stores symlinks as links: keep them so
                _copy_link(Path(directory) / name, dest / relative)
                continue
            kept.append(name)
        dirnames[:] = kept
        (dest / relative_dir).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            relative = (relative_dir / name).as_posix()
            if not source_path_included(relative):
                continue
            source, target = Path(directory) / name, dest / relative
            if source.is_symlink():
                _copy_link(source, target)
                continue
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
            files += 1
            size += source.stat().st_size
    return files, size


def _copy_link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.readlink(source), target)


def internal_requirements(tree: SourceTree, extras: Iterable[str]) -> list[str]:
    """What a resolver asks for to resolve the branch's own dependencies from its metadata wheels: the
    meta package with the extras, and each distribution pinned to the sources' version (a direct pin,
    so a development version such as 3.4.0.dev0 is allowed without allowing pre-releases of others)."""
    extras = ",".join(extras)
    lines = []
    for name, distribution in tree.distributions.items():
        suffix = f"[{extras}]" if extras and name == "apache-airflow" else ""
        lines.append(f"{name}{suffix}=={distribution.version}")
    return lines
