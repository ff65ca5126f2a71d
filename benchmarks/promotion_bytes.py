"""Bytes a promotion to `latest` uploads, against a push of the same image.

Run after `make run` (it reads the PROD image that run published). The push figure is what
`docker push` of that image to an empty repository uploads: every blob of the manifest plus the
manifest itself. The promotion figure is what the registry client sent while re-tagging the tested
digest as a new tag, measured by its own byte counters. Target: manifest bytes only.

Last line: RESULT promotion_to_push_bytes_ratio <ratio>
"""

from __future__ import annotations

import json
import os
import sys
import uuid

from airflow_image_factory.clients.registry import RegistryClient


def main() -> int:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    version = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]'))[0]
    repository = f"apache/airflow/main/prod/python{version}"
    client = RegistryClient(registry)
    manifest = client.get_manifest(repository, "latest")
    push_bytes = len(manifest.raw) + sum(int(blob["size"]) for blob in manifest.blobs)
    client.stats.reset()
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    digest = client.tag(repository, manifest.digest, tag)
    assert digest == manifest.digest, "re-tag changed the digest"
    promotion_bytes = client.stats.bytes_sent
    blob_bytes = client.stats.blob_bytes_sent + client.stats.blob_bytes_received
    print(f"image {registry}/{repository}@{manifest.digest}")
    print(f"push of the image uploads      {push_bytes:>12,d} bytes ({len(manifest.blobs)} blobs + manifest)")
    print(f"promotion (re-tag) sent        {promotion_bytes:>12,d} bytes (manifest {len(manifest.raw):,d} bytes)")
    print(f"blob bytes moved by promotion  {blob_bytes:>12,d}")
    print(f"RESULT promotion_to_push_bytes_ratio {promotion_bytes / push_bytes:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
