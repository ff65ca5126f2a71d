"""Shared pieces of the reliability tests: the stack registry read directly (never through a proxy)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_image_factory.clients.registry import RegistryClient, config_labels
from tests.support.dag_runs import DagRun, run_dag
from tests.support.registry_servers import BASIC_USER, RegistryServer, running_registry

PYTHON = "3.11"  # one Python version keeps these runs short; the stack tests cover the others
KINDS = ("ci", "prod", "prod-build", "ci-manifest")


def upstream_host() -> str:
    """The stack registry as host:port on IPv4 loopback (it listens on 127.0.0.1 only)."""
    host = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    return host.replace("localhost", "127.0.0.1")


@pytest.fixture(scope="session")
def direct_registry(stack_env) -> RegistryClient:
    return RegistryClient(upstream_host(), retries=2, backoff=0.2)


def latest_digests(client: RegistryClient, repository: str, branch: str, python: str = PYTHON) -> dict[str, str | None]:
    found = {
        kind: client.manifest_digest(f"{repository}/{branch}/{kind}/python{python}", "latest") for kind in KINDS
    }
    found["python"] = client.manifest_digest(f"{repository}/{branch}/python", f"{python}-slim-bookworm")
    return found


def revision_of(client: RegistryClient, repository: str, reference: str) -> str | None:
    return config_labels(client.image_config(repository, reference)).get("org.opencontainers.image.revision")


def blobs_complete(client: RegistryClient, repository: str, reference: str) -> list[str]:
    """Problems with the blobs ``repository:reference`` points at: missing, or not the declared size."""
    problems = []
    for blob in client.get_manifest(repository, reference).blobs:
        path = f"/v2/{repository}/blobs/{blob['digest']}"
        resp = client.request("HEAD", path, scope=[f"repository:{repository}:pull"])
        if resp.status_code != 200:
            problems.append(f"{blob['digest']}: HTTP {resp.status_code}")
        elif int(resp.headers.get("Content-Length", -1)) != blob["size"]:
            size = resp.headers.get("Content-Length")
            problems.append(f"{blob['digest']}: {size} bytes, the manifest says {blob['size']}")
    return problems


# --------------------------------------------------------------------------- a run against an auth registry

AUTH_REPOSITORY = "reliability/auth"
AUTH_BRANCH = "reliability-auth"
CONN_ID = "reliability_registry"


def _git(*args: str, env: dict | None = None, input: str | None = None) -> str:
    source = os.environ["IMAGE_FACTORY_SOURCE_REPO"]
    return subprocess.run(
        ["git", "-C", source, *args], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
        input=input,
    ).stdout.strip()


def _with_file(tree_of: str, path: str, content: str, index: Path) -> str:
    """The tree of commit ``tree_of`` with ``path`` holding ``content`` (git plumbing on a scratch index)."""
    blob = _git("hash-object", "-w", "--stdin", input=content)
    scratch = {"GIT_INDEX_FILE": str(index)}
    _git("read-tree", tree_of, env=scratch)
    _git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=scratch)
    return _git("write-tree", env=scratch)


def branch_with_commits(branch: str, count: int = 2, *, touch: str | None = None) -> list[str]:
    """``branch`` in the stack's source repository: main's commit, then ``count - 1`` more on top (fixed
    dates, so every session makes the same ones); returns them oldest first, the last is the branch's
    head. The commits are empty (their images are main's but for the revision), except that with
    ``touch`` the first of them adds that file to the sources, so its build installs them for real.
    main itself is never touched."""
    commits = [_git("rev-parse", "refs/heads/main")]
    with tempfile.TemporaryDirectory(prefix="branch-index-") as scratch:
        for number in range(1, count):
            stamp = {"GIT_AUTHOR_NAME": "reliability tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
                     "GIT_COMMITTER_NAME": "reliability tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
                     "GIT_AUTHOR_DATE": f"2026-01-01T00:00:{number:02d}Z",
                     "GIT_COMMITTER_DATE": f"2026-01-01T00:00:{number:02d}Z"}
            tree = f"{commits[-1]}^{{tree}}"
            if touch and number == 1:
                tree = _with_file(commits[-1], touch, f"# {branch}: commit {number + 1}\n", Path(scratch) / "index")
            message = f"{branch}: commit {number + 1}"
            commits.append(_git("commit-tree", tree, "-p", commits[-1], "-m", message, env=stamp))
    _git("update-ref", f"refs/heads/{branch}", commits[-1])
    return commits


def ca_bundle_with_canary(path: Path) -> str:
    """The system CA bundle plus a throw-away self-signed certificate; returns a line of the canary
    that no image can hold unless the bundle leaked into it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"reliability canary {secrets.token_hex(8)}")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    path.write_text((system.read_text() if system.is_file() else "") + pem)
    return pem.splitlines()[2]  # a full 64-character base64 line from inside the certificate


@dataclass
class AuthRun:
    registry: RegistryServer
    sha: str
    run: DagRun
    canary: str
    lock_dir: Path

    @property
    def password(self) -> str:
        return self.registry.password or ""


@pytest.fixture(scope="session")
def auth_registry_run(stack_env, tmp_path_factory) -> AuthRun:
    """A build_images run of a branch of its own (a commit on top of main), pushing to a registry with
    htpasswd auth whose password is only in an Airflow Connection; the extra CA bundle carries a canary
    certificate; the promotion lock is a file in a directory of its own. (Two runs of one branch at
    once are tests/dags/test_scheduler_stack.py's, under the real scheduler.)"""
    root = tmp_path_factory.mktemp("reliability-auth")
    sha = branch_with_commits(AUTH_BRANCH)[-1]
    canary = ca_bundle_with_canary(root / "ca-bundle.crt")
    lock_dir = root / "locks"
    with running_registry(
        root / "registry", auth="htpasswd", username=BASIC_USER, password="rel-" + secrets.token_hex(12)
    ) as server:
        conn = {"conn_type": "docker", "host": server.host, "login": server.username, "password": server.password}
        env = {
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn),
            "IMAGE_FACTORY_REGISTRY_CONNECTIONS": json.dumps({server.host: CONN_ID}),
            "IMAGE_FACTORY_EXTRA_CA_BUNDLE": str(root / "ca-bundle.crt"),
            "IMAGE_FACTORY_PROMOTION_LOCK_DIR": str(lock_dir),
            # the secrets tests scan this run's images on the engine (history, every layer)
            "IMAGE_FACTORY_REMOVE_PUSHED_IMAGES": "false",
        }
        conf = {"branch": AUTH_BRANCH, "commit_sha": sha, "python_versions": [PYTHON], "registry": server.host,
                "repository": AUTH_REPOSITORY}
        run = run_dag("build_images", conf, name="reliability-auth", env=env)
        try:
            yield AuthRun(server, sha, run, canary, lock_dir)
        finally:
            untag_local_images(server.host)


def untag_local_images(registry_host: str) -> None:
    """Drop the engine's tags for a registry that lived only for the tests (layers stay shared)."""
    refs = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    mine = [r for r in refs if r.startswith(f"{registry_host}/")]
    if mine:
        subprocess.run(["docker", "rmi", *mine], capture_output=True, check=False)
