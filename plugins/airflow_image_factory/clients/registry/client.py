"""RegistryClient: tags, manifests, blobs, mounts, copy and delete over the OCI distribution API.

It knows just enough to resolve, tag, copy and list images without pulling layers: manifests are
moved as raw bytes (so digests never change) and blobs travel between repositories of the same
registry by cross-repository mounts. Requests go through auth.py (the challenge, tokens, scopes) and
transport.py (session, retries, timeouts, bounded reads); manifest.py reads what comes back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from airflow_image_factory.clients.registry.auth import (
    DEFAULT_TOKEN_REALMS,
    Authenticator,
    pull_scope,
    push_scope,
)
from airflow_image_factory.clients.registry.manifest import (
    ACCEPT,
    FOREIGN_LAYER_TYPES,
    OCI_INDEX,
    Manifest,
    platform_matches,
    platform_of,
    referrer_descriptor,
    referrers_tag,
    served_media_type,
    sha256,
    with_referrer,
)
from airflow_image_factory.clients.registry.transport import Transport
from airflow_image_factory.exceptions import ManifestNotFound, RegistryAuthError, RegistryError
from airflow_image_factory.policy.reference import is_digest, is_repository, is_tag

log = logging.getLogger(__package__)  # the package's logger, as before the split into modules

_MAX_PAGES = 10_000  # guards pagination against a registry that loops its Link header


def _check_repository(repository: str) -> str:
    if not is_repository(repository):
        raise ValueError(f"{repository!r} is not a valid repository name")
    return repository


def _check_reference(reference: str) -> str:
    if not (is_tag(reference) or is_digest(reference)):
        raise ValueError(f"{reference!r} is neither a tag nor a digest")
    return reference


def _check_digest(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"{digest!r} is not a digest")
    return digest


class RegistryClient:
    """Talks to one registry (``host[:port]``; ``docker.io`` means ``registry-1.docker.io``).

    ``scheme`` defaults to http for loopback hosts and https otherwise; ``retries``, ``backoff``,
    ``max_backoff``, ``timeout``, ``session`` and ``user_agent`` shape the transport (transport.py:
    retried with capped exponential back-off and ``Retry-After``). ``username``, ``password`` and
    ``token_realms`` are for the authenticator (auth.py: which hosts credentials may go to).
    ``stats`` counts the traffic. Safe to share between threads.
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
        self._transport = Transport(host, scheme=scheme, retries=retries, backoff=backoff, timeout=timeout,
                                    session=session, max_backoff=max_backoff, user_agent=user_agent, secret=password)
        self._auth = Authenticator(self._transport, username=username, password=password, token_realms=token_realms)
        self.registry = self._transport.registry
        self.api_host = self._transport.api_host
        self.scheme = self._transport.scheme
        self.base_url = self._transport.base_url
        self.username = username
        self.token_realms = self._auth.token_realms
        self.retries = retries
        self.timeout = timeout
        self.stats = self._transport.stats
        self.session = self._transport.session

    def __repr__(self) -> str:  # the password must never show up here
        user = f", username={self.username!r}" if self.username else ""
        return f"RegistryClient({self.registry!r}, scheme={self.scheme!r}{user})"

    def close(self) -> None:
        self._transport.close()

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
        resp = self.request("HEAD", path, scope=[pull_scope(repository)], headers={"Accept": ACCEPT})
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
        return self._get_manifest(repository, reference, [pull_scope(repository)])

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
        resp = self.request("GET", path, scope=[pull_scope(repository)], expected=(200,))
        if sha256(resp.content) != digest:
            raise RegistryError(f"{self.registry}/{repository}: config blob does not match its digest {digest}")
        return json.loads(resp.content)

    def platform_manifest(self, repository: str, reference: str, platform: str) -> Manifest | None:
        """The image manifest of ``repository:reference`` for ``platform`` (``os/arch[/variant]``): an index's
        child for it, or a plain manifest whose config says that platform; None when there is none (or no
        such reference). What a build of one platform may take as its cache, or reuse."""
        try:
            manifest = self.get_manifest(repository, reference)
        except ManifestNotFound:
            return None
        if manifest.is_index:
            child = next((c for c in manifest.children if platform_matches(platform_of(c), platform)), None)
            return self.get_manifest(repository, child["digest"]) if child else None
        config = self.config_of(repository, manifest, reference=reference)
        made_for = "/".join(str(p) for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p)
        return manifest if platform_matches(made_for, platform) else None

    def _get_manifest(self, repository: str, reference: str, scope: Sequence[str]) -> Manifest:
        path = self._manifest_path(repository, reference)
        resp = self.request("GET", path, scope=scope, headers={"Accept": ACCEPT})
        if resp.status_code == 404:
            raise ManifestNotFound(f"{self.registry}/{repository}:{reference} not found", status=404)
        self._expect(resp, "GET", path, (200,))
        raw = resp.content
        computed = sha256(raw)
        if is_digest(reference) and reference.startswith("sha256:") and reference != computed:
            raise RegistryError(
                f"{self.registry}/{repository}@{reference}: the registry returned a manifest whose sha256 is {computed}"
            )
        media_type = served_media_type(resp.headers.get("Content-Type", ""), raw)
        return Manifest(raw=raw, media_type=media_type, digest=resp.headers.get("Docker-Content-Digest") or computed)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        """PUT the manifest's raw bytes under ``tag`` (or its digest); returns the digest."""
        path = self._manifest_path(repository, tag)
        resp = self.request(
            "PUT",
            path,
            scope=[push_scope(repository)],
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
        manifest = self._get_manifest(repository, source_reference, [push_scope(repository)])
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
                f"{self._transport.error_text(resp)}): {repository}:{tag} stays", status=resp.status_code,
            )
        self._expect(resp, "DELETE", path, (202, 200, 204))

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """All tags of a repository, following ``Link: rel="next"``; [] if the repository is unknown."""
        path = f"/v2/{_check_repository(repository)}/tags/list"
        try:
            return self._paginate(path, "tags", [pull_scope(repository)], page_size)
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
        resp = self.request("HEAD", path, scope=[pull_scope(repository)], allow_redirects=False)
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
            scope=[push_scope(repository), pull_scope(_check_repository(from_repository))],
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
            resp = self.request("POST", path, scope=[push_scope(repository)], expected=(202, 201))
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
        scope = [pull_scope(source_repository), push_scope(target_repository)]
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

    def upload_blob(self, repository: str, data: bytes) -> str:
        """Store ``data`` as a blob of ``repository`` (one POST, one monolithic PUT; nothing when the
        registry has it already). Returns its digest. For small blobs: evidence, artifact configs."""
        digest = sha256(data)
        if self.blob_exists(repository, digest):
            return digest
        scope = [push_scope(_check_repository(repository))]
        opened = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, expected=(202,))
        location = opened.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: an upload to {repository} came back without a Location")
        self.request("PUT", location, scope=scope, params={"digest": digest},
                     headers={"Content-Type": "application/octet-stream"}, data=data, expected=(201,))
        return digest

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A (small) blob's bytes, checked against its digest; the transport bounds how much is read."""
        path = f"/v2/{_check_repository(repository)}/blobs/{_check_digest(digest)}"
        resp = self.request("GET", path, scope=[pull_scope(repository)])
        if resp.status_code == 404:
            raise ManifestNotFound(f"{self.registry}/{repository}: blob {digest} not found", status=404)
        self._expect(resp, "GET", path, (200,))
        if sha256(resp.content) != digest:
            raise RegistryError(f"{self.registry}/{repository}: blob {digest} does not match its digest")
        return resp.content

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The descriptors of the artifacts whose ``subject`` is ``digest``: from the OCI 1.1 referrers
        API where the registry has one, else from the referrers tag schema's index (``sha256-<hex>``).
        [] when there are none."""
        _check_digest(digest)
        path = f"/v2/{_check_repository(repository)}/referrers/{digest}"
        resp = self.request("GET", path, scope=[pull_scope(repository)], headers={"Accept": OCI_INDEX})
        if resp.status_code == 200 and served_media_type(resp.headers.get("Content-Type", ""),
                                                         resp.content) == OCI_INDEX:
            return list(json.loads(resp.content).get("manifests") or [])
        # 404 (distribution 2.x has no such route) or anything but an index: the tag schema.
        try:
            return self.get_manifest(repository, referrers_tag(digest)).children
        except ManifestNotFound:
            return []

    def attach_referrer(self, repository: str, artifact: Manifest, *, tries: int = 3) -> str:
        """Store ``artifact`` (a manifest with a ``subject``) by digest and make it listed as a referrer of
        its subject: a registry with the referrers API does that itself (it answers ``OCI-Subject``);
        otherwise the tag schema's index is read, extended and written back, then read again, ``tries``
        times at most, so a writer racing on the same subject does not drop it. Returns its digest."""
        subject = (artifact.document.get("subject") or {}).get("digest")
        if not subject:
            raise ValueError("the artifact has no subject")
        path = self._manifest_path(repository, artifact.digest)
        resp = self.request("PUT", path, scope=[push_scope(repository)],
                            headers={"Content-Type": artifact.media_type}, data=artifact.raw, expected=(201, 200))
        if resp.headers.get("OCI-Subject"):
            return artifact.digest
        tag, entry = referrers_tag(subject), referrer_descriptor(artifact)
        for _ in range(max(1, tries)):
            try:
                index = self.get_manifest(repository, tag)
            except ManifestNotFound:
                index = None
            self.put_manifest(repository, tag, with_referrer(index, entry))
            if any(m.get("digest") == artifact.digest for m in self.get_manifest(repository, tag).children):
                return artifact.digest
        raise RegistryError(f"{self.registry}/{repository}: {artifact.digest} was not kept in the referrers of "
                            f"{subject} after {tries} writes (another writer?)")

    def copy_referrers(self, source_repository: str, digest: str, target_repository: str, *,
                       children: bool = True) -> int:
        """Copy the artifacts referring to ``digest`` (signed evidence) along with an image copied to
        another repository, blobs by mount; for an index, its children's referrers too (unless not
        ``children``). Returns how many artifacts were attached in ``target_repository``."""
        if source_repository == target_repository:
            return 0
        copied = 0
        manifest = self._get_manifest(source_repository, digest, [pull_scope(source_repository)])
        for child in manifest.children if children else ():
            copied += self.copy_referrers(source_repository, child["digest"], target_repository)
        for entry in self.referrers(source_repository, digest):
            artifact = self.get_manifest(source_repository, entry["digest"])
            self._copy_content(source_repository, target_repository, artifact)
            self.attach_referrer(target_repository, artifact)
            copied += 1
        return copied

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
        resp = self._auth.send(method, url, tuple(scope), params, headers, data, allow_redirects)
        if expected is not None:
            self._expect(resp, method, urlsplit(url).path, expected)
        return resp

    # ----------------------------------------------------------------- internals

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
            if blob.get("mediaType") in FOREIGN_LAYER_TYPES or self.blob_exists(target, digest):
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
        message = (
            f"registry {self.registry}: {method} {path} answered {resp.status_code}: {self._transport.error_text(resp)}"
        )
        if resp.status_code == 404 and "/manifests/" in path:
            raise ManifestNotFound(message, status=404)
        raise RegistryError(message, status=resp.status_code)
