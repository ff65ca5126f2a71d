"""Disk of the stack tests: what each module used, and giving back what a module made for itself.

Every distinct set of dependencies is gigabytes (engine layers plus the registry's compressed copy),
and a CI machine's disk may be small. Modules whose builds nothing else reuses (the nightly's
upgraded constraints) run last and, when they end, delete their repositories from the stack
registry and, when the disk is short (tests/conftest.py), collect the registry's garbage and empty the
engine's build cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import requests

from airflow_image_factory.clients.registry import RegistryClient

MIB = 1024 * 1024


def used_mib(path: str = "/") -> int:
    return shutil.disk_usage(path).used // MIB  # as df's "Used"


def free_mib(path: str = "/") -> int:
    return shutil.disk_usage(path).free // MIB


def delete_repositories(client: RegistryClient, prefix: str) -> int:
    """Delete every manifest under ``prefix`` in the registry (blobs go at the next collection)."""
    deleted = 0
    for repository in client.catalog():
        if not repository.startswith(prefix):
            continue
        digests = {client.manifest_digest(repository, tag) for tag in client.list_tags(repository)}
        for digest in sorted(d for d in digests if d):
            client.delete_manifest(repository, digest)
            deleted += 1
    return deleted


def collect_registry_garbage(stack_dir: Path) -> str:
    """``garbage-collect`` the stack's registry while it is stopped, then start it again.

    Stopped because the running registry caches blob descriptors in memory: a blob deleted under it
    would still answer HEAD 200, and a later push would skip uploading it. Only a registry this
    stack started (it has a pidfile) is touched; returns what was done, for the log.
    """
    pidfile = stack_dir / "run" / "registry.pid"
    config = stack_dir / "registry" / "config.yml"
    if not pidfile.is_file() or not config.is_file():
        return "registry not started by the stack: left alone"
    pid = int(pidfile.read_text().strip())
    address = _address(config)
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    gc = subprocess.run(["docker-registry", "garbage-collect", str(config)], capture_output=True, text=True,
                        check=False)
    log = stack_dir / "logs" / "registry.log"
    with log.open("a") as out:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError(f"the stack registry did not come back on {address}; see {log}")
    if gc.returncode != 0:
        raise RuntimeError(f"registry garbage-collect failed:\n{gc.stdout[-2000:]}{gc.stderr[-2000:]}")
    return f"registry garbage collected ({gc.stdout.count('blob eligible for deletion')} blobs)"


def remove_local_images(prefixes: tuple[str, ...], docker: str = "docker") -> int:
    """Untag every local image whose name starts with one of ``prefixes``; returns how many."""
    listed = subprocess.run([docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, check=True).stdout.split()
    refs = [ref for ref in listed if ref.startswith(prefixes) and not ref.endswith(":<none>")]
    if refs:
        subprocess.run([docker, "rmi", *refs], capture_output=True, check=False)
    return len(refs)


def empty_build_cache(docker: str = "docker") -> str:
    """Remove every build-cache record no build is using (``docker builder prune -af``)."""
    out = subprocess.run([docker, "builder", "prune", "-af"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()


def _address(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.strip().startswith("addr:"):
            return line.split(":", 1)[1].strip()
    return "127.0.0.1:5000"
