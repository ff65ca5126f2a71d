"""The nightly "did the Python base change?" check for two Python versions: ours vs the seeds' way.

Run after `make run`. Both methods answer the same question for each stack Python version, in the
same run, against the same registry:
  ours:   HEAD upstream's manifest; GET our published base's manifest and config; compare the
          config's org.opencontainers.image.base.digest label with upstream's digest;
  seeds': pull our published base and upstream's image (local copies removed first, as on a fresh
          worker), run `python -c 'import sys; print(sys.version)'` in each, compare.
Bytes: what our client received (manifests and configs; layers: none), and the compressed layers
the seeds' pulls transfer. The dependency resolution the nightly also runs is timed on its own line.

Last line: RESULT nightly_base_check_speedup <seeds' time / our time>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from airflow_image_factory.clients.registry import RegistryClient, parse_reference
from airflow_image_factory.clients.resolver import airflow_requirement, resolve_newest
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.nightly import BASE_DIGEST_LABEL

DOCKER = os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker"


def main() -> int:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    versions = json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11", "3.13"]'))[:2]
    mirror = os.environ.get("IMAGE_FACTORY_PYTHON_BASE_MIRROR", f"{registry}/library/python").split("/", 1)[1]
    ours_repo = "apache/airflow/main/python"
    debian_for = load_settings().debian_for
    tags = [f"{v}-slim-{debian_for(v)}" for v in versions]

    client = RegistryClient(registry)
    started = time.monotonic()
    ours_answers = {}
    for tag in tags:
        upstream = client.manifest_digest(mirror, tag)
        labels = client.image_config(ours_repo, tag)["config"].get("Labels") or {}
        ours_answers[tag] = labels.get(BASE_DIGEST_LABEL) == upstream
    ours = time.monotonic() - started
    ours_received = client.stats.bytes_received
    layer_gets = client.stats.count("GET", "blob") - len(tags)  # one config per tag; the rest would be layers

    refs = [f"{registry}/{repo}:{tag}" for tag in tags for repo in (ours_repo, mirror)]
    layers: dict[str, int] = {}
    for ref in refs:
        _, repo, tag = parse_reference(ref)
        for blob in client.get_manifest(repo, tag).document.get("layers", []):
            layers[blob["digest"]] = blob["size"]
    for ref in refs:
        subprocess.run([DOCKER, "rmi", "-f", ref], capture_output=True, check=False)
    started = time.monotonic()
    seeds_answers = {}
    for tag in tags:
        outputs = []
        for repo in (ours_repo, mirror):
            ref = f"{registry}/{repo}:{tag}"
            subprocess.run([DOCKER, "pull", "-q", ref], capture_output=True, check=True)
            outputs.append(subprocess.run(
                [DOCKER, "run", "--rm", ref, "python3", "-c", "import sys; print(sys.version)"],
                capture_output=True, text=True, check=True,
            ).stdout)
        seeds_answers[tag] = outputs[0] == outputs[1]
    seeds = time.monotonic() - started
    seeds_layer_bytes = sum(layers.values())

    started = time.monotonic()
    resolved = resolve_newest(airflow_requirement("3.3.2", "postgres,mysql"), python=versions[0],
                              extra_ca_bundle=os.environ.get("IMAGE_FACTORY_EXTRA_CA_BUNDLE", ""))
    resolving = time.monotonic() - started

    print(f"answers (unchanged?): ours {ours_answers}, seeds' {seeds_answers}")
    print(f"ours:   {ours:.3f}s, {ours_received} bytes received (manifests and configs), "
          f"{layer_gets} layer GETs, so 0 layer bytes")
    print(f"seeds': {seeds:.3f}s, {seeds_layer_bytes} layer bytes pulled ({len(layers)} layers)")
    print(f"(the nightly's dependency resolution, on the worker: {resolving:.1f}s for {len(resolved)} packages)")
    print(f"RESULT nightly_base_check_speedup {seeds / ours:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
