"""A registry password in an Airflow Connection leaves no trace: not in any task log, any XCom, any
image layer or image history; the extra CA bundle (a canary certificate appended to it) is in no
layer either. The run (``auth_registry_run`` in conftest.py) pushes to a registry with htpasswd auth on loopback
(the Docker engine pushes to it too).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.reliability.conftest import AUTH_BRANCH, AUTH_REPOSITORY, PYTHON
from tests.support.dag_runs import task_log_files, xcom_values

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _pem_blocks(text: str) -> dict[str, str]:
    """Certificate body (base64, joined) -> a line from inside it."""
    blocks = {}
    for chunk in text.split("-----END CERTIFICATE-----"):
        if "-----BEGIN CERTIFICATE-----" in chunk:
            lines = [x.strip() for x in chunk.split("-----BEGIN CERTIFICATE-----", 1)[1].splitlines() if x.strip()]
            if len(lines) > 3:
                blocks["".join(lines)] = lines[2]
    return blocks


@pytest.fixture(scope="module")
def host_only_ca_lines(auth_registry_run) -> list[str]:
    """Lines of the host's locally added CAs (/usr/local/share/ca-certificates, e.g. a TLS-inspecting
    proxy's CA) that are in the bundle handed to builds as the extra_ca secret and not in the
    images' own trust store. Finding one in an image would mean the bundle leaked into a layer."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    local = Path("/usr/local/share/ca-certificates")
    if not bundle.is_file() or not local.is_dir():
        return []
    in_bundle = _pem_blocks(bundle.read_text())
    added = {body: line for p in sorted(local.rglob("*.crt")) for body, line in _pem_blocks(p.read_text()).items()}
    image = _images(auth_registry_run)[1]  # the PROD image
    own = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "cat", image, "/etc/ssl/certs/ca-certificates.crt"],
        capture_output=True, text=True, check=True,
    ).stdout
    image_blocks = _pem_blocks(own)
    assert image_blocks, "the PROD image has no trust store to compare with"
    return [line for body, line in added.items() if body in in_bundle and body not in image_blocks]


def _needles(auth_run, host_only: list[str] = ()) -> dict[str, bytes]:
    user, password = auth_run.registry.username, auth_run.password
    needles = {
        "password": password.encode(),
        "basic auth header": base64.b64encode(f"{user}:{password}".encode()),
        "password in base64": base64.b64encode(password.encode()).rstrip(b"="),
        "CA canary": auth_run.canary.encode(),
    }
    needles.update({f"host CA line {i}": line.encode() for i, line in enumerate(host_only)})
    return needles


def _found(data: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in data]


def _images(auth_run) -> list[str]:
    prefix = f"{auth_run.registry.host}/{AUTH_REPOSITORY}/{AUTH_BRANCH}"
    refs = [f"{prefix}/{kind}/python{PYTHON}:{auth_run.sha}" for kind in ("ci", "prod", "prod-build", "ci-manifest")]
    return [*refs, f"{prefix}/python:{PYTHON}-slim-bookworm"]


def test_the_run_pushed_and_promoted_with_the_connections_password(auth_registry_run):
    # guard: the scans below mean something only if the run pushed with the Connection's password
    run = auth_registry_run.run
    assert run.returncode == 0, run.output[-3000:]
    assert f"Pushed {auth_registry_run.registry.host}/" in run.output
    client = auth_registry_run.registry.client()
    for kind in ("ci", "prod"):
        path = f"{AUTH_REPOSITORY}/{AUTH_BRANCH}/{kind}/python{PYTHON}"
        assert client.manifest_digest(path, "latest") == client.manifest_digest(path, auth_registry_run.sha)
    # the promotion held the file lock the settings put in a directory of its own: one file for the branch
    # (beside it, the lock the compiled UI was published under, named for its key)
    locks = [p.name for p in auth_registry_run.lock_dir.glob("*.lock")]
    assert len([name for name in locks if AUTH_BRANCH in name]) == 1, locks
    assert len([name for name in locks if "ui-assets" in name]) == 1, locks


def test_no_secret_in_task_logs(auth_registry_run):
    needles = _needles(auth_registry_run)
    run = auth_registry_run.run
    assert _found(run.output.encode(), needles) == [], run.log_path
    for path in task_log_files("build_images", run.run_id):
        assert _found(path.read_bytes(), needles) == [], path


def test_no_secret_in_xcom(auth_registry_run):
    needles = _needles(auth_registry_run)
    values = xcom_values("build_images", auth_registry_run.run.run_id)
    assert len(values) > 10  # the run's summaries are there, and were scanned
    for task_id, value in values:
        assert _found(value.encode(), needles) == [], task_id


def test_no_secret_in_image_history(auth_registry_run, host_only_ca_lines):
    needles = _needles(auth_registry_run, host_only_ca_lines)
    seen = 0
    for ref in _images(auth_registry_run):
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
            capture_output=True, check=True,
        ).stdout
        inspect = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=True).stdout
        seen += len(history.strip())
        assert _found(history + inspect, needles) == [], ref
    assert seen > 1000  # the build steps' history was there to scan (the mirrored base has none)


def test_no_secret_in_image_layers(auth_registry_run, host_only_ca_lines):
    """`docker save` streams every layer (uncompressed tars) and config; scan it all, in pieces.

    The builds are cache hits, so the canary never entered a build step; the host bundle's own
    certificates did (when the cached layers were built), which is why they are looked for too."""
    needles = _needles(auth_registry_run, host_only_ca_lines)
    overlap = max(len(n) for n in needles.values())
    proc = subprocess.Popen(["docker", "save", *_images(auth_registry_run)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found: set[str] = set()
    scanned = 0
    tail = b""
    while piece := proc.stdout.read(8 << 20):
        window = tail + piece
        found.update(_found(window, needles))
        tail = window[-overlap:]
        scanned += len(piece)
    assert proc.wait() == 0
    assert scanned > 200_000_000  # the images were really there (hundreds of MB of layers)
    assert found == set()
