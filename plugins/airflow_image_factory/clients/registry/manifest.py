"""Manifests as the registry stores them: media types, image manifest / index parsing, digests, config labels.

No HTTP here: a :class:`Manifest` is bytes and what can be read from them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)  # the Accept header of a manifest GET / HEAD
# Layers that must not be copied (Windows base layers live at their `urls`, not in the registry).
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


def sha256(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
        return cls(raw=raw, media_type=media_type, digest=sha256(raw))

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


def served_media_type(content_type: str, raw: bytes) -> str:
    """The media type of a manifest the registry served: its ``Content-Type`` when that is a manifest
    type, else the document's ``mediaType`` (and the ``Content-Type`` when it has none)."""
    media_type = content_type.split(";")[0].strip()
    if media_type not in MANIFEST_MEDIA_TYPES:
        media_type = json.loads(raw).get("mediaType") or media_type
    return media_type


def config_labels(config: Mapping[str, Any]) -> dict[str, str]:
    """The labels of an image config document (``image_config``/``config_of``); {} when it has none."""
    return dict((config.get("config") or {}).get("Labels") or {})


# ---- OCI 1.1 artifacts and their referrers ---------------------------------------------------------------
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"  # the empty config of an artifact manifest (OCI image-spec 1.1)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI descriptor of ``data``."""
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def manifest_descriptor(manifest: Manifest) -> dict[str, Any]:
    return {"mediaType": manifest.media_type, "digest": manifest.digest, "size": len(manifest.raw)}


def referrers_tag(digest: str) -> str:
    """The tag of the OCI 1.1 referrers tag schema for ``digest``: ``<alg>-<hex>``, where a registry has
    no referrers API (distribution 2.x)."""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}-{value}"[:128]


def artifact_manifest(
    *, artifact_type: str, subject: Mapping[str, Any], layer: Mapping[str, Any], annotations: Mapping[str, str]
) -> Manifest:
    """An OCI 1.1 artifact: an image manifest with an ``artifactType``, the empty config, one layer and a
    ``subject`` - the manifest it is about, which the referrers API (or tag schema) lists it under."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, EMPTY_JSON),
        "layers": [dict(layer)],
        "subject": {key: subject[key] for key in ("mediaType", "digest", "size")},
        "annotations": dict(annotations),
    }
    return Manifest.from_bytes(json.dumps(document, separators=(",", ":")).encode(), OCI_MANIFEST)


def referrer_descriptor(artifact: Manifest) -> dict[str, Any]:
    """How a referrers index lists ``artifact``: its descriptor with its artifactType and annotations."""
    document = artifact.document
    entry = manifest_descriptor(artifact)
    entry["artifactType"] = document.get("artifactType") or (document.get("config") or {}).get("mediaType", "")
    if document.get("annotations"):
        entry["annotations"] = document["annotations"]
    return entry


def with_referrer(index: Manifest | None, entry: Mapping[str, Any]) -> Manifest:
    """The referrers index ``index`` (None: none yet) listing ``entry`` too, once."""
    manifests = [m for m in (index.children if index is not None else []) if m.get("digest") != entry["digest"]]
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*manifests, dict(entry)]}
    return Manifest.from_bytes(json.dumps(document, separators=(",", ":")).encode(), OCI_INDEX)


# ---- multi-platform images ---------------------------------------------------------------------------------
def image_index(children: list[tuple[Manifest, str]]) -> Manifest:
    """An OCI image index over ``children``: (image manifest, ``os/arch[/variant]``) pairs, in that order.

    Only descriptors: the children must already be in the repository the index is PUT to."""
    manifests = []
    for manifest, platform in children:
        os_name, arch, *variant = platform.split("/")
        entry = {**manifest_descriptor(manifest), "platform": {"architecture": arch, "os": os_name}}
        if variant:
            entry["platform"]["variant"] = variant[0]
        manifests.append(entry)
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return Manifest.from_bytes(json.dumps(document, separators=(",", ":")).encode(), OCI_INDEX)


def platform_of(child: Mapping[str, Any]) -> str:
    """``os/arch[/variant]`` of an index entry ('' when it names none, as referrers and attestations)."""
    p = child.get("platform") or {}
    return "/".join(part for part in (p.get("os"), p.get("architecture"), p.get("variant")) if part)


def platform_matches(found: str, wanted: str) -> bool:
    """Whether an image made for ``found`` serves ``wanted``; a wanted platform without a variant takes any
    (arm64 images often say ``linux/arm64/v8``)."""
    return found == wanted or (wanted.count("/") == 1 and found.rsplit("/", 1)[0] == wanted)
