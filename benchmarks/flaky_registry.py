"""Promotions (re-tags by digest) through a flaky registry: do they all land, and what do faults cost?

A throw-away registry on loopback holds N small images; each is promoted (``RegistryClient.tag``,
the product's default retry settings) once directly and once through the fault-injecting proxy
with a share of requests failing at random (503, 502, 429 with ``Retry-After: 1``, dropped
connections). Every promotion must land on the right digest; the figure is the extra seconds per
promotion the faults cost (retries and back-off).

Needs ``docker-registry`` (include/stack/up.sh installs it); not the stack itself.
Last line: RESULT flaky_registry_extra_seconds_per_promotion <seconds>
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_image_factory.clients.registry import RegistryClient
from tests.support.fault_proxy import Fault, fault_proxy
from tests.support.oci_images import push_image
from tests.support.registry_servers import running_registry

IMAGES = 30
FAULT_RATE = 0.05


def promote_all(host: str, repository: str, digests: list[str], tag: str) -> float:
    client = RegistryClient(host)  # product defaults: 5 retries, 0.5 s exponential back-off
    started = time.monotonic()
    for i, digest in enumerate(digests):
        assert client.tag(repository, digest, f"{tag}-{i}") == digest
    return time.monotonic() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-flaky-") as tmp, running_registry(Path(tmp)) as registry:
        repository = "bench/flaky"
        seed = registry.client()
        digests = [push_image(seed, repository, f"v{i}").digest for i in range(IMAGES)]
        direct = promote_all(registry.host, repository, digests, "direct")
        mix = (Fault(503), Fault(502), Fault(429, retry_after="1"), Fault(drop=True))
        with fault_proxy(registry.host, random_rate=FAULT_RATE, random_faults=mix, seed=1) as proxy:
            flaky = promote_all(proxy.host, repository, digests, "flaky")
            events = len(proxy.events)
            faults = len(proxy.faulted())
        landed = sum(seed.manifest_digest(repository, f"flaky-{i}") == d for i, d in enumerate(digests))
    print(f"promotions                     {IMAGES} direct, {IMAGES} through the proxy")
    print(f"requests through the proxy     {events}, {faults} faulted ({faults / events:.1%})")
    print(f"promotions that landed         {landed}/{IMAGES}")
    print(f"time direct / through faults   {direct:.2f} s / {flaky:.2f} s")
    if landed != IMAGES:
        print("RESULT flaky_registry_extra_seconds_per_promotion nan")
        return 1
    print(f"RESULT flaky_registry_extra_seconds_per_promotion {(flaky - direct) / IMAGES:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
