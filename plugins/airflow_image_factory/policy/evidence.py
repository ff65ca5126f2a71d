"""What an image's evidence says and when it is enough to publish the image.

Three in-toto statements (https://github.com/in-toto/attestation) per tested image digest, each signed as
a DSSE envelope and stored in the registry as an OCI artifact whose ``subject`` is the image:

- an SBOM (CycloneDX, the Python distributions and Debian packages installed in the image);
- SLSA v1 provenance: the source repository and commit, the Dockerfile, the base image and constraints
  by digest, the build arguments and the builder;
- in-toto's test-result predicate: which checks ran against this digest and how they ended.

Pure: statements are dicts made from data; :func:`judge` gets the statements that opened (signature
checked by the caller) and answers with the problems. Signing is ``clients/signing.py``; reading and
writing the registry is ``services/evidence.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"  # the DSSE payloadType of an in-toto statement
SBOM = "https://cyclonedx.org/bom"
PROVENANCE = "https://slsa.dev/provenance/v1"
TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
REQUIRED = (SBOM, PROVENANCE, TEST_RESULT)
NAMES = {SBOM: "SBOM", PROVENANCE: "provenance", TEST_RESULT: "test evidence"}
# How the artifacts are typed in the registry (the OCI 1.1 manifest's artifactType and its one layer),
# and the annotation naming the predicate, as BuildKit's attestations name theirs.
ARTIFACT_TYPE = PAYLOAD_TYPE
ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
# A URI naming this product's kind of build (SLSA's buildType need not resolve).
BUILD_TYPE = "urn:airflow-image-factory:buildtype:docker-image:v1"
BUILDER_PREFIX = "urn:airflow-image-factory:dag:"
# Part of a content key (operators.checks_identity): an image published without evidence, or with
# another format of it, is built again rather than reused unattested.
EVIDENCE_FORMAT = "in-toto-v1+dsse+oci-referrers"


def hex_of(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64:
        raise ValueError(f"{digest!r} is not a sha256 digest")
    return value


def statement(*, name: str, digest: str, predicate_type: str, predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto v1 statement about the image ``name`` whose manifest digest is ``digest``."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": hex_of(digest)}}],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def provenance_predicate(
    *, source_repo: str, branch: str, sha: str, kind: str, python: str, dockerfile: str, dockerfile_digest: str,
    target: str | None, build_args: Mapping[str, str], base_image: str, base_digest: str,
    constraints_digest: str | None, builder_id: str, builder_version: Mapping[str, str], invocation_id: str,
    started_on: str, finished_on: str, released_version: str | None = None, platform: str | None = None,
) -> dict[str, Any]:
    """SLSA provenance v1: what was built (external parameters), from what (resolved dependencies, each
    by digest), by whom (the builder: this product's DAG) and in which run (the invocation).

    A branch build names its source by commit; a release build (``released_version``) names the released
    ``apache-airflow`` distribution on the package index instead, with no commit. ``platform``: the
    ``os/arch`` the image was built for (each platform of an index has its own statement)."""
    if released_version:
        source: dict[str, Any] = {"package": "apache-airflow", "version": released_version}
        origin = {"uri": f"pkg:pypi/apache-airflow@{released_version}"}
    else:
        source = {"repository": source_repo, "branch": branch, "commit": sha}
        origin = {"uri": f"git+{source_repo}@refs/heads/{branch}", "digest": {"gitCommit": sha}}
    dependencies = [
        origin,
        {"uri": dockerfile, "digest": {"sha256": dockerfile_digest}},
        {"uri": _oci_uri(base_image), "digest": {"sha256": hex_of(base_digest)}},
    ]
    if constraints_digest:
        dependencies.append({"uri": f"constraints-{python}.txt", "digest": {"sha256": constraints_digest}})
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": source,
                "image": {"kind": kind, "python": python, "dockerfile": dockerfile, "target": target or "",
                          **({"platform": platform} if platform else {})},
                "buildArgs": dict(sorted(build_args.items())),
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": builder_id, "version": dict(builder_version)},
            "metadata": {"invocationId": invocation_id, "startedOn": started_on, "finishedOn": finished_on},
        },
    }


def _oci_uri(ref: str) -> str:
    return ref if "://" in ref else f"oci://{ref.split('@')[0]}"


def checks_result_predicate(
    checks: Sequence[Mapping[str, Any]], *, url: str, configuration: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """in-toto's test-result v0.1 from a verify step's check results (``{check, passed, ...}`` each):
    PASSED only when at least one check ran and every one passed."""
    passed = [str(c["check"]) for c in checks if c.get("passed")]
    failed = [str(c["check"]) for c in checks if not c.get("passed")]
    return {
        "result": "PASSED" if passed and not failed else "FAILED",
        "configuration": [dict(c) for c in configuration],
        "url": url,
        "passedTests": passed,
        "warnedTests": [],
        "failedTests": failed,
    }


def index_provenance(children: Sequence[tuple[str, str, Mapping[str, Any]]], *, name: str) -> dict[str, Any]:
    """Provenance of an image index from its children's (``(platform, digest, predicate)`` each, in the
    index's order): the same source and build, every platform named, each child a resolved dependency
    by digest, the run from the first child's start to the last one's end."""
    if not children:
        raise ValueError("an index without children has no provenance")
    first = children[0][2]
    definition = dict(first.get("buildDefinition") or {})
    parameters = dict(definition.get("externalParameters") or {})
    image = {k: v for k, v in (parameters.get("image") or {}).items() if k != "platform"}
    parameters["image"] = {**image, "platforms": [platform for platform, _, _ in children]}
    definition["externalParameters"] = parameters
    definition["resolvedDependencies"] = [
        *(definition.get("resolvedDependencies") or []),
        *({"uri": _oci_uri(name), "digest": {"sha256": hex_of(digest)}, "annotations": {"platform": platform}}
          for platform, digest, _ in children),
    ]
    metadata = [(c[2].get("runDetails") or {}).get("metadata") or {} for c in children]
    run = dict(first.get("runDetails") or {})
    run["metadata"] = {**(run.get("metadata") or {}),
                       "startedOn": min((m.get("startedOn") or "" for m in metadata), default=""),
                       "finishedOn": max((m.get("finishedOn") or "" for m in metadata), default="")}
    return {"buildDefinition": definition, "runDetails": run}


def index_test_result(children: Sequence[tuple[str, str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The test result of an image index from its children's (``(platform, digest, predicate)`` each): every
    check of every platform, named with its platform; PASSED only when every child's result is."""
    def named(key: str) -> list[str]:
        return [f"{platform}: {test}" for platform, _, p in children for test in p.get(key) or []]

    results = [predicate.get("result") for _, _, predicate in children]
    return {
        "result": "PASSED" if results and all(r == "PASSED" for r in results) else "FAILED",
        "configuration": [dict(c) for _, _, p in children for c in p.get("configuration") or []],
        "url": str(children[0][2].get("url", "")) if children else "",
        "passedTests": named("passedTests"),
        "warnedTests": named("warnedTests"),
        "failedTests": named("failedTests") + [f"{platform}: result {p.get('result')!r}" for platform, _, p in children
                                               if p.get("result") != "PASSED" and not p.get("failedTests")],
    }


def subject_digests(document: Mapping[str, Any]) -> set[str]:
    """The ``sha256:<hex>`` digests a statement is about."""
    found = set()
    for subject in document.get("subject") or []:
        value = (subject.get("digest") or {}).get("sha256") if isinstance(subject, Mapping) else None
        if isinstance(value, str):
            found.add(f"sha256:{value}")
    return found


def provenance_commit(document: Mapping[str, Any]) -> str | None:
    """The source commit a provenance statement names (its git dependency, else its parameters)."""
    predicate = document.get("predicate") or {}
    definition = predicate.get("buildDefinition") or {}
    for dependency in definition.get("resolvedDependencies") or []:
        commit = (dependency.get("digest") or {}).get("gitCommit")
        if commit:
            return str(commit)
    return ((definition.get("externalParameters") or {}).get("source") or {}).get("commit")


def _released_package(document: Mapping[str, Any]) -> str | None:
    source = (((document.get("predicate") or {}).get("buildDefinition") or {}).get("externalParameters") or {})
    source = source.get("source") or {}
    return source.get("version") if source.get("package") else None


@dataclass(frozen=True)
class Opened:
    """A statement whose envelope verified with a trusted key (``artifact``: the registry artifact it came in)."""

    artifact: str
    document: Mapping[str, Any]

    @property
    def predicate_type(self) -> str:
        return str(self.document.get("predicateType", ""))


@dataclass(frozen=True)
class Verdict:
    """Whether an image digest's evidence is enough to publish it; ``accepted`` maps each predicate type
    to the artifact digest that proved it."""

    digest: str
    problems: tuple[str, ...]
    accepted: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "ok": self.ok, "problems": list(self.problems),
                "accepted": {NAMES.get(k, k): v for k, v in self.accepted.items()}}


def judge(digest: str, opened: Sequence[Opened], rejected: Sequence[str] = (), *, revision: str | None) -> Verdict:
    """The verdict on ``digest``: each required statement must be about this digest, have opened with a
    trusted key, and say what a publishable image needs - provenance of the commit the image's
    ``revision`` label names (when it has one), tests PASSED, an SBOM that lists something.

    ``rejected``: why the other envelopes did not open (a foreign key, a broken signature), said when a
    required statement is missing, since that is usually why."""
    accepted: dict[str, str] = {}
    problems: list[str] = []
    for predicate_type in REQUIRED:
        candidates = [o for o in opened if o.predicate_type == predicate_type]
        about = [o for o in candidates if o.document.get("_type") == STATEMENT_TYPE
                 and digest in subject_digests(o.document)]
        if not about:
            why = (f" ({len(candidates)} signed for another digest)" if candidates else "")
            problems.append(f"no signed {NAMES[predicate_type]} about {digest}{why}")
            continue
        reasons = [reason for o in about if (reason := _content_problem(o.document, revision)) is not None]
        good = [o for o in about if _content_problem(o.document, revision) is None]
        if good:
            accepted[predicate_type] = good[0].artifact
        else:
            problems.append(f"{NAMES[predicate_type]}: {'; '.join(reasons)}")
    if problems and rejected:
        problems.append("envelopes that did not verify: " + "; ".join(rejected))
    return Verdict(digest, tuple(problems), accepted)


def _content_problem(document: Mapping[str, Any], revision: str | None) -> str | None:
    predicate = document.get("predicate") or {}
    kind = document.get("predicateType")
    if kind == PROVENANCE:
        commit = provenance_commit(document)
        if revision and commit != revision:
            return f"says commit {commit or '(none)'}, the image's revision label says {revision}"
        if not commit and not _released_package(document):
            return "names neither a source commit nor a released package"
    elif kind == TEST_RESULT:
        if predicate.get("result") != "PASSED":
            failed = ", ".join(predicate.get("failedTests") or []) or "no test ran"
            return f"result {predicate.get('result')!r} (failed: {failed})"
    elif kind == SBOM and not predicate.get("components"):
        return "lists no components"
    return None
