"""A small client for the OCI distribution (Docker registry v2) HTTP API, built on ``requests``.

It knows just enough to resolve, tag, copy and list images without pulling layers: manifests are
moved as raw bytes (so digests never change) and blobs travel between repositories of the same
registry by cross-repository mounts. No Airflow imports, so it can be used (and tested) anywhere.

Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic, or the Docker token
flow (Bearer). Transient failures (dropped connections, 5xx, 429) are retried by urllib3's
``Retry`` with capped exponential backoff and a capped ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from airflow_image_factory.exceptions import (
    ManifestNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from airflow_image_factory.policy.reference import (
    DOCKER_HUB,
    DOCKER_HUB_ALIASES,
    ImageReference,
    is_digest,
    is_repository,
    is_tag,
    parse_reference,
    split_image_reference,
)

log = logging.getLogger(__name__)

__all__ = [
    "DOCKER_HUB",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_MANIFEST_V2",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "ImageReference",
    "Manifest",
    "RegistryClient",
    "RegistryStats",
    "is_digest",
    "parse_reference",
    "split_image_reference",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
# Layers that must not be copied (Windows base layers live at their `urls`, not in the registry).
_FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

_DOCKER_HUB_API = "registry-1.docker.io"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_RETRY_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
_TOKEN_MARGIN = 10.0  # refresh tokens this many seconds before they expire
# Token realms credentials may go to over plain http too (https realms and the registry's own host
# need no entry); the ``registry_token_realms`` setting replaces this list.
DEFAULT_TOKEN_REALMS = ("auth.docker.io", "ghcr.io")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Manifests are at most 4 MiB by the distribution spec; tag lists and catalog pages are paginated.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_BODY_DEADLINE_FACTOR = 4  # a whole body must arrive within this many request timeouts
_MAX_PAGES = 10_000  # guards pagination against a registry that loops its Link header


# --------------------------------------------------------------------------- references
# Parsed in reference.py (pure); re-exported here, where the callers have always found them.


def _check_repository(repository: str) -> str:
    if not is_repository(repository):
        raise ValueError(f"{repository!r} is not a valid repository name")
    return repository


def _check_reference(reference: str) -> str:
    if not (is_tag(reference) or is_digest(reference)):
        raise ValueError(f"{reference!r} is neither a tag nor a digest")
    return reference


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry stores it; ``raw`` is never re-serialised."""

    raw: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        """Wrap bytes built locally; the media type defaults to the document's ``mediaType``."""
        if media_type is None:
            media_type = json.loads(raw).get("mediaType") or OCI_MANIFEST
        return cls(raw=raw, media_type=media_type, digest=_sha256(raw))

    @property
    def document(self) -> dict[str, Any]:
        """The parsed JSON (parsed on each access; manifests are small)."""
        return json.loads(self.raw)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def children(self) -> list[dict[str, Any]]:
        """Descriptors of the manifests an index / manifest list points to."""
        return list(self.document.get("manifests") or []) if self.is_index else []

    @property
    def blobs(self) -> list[dict[str, Any]]:
        """Descriptors of the config and layers of an image manifest."""
        if self.is_index:
            return []
        doc = self.document
        config = [doc["config"]] if doc.get("config") else []
        return config + list(doc.get("layers") or [])


# --------------------------------------------------------------------------- stats


@dataclass
class RegistryStats:
    """Counts what the client asked of the registry, so tests and benchmarks can assert on traffic.

    ``requests`` is keyed ``"<METHOD> <kind>"`` where kind is one of base, catalog, tags, manifest,
    blob, upload, token, other (e.g. ``"GET manifest"``, ``"POST upload"``). These are logical
    requests; transport-level retries are counted separately in ``retries``.
    """

    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_received: int = 0
    blob_bytes_sent: int = 0  # bodies sent to blob upload endpoints
    blob_bytes_received: int = 0  # bodies received from blob GETs
    mounts: int = 0  # cross-repository mounts the registry performed (201)
    mount_misses: int = 0  # mounts the registry declined (202)
    retries: int = 0
    token_fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, method: str, kind: str) -> int:
        return self.requests[f"{method.upper()} {kind}"]

    @property
    def blob_bytes(self) -> int:
        return self.blob_bytes_sent + self.blob_bytes_received

    @property
    def manifest_gets(self) -> int:
        return self.count("GET", "manifest")

    @property
    def manifest_heads(self) -> int:
        return self.count("HEAD", "manifest")

    @property
    def manifest_puts(self) -> int:
        return self.count("PUT", "manifest")

    @property
    def blob_gets(self) -> int:
        return self.count("GET", "blob")

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = self.bytes_received = 0
            self.blob_bytes_sent = self.blob_bytes_received = 0
            self.mounts = self.mount_misses = self.retries = self.token_fetches = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
                "blob_bytes_sent": self.blob_bytes_sent,
                "blob_bytes_received": self.blob_bytes_received,
                "mounts": self.mounts,
                "mount_misses": self.mount_misses,
                "retries": self.retries,
                "token_fetches": self.token_fetches,
            }

    def _record(self, method: str, kind: str, sent: int, received: int) -> None:
        with self._lock:
            self.requests[f"{method.upper()} {kind}"] += 1
            self.bytes_sent += sent
            self.bytes_received += received
            if kind == "upload":
                self.blob_bytes_sent += sent
            elif kind == "blob" and method.upper() == "GET":
                self.blob_bytes_received += received

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def _kind(path: str) -> str:
    if path.rstrip("/") == "/v2":
        return "base"
    if path.startswith("/v2/_catalog"):
        return "catalog"
    if "/blobs/uploads" in path:
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    if path.endswith("/tags/list"):
        return "tags"
    return "other"


# --------------------------------------------------------------------------- retries


class _RegistryRetry(Retry):
    """urllib3 ``Retry`` that caps ``Retry-After`` (older urllib3 2.x cannot) and reports retries."""

    def __init__(self, *args: Any, retry_after_cap: float = 30.0, on_retry: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after_cap = retry_after_cap
        self.on_retry = on_retry

    def new(self, **kw: Any) -> _RegistryRetry:
        # Retry.new() rebuilds from its own parameter list, which does not know ours.
        new = super().new(**kw)
        new.retry_after_cap = self.retry_after_cap
        new.on_retry = self.on_retry
        return new

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.retry_after_cap)

    def increment(self, *args: Any, **kwargs: Any) -> _RegistryRetry:
        new = super().increment(*args, **kwargs)  # raises MaxRetryError when exhausted
        if self.on_retry is not None:
            self.on_retry()
        return new


# --------------------------------------------------------------------------- auth helpers


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]] | None:
    """``('bearer', {'realm': ..., 'service': ..., 'scope': ...})`` from a WWW-Authenticate value."""
    header = header.strip()
    # Prefer Bearer if a registry offers several schemes in one header.
    match = re.search(r"\bBearer\b", header, re.IGNORECASE) or re.match(r"\s*(\w+)", header)
    if not match:
        return None
    scheme = match.group(0).strip().lower()
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(header[match.end() :])
    }
    return scheme, params


def _merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of ``type:name:actions`` scopes, actions of the same resource combined."""
    merged: dict[tuple[str, str], list[str]] = {}
    for group in groups:
        for scope in group:
            for item in scope.split():
                parts = item.split(":")
                if len(parts) < 3:
                    continue
                key = (parts[0], ":".join(parts[1:-1]))
                actions = merged.setdefault(key, [])
                for action in parts[-1].split(","):
                    if action and action not in actions:
                        actions.append(action)
    return tuple(sorted(f"{t}:{n}:{','.join(sorted(a))}" for (t, n), a in merged.items()))


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _scope_items(scopes: Iterable[str]) -> frozenset[tuple[str, str, str]]:
    """``{(type, name, action)}`` of merged scopes, to test whether one token covers another."""
    items = set()
    for scope in scopes:
        rtype, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        items.update((rtype, name, action) for action in actions.split(","))
    return frozenset(items)


@dataclass
class _Token:
    value: str
    expires_at: float  # time.monotonic()
    items: frozenset[tuple[str, str, str]]  # what we asked for (the server may have granted less)


# --------------------------------------------------------------------------- the client


class RegistryClient:
    """Talks to one registry (``host[:port]``; ``docker.io`` means ``registry-1.docker.io``).

    ``scheme`` defaults to http for loopback hosts and https otherwise. ``retries`` bounds the
    retries of each request (connection errors, 429, 500/502/503/504) with exponential ``backoff``
    seconds, each wait - and any ``Retry-After`` - capped at ``max_backoff``. A given ``session``
    is used for its TLS/proxy settings, but gets the client's retrying adapter mounted on it.
    ``stats`` counts the traffic. Safe to share between threads.

    Credentials go to the registry's own scheme and host:port only, and to a Bearer challenge's token
    realm only when it is https, on the registry's own host:port, or on a host[:port] in
    ``token_realms``; anonymous token requests may go to any http(s) realm.
    """

    def __init__(
        self,
        host: str,
        *,
        username: str | None = None,
        password: str | None = None,
        scheme: str | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 30,
        session: requests.Session | None = None,
        max_backoff: float = 30.0,
        user_agent: str = "airflow-image-factory",
        token_realms: Iterable[str] = DEFAULT_TOKEN_REALMS,
    ):
        host = host.strip().rstrip("/")
        if "://" in host:  # tolerate "https://host" and let it pick the scheme
            given_scheme, _, host = host.partition("://")
            scheme = scheme or given_scheme
        if not host:
            raise ValueError("registry host is empty")
        self.registry = host
        self.api_host = _DOCKER_HUB_API if host.lower() in DOCKER_HUB_ALIASES else host
        self.scheme = (scheme or ("http" if _is_loopback(self.api_host) else "https")).lower()
        if self.scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        self.base_url = f"{self.scheme}://{_bracket_ipv6(self.api_host)}"
        self.username = username
        self._password = password
        self.token_realms = frozenset(filter(None, (_host_port(realm) for realm in token_realms)))
        self.retries = retries
        self.timeout = timeout
        self.stats = RegistryStats()

        self._owns_session = session is None
        self.session = session or requests.Session()
        if self._owns_session:
            self.session.headers["User-Agent"] = user_agent
        retry = _RegistryRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=retries,
            redirect=10,
            backoff_factor=backoff,
            backoff_max=max_backoff,
            retry_after_cap=max_backoff,
            status_forcelist=_RETRY_STATUSES,
            allowed_methods=_RETRY_METHODS,
            respect_retry_after_header=True,
            # Hand back the last 5xx/429 so we can raise RegistryUnavailable with its status.
            raise_on_status=False,
            on_retry=lambda: self.stats._add("retries"),
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

        self._lock = threading.Lock()
        self._auth_scheme: str | None = None  # "basic" / "bearer" once the registry challenged us
        self._bearer_params: dict[str, str] = {}
        self._tokens: dict[tuple[str, ...], _Token] = {}

    def __repr__(self) -> str:  # the password must never show up here
        user = f", username={self.username!r}" if self.username else ""
        return f"RegistryClient({self.registry!r}, scheme={self.scheme!r}{user})"

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- public API

    def ping(self) -> bool:
        """GET /v2/, authenticating if the registry asks to. True, or raises."""
        self.request("GET", "/v2/", expected=(200,))
        return True

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """Digest of ``repository:reference`` without downloading it, or None when it does not exist."""
        path = self._manifest_path(repository, reference)
        resp = self.request("HEAD", path, scope=[_pull(repository)], headers={"Accept": _ACCEPT})
        if resp.status_code == 404:
            return None
        self._expect(resp, "HEAD", path, (200,))
        digest = resp.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        # Not every registry sends the header on HEAD; the digest is the body's sha256 by definition.
        try:
            return self.get_manifest(repository, reference).digest
        except ManifestNotFound:
            return None

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest (or index) as stored; raises ManifestNotFound on 404."""
        return self._get_manifest(repository, reference, [_pull(repository)])

    def image_config(self, repository: str, reference: str, *, platform: str = "linux/amd64") -> dict[str, Any]:
        """The image's config document (labels, env, history): manifest and config blob only, no layers.

        For an index, the child for ``platform`` (``os/arch``) is read.
        """
        return self.config_of(repository, self.get_manifest(repository, reference), platform=platform,
                              reference=reference)

    def config_of(
        self, repository: str, manifest: Manifest, *, platform: str = "linux/amd64", reference: str | None = None
    ) -> dict[str, Any]:
        """The config document of a manifest already read (no second GET of it); an index as above.
        ``reference`` names it in errors (default: its digest)."""
        reference = reference or manifest.digest
        if manifest.is_index:
            wanted_os, _, wanted_arch = platform.partition("/")
            for child in manifest.children:
                p = child.get("platform") or {}
                if p.get("os") == wanted_os and p.get("architecture") == wanted_arch:
                    manifest = self.get_manifest(repository, child["digest"])
                    break
            else:
                raise ManifestNotFound(f"{self.registry}/{repository}:{reference} has no {platform} image", status=404)
        config = manifest.document.get("config") or {}
        digest = config.get("digest")
        if not digest:
            raise RegistryError(f"{self.registry}/{repository}:{reference} has no config blob (schema 1?)")
        path = f"/v2/{_check_repository(repository)}/blobs/{_check_digest(digest)}"
        resp = self.request("GET", path, scope=[_pull(repository)], expected=(200,))
        if _sha256(resp.content) != digest:
            raise RegistryError(f"{self.registry}/{repository}: config blob does not match its digest {digest}")
        return json.loads(resp.content)

    def _get_manifest(self, repository: str, reference: str, scope: Sequence[str]) -> Manifest:
        path = self._manifest_path(repository, reference)
        resp = self.request("GET", path, scope=scope, headers={"Accept": _ACCEPT})
        if resp.status_code == 404:
            raise ManifestNotFound(f"{self.registry}/{repository}:{reference} not found", status=404)
        self._expect(resp, "GET", path, (200,))
        raw = resp.content
        computed = _sha256(raw)
        if is_digest(reference) and reference.startswith("sha256:") and reference != computed:
            raise RegistryError(
                f"{self.registry}/{repository}@{reference}: the registry returned a manifest whose sha256 is {computed}"
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            media_type = json.loads(raw).get("mediaType") or media_type
        return Manifest(raw=raw, media_type=media_type, digest=resp.headers.get("Docker-Content-Digest") or computed)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """PUT the manifest's raw bytes under ``tag`` (or its digest); returns the digest."""
        path = self._manifest_path(repository, tag)
        resp = self.request(
            "PUT",
            path,
            scope=[_push(repository)],
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
            expected=(201, 200),
        )
        digest = resp.headers.get("Docker-Content-Digest") or manifest.digest
        if digest != manifest.digest:
            log.warning("%s/%s:%s stored as %s, expected %s", self.registry, repository, tag, digest, manifest.digest)
        log.info("put %s/%s:%s -> %s", self.registry, repository, tag, digest)
        return digest

    def tag(self, repository: str, source_reference: str, new_tag: str) -> str:
        """Point ``new_tag`` at the manifest ``source_reference`` names: one GET, one PUT, no blobs."""
        _check_reference(new_tag)
        manifest = self._get_manifest(repository, source_reference, [_push(repository)])
        return self.put_manifest(repository, new_tag, manifest)

    def delete_manifest(self, repository: str, reference: str) -> str:
        """Delete a manifest (the registry wants a digest; a tag is resolved first). Returns the digest."""
        digest = reference if is_digest(reference) else self.manifest_digest(repository, reference)
        if digest is None:
            raise ManifestNotFound(f"{self.registry}/{repository}:{reference} not found", status=404)
        path = self._manifest_path(repository, digest)
        resp = self.request("DELETE", path, scope=[f"repository:{repository}:delete"])
        if resp.status_code == 404:
            raise ManifestNotFound(f"{self.registry}/{repository}@{digest} not found", status=404)
        self._expect(resp, "DELETE", path, (202, 200, 204))
        return digest

    def delete_tag(self, repository: str, tag: str) -> None:
        """Remove ``tag`` only (OCI distribution 1.1 ``DELETE /v2/<name>/manifests/<tag>``), never the
        manifest it names: other tags of that digest stay. Registries that delete manifests only (distribution
        2.x answers 400 DIGEST_INVALID; others 405 or UNSUPPORTED) refuse with a RegistryError saying so -
        :meth:`delete_manifest` of the digest is no way out, it takes every tag of the digest along."""
        _check_reference(tag)
        path = self._manifest_path(repository, tag)
        resp = self.request("DELETE", path, scope=[f"repository:{repository}:delete"])
        if resp.status_code == 404:
            raise ManifestNotFound(f"{self.registry}/{repository}:{tag} not found", status=404)
        if resp.status_code in (400, 405):
            raise RegistryError(
                f"registry {self.registry} does not delete tags, only manifests ({resp.status_code}: "
                f"{self._error_text(resp)}): {repository}:{tag} stays", status=resp.status_code,
            )
        self._expect(resp, "DELETE", path, (202, 200, 204))

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link: rel="next"``; [] if the repository is unknown."""
        path = f"/v2/{_check_repository(repository)}/tags/list"
        try:
            return self._paginate(path, "tags", [_pull(repository)], page_size)
        except RegistryError as exc:
            if exc.status == 404:
                return []
            raise

    def catalog(self, *, page_size: int | None = None) -> list[str]:
        """All repository names (``/v2/_catalog``), following pagination."""
        return self._paginate("/v2/_catalog", "repositories", ["registry:catalog:*"], page_size)

    def blob_exists(self, repository: str, digest: str) -> bool:
        path = f"/v2/{_check_repository(repository)}/blobs/{_check_digest(digest)}"
        # A 307 to object storage also means "it is there"; do not follow it to S3 & co.
        resp = self.request("HEAD", path, scope=[_pull(repository)], allow_redirects=False)
        if resp.status_code == 404:
            return False
        self._expect(resp, "HEAD", path, (200, 307, 302))
        return True

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link ``digest`` from ``from_repository`` into ``repository``.

        True when mounted (201). False when the registry declined (202: it opened an upload
        instead, which is cancelled here so it does not linger).
        """
        path = f"/v2/{_check_repository(repository)}/blobs/uploads/"
        resp = self.request(
            "POST",
            path,
            scope=[_push(repository), _pull(_check_repository(from_repository))],
            params={"mount": _check_digest(digest), "from": from_repository},
            expected=(201, 202),
        )
        if resp.status_code == 201:
            self.stats._add("mounts")
            log.debug("mounted %s from %s into %s", digest, from_repository, repository)
            return True
        self.stats._add("mount_misses")
        location = resp.headers.get("Location")
        if location:
            try:
                # distribution wants the "delete" action for this, which a pusher may not have;
                # an abandoned upload is purged by the registry eventually, so this is best effort.
                self.request("DELETE", location, scope=[f"repository:{repository}:delete"])
            except RegistryError as exc:
                log.debug("could not cancel upload %s: %s", location, exc)
        return False

    def can_push(self, repository: str) -> bool:
        """Whether these credentials may write ``repository``: open an upload, then cancel it.

        Nothing is written. Anonymous access can be enough (a local registry), and a token can be
        read-only, so asking the registry is the only reliable answer.
        """
        path = f"/v2/{_check_repository(repository)}/blobs/uploads/"
        try:
            resp = self.request("POST", path, scope=[_push(repository)], expected=(202, 201))
        except RegistryAuthError:
            return False
        location = resp.headers.get("Location")
        if location:
            try:
                self.request("DELETE", location, scope=[f"repository:{repository}:delete"])
            except RegistryError as exc:  # an abandoned upload is purged by the registry eventually
                log.debug("could not cancel upload %s: %s", location, exc)
        return True

    def copy(self, source_repository: str, reference: str, target_repository: str, target_tag: str) -> str:
        """Copy an image (or index) to another repository of this registry without moving layers.

        Children of an index are copied by digest first; blobs are mounted, skipping those already
        present. Returns the digest, which is the source's.
        """
        _check_repository(source_repository)
        _check_repository(target_repository)
        _check_reference(target_tag)
        # Ask for every scope the copy needs at once: one token then covers all the requests.
        scope = [_pull(source_repository), _push(target_repository)]
        manifest = self._get_manifest(source_repository, reference, scope)
        if source_repository != target_repository:
            self._copy_content(source_repository, target_repository, manifest)
        digest = self.put_manifest(target_repository, target_tag, manifest)
        if digest != manifest.digest:
            raise RegistryError(
                f"{self.registry}: copy of {source_repository}@{manifest.digest} to "
                f"{target_repository}:{target_tag} produced a different digest {digest}"
            )
        return digest

    # ----------------------------------------------------------------- low level

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        expected: Sequence[int] | None = None,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One authenticated, retried request; ``path`` is ``/v2/...`` or an absolute URL (Location).

        ``scope`` names what the request needs (``repository:name:pull,push``) so a bearer token
        can be fetched before the first 401. Raises RegistryAuthError when access is refused,
        RegistryUnavailable when retries run out, and RegistryError when ``expected`` is given and
        the status is not in it. Bodies must be bytes so they can be re-sent after a challenge.
        """
        method = method.upper()
        url = urljoin(self.base_url + "/", path)
        # Credentials never leave the registry's own scheme and host:port (e.g. for a Location or a Link).
        own_host = _endpoint(url) == _endpoint(self.base_url)
        shown = urlsplit(url).path
        scopes = tuple(scope)

        auth = self._auth_headers(scopes) if own_host else {}
        resp = self._send(method, url, params, headers, data, auth, allow_redirects)
        if resp.status_code == 401 and own_host:
            challenge = _parse_challenge(resp.headers.get("WWW-Authenticate", ""))
            auth = self._answer_challenge(challenge, scopes, method, shown, previous=auth)
            resp = self._send(method, url, params, headers, data, auth, allow_redirects)
            if resp.status_code == 401:
                who = f"user {self.username!r}" if self.username else "anonymous access"
                raise RegistryAuthError(
                    f"registry {self.registry} refused {who} for {method} {shown}"
                    f"{' (scope ' + ' '.join(scopes) + ')' if scopes else ''}: {self._error_text(resp)}",
                    status=401,
                )
        if resp.status_code == 403:
            who = f"user {self.username!r}" if self.username else "anonymous access"
            raise RegistryAuthError(
                f"registry {self.registry} denied {who} {method} {shown}: {self._error_text(resp)}",
                status=403,
            )
        if expected is not None:
            self._expect(resp, method, shown, expected)
        return resp

    # ----------------------------------------------------------------- internals

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        auth: Mapping[str, str],
        allow_redirects: bool,
        kind: str | None = None,
    ) -> requests.Response:
        path = urlsplit(url).path
        kind = kind or _kind(path)
        host = urlsplit(url).netloc
        try:
            resp = self.session.request(
                method,
                url,
                params=params,
                headers={**(headers or {}), **auth},
                data=data,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
                stream=True,
            )
            self._read_bounded(resp, method, url)
        except requests.exceptions.RetryError as exc:  # only if a status retry raised anyway
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {self.retries + 1} tries: {exc}"
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {self.retries + 1} tries; "
                f"last error: {self._redact(str(reason or exc))}"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {host}: {method} {path} failed: {self._redact(str(exc))}") from exc
        self.stats._record(method, kind, len(data) if data else 0, len(resp.content))
        log.debug("%s %s -> %s (%d bytes)", method, url, resp.status_code, len(resp.content))
        if resp.status_code in _RETRY_STATUSES:
            retries = getattr(resp.raw, "retries", None)
            tries = len(retries.history) + 1 if retries is not None else self.retries + 1
            raise RegistryUnavailable(
                f"registry {host} unavailable: {method} {path} failed after {tries} tries; "
                f"last status {resp.status_code}: {self._error_text(resp)}",
                status=resp.status_code,
            )
        return resp

    def _read_bounded(self, resp: requests.Response, method: str, url: str) -> None:
        """Read the body, refusing one larger than any registry document or slower than a deadline.

        This client never downloads layers (blobs are mounted), so every answer is a small JSON
        document; a registry that streams gigabytes or drips a byte at a time must not hold a task.
        """
        deadline = time.monotonic() + self.timeout * _BODY_DEADLINE_FACTOR
        body = bytearray()
        try:
            while chunk := self._read_some(resp, method, url):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise RegistryError(
                        f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} answered more than "
                        f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; no registry document is that large"
                    )
                if time.monotonic() > deadline:
                    raise RegistryUnavailable(
                        f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} sent its answer too slowly "
                        f"(not done after {self.timeout * _BODY_DEADLINE_FACTOR:.0f}s)"
                    )
        finally:
            resp.close()
        resp._content = bytes(body)  # what requests' own .content does after reading the stream

    @staticmethod
    def _read_some(resp: requests.Response, method: str, url: str) -> bytes:
        # read1: what has arrived (a plain read waits for the whole chunk, so a drip would hold it).
        try:
            return resp.raw.read1(64 * 1024, decode_content=True) or b""
        except urllib3.exceptions.HTTPError as exc:
            raise RegistryUnavailable(
                f"registry {urlsplit(url).netloc}: {method} {urlsplit(url).path} broke off its answer: {exc}"
            ) from exc

    def _auth_headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """Credentials to send up front, once we know which scheme the registry wants."""
        if self._auth_scheme == "basic":
            return self._basic_header()
        if self._auth_scheme == "bearer":
            token = self._cached_token(scopes) or self._fetch_token(scopes)
            return {"Authorization": f"Bearer {token}"}
        return {}

    def _answer_challenge(
        self,
        challenge: tuple[str, dict[str, str]] | None,
        scopes: tuple[str, ...],
        method: str,
        path: str,
        previous: Mapping[str, str],
    ) -> dict[str, str]:
        if challenge is None:
            raise RegistryAuthError(
                f"registry {self.registry} answered 401 to {method} {path} without a usable challenge",
                status=401,
            )
        scheme, params = challenge
        if scheme == "basic":
            if not (self.username and self._password is not None):
                raise RegistryAuthError(
                    f"registry {self.registry} requires credentials (Basic auth) and none were given",
                    status=401,
                )
            if previous:
                raise RegistryAuthError(
                    f"registry {self.registry} refused the credentials of user {self.username!r}", status=401
                )
            self._auth_scheme = "basic"
            return self._basic_header()
        if scheme == "bearer":
            if "realm" not in params:
                raise RegistryAuthError(f"registry {self.registry} sent a Bearer challenge without a realm", status=401)
            with self._lock:
                self._auth_scheme = "bearer"
                self._bearer_params = {k: v for k, v in params.items() if k in ("realm", "service")}
            # The challenge names what this request needs; add what we know we will need too.
            wanted = _merge_scopes(scopes, [params["scope"]] if params.get("scope") else [])
            token = self._fetch_token(wanted)
            return {"Authorization": f"Bearer {token}"}
        raise RegistryAuthError(f"registry {self.registry} wants unsupported auth scheme {scheme!r}", status=401)

    def _basic_header(self) -> dict[str, str]:
        pair = f"{self.username or ''}:{self._password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def _cached_token(self, scopes: tuple[str, ...]) -> str | None:
        """A live token asked for with these scopes, or with more (e.g. the one a copy fetched)."""
        key = _merge_scopes(scopes)
        needed = _scope_items(key)
        now = time.monotonic()
        with self._lock:
            exact = self._tokens.get(key)
            if exact and exact.expires_at > now:
                return exact.value
            for token in self._tokens.values():
                if token.expires_at > now and needed <= token.items:
                    return token.value
        return None

    def _fetch_token(self, scopes: tuple[str, ...]) -> str:
        """Docker token flow: GET realm?service=..&scope=.. with Basic credentials if we have them."""
        realm = self._bearer_params["realm"]
        params: list[tuple[str, str]] = []
        if self._bearer_params.get("service"):
            params.append(("service", self._bearer_params["service"]))
        if self.username:
            params.append(("account", self.username))
        params += [("scope", s) for s in _merge_scopes(scopes)]
        # Basic credentials go to the realm only; anonymous token requests are allowed by the spec.
        creds = self._basic_header() if self.username and self._password is not None else {}
        realm_host = urlsplit(realm).netloc.rpartition("@")[2]
        self._check_realm(realm, credentialed=bool(creds))
        resp = self._send("GET", realm, params, {"Accept": "application/json"}, None, creds, True, kind="token")
        self.stats._add("token_fetches")
        if resp.status_code in (401, 403):
            who = f"the credentials of user {self.username!r}" if self.username else "anonymous access"
            raise RegistryAuthError(
                f"token server {realm_host} for registry {self.registry} refused {who}: {self._error_text(resp)}",
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"token server {realm_host} for registry {self.registry} answered {resp.status_code}: "
                f"{self._error_text(resp)}",
                status=resp.status_code,
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise RegistryError(f"token server {realm_host} sent a non-JSON answer") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token server {realm_host} sent no token")
        # The spec's default lifetime is 60 s; refresh a little early so in-flight requests don't 401.
        lifetime = float(body.get("expires_in") or 60)
        key = _merge_scopes(scopes)
        entry = _Token(token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, lifetime / 2), _scope_items(key))
        with self._lock:
            self._tokens[key] = entry

        log.debug("got a token from %s for %s", realm_host, " ".join(_merge_scopes(scopes)) or "(no scope)")
        return token

    def _check_realm(self, realm: str, *, credentialed: bool) -> None:
        """Refuse a realm that is not http(s), and one our credentials must not travel to.

        Credentials go to a realm over https, on the registry's own host:port, or on a host[:port] of
        ``token_realms``; a plain-http realm elsewhere (another host, or another port of the
        registry's host) would hand them to whoever the registry's challenge names, in clear text.
        """
        shown = self._redact(realm)
        endpoint = _endpoint(realm)
        if endpoint is None or endpoint[0] not in _DEFAULT_PORTS:
            raise RegistryAuthError(
                f"registry {self.registry} named token realm {shown!r}, which is not an http(s) URL", status=401
            )
        if not credentialed or endpoint[0] == "https":
            return
        scheme, hostname, port = endpoint
        own = _endpoint(self.base_url)
        if own is not None and (hostname, port) == own[1:]:
            return
        # An allow-list entry without a port means the realm scheme's default port.
        if any(h == hostname and (p or _DEFAULT_PORTS[scheme]) == port for h, p in self.token_realms):
            return
        raise RegistryAuthError(
            f"registry {self.registry} named token realm {shown!r}: plain http on another host than the "
            f"registry's own, so the credentials of user {self.username!r} were not sent there (allow the "
            "host in the registry_token_realms setting, or make the realm https)",
            status=401,
        )

    def _paginate(self, path: str, key: str, scope: list[str], page_size: int | None) -> list[str]:
        items: list[str] = []
        url: str | None = path
        params: dict[str, Any] | None = {"n": page_size} if page_size else None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            if url is None or url in seen:
                break
            seen.add(url)
            resp = self.request("GET", url, scope=scope, params=params, expected=(200,))
            items.extend(resp.json().get(key) or [])
            nxt = resp.links.get("next", {}).get("url")
            # The Link URL already carries n and last; it is relative to the registry.
            url = urljoin(resp.url, nxt) if nxt else None
            params = None
        return items

    def _copy_content(self, source: str, target: str, manifest: Manifest) -> None:
        """Make everything ``manifest`` references exist in ``target`` (not the manifest itself)."""
        if manifest.is_index:
            for child in manifest.children:
                digest = child["digest"]
                # A manifest the registry accepted has all its blobs, so a present child is done.
                if self.manifest_digest(target, digest) is not None:
                    continue
                child_manifest = self.get_manifest(source, digest)
                self._copy_content(source, target, child_manifest)
                self.put_manifest(target, digest, child_manifest)
            return
        for blob in manifest.blobs:
            digest = blob["digest"]
            if blob.get("mediaType") in _FOREIGN_LAYER_TYPES or self.blob_exists(target, digest):
                continue
            if not self.mount_blob(target, digest, source):
                raise RegistryError(
                    f"registry {self.registry} would not mount blob {digest} from {source} into {target}"
                )

    def _manifest_path(self, repository: str, reference: str) -> str:
        return f"/v2/{_check_repository(repository)}/manifests/{_check_reference(reference)}"

    def _expect(self, resp: requests.Response, method: str, path: str, ok: Sequence[int]) -> None:
        if resp.status_code in ok:
            return
        message = f"registry {self.registry}: {method} {path} answered {resp.status_code}: {self._error_text(resp)}"
        if resp.status_code == 404 and "/manifests/" in path:
            raise ManifestNotFound(message, status=404)
        raise RegistryError(message, status=resp.status_code)

    def _error_text(self, resp: requests.Response) -> str:
        """The registry's ``errors[]`` as ``CODE: message (detail)``, or a short slice of the body."""
        parts: list[str] = []
        try:
            for error in resp.json().get("errors") or []:
                part = f"{error.get('code', '?')}: {error.get('message', '')}".strip()
                detail = error.get("detail")
                if detail:
                    # e.g. the missing blob's digest; dicts are short in practice, cap them anyway.
                    shown = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
                    part += f" ({shown[:160]})"
                if part not in parts:
                    parts.append(part)
        except (ValueError, AttributeError):
            pass
        text = "; ".join(parts) or (resp.text or "").strip()[:200] or resp.reason or "(no body)"
        return self._redact(text)

    def _redact(self, text: str) -> str:
        # Defence in depth: nothing we build contains the password, but bodies/errors are foreign text.
        if self._password:
            text = text.replace(self._password, "***")
        return text


def _check_digest(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"{digest!r} is not a digest")
    return digest


def _endpoint(url: str) -> tuple[str, str, int] | None:
    """``(scheme, hostname, port)`` of an absolute URL, the port made explicit from the scheme's
    default (0 for other schemes); None when there is no host or the port is malformed."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def _host_port(entry: str) -> tuple[str, int | None] | None:
    """``(hostname, port or None)`` of a ``registry_token_realms`` entry (``host[:port]``, a scheme and a
    trailing slash tolerated); None for an empty or malformed one."""
    text = entry.strip().lower()
    text = text.split("://", 1)[1] if "://" in text else text
    parts = urlsplit("//" + text.split("/", 1)[0])
    try:
        port = parts.port
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bracket_ipv6(host: str) -> str:
    # A bare IPv6 address ("::1") needs brackets in a URL; "host:port" and "[::1]:5000" do not.
    return f"[{host}]" if host.count(":") > 1 and not host.startswith("[") else host


def config_labels(config: Mapping[str, Any]) -> dict[str, str]:
    """The labels of an image config document (``image_config``/``config_of``); {} when it has none."""
    return dict((config.get("config") or {}).get("Labels") or {})
