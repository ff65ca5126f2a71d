"""Docker image references, parsed once: ``[registry[:port]/]repository[:tag][@digest]``.

Pure (no I/O, no imports beyond the standard library), so every module that reads a reference - the
registry client, the naming of images, the operators, the engine, the request checks - uses these
functions and Docker's rules are spelled in one place. :mod:`registry` re-exports the parser.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_ALIASES",
    "ImageReference",
    "is_digest",
    "is_path_component",
    "is_repository",
    "is_tag",
    "name_and_tag",
    "normalize_host",
    "parse_reference",
    "repository_and_reference",
    "split_domain",
    "split_image_reference",
    "split_repository",
    "split_tag",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# Grammar from distribution's reference package (lower-case path components, tag, digest).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
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


def is_tag(reference: str) -> bool:
    return bool(_TAG_RE.fullmatch(reference))


def is_repository(name: str) -> bool:
    """``a/b/c``: lower-case path components joined by ``/`` (no registry, tag or digest)."""
    return bool(_REPOSITORY_RE.fullmatch(name))


def is_path_component(text: str) -> bool:
    """One component of a repository path (``apache``, ``python3.12``, ``ci-manifest``)."""
    return bool(_PATH_COMPONENT_RE.fullmatch(text))


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


def _hub_path(path: str) -> str:
    # Docker Hub's one-component names are its official images, kept under library/.
    return path if "/" in path else f"library/{path}"


def split_repository(name: str) -> tuple[str, str]:
    """``[host/]path`` → (host, path) by :func:`split_domain`, for naming the upstream Python base.

    The host stays as written (a Docker Hub alias is not renamed) and the path is not checked; no host:
    Docker Hub, where a one-component path gets ``library/``."""
    host, path = split_domain(name)
    if host is not None:
        return host, path
    return DOCKER_HUB, _hub_path(path)


def name_and_tag(image: str) -> tuple[str, str]:
    """``[host[:port]/]path[:tag]`` → (name as written, tag), as ``docker push``/``pull``/``tag`` take them.

    Split by :func:`split_tag`: the port colon of ``localhost:5000/a/b`` is not a tag; no tag is
    ``latest`` (what the docker CLI reads a name without one as)."""
    name, tag, _ = split_tag(image)
    return name, tag or "latest"


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
    if tag is not None and not is_tag(tag):
        raise ValueError(f"{image!r}: {tag!r} is not a valid tag")
    host, repository = split_domain(rest)
    registry = host or DOCKER_HUB
    if registry.lower() in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        repository = _hub_path(repository)
    if not is_repository(repository):
        raise ValueError(f"{image!r}: {repository!r} is not a valid repository name")
    return ImageReference(registry, repository, digest or tag or default_tag)


# The name the callers asked for; both spellings are kept.
split_image_reference = parse_reference


def repository_and_reference(image: str) -> tuple[str, str]:
    """``host/path:tag`` or ``host/path@digest`` → (path, tag or digest), what the registry API calls take."""
    parsed = parse_reference(image)
    return parsed.repository, parsed.reference


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
