"""The evidence steps: sign what an image is and what it passed after its ``:SHA`` push
(:class:`AttestImageOperator`), and check any published name (:func:`verify_published`).

The key is an Airflow Connection (``signing_connection``), read here, in ``execute``, and only handed to
``clients/signing.py``; it never reaches a log, an XCom or a rendered field.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowSkipException

from airflow_image_factory.clients.registry import platform_of
from airflow_image_factory.clients.signing import EvidenceSigner, EvidenceVerifier
from airflow_image_factory.exceptions import EvidenceError, EvidenceRefused, SigningKeyInvalid
from airflow_image_factory.policy.evidence import (
    PROVENANCE,
    SBOM,
    TEST_RESULT,
    checks_result_predicate,
    provenance_predicate,
    statement,
)
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.policy.platforms import built_platforms
from airflow_image_factory.policy.reference import parse_reference
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.services.evidence import (
    Attestor,
    attest_index,
    cyclonedx_sbom,
    evidence_problems,
    problems_of,
    read_inventory,
    verify_image,
)
from airflow_image_factory.tasks.hooks import EngineHook, RegistryHook, find_connection
from airflow_image_factory.tasks.operators import (
    ImageFactoryOperator,
    fails_at_once,
    reused_image,
    run_settings,
    step_timeout,
)

log = logging.getLogger(__name__)
NO_KEY_HELP = ("make one with `image-factory keygen` (it prints the `airflow connections add` command), or set the "
               "evidence setting to off")


def signer_of(settings: Settings) -> EvidenceSigner:
    """The signing key from the ``signing_connection`` Connection's password (or its extra ``private_key``)."""
    conn_id = settings.signing_connection
    conn = find_connection(conn_id) if conn_id else None
    pem = (conn.password or (conn.extra_dejson or {}).get("private_key") or "") if conn is not None else ""
    if not pem:
        raise SigningKeyInvalid(f"no Airflow Connection {conn_id!r} with a private key in its password: "
                                f"evidence is required to publish; {NO_KEY_HELP}")
    return EvidenceSigner.from_pem(pem, where=f"the password of Connection {conn_id!r}")


def verifier_of(settings: Settings, signer: EvidenceSigner | None = None) -> EvidenceVerifier:
    """The trusted keys: ``evidence_public_keys`` (PEM text or files), else the signing key's own."""
    if settings.evidence_public_keys:
        return EvidenceVerifier.from_pems(_pem_text(entry) for entry in settings.evidence_public_keys)
    return EvidenceVerifier.from_pems([(signer or signer_of(settings)).public_pem])


def signing_keys(settings: Settings) -> tuple[EvidenceSigner, EvidenceVerifier]:
    """The signing key and the trusted keys, both read now: what a run that will publish checks before it
    builds anything (a key that is missing or unreadable fails it at once, naming the setting)."""
    signer = signer_of(settings)
    return signer, verifier_of(settings, signer)


def _pem_text(entry: str) -> str:
    if "-----BEGIN" in entry:
        return entry
    path = Path(entry)
    if not path.is_file():
        raise SigningKeyInvalid(f"evidence_public_keys: {entry} is neither PEM text nor a file")
    return path.read_text()


def evidence_required(settings: Settings, push: bool) -> bool:
    return push and settings.evidence == "required"


def evidence_check(settings: Settings, client: Any, *, push: bool) -> Callable[[str, str], list[str]] | None:
    """What a publish asks of each tested digest before any name moves: the problems of its evidence, read
    with the trusted keys (``[]``: it verifies). None when evidence is off (said as a warning)."""
    if not evidence_required(settings, push):
        log.warning("evidence is off (settings: evidence): names move without signed evidence")
        return None
    verifier = verifier_of(settings)
    return lambda repository, digest: problems_of(client, repository, digest, verifier)


class AttestImageOperator(ImageFactoryOperator):
    """After an image's checks passed and its ``:SHA`` push: sign its SBOM, provenance and test results
    and store them in the registry as artifacts referring to the pushed digest. An index (several
    platforms): each platform's image, then the index itself from what its children's statements say.

    An image reused from the registry (content key) was attested when it was first published: its
    evidence is verified instead, and the step fails when it has none that verifies (``rebuild: true``
    builds and attests it anew). Skipped when push or evidence is off.
    """

    template_fields: Sequence[str] = (
        *ImageFactoryOperator.template_fields, "build", "verification", "pushed", "python_base", "constraints",
    )
    timeout_setting = "timeout_push_minutes"

    def __init__(
        self, *, kind: str, build: Mapping[str, Any] | Any, verification: Mapping[str, Any] | Any,
        pushed: str | Any, python_base: Mapping[str, Any] | Any, constraints: Mapping[str, str] | Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.kind = ImageKind(kind)
        self.build = build
        self.verification = verification
        self.pushed = pushed
        self.python_base = python_base
        self.constraints = constraints

    def execute(self, context: Any) -> dict[str, Any]:
        self.skip_unless_requested(self.kind)
        settings = run_settings()
        if not evidence_required(settings, self.request.push) or not self.pushed:
            raise AirflowSkipException("nothing is published by this run" if not self.request.push
                                       else "evidence is off (settings: evidence)")
        signer = signer_of(settings)
        image = self.images[self.kind]
        digest = str(self.pushed)
        parts = {part.get("platform", ""): part for part in built_platforms(self.build)}
        with self.registry_hook(settings).get_conn() as client:
            manifest = client.get_manifest(image.path, digest)
            # An index (several platforms): each platform's image is signed on its own, as verify_image reads
            # it, then the index from them.
            children = ([(platform_of(child), child["digest"]) for child in manifest.children] if manifest.is_index
                        else [(next(iter(parts), ""), digest)])
            engine = None
            attached, reused = [], []
            for platform, child in children:
                part = parts.get(platform) if manifest.is_index else self.build
                if part is None:
                    raise EvidenceError(f"{image.ref(self.sha)}: its index has {platform}, not built by this run")
                if was_reused := reused_image(part):
                    self._check_reused(client, image.path, child, was_reused, verifier_of(settings, signer))
                    reused.append(was_reused)
                    continue
                engine = engine or EngineHook(settings=settings).get_conn()
                local = part["image"] if manifest.is_index else image.ref(self.sha)
                inventory = read_inventory(engine, local)
                statements = self.statements(context, local, child, inventory, part, platform)
                attached += Attestor(client, signer, log=self.log.info).attach(image.path, child, statements)
                self.log.info("%s@%s%s: SBOM of %d Python distributions and %d Debian packages, provenance of %s, "
                              "%d checks passed; signed with key %s", local, child,
                              f" ({platform})" if manifest.is_index else "", len(inventory["python"]),
                              len(inventory["debian"]), self.sha, len(self._checks(platform)), signer.keyid[:12])
            if manifest.is_index:
                # what a verifier of the pulled digest (the index) reads: made from the children's, once
                index = attest_index(client, Attestor(client, signer, log=self.log.info), image.path, digest,
                                     verifier_of(settings, signer), image=image.ref(self.sha))
                attached += index
                self.log.info("%s@%s (index): %s", image.ref(self.sha), digest,
                              "its own evidence, made from its children's" if index else "its own evidence verifies")
        result = {"python": self.python, "kind": self.kind.value, "digest": digest, "statements": attached}
        return result | ({"reused": reused[0] if len(reused) == 1 else reused} if reused else {})

    def _check_reused(self, client: Any, repository: str, digest: str, reused: str, verifier: EvidenceVerifier) -> None:
        problems = problems_of(client, repository, digest, verifier)
        if problems:
            raise EvidenceRefused(f"{reused} was reused (content key) but its evidence does not verify: "
                                  f"{'; '.join(problems)}; run with rebuild: true to build and attest it anew")
        self.log.info("%s was reused: its signed evidence verifies (%s)", reused, digest)

    # A branch build's source is its commit; a release build's (tasks/release.py) the released version.
    released_version: str | None = None

    def _checks(self, platform: str = "") -> list[Mapping[str, Any]]:
        """The checks this platform's image passed: its part of the verify step's summary (several platforms)."""
        verification = self.verification or {}
        for part in verification.get("platforms") or []:
            if part.get("platform") == platform:
                return list(part.get("checks") or [])
        return list(verification.get("checks") or [])

    def statements(
        self, context: Any, image: str, digest: str, inventory: Mapping[str, Any],
        build: Mapping[str, Any] | None = None, platform: str = "",
    ) -> list[dict[str, Any]]:
        request = self.request
        facts = dict((build if build is not None else self.build or {}).get("provenance") or {})
        if not facts:
            raise EvidenceError(f"{image}: the build step recorded no provenance (an older build summary?)")
        constraints = (self.constraints or {}).get(self.python)
        run_id = str((context or {}).get("run_id", ""))
        dag_id = getattr((context or {}).get("dag"), "dag_id", "") or "build_images"
        provenance = provenance_predicate(
            source_repo=request.source_repo, branch=request.branch, sha=self.sha, kind=self.kind.value,
            python=self.python, dockerfile=facts["dockerfile"], dockerfile_digest=facts["dockerfile_digest"],
            target=facts.get("target"), build_args=facts.get("build_args") or {},
            base_image=self.python_base["upstream"], base_digest=self.python_base["digest"],
            constraints_digest=hashlib.sha256(constraints.encode()).hexdigest() if constraints else None,
            builder_id=f"urn:airflow-image-factory:dag:{dag_id}",
            builder_version={"airflow-image-factory": _package_version(), "worker": socket.gethostname()},
            invocation_id=f"{dag_id}/{run_id}", started_on=facts.get("started_on", ""),
            finished_on=facts.get("finished_on", ""), released_version=self.released_version,
            platform=facts.get("platform") or platform or None,
        )
        checks = self._checks(platform)
        tests = checks_result_predicate(
            checks, url=f"airflow:{dag_id}/{run_id}/{self.task_id.replace('attest_', 'verify_')}",
            configuration=[{"name": "verify", "annotations": {"kind": self.kind.value, "python": self.python,
                                                                **({"platform": platform} if platform else {})}}],
        )
        return [
            statement(name=image, digest=digest, predicate_type=SBOM,
                      predicate=cyclonedx_sbom(inventory, image=image, digest=digest)),
            statement(name=image, digest=digest, predicate_type=PROVENANCE, predicate=provenance),
            statement(name=image, digest=digest, predicate_type=TEST_RESULT, predicate=tests),
        ]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airflow-image-factory")
    except PackageNotFoundError:
        return os.environ.get("IMAGE_FACTORY_VERSION", "unknown")


# After a promotion that succeeded only (one that failed moved nothing: there is nothing to read back).
@task(execution_timeout=step_timeout("timeout_short_minutes"))
@fails_at_once
def verify_published(build_request: dict[str, Any] | None, published: list[dict[str, str]] | None) -> list[dict]:
    """Read back, as anyone who pulls them would, the names the promotion just moved: each tested image
    (CI, each PROD variant) by its tag, its digest the one promoted, and its evidence verified with the
    trusted keys - every platform of an index, and the index's own. ``image-factory verify`` is the same
    check from a shell."""
    from airflow_image_factory.policy.promotion import SHA_PUSHED
    from airflow_image_factory.policy.request import BuildRequest

    tested = {kind.value for kind in SHA_PUSHED}
    names = [item for item in published or [] if item.get("kind") in tested]
    settings = run_settings()
    if not build_request or not names:
        log.info("Nothing was published by this run: nothing to verify")
        return []
    request = BuildRequest.from_dict(build_request)
    if not evidence_required(settings, request.push):
        log.info("Evidence is off (settings: evidence): nothing to verify")
        return []
    verifier = verifier_of(settings)
    reports, problems = [], []
    # every name a promotion publishes is in the request's registry: one client reads them all
    with RegistryHook(request.registry, settings=settings).get_conn() as client:
        read = {}
        for item in names:
            parsed = parse_reference(item["image"])
            read[item["image"]] = (client.manifest_digest(parsed.repository, parsed.reference),
                                   verify_image(client, parsed.repository, parsed.reference, verifier))
    for item in names:
        now, found = read[item["image"]]
        if now != item["digest"]:
            problems.append(f"{item['image']} is {now}, the promotion published {item['digest']}")
        for evidence in found:
            log.info("%s%s %s: %s", item["image"], f" ({evidence.platform})" if evidence.platform else "",
                     evidence.digest, "evidence verified" if evidence.verdict.ok
                     else "; ".join(evidence.verdict.problems))
        reports.append({"image": item["image"], "digest": now, "manifests": [e.to_dict() for e in found]})
        problems += [f"{item['image']}: {problem}" for problem in evidence_problems(found)]
    if problems:
        raise EvidenceRefused("published images whose evidence does not verify: " + " | ".join(problems))
    return reports
