"""Newest allowed dependency set for a Python version, on the worker, without building an image.

``uv pip compile`` resolves for a target Python version and platform from package metadata alone
(it reads sdists' static metadata instead of building them), so the nightly run learns whether
anything upgraded in seconds, with nothing pulled and no container started. pip cannot do this:
``pip install --dry-run --python-version`` refuses sdists, and Airflow's MySQL driver ships none
for Linux.
"""

from __future__ import annotations

import logging
import os
import platform as host_platform
import subprocess
import tempfile
import threading
from pathlib import Path

from airflow_image_factory.clients.sources import DISTRIBUTIONS, SourceTree, internal_requirements
from airflow_image_factory.exceptions import DependencyResolutionFailed
from airflow_image_factory.policy.constraints import parse_pins

log = logging.getLogger(__name__)
RESOLVE_TIMEOUT = 900
_UV_PLATFORMS = {"x86_64": "x86_64-unknown-linux-gnu", "amd64": "x86_64-unknown-linux-gnu",
                 "aarch64": "aarch64-unknown-linux-gnu", "arm64": "aarch64-unknown-linux-gnu"}


def airflow_requirement(airflow_version: str, extras: str) -> str:
    extras = ",".join(e.strip() for e in extras.split(",") if e.strip())
    return f"apache-airflow{f'[{extras}]' if extras else ''}=={airflow_version}"


def uv_platform(architecture: str | None = None) -> str:
    arch = (architecture or host_platform.machine()).lower()
    try:
        return _UV_PLATFORMS[arch]
    except KeyError:
        raise DependencyResolutionFailed(f"no resolver platform for architecture {arch!r}") from None


_UV_LOCK = threading.Lock()
_UV_BIN: list[str] = []


def uv_bin() -> str:
    """uv's executable, looked up once: ``uv.find_uv_bin`` reads ``sysconfig``, whose first read is not
    thread-safe on Python 3.11 (a concurrent reader may see ``EXE`` as None), and the seeding resolves
    several Pythons in threads."""
    with _UV_LOCK:
        if not _UV_BIN:
            from uv import find_uv_bin

            _UV_BIN.append(find_uv_bin())
        return _UV_BIN[0]


def resolve_newest(
    requirement: str | list[str], *, python: str, architecture: str | None = None, extra_ca_bundle: str = "",
    cache_dir: str | None = None, find_links: str | None = None, exclude: tuple[str, ...] = (),
    uploaded_before: str = "",
) -> dict[str, str]:
    """``{name: version}`` of the eager (newest allowed) resolution of ``requirement`` for ``python``.

    ``find_links``: a directory of wheels the resolver sees beside the index (a branch's metadata
    wheels, so its own dependency metadata is resolved); ``exclude``: packages left out of the result;
    ``uploaded_before``: an RFC 3339 time — resolve as the index stood then (what a release's
    constraints held), not as it stands today.
    """
    requirements_lines = [requirement] if isinstance(requirement, str) else list(requirement)
    requirement = " ".join(requirements_lines)

    env = dict(os.environ)
    if extra_ca_bundle:
        env["SSL_CERT_FILE"] = extra_ca_bundle
    else:
        # The platform's certificate store, as pip uses it (uv renamed the switch; both are set).
        env.setdefault("UV_SYSTEM_CERTS", "1")
        env.setdefault("UV_NATIVE_TLS", "1")
    if cache_dir:
        env["UV_CACHE_DIR"] = cache_dir
    with tempfile.TemporaryDirectory(prefix="image-factory-resolve-") as tmp:
        requirements = Path(tmp, "requirements.in")
        requirements.write_text("\n".join(requirements_lines) + "\n")
        output = Path(tmp, "resolved.txt")
        cmd = [
            uv_bin(), "pip", "compile", str(requirements), "--quiet", "--no-header", "--no-annotate",
            "--python-version", python, "--python-platform", uv_platform(architecture),
            "--upgrade", "--output-file", str(output),
        ]
        if find_links:
            cmd += ["--find-links", find_links]
        for package in exclude:
            cmd += ["--no-emit-package", package]
        if uploaded_before:
            cmd += ["--exclude-newer", uploaded_before]
        log.info("Resolving %s for Python %s: %s", requirement, python, " ".join(cmd[1:]))
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT, env=env,
                                    check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DependencyResolutionFailed(f"resolving {requirement} for Python {python}: {exc}") from exc
        if result.returncode != 0:
            raise DependencyResolutionFailed(
                f"resolving {requirement} for Python {python} failed: {result.stderr.strip()[-1500:]}"
            )
        pins = parse_pins(output.read_text())
    if not pins:
        raise DependencyResolutionFailed(f"resolving {requirement} for Python {python} returned no packages")
    return pins


def resolve_sources(
    tree: SourceTree, extras: list[str], *, python: str, metadata_wheels: str, additional: tuple[str, ...] = (),
    extra_ca_bundle: str = "", uploaded_before: str = "",
) -> dict[str, str]:
    """The newest allowed dependency set of a branch's own sources with ``extras`` (and ``additional``
    requirements): resolved from its metadata wheels (``metadata_wheels``, :func:`write_metadata_wheels`),
    Airflow's own distributions left out, as Airflow's constraints files leave them out."""
    return resolve_newest(
        [*internal_requirements(tree, extras), *additional], python=python, extra_ca_bundle=extra_ca_bundle,
        find_links=metadata_wheels, exclude=tuple(DISTRIBUTIONS), uploaded_before=uploaded_before,
    )
