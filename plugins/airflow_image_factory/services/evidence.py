"""An image's signed evidence: made after its checks passed and its ``:SHA`` push, read back before any
name is moved to it.

- :func:`read_inventory` runs the image once to list what is installed in it (its Python distributions
  and its Debian packages); :func:`cyclonedx_sbom` turns that into a CycloneDX document with
  cyclonedx-python-lib.
- :class:`Attestor` signs statements (``clients/signing.py``) and stores each as an OCI artifact referring
  to the image (``RegistryClient.attach_referrer``: the referrers API, or the OCI 1.1 tag schema).
- :func:`verify_image` reads an image's referrers, opens the envelopes with the trusted keys and asks
  ``policy/evidence.judge`` whether they are enough; an index is judged child by child, then itself.
- :func:`attest_index` gives an index evidence of its own, made from its children's: what a tool that
  verifies the digest it pulled (an index, for a multi-platform name) looks for.

What the statements say is :mod:`airflow_image_factory.policy.evidence`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_image_factory.clients.registry.manifest import (
    EMPTY_JSON,
    artifact_manifest,
    config_labels,
    descriptor,
    manifest_descriptor,
)
from airflow_image_factory.exceptions import EvidenceError, EvidenceRefused, RegistryError
from airflow_image_factory.policy.evidence import (
    ARTIFACT_TYPE,
    ENVELOPE_MEDIA_TYPE,
    PREDICATE_ANNOTATION,
    PROVENANCE,
    REQUIRED,
    SBOM,
    TEST_RESULT,
    Opened,
    Verdict,
    index_provenance,
    index_test_result,
    judge,
    statement,
)
from airflow_image_factory.policy.nightly import REVISION_LABEL

INVENTORY_MARKER = "IMAGE-FACTORY-INVENTORY "
INDEX = "index"  # the ImageEvidence.platform of an index's own evidence
PLATFORM_PROPERTY = "airflow-image-factory:platform"  # an index SBOM's child: the platform it is for
# Runs inside the image with its own Python: every distribution on its path, and the Debian packages
# dpkg's status file says are installed (a slim image may lack dpkg-query, never the file).
INVENTORY_SCRIPT = r"""
import importlib.metadata as md, json, platform
seen = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        seen.setdefault(name.lower(), (name, dist.version, dist.metadata.get("License-Expression") or ""))
debs, entry = [], {}
try:
    text = open("/var/lib/dpkg/status", encoding="utf-8", errors="replace").read()
except OSError:
    text = ""
for block in text.split("\n\n"):
    fields = dict(l.split(": ", 1) for l in block.splitlines() if ": " in l and not l.startswith(" "))
    if fields.get("Status", "").endswith(" installed") and fields.get("Package"):
        debs.append((fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")))
osr = {}
try:
    for l in open("/etc/os-release"):
        k, _, v = l.strip().partition("=")
        osr[k] = v.strip('"')
except OSError:
    pass
print("IMAGE-FACTORY-INVENTORY " + json.dumps({
    "python": sorted(seen.values()), "debian": sorted(debs), "python_version": platform.python_version(),
    "os": {k: osr.get(k, "") for k in ("ID", "VERSION_ID", "VERSION_CODENAME")}}))
"""


def read_inventory(engine: Any, image: str, *, timeout: float = 300) -> dict[str, Any]:
    """What is installed in ``image`` (``python``: [name, version, license]; ``debian``: [package, version,
    arch]; ``os``), from one run of its own Python (entrypoint bypassed: nothing of Airflow starts)."""
    result = engine.run(image, command=[INVENTORY_SCRIPT], entrypoint=["python", "-c"], timeout=timeout,
                        on_line=lambda line: None)
    for line in reversed(result.output.splitlines()):
        if line.startswith(INVENTORY_MARKER):
            inventory = json.loads(line[len(INVENTORY_MARKER):])
            if result.exit_code == 0 and inventory.get("python"):
                return inventory
    raise EvidenceError(f"{image}: could not list what is installed (exit {result.exit_code}): "
                        + "\n".join(result.output.splitlines()[-5:]))


def cyclonedx_sbom(inventory: Mapping[str, Any], *, image: str, digest: str) -> dict[str, Any]:
    """The CycloneDX 1.6 document (as JSON data) of an image's inventory: the image as the described
    component, each Python distribution (``pkg:pypi``) and Debian package (``pkg:deb``) as a library."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    os_info = inventory.get("os") or {}
    distro = f"{os_info.get('ID', 'debian')}-{os_info.get('VERSION_ID', '')}".rstrip("-")
    components: dict[str, Component] = {}
    for name, version, *_ in inventory.get("python") or []:
        purl = PackageURL("pypi", None, name.lower().replace("_", "-"), version)
        components[str(purl)] = Component(name=name, version=version, type=ComponentType.LIBRARY, purl=purl,
                                          bom_ref=str(purl))
    for package, version, arch in inventory.get("debian") or []:
        purl = PackageURL("deb", os_info.get("ID") or "debian", package, version,
                          qualifiers={"arch": arch, "distro": distro} if arch else {"distro": distro})
        components[str(purl)] = Component(name=package, version=version, type=ComponentType.LIBRARY, purl=purl,
                                          bom_ref=str(purl))
    root = Component(name=image, version=digest, type=ComponentType.CONTAINER, bom_ref=f"{image}@{digest}")
    bom = Bom()
    bom.metadata.component = root
    for component in components.values():
        bom.components.add(component)
    bom.register_dependency(root, list(components.values()))
    return json.loads(JsonV1Dot6(bom).output_as_string())


def index_sbom(children: Sequence[tuple[str, str, Mapping[str, Any]]], *, image: str, digest: str) -> dict[str, Any]:
    """The CycloneDX document of an image index from its children's (``(platform, digest, sbom)`` each): the
    index as the described component, each child a container component (its platform a property) that
    depends on its own libraries, every library once."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    root = Component(name=image, version=digest, type=ComponentType.CONTAINER, bom_ref=f"{image}@{digest}")
    bom = Bom()
    bom.metadata.component = root
    libraries: dict[str, Component] = {}
    containers = []
    for platform, child_digest, sbom in children:
        container = Component(name=image, version=child_digest, type=ComponentType.CONTAINER,
                              bom_ref=f"{image}@{child_digest}",
                              properties=[Property(name=PLATFORM_PROPERTY, value=platform)])
        own = []
        for found in sbom.get("components") or []:
            ref = str(found.get("bom-ref") or found.get("purl") or f"{found.get('name')}@{found.get('version')}")
            if ref not in libraries:
                purl = found.get("purl")
                libraries[ref] = Component(name=str(found.get("name", "")), version=found.get("version"),
                                           type=ComponentType.LIBRARY, bom_ref=ref,
                                           purl=PackageURL.from_string(purl) if purl else None)
            own.append(libraries[ref])
        bom.components.add(container)
        bom.register_dependency(container, own)
        containers.append(container)
    for library in libraries.values():
        bom.components.add(library)
    bom.register_dependency(root, containers)
    return json.loads(JsonV1Dot6(bom).output_as_string())


def index_statements(children: Sequence[ImageEvidence], *, image: str, digest: str) -> list[dict[str, Any]]:
    """The three statements about the index ``image@digest``, made from what its children's accepted
    evidence says (each child must verify: its verdict is ok)."""
    documents = []
    for child in children:
        if not child.verdict.ok:
            raise EvidenceRefused(f"{image}@{digest}: its {child.platform} child's evidence does not verify: "
                                  + "; ".join(child.verdict.problems))
        accepted = {o.artifact: o.document for o in child.opened}
        documents.append((child.platform, child.digest,
                          {kind: accepted[child.verdict.accepted[kind]] for kind in REQUIRED}))

    def predicates(kind: str) -> list[tuple[str, str, Mapping[str, Any]]]:
        return [(platform, child, docs[kind].get("predicate") or {}) for platform, child, docs in documents]

    return [
        statement(name=image, digest=digest, predicate_type=SBOM,
                  predicate=index_sbom(predicates(SBOM), image=image, digest=digest)),
        statement(name=image, digest=digest, predicate_type=PROVENANCE,
                  predicate=index_provenance(predicates(PROVENANCE), name=image)),
        statement(name=image, digest=digest, predicate_type=TEST_RESULT,
                  predicate=index_test_result(predicates(TEST_RESULT))),
    ]


@dataclass
class Attestor:
    """Signs statements about an image and stores them beside it (``registry``: a RegistryClient;
    ``signer``: an EvidenceSigner)."""

    registry: Any
    signer: Any
    log: Callable[..., None] = lambda *args: None

    def attach(self, repository: str, digest: str, statements: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """One signed artifact per statement, each referring to ``repository@digest``; returns
        ``{predicateType, artifact}`` for each."""
        subject = manifest_descriptor(self.registry.get_manifest(repository, digest))
        self.registry.upload_blob(repository, EMPTY_JSON)
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        attached = []
        for each in statements:
            envelope = self.signer.sign(each)
            self.registry.upload_blob(repository, envelope)
            artifact = artifact_manifest(
                artifact_type=ARTIFACT_TYPE, subject=subject, layer=descriptor(ENVELOPE_MEDIA_TYPE, envelope),
                annotations={PREDICATE_ANNOTATION: each["predicateType"],
                             "org.opencontainers.image.created": created},
            )
            self.registry.attach_referrer(repository, artifact)
            self.log("signed %s of %s@%s (key %s): artifact %s", each["predicateType"], repository, digest,
                     self.signer.keyid[:12], artifact.digest)
            attached.append({"predicateType": each["predicateType"], "artifact": artifact.digest})
        return attached


@dataclass(frozen=True)
class ImageEvidence:
    """The verdict on one image manifest, with the statements that opened (for reports)."""

    digest: str
    platform: str
    revision: str | None
    verdict: Verdict
    opened: tuple[Opened, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {**self.verdict.to_dict(), "platform": self.platform, "revision": self.revision}


def verify_image(registry: Any, repository: str, reference: str, verifier: Any) -> list[ImageEvidence]:
    """The evidence of ``repository:reference``: one :class:`ImageEvidence` per image manifest; an index's
    children each on their own (BuildKit's attestation children are skipped), then the index itself
    (platform ``index``), whose revision is its children's."""
    manifest = registry.get_manifest(repository, reference)
    if not manifest.is_index:
        return [_verify_manifest(registry, repository, manifest.digest, verifier, platform="",
                                 revision=_revision_of(registry, repository, manifest))]
    found = []
    for child in manifest.children:
        platform = child.get("platform") or {}
        if platform.get("os") == "unknown":  # BuildKit's own attestation manifests
            continue
        child_manifest = registry.get_manifest(repository, child["digest"])
        name = "/".join(p for p in (platform.get("os"), platform.get("architecture"), platform.get("variant")) if p)
        found.append(_verify_manifest(registry, repository, child_manifest.digest, verifier, platform=name,
                                      revision=_revision_of(registry, repository, child_manifest)))
    revisions = {child.revision for child in found}
    revision = revisions.pop() if len(revisions) == 1 else None
    found.append(_verify_manifest(registry, repository, manifest.digest, verifier, platform=INDEX,
                                  revision=revision))
    return found


def _revision_of(registry: Any, repository: str, manifest: Any) -> str | None:
    return config_labels(registry.config_of(repository, manifest)).get(REVISION_LABEL)


def attest_index(registry: Any, attestor: Attestor, repository: str, digest: str, verifier: Any, *,
                 image: str) -> list[dict[str, str]]:
    """Evidence of the index ``repository@digest`` itself, made from its children's (which must verify);
    nothing when its own verifies already (an index published before). Returns what was attached."""
    *children, own = verify_image(registry, repository, digest, verifier)
    if own.verdict.ok:
        return []
    return attestor.attach(repository, digest, index_statements(children, image=image, digest=digest))


def _verify_manifest(registry: Any, repository: str, digest: str, verifier: Any, *, platform: str,
                     revision: str | None) -> ImageEvidence:
    opened: list[Opened] = []
    rejected: list[str] = []
    for entry in registry.referrers(repository, digest):
        if entry.get("artifactType") != ARTIFACT_TYPE:
            continue
        try:
            artifact = registry.get_manifest(repository, entry["digest"])
            layers = [layer for layer in artifact.document.get("layers") or []
                      if layer.get("mediaType") == ENVELOPE_MEDIA_TYPE]
            if not layers:
                rejected.append(f"{entry['digest'][:19]}: no DSSE envelope in it")
                continue
            opened.append(Opened(artifact.digest, verifier.open(registry.get_blob(repository, layers[0]["digest"]))))
        except (EvidenceError, RegistryError) as exc:
            rejected.append(f"{entry['digest'][:19]}: {exc}")
    verdict = judge(digest, opened, rejected, revision=revision)
    return ImageEvidence(digest, platform, revision, verdict, tuple(opened))


def problems_of(registry: Any, repository: str, reference: str, verifier: Any) -> list[str]:
    """What is wrong with the evidence of ``repository:reference`` ([]: every image manifest of it verifies)."""
    return evidence_problems(verify_image(registry, repository, reference, verifier))


def evidence_problems(found: Sequence[ImageEvidence]) -> list[str]:
    """Every problem of every image manifest, prefixed with its platform where it has one."""
    return [f"{e.platform + ': ' if e.platform else ''}{problem}" for e in found for problem in e.verdict.problems]
