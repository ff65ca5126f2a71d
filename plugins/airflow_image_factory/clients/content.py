"""Content keys: one hash of everything a build's result depends on, so an unchanged build is not run.

A key covers the build's whole context (this package's Dockerfiles and scripts, the staged sources, the
constraints file, the metadata wheels), the build args that reach the image (the pinned base digest,
the revision, extras, ...), the target, and what the image's checks are. Equal keys mean the same
inputs; the image published under a key was built from them and passed those checks.

Hand-written (about forty lines of ``hashlib``): BuildKit computes its cache keys internally and does
not expose them before a build, and a build is what this is meant to avoid.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

CONTENT_KEY_LABEL = "org.apache.airflow.image-factory.content-key"
CONTENT_KEY_ARG = "CONTENT_KEY"
# Build args that change from one build to the next without changing what the image holds: the label
# of the build time, the key itself, and where the compiled UI was taken from (its content is keyed by
# the UI sources, which the key covers).
VOLATILE_BUILD_ARGS = frozenset({"CREATED", CONTENT_KEY_ARG, "UI_ASSETS_FROM", "UI_ASSETS_IMAGE"})


class TreeHasher:
    """SHA-256 over labelled byte strings and file trees: path, executable bit and bytes of each file,
    symlinks by target, in sorted order; every item's length is hashed too, so no two inputs collide."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, label: str, data: bytes) -> None:
        self._digest.update(f"{label}\0{len(data)}\0".encode())
        self._digest.update(data)

    def add_tree(self, root: Path, top: str = "") -> None:
        """Every file under ``root / top`` (``top`` relative to ``root``; the paths hashed are too)."""
        start = root / top if top else root
        if not start.is_dir():
            self.add(f"missing:{top}", b"")
            return
        for directory, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                self.add_file(Path(directory, name), Path(directory, name).relative_to(root).as_posix())

    def add_file(self, path: Path, label: str) -> None:
        if path.is_symlink():
            self.add(f"link:{label}", os.readlink(path).encode())
        else:
            self.add(f"file:{label}:{os.access(path, os.X_OK):d}", path.read_bytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def content_key(
    *, kind: str, context: Path, dockerfile: str, target: str | None, build_args: Mapping[str, str],
    checks: Iterable[str],
) -> str:
    """The key of one build: what it is, its context tree, its build args (but the volatile ones), and
    the identity of the checks its image passes before it is pushed."""
    hasher = TreeHasher()
    hasher.add("kind", kind.encode())
    hasher.add("dockerfile", dockerfile.encode())
    hasher.add("target", (target or "").encode())
    for name in sorted(build_args):
        if name not in VOLATILE_BUILD_ARGS:
            hasher.add(f"arg:{name}", str(build_args[name]).encode())
    for check in checks:
        hasher.add("check", check.encode())
    hasher.add_tree(context)
    return hasher.hexdigest()
