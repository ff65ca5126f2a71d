"""Warm rebuild from the registry cache on a pruned engine, as a ratio of a cold build.

Run after `make run`. Builds the PROD image of the first stack Python version twice through the same
engine code the DAG uses (engine.Engine):
  cold: --no-cache (every layer built);
  warm: local images and the BuildKit cache pruned, then --cache-from the registry's latest
        prod-build and prod images (inline cache metadata), as a fresh worker would.
Target: warm/cold <= 0.05 (Airflow reports about 0.08 for its CI image).

Last line: RESULT warm_to_cold_build_time_ratio <ratio>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    for ref in cache:
        engine.remove(ref)
    warm = build("bench/prod:warm", cache_from=cache)
    engine.remove("bench/prod:warm")
    print(f"cold {cold:.1f}s, warm {warm:.1f}s")
    print(f"RESULT warm_to_cold_build_time_ratio {warm / cold:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
