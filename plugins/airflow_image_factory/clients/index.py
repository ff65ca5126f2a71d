"""One lookup at the package index: does it hold Apache Airflow X.Y.Z, so a release build can install it?

A release image installs ``apache-airflow==X.Y.Z`` from the index (branch builds install their own sources,
so only release_images asks). Asking the index's simple API (PEP 691 JSON, or the PEP 503 HTML page any
mirror serves) takes a second; a build that finds out takes minutes. Called by the release DAG's validate
task at run time, never while a DAG file is parsed.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from airflow_image_factory.exceptions import InvalidBuildRequest, PackageIndexUnavailable
from airflow_image_factory.policy.request import show

log = logging.getLogger(__name__)

# pip's default index, which the release builds install from (the Dockerfiles set no other).
DEFAULT_INDEX_URL = "https://pypi.org/simple"
PROJECT = "apache-airflow"
LOOKUP_TIMEOUT = 10.0  # seconds, to connect and between bytes of the answer
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # apache-airflow's page is a few hundred KiB
_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_ANCHOR = re.compile(r"<a\b([^>]*)>([^<]*)</a>", re.IGNORECASE)


@dataclass(frozen=True)
class IndexRelease:
    version: str
    files: tuple[str, ...]
    yanked: bool  # every file is yanked (pip still installs an exact == pin, with a warning)


def check_airflow_release(
    version: str, *, index_url: str = DEFAULT_INDEX_URL, field: str = "version", timeout: float = LOOKUP_TIMEOUT,
    ca_bundle: str = "",
) -> IndexRelease:
    """The index's files of ``apache-airflow`` ``version``. Raises :class:`InvalidBuildRequest` naming
    ``field`` when the index has no such release, :class:`PackageIndexUnavailable` naming the index when
    it does not answer (no retry: one lookup, at most ``timeout`` seconds per step)."""
    page = f"{index_url.rstrip('/')}/{PROJECT}/"
    status, content_type, body = _get(page, timeout=timeout, ca_bundle=ca_bundle)
    if status == 404:
        raise PackageIndexUnavailable(f"the package index {index_url} has no project {PROJECT} (HTTP 404 for {page})")
    if status != 200:
        raise PackageIndexUnavailable(f"the package index {index_url} answered HTTP {status} for {page}")
    try:
        files = _files(content_type, body)
    except ValueError as exc:
        raise PackageIndexUnavailable(f"the package index {index_url} sent an unreadable page for {PROJECT}: {exc}") \
            from exc
    wanted = Version(version)
    mine = [(name, yanked) for name, yanked in files if _version_of(name) == wanted]
    if not mine:
        raise InvalidBuildRequest(
            field, f"{show(version)} is not a release of {PROJECT} on {index_url} (the airflow_version a release "
                   "installs must be on the index)",
        )
    release = IndexRelease(version, tuple(name for name, _ in mine), all(yanked for _, yanked in mine))
    if release.yanked:
        log.warning("%s %s is yanked on %s: pip installs it only because the version is pinned", PROJECT,
                    version, index_url)
    log.info("%s %s is on %s (%d files)", PROJECT, version, index_url, len(release.files))
    return release


def _version_of(filename: str) -> Version | None:
    """The version of one of the project's wheels or sdists; None for anything else."""
    try:
        name, version = (parse_wheel_filename(filename)[:2] if filename.endswith(".whl")
                         else parse_sdist_filename(filename))
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return version if canonicalize_name(name) == PROJECT else None


def _files(content_type: str, body: bytes) -> list[tuple[str, bool]]:
    """(file name, yanked) of a simple-API page, JSON (PEP 691) or HTML (PEP 503/592)."""
    if content_type.split(";")[0].strip().endswith("json"):
        import json

        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("files"), list):
            raise ValueError("no 'files' list")
        return [(str(f.get("filename", "")), bool(f.get("yanked"))) for f in data["files"] if isinstance(f, dict)]
    text = body.decode("utf-8", errors="replace")
    return [(html.unescape(name).strip(), "data-yanked" in attrs) for attrs, name in _ANCHOR.findall(text)]


def _get(url: str, *, timeout: float, ca_bundle: str) -> tuple[int, str, bytes]:
    import requests

    try:
        with _verify(ca_bundle) as verify, requests.get(
            url, headers={"Accept": _ACCEPT}, timeout=timeout, stream=True, verify=verify
        ) as answer:
            body = b""
            if answer.status_code == 200:
                chunks, size = [], 0
                for chunk in answer.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise PackageIndexUnavailable(f"{url} sent more than {MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
            return answer.status_code, answer.headers.get("Content-Type", ""), body
    except requests.RequestException as exc:
        raise PackageIndexUnavailable(
            f"the package index did not answer {url} within {timeout:g} s ({type(exc).__name__}): is it reachable "
            "from the worker?"
        ) from exc


@contextlib.contextmanager
def _verify(ca_bundle: str) -> Iterator[bool | str]:
    """requests' ``verify``: its own CA bundle, plus the ``extra_ca_bundle`` setting's when one is set
    (a TLS-inspecting proxy's CA), as the builds trust it."""
    if not ca_bundle:
        yield True
        return
    import certifi

    with open(certifi.where(), "rb") as base, open(ca_bundle, "rb") as extra:
        combined = base.read() + b"\n" + extra.read()
    handle, path = tempfile.mkstemp(prefix="image-factory-ca-", suffix=".pem")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(combined)
        yield path
    finally:
        os.unlink(path)
