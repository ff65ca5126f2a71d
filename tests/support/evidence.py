"""Checking published evidence the way an outsider does: the registry read with plain HTTP requests (the
referrers tag schema's index, the artifact manifests, the envelope blobs) and the DSSE signature checked
with ``cryptography`` over DSSE's pre-authentication encoding, written here from the DSSE spec - none of the
package's registry, signing or policy code is used. And the ``image-factory`` CLI as a user runs it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.support.dag_runs import REPO_ROOT

STACK_DIR = Path(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack")
STACK_PUBLIC_KEY = STACK_DIR / "evidence-signing.pub.pem"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = ", ".join((OCI_INDEX, "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json"))


def names_and_referrers(tags: list[str]) -> tuple[set[str], set[str]]:
    """A repository's tags split into the image names and the referrers tag schema's indexes (``sha256-<hex>``,
    one per image that has signed evidence)."""
    referrers = {tag for tag in tags if tag.startswith("sha256-") and len(tag) == 71}
    return set(tags) - referrers, referrers


def evidence_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``image-factory ARGS`` from the venv, as a user runs it."""
    cli = Path(sys.executable).parent / "image-factory"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=300)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Referrer:
    artifact: str  # the artifact manifest's digest
    predicate_type: str  # from the referrers index's annotation
    subject: str  # the artifact manifest's subject digest
    envelope: dict[str, Any]

    def statement(self, public_pem: str) -> dict[str, Any]:
        """The statement, when the one signature of the envelope verifies with ``public_pem`` (else raises
        cryptography's InvalidSignature)."""
        payload = base64.b64decode(self.envelope["payload"])
        [signature] = self.envelope["signatures"]
        load_pem_public_key(public_pem.encode()).verify(base64.b64decode(signature["sig"]),
                                                       pae(self.envelope["payloadType"], payload))
        return json.loads(payload)


class RawRegistry:
    """GETs against ``http://<host>/v2/`` with nothing but requests."""

    def __init__(self, host: str):
        self.base = f"http://{host}/v2"

    def digest(self, repository: str, reference: str) -> str:
        resp = requests.head(f"{self.base}/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES},
                             timeout=30)
        resp.raise_for_status()
        return resp.headers["Docker-Content-Digest"]

    def manifest(self, repository: str, reference: str) -> requests.Response:
        resp = requests.get(f"{self.base}/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES},
                            timeout=30)
        return resp

    def config(self, repository: str, reference: str) -> dict[str, Any]:
        manifest = self.manifest(repository, reference).json()
        return requests.get(f"{self.base}/{repository}/blobs/{manifest['config']['digest']}", timeout=30).json()

    def referrers(self, repository: str, digest: str) -> tuple[requests.Response, list[Referrer]]:
        """The referrers tag schema's index of ``digest`` (the raw response) and each artifact it lists."""
        index = self.manifest(repository, digest.replace(":", "-"))
        found = []
        for entry in index.json().get("manifests", []) if index.ok else []:
            artifact = self.manifest(repository, entry["digest"]).json()
            envelope = requests.get(f"{self.base}/{repository}/blobs/{artifact['layers'][0]['digest']}", timeout=30)
            found.append(Referrer(entry["digest"], entry.get("annotations", {}).get("in-toto.io/predicate-type", ""),
                                  artifact["subject"]["digest"], envelope.json()))
        return index, found
