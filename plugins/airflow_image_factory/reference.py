"""Docker image references, parsed once: ``[registry[:port]/]repository[:tag][@digest]``.

Pure (no I/O, no imports beyond the standard library), so every module that reads a reference - the
registry client, the naming of images, the operators, the engine - uses these functions and Docker's
rules are spelled in one place. :mod:`registry` re-exports them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "ImageReference",
    "is_digest",
    "normalize_host",
    "parse_reference",
    "split_domain",
    "split_image_reference",
    "split_tag",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# Grammar from distribution's reference package (lower-case path components, tag, digest).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


class ImageReference(NamedTuple):
    """``registry``, ``repository`` and ``reference`` (a tag or a ``sha256:...`` digest)."""

    registry: str
    repository: str
    reference: str

    @property
    def is_digest(self) -> bool:
        return is_digest(self.reference)

    def __str__(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


def is_digest(reference: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(reference))


def split_tag(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` → (name, tag, digest) as written: nothing normalised or checked.

    Only a ``:`` after the last ``/`` starts a tag: ``localhost:5000/a/b`` is a name with a port, no tag.
    """
    rest, digest = image, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        return rest[:colon], rest[colon + 1 :], digest
    return rest, None, digest


def split_domain(name: str) -> tuple[str | None, str]:
    """``[registry/]path`` → (registry or None, path), by Docker's rule: the first path component is a
    registry when it holds a ``.`` or ``:``, is ``localhost``, or has upper-case letters (repositories
    cannot). No registry: the name is Docker Hub's (``docker.io``)."""
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, remainder
    return None, name


def parse_reference(image: str, *, default_tag: str = "latest") -> ImageReference:
    """Split ``[registry/]repository[:tag][@digest]`` with Docker's normalisation rules.

    The registry is found by :func:`split_domain`; without one it is ``docker.io``, where single-component
    names get ``library/``. A digest wins over a tag when both are given.
    """
    rest = image.strip()
    if not rest:
        raise ValueError("empty image reference")
    rest, tag, digest = split_tag(rest)
    if digest is not None and not is_digest(digest):
        raise ValueError(f"{image!r}: {digest!r} is not a digest")
    if tag is not None and not _TAG_RE.fullmatch(tag):
        raise ValueError(f"{image!r}: {tag!r} is not a valid tag")
    host, repository = split_domain(rest)
    registry = host or DOCKER_HUB
    if registry.lower() in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not _REPOSITORY_RE.fullmatch(repository):
        raise ValueError(f"{image!r}: {repository!r} is not a valid repository name")
    return ImageReference(registry, repository, digest or tag or default_tag)


# The name the callers asked for; both spellings are kept.
split_image_reference = parse_reference


def normalize_host(host: str | None) -> str:
    """A registry host as Connections and settings spell it, compared: ``https://GHCR.io/`` → ``ghcr.io``.

    Lower case; no scheme, user info, path or trailing slash; the port stays (``localhost:5000`` is
    not ``localhost:5001``). Docker Hub's aliases (``index.docker.io``, ...) are ``docker.io``.
    """
    text = (host or "").strip().lower()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("/", 1)[0].rsplit("@", 1)[-1]
    return DOCKER_HUB if text in DOCKER_HUB_ALIASES else text
