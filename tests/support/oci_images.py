"""Push tiny images straight through the distribution API (test-only; no engine, no Docker Hub).

An image is one small gzipped tar layer plus a config blob, uploaded with monolithic POST+PUT
uploads, then an OCI (or Docker v2) manifest. Every call gets fresh random content unless a
``payload`` is given, so blobs never collide between tests sharing a registry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass

from airflow_image_factory.clients.registry import (
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST_V2,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
)

_LAYER_TYPES = {
    OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip",
    DOCKER_MANIFEST_V2: "application/vnd.docker.image.rootfs.diff.tar.gzip",
}
_CONFIG_TYPES = {
    OCI_MANIFEST: "application/vnd.oci.image.config.v1+json",
    DOCKER_MANIFEST_V2: "application/vnd.docker.container.image.v1+json",
}
_INDEX_FOR = {OCI_MANIFEST: OCI_INDEX, DOCKER_MANIFEST_V2: DOCKER_MANIFEST_LIST}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PushedImage:
    repository: str
    tag: str | None
    manifest: Manifest
    config_digest: str
    layer_digest: str
    blob_bytes: int  # config + layer sizes

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blob_digests(self) -> list[str]:
        return [self.config_digest, self.layer_digest]


@dataclass(frozen=True)
class PushedIndex:
    repository: str
    tag: str
    manifest: Manifest
    children: list[PushedImage]

    @property
    def digest(self) -> str:
        return self.manifest.digest


def make_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """(gzipped tar, diff_id) with fixed mtimes so equal input gives equal digests."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def upload_blob(client: RegistryClient, repository: str, data: bytes) -> str:
    """Monolithic upload: POST opens the session, one PUT with ?digest= sends the bytes."""
    digest = sha256(data)
    scope = [f"repository:{repository}:pull,push"]
    opened = client.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, expected=(202,))
    client.request(
        "PUT",
        opened.headers["Location"],
        scope=scope,
        params={"digest": digest},
        headers={"Content-Type": "application/octet-stream"},
        data=data,
        expected=(201,),
    )
    return digest


def push_image(
    client: RegistryClient,
    repository: str,
    tag: str | None = "latest",
    *,
    payload: bytes | None = None,
    architecture: str = "amd64",
    media_type: str = OCI_MANIFEST,
    labels: dict[str, str] | None = None,
) -> PushedImage:
    """Push a one-layer image; ``tag=None`` pushes by digest only (as index children are)."""
    layer, diff_id = make_layer({"hello.txt": payload if payload is not None else os.urandom(64).hex().encode()})
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/hello"], **({"Labels": labels} if labels else {})},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_digest = upload_blob(client, repository, config)
    layer_digest = upload_blob(client, repository, layer)
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": _CONFIG_TYPES[media_type], "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": _LAYER_TYPES[media_type], "digest": layer_digest, "size": len(layer)}],
    }
    manifest = Manifest.from_bytes(json.dumps(document, indent=2).encode(), media_type)
    client.put_manifest(repository, tag or manifest.digest, manifest)
    return PushedImage(repository, tag, manifest, config_digest, layer_digest, len(config) + len(layer))


def push_index(
    client: RegistryClient,
    repository: str,
    tag: str = "latest",
    *,
    architectures: tuple[str, ...] = ("amd64", "arm64"),
    media_type: str = OCI_MANIFEST,
    labels: dict[str, str] | None = None,
) -> PushedIndex:
    """Push one image per architecture by digest (each with ``labels``), then an index (or Docker list) over them."""
    children = [push_image(client, repository, None, architecture=a, media_type=media_type, labels=labels)
                for a in architectures]
    index_type = _INDEX_FOR[media_type]
    document = {
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [
            {
                "mediaType": media_type,
                "digest": child.digest,
                "size": len(child.manifest.raw),
                "platform": {"architecture": arch, "os": "linux"},
            }
            for child, arch in zip(children, architectures, strict=True)
        ],
    }
    manifest = Manifest.from_bytes(json.dumps(document, indent=2).encode(), index_type)
    client.put_manifest(repository, tag, manifest)
    return PushedIndex(repository, tag, manifest, children)
