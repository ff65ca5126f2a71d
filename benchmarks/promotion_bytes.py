"""Bytes a promotion to `latest` uploads, against a push of the same image.

Run after `make run` (it reads the PROD image that run published). The push figure is what
`docker push` of that image to an empty repository uploads: every blob of the manifest plus the
manifest itself. The promotion figure is what the registry client sent while re-tagging the tested
digest as a new tag, measured by its own byte counters. Target: manifest bytes only.

A multi-platform image (an OCI index; the stack test tests/dags/test_platforms_stack.py publishes
``multiarch/airflow/main/prod-slim/pythonX.Y``, or a run with ``"platforms": ["linux/amd64", "linux/arm64"]``)
is measured the same way: its promotion moves the index alone, its children are already in the repository.

Last lines: RESULT promotion_to_push_bytes_ratio <ratio>, and for an index RESULT index_promotion_bytes
<bytes> and RESULT index_promotion_to_push_bytes_ratio <ratio>
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
    multiarch = f"multiarch/airflow/main/prod-slim/python{version}"
    if client.manifest_digest(repository, "latest") is None:
        print(f"no {registry}/{repository}:latest (make run publishes it): no single-image figures")
    else:
        single_promotion(client, registry, repository)
    index_promotion(client, os.environ.get("BENCH_INDEX_REPOSITORY", multiarch))
    return 0


def single_promotion(client: RegistryClient, registry: str, repository: str) -> None:
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


def index_promotion(client: RegistryClient, repository: str) -> None:
    if client.manifest_digest(repository, "latest") is None:
        print(f"no multi-platform image at {client.registry}/{repository}:latest: run "
              "tests/dags/test_platforms_stack.py (or a build with two platforms) first; no index figures")
        return
    index = client.get_manifest(repository, "latest")
    if not index.is_index:
        print(f"{repository}:latest is not an index; no index figures")
        return
    children = [client.get_manifest(repository, child["digest"]) for child in index.children]
    push_bytes = len(index.raw) + sum(len(c.raw) + sum(int(b["size"]) for b in c.blobs) for c in children)
    client.stats.reset()
    digest = client.tag(repository, index.digest, f"bench-{uuid.uuid4().hex[:8]}")
    assert digest == index.digest, "re-tag changed the index digest"
    sent = client.stats.bytes_sent
    print(f"index {client.registry}/{repository}@{index.digest}: {len(children)} platforms")
    print(f"push of every platform uploads {push_bytes:>12,d} bytes")
    print(f"promotion of the index sent    {sent:>12,d} bytes (index {len(index.raw):,d} bytes), "
          f"blob bytes {client.stats.blob_bytes_sent + client.stats.blob_bytes_received:,d}")
    print(f"RESULT index_promotion_bytes {sent}")
    print(f"RESULT index_promotion_to_push_bytes_ratio {sent / push_bytes:.6f}")


if __name__ == "__main__":
    sys.exit(main())
