"""The two PROD variants, regular and slim, next to Airflow's published images: size and build time.

Run after `make run` (`make bench`). One bench branch at main's head, the stack's first Python version,
the settings' defaults (Airflow's 34 extras for regular, none for slim), through the DAG itself:

  cold   cache "disabled": every layer of both variants built (BuildKit's download caches may be
         warm, as in warm_rebuild.py); publishes the branch's latest images;
  warm   "rebuild": true on the same worker: every image built again with the registry's latest
         images and the engine's cache (no content-key shortcut).

A variant's build time is its PROD build stage plus its PROD image, as the build steps report them.
Sizes: the image on the engine (uncompressed) and in the registry (its layers, compressed), next to
the sizes Airflow's docs give for its own images (regular about 1.1 GB, slim about 0.5 GB).

Last lines: RESULT <metric> <value>
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_image_factory.clients.registry import RegistryClient  # noqa: E402
from tests.support.dag_runs import run_dag  # noqa: E402 - the same runner the stack tests use

BRANCH = "bench/variants"
# What Airflow's docker-stack docs say of its published images (not measured here: Docker Hub is
# unreachable from the stack).
AIRFLOW_DOCS_GB = {"regular": 1.1, "slim": 0.5}
KINDS = {"regular": ("prod-build", "prod"), "slim": ("prod-slim-build", "prod-slim")}
_BUILT = re.compile(r"Built \S+/(prod[a-z-]*)/python[\d.]+:\S+: \S+, ([\d.]+) MB, ([\d.]+)s, (\d+)/(\d+) steps")


def build(name: str, conf: dict) -> dict[str, tuple[float, float]]:
    """kind → (MB, seconds) of every PROD build step of one run."""
    result = run_dag("build_images", conf, name=f"bench-{name}")
    if result.returncode != 0:
        raise SystemExit(f"{name}: the run failed; see {result.log_path}")
    found = {kind: (float(mb), float(seconds)) for kind, mb, seconds, _, _ in _BUILT.findall(result.output)}
    if set(found) != {k for kinds in KINDS.values() for k in kinds}:
        raise SystemExit(f"{name}: expected the four PROD builds, found {sorted(found)}; see {result.log_path}")
    for kind, (mb, seconds) in sorted(found.items()):
        print(f"  {name}: {kind} {seconds:.1f}s, {mb:.0f} MB")
    return found


def main() -> int:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    source = os.environ["IMAGE_FACTORY_SOURCE_REPO"]
    version = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11"]'))[0]
    subprocess.run(["git", "--git-dir", source, "branch", "-f", BRANCH, "main"], check=True)
    conf = {"branch": BRANCH, "python_versions": [version], "variants": ["regular", "slim"]}
    try:
        cold = build("cold", {**conf, "cache": "disabled"})
        warm = build("warm", {**conf, "rebuild": True})
    finally:
        subprocess.run(["git", "--git-dir", source, "branch", "-D", BRANCH], check=True, capture_output=True)
    client = RegistryClient(registry)
    results = []
    for variant, (stage, prod) in KINDS.items():
        manifest = client.get_manifest(f"apache/airflow/{BRANCH}/{prod}/python{version}", "latest").document
        compressed_gb = sum(layer.get("size", 0) for layer in manifest.get("layers", [])) / 1e9
        engine_gb = cold[prod][0] / 1e3
        cold_s, warm_s = cold[stage][1] + cold[prod][1], warm[stage][1] + warm[prod][1]
        print(f"{variant}: {engine_gb:.2f} GB on the engine, {compressed_gb:.2f} GB compressed "
              f"(Airflow's docs: ~{AIRFLOW_DOCS_GB[variant]} GB); build {cold_s:.1f}s cold, {warm_s:.1f}s warm")
        results += [
            f"RESULT {variant}_image_gigabytes {engine_gb:.2f}",
            f"RESULT {variant}_compressed_gigabytes {compressed_gb:.2f}",
            f"RESULT {variant}_to_airflow_docs_size_ratio {engine_gb / AIRFLOW_DOCS_GB[variant]:.2f}",
            f"RESULT {variant}_cold_build_seconds {cold_s:.1f}",
            f"RESULT {variant}_warm_build_seconds {warm_s:.1f}",
            f"RESULT {variant}_warm_to_cold_build_time_ratio {warm_s / cold_s:.4f}",
        ]
    slim_to_regular = (cold["prod-slim"][0] / cold["prod"][0])
    print("\n".join(results))
    print(f"RESULT slim_to_regular_size_ratio {slim_to_regular:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
