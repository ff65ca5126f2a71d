"""The nightly run's own steps: find what changed, write constraints from the tested CI image, commit them.

Building, verifying, pushing and promoting are the manual build's operators, reused as they are.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_image_factory.clients.engine import labels_of
from airflow_image_factory.clients.git import BranchFiles
from airflow_image_factory.clients.registry import config_labels
from airflow_image_factory.clients.resolver import resolve_sources
from airflow_image_factory.clients.settings_loader import include_dir
from airflow_image_factory.clients.sources import SourceTree, read_source_tree, write_metadata_wheels
from airflow_image_factory.exceptions import BaseImageMissing, ManifestNotFound, VerificationFailed
from airflow_image_factory.policy import constraints as cons
from airflow_image_factory.policy.bisection import (
    bisection_search,
    probe_pins,
    recorded_hold_lines,
    standing_holds,
)
from airflow_image_factory.policy.naming import LATEST, VARIANTS, ImageKind, ImageName, images_for, probe_image
from airflow_image_factory.policy.nightly import (
    BASE_DIGEST_LABEL,
    REVISION_LABEL,
    VERSION_LABEL,
    BaseFindings,
    DependencyFindings,
    VersionDecision,
    decide,
    revision_reason,
)
from airflow_image_factory.policy.settings import Settings, extras_of
from airflow_image_factory.services.probe import Probe, run_probe
from airflow_image_factory.tasks.hooks import EngineHook
from airflow_image_factory.tasks.operators import (
    ImageFactoryOperator,
    build_secrets,
    ci_checks,
    mapped_values,
    run_settings,
)

PYTHON_VERSION_COMMAND = ["python3", "-c", "import sys; print(sys.version)"]


class CheckForUpdatesOperator(ImageFactoryOperator):
    """Per Python version: must its images be rebuilt tonight? Reads manifests and labels, resolves on the worker.

    Returns ``{"rebuild": [versions], "constraints": {version: file text}, "decisions": [...],
    "bisection": {version: search}}``; the constraints are the newest allowed set, which the rebuild installs
    with. ``bisection`` holds what the probes need for each version rebuilt because of upgrades that has
    its own constraints and a published CI image: ``current`` (that file), ``resolved`` (the newest pins),
    ``upgrades`` (the names that differ) and ``ci_image`` (CI ``latest`` by digest, built with ``current``).
    Holds recorded in the current file stand while the newest version is still the one that failed.
    """

    timeout_setting = "timeout_verify_minutes"  # fetches the sources and resolves each Python version

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        request = self.request
        with BranchFiles(request.source_repo, cons.constraints_branch(request.branch), timeout=settings.git_timeout,
                         ls_remote_timeout=settings.git_ls_remote_timeout) as branch_files:
            existing = {
                name.removeprefix("constraints-").removesuffix(".txt"): branch_files.read(name) or ""
                for name in branch_files.names()
                if name.startswith("constraints-") and name.endswith(".txt")
            }
        decisions: list[VersionDecision] = []
        upgraded: dict[str, str] = {}
        searches: dict[str, dict[str, Any]] = {}
        # The branch's own dependency metadata (its pyproject files at the head), not a release's.
        checkout = self.fetch_sources(settings)
        tree = read_source_tree(checkout)
        with tempfile.TemporaryDirectory(prefix="metadata-wheels-") as wheels:
            write_metadata_wheels(tree, Path(wheels))
            for python in request.python_versions:
                images = images_for(request, python)
                base = self._base_findings(settings, python, images.upstream_python_base, images.python_base)
                # The CI image and the PROD image of every variant the run publishes.
                published = [images.ci, *(images[v.prod] for v in VARIANTS.values() if v.name in request.variants)]
                digests = self._published_digests(settings, published)
                missing = [ref for ref, digest in digests.items() if digest is None]
                revision = None if missing else revision_reason(
                    self.sha, self._published_revisions(settings, published))
                resolved = resolve_sources(tree, extras_of(settings.airflow_extras), python=python,
                                           metadata_wheels=wheels, extra_ca_bundle=settings.extra_ca_bundle)
                decision = self._decide(python, tree, existing, base, missing, revision, resolved, upgraded)
                decisions.append(decision)
                ci_digest = digests[images.ci.ref(LATEST)]
                if python in upgraded and python in existing and ci_digest:
                    search = bisection_search(existing[python], upgraded[python], images.ci.ref(ci_digest))
                    if search is not None:
                        searches[python] = search
        rebuild = [d.python for d in decisions if d.rebuild]
        if not rebuild:
            self.log.info("Nothing changed for any Python version: nothing is built, pushed or committed.")
        return {"rebuild": rebuild, "constraints": upgraded, "decisions": [d.to_dict() for d in decisions],
                "bisection": searches}

    def _decide(
        self, python: str, tree: SourceTree, existing: Mapping[str, str], base: BaseFindings, missing: list[str],
        revision: tuple[bool, str] | None, resolved: Mapping[str, str], upgraded: dict[str, str],
    ) -> VersionDecision:
        start = cons.starting_point(existing, python)
        current = cons.parse_pins(start[1]) if start else {}
        # A hold stands while the newest version is still the one that failed: no upgrade, nothing probed.
        resolved, holds = standing_holds(start[1], resolved) if start else (dict(resolved), [])
        for line in holds:
            self.log.info("Python %s: %s (no newer version yet: still held)", python, line)
        deps = DependencyFindings(
            resolved_count=len(resolved), upgrades=tuple(cons.upgrades(resolved, current)),
            constraints_source=start[0] if start else None, own_file=python in existing,
        )
        decision = decide(python, base=base, dependencies=deps, missing_images=missing, revision=revision)
        self.log.info("%s", decision.log_line())
        if decision.rebuild:
            upgraded[python] = cons.render(
                resolved, python=python, airflow_version=tree.version, sha=self.sha,
                generated=_now(), source="the resolver's newest allowed versions", notes=holds,
            )
        return decision

    def _published_revisions(self, settings: Settings, images: Sequence[ImageName]) -> dict[str, str | None]:
        """The ``revision`` label of each published ``latest``, read from its config blob (no layer pulled)."""
        with self.registry_hook(settings).get_conn() as client:
            return {
                image.ref(LATEST): config_labels(client.image_config(image.path, LATEST)).get(REVISION_LABEL)
                for image in images
            }

    def _base_findings(
        self, settings: Settings, python: str, upstream: ImageName, published: ImageName
    ) -> BaseFindings:
        with self.registry_hook(settings, upstream.registry).get_conn() as client:
            upstream_digest = client.manifest_digest(upstream.path, upstream.fixed_tag)
        if upstream_digest is None:
            # Waiting will not make it appear (a Python or Debian the upstream does not publish).
            raise BaseImageMissing(f"python base image: {upstream.ref()} not found (python_versions {python})")
        with self.registry_hook(settings, published.registry).get_conn() as client:
            try:
                config = client.image_config(published.path, published.fixed_tag)
            except ManifestNotFound:
                config = None
        if config is None:
            return BaseFindings(upstream.ref(), upstream_digest, published.ref(), False, None)
        labels = config_labels(config)
        recorded = labels.get(BASE_DIGEST_LABEL)
        findings = BaseFindings(upstream.ref(), upstream_digest, published.ref(), True, recorded)
        if findings.needs_fallback:
            self.log.info("%s has no %s label: comparing the Python inside (pulls both)", published.ref(),
                          BASE_DIGEST_LABEL)
            engine = EngineHook(settings=settings).get_conn()
            versions = [
                engine.run(ref, PYTHON_VERSION_COMMAND, on_line=self.log.debug, timeout=300).output.strip()
                for ref in (upstream.ref(upstream_digest), published.ref())
            ]
            findings = BaseFindings(
                upstream.ref(), upstream_digest, published.ref(), True, None,
                upstream_python=versions[0], published_python=versions[1],
            )
        return findings

    def _published_digests(self, settings: Settings, images: Sequence[ImageName]) -> dict[str, str | None]:
        """The digest of each published ``latest`` (None: missing), from manifest HEADs."""
        with self.registry_hook(settings).get_conn() as client:
            return {image.ref(LATEST): client.manifest_digest(image.path, LATEST) for image in images}


class GenerateConstraintsOperator(ImageFactoryOperator):
    """``constraints-X.Y.txt`` from the tested CI image: a header, then ``pip freeze`` run inside it.

    ``constraints`` (Python version -> the file the image was built with): the holds it records are
    carried over, so the committed file still names them and a later nightly retries only newer versions.
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "constraints")
    timeout_setting = "timeout_short_minutes"

    def __init__(self, *, constraints: Mapping[str, str] | Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.constraints = constraints

    def execute(self, context: Any) -> dict[str, str]:
        settings = run_settings()
        engine = EngineHook(settings=settings).get_conn()
        image = self.images[ImageKind.CI].ref(self.sha)
        if not engine.has_image(image):
            # The build reused the published image (content key): it is in the registry, not here.
            pulled = engine.pull(image, auth=self.registry_hook(settings).credentials)
            self.log.info("%s was not on this engine: pulled it (%s)", image, pulled)
        result = engine.run(image, ["python", "-m", "pip", "freeze"], on_line=self.log.debug, timeout=300)
        if not result.ok:
            raise VerificationFailed(f"pip freeze in {image} failed (exit {result.exit_code}): {result.output[-800:]}")
        pins = cons.freeze_to_pins(result.output)
        # The version of the sources the image was built from (its label), not a release's.
        version = labels_of(engine.inspect(image)).get(VERSION_LABEL) or self.request.airflow_version
        text = cons.render(
            pins, python=self.python, airflow_version=version, sha=self.sha,
            generated=_now(), source=f"pip freeze in the tested {image}",
            notes=recorded_hold_lines((self.constraints or {}).get(self.python) or ""),
        )
        self.log.info("constraints-%s.txt: %d pins from %s", self.python, len(pins), image)
        return {"python": self.python, "file": cons.constraints_file_name(self.python), "text": text}


class CommitConstraintsOperator(ImageFactoryOperator):
    """Commit the changed constraints files to ``constraints-BRANCH`` of the source repository.

    Runs only after every test and the promotion succeeded (trigger rule ``all_success``), only for the
    canonical repository, and only when a file's pins changed; never forced.
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "generated")
    timeout_setting = "timeout_push_minutes"  # a fetch and a push, each up to git_timeout

    def __init__(self, *, generated: Sequence[Mapping[str, str]] | Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.generated = generated

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        request = self.request
        files = {g["file"]: g["text"] for g in mapped_values(self.generated) if g}
        if not files:
            self.log.info("No constraints were generated: nothing to commit.")
            return {"committed": None, "files": []}
        if not request.push:
            # Fork mode or push off: said once already, by the publishing check.
            self.log.info("push is off for this run: constraints are not committed.")
            return {"committed": None, "files": [], "skipped": "push is off"}
        branch = cons.constraints_branch(request.branch)
        with BranchFiles(request.source_repo, branch, timeout=settings.git_timeout,
                         ls_remote_timeout=settings.git_ls_remote_timeout) as checkout:
            changed = {name: text for name, text in files.items() if cons.files_differ(checkout.read(name), text)}
            for name in sorted(set(files) - set(changed)):
                self.log.info("%s unchanged on %s (comments aside): not committed", name, branch)
            if not changed:
                return {"committed": None, "files": []}
            message = (
                f"Update constraints for Python {', '.join(sorted(n[12:-4] for n in changed))}\n\n"
                f"Generated from the tested CI images of {request.branch} at {self.sha}."
            )
            sha = checkout.commit_and_push(changed, message=message, author=settings.constraints_author)
        self.log.info("Committed %s to %s of %s as %s", ", ".join(sorted(changed)), branch, request.source_repo, sha)
        return {"committed": sha, "files": sorted(changed)}


class ProbeUpgradesOperator(ImageFactoryOperator):
    """One probe of the upgrade bisection: the published CI image (by digest) plus the ``upgraded``
    packages at their resolved versions, every other package at its current pin; then the run's CI test
    command in it, as ``verify_ci`` runs it (:mod:`airflow_image_factory.services.probe` does the work).

    Returns ``{python, round, upgraded, passed, output_tail}``. Only the tests' failure is
    ``passed: False``: a build, engine or registry fault raises (the task's retries), and upgrades that
    cannot be installed together fail the task at once. Mapped (``expand_kwargs``) over a round's probes.
    """

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "plan", "upgraded")
    timeout_setting = "timeout_build_minutes"  # a one-layer build and the CI tests

    def __init__(self, *, plan: Mapping[str, Any] | Any, upgraded: Sequence[str] | Any = (), round_number: int = 0,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.plan = plan  # check_for_updates' result: its "bisection" entry of this Python version
        self.upgraded = upgraded
        self.round_number = round_number

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        search = self.plan["bisection"][self.python]
        upgraded = sorted(self.upgraded)
        constraints = probe_pins(cons.parse_pins(search["current"]), search["resolved"], upgraded)
        probe = Probe(
            ci_image=search["ci_image"], tag=probe_image(self.request.branch, self.python, upgraded),
            # the whole upgrade set at this probe's versions (a package new in the resolution and not
            # upgraded here has no version to hold: left out)
            installs={name: constraints[name] for name in search["upgrades"] if name in constraints},
            constraints=constraints,
        )
        self.log.info("Round %d, Python %s: probing %d of %d upgrades: %s", self.round_number, self.python,
                      len(upgraded), len(search["upgrades"]), ", ".join(upgraded) or "none (current constraints)")
        hook = self.registry_hook(settings)
        engine = EngineHook(settings=settings).get_conn()
        logins = {self.request.registry: hook.credentials} if hook.credentials else {}
        with engine.logged_in(logins):
            result = run_probe(engine, probe, ci_checks(self.request), root=include_dir().parent,
                               secrets=build_secrets(settings), on_line=self.stream, say=self.log.info)
        self.log.info("Probe %s: %s", probe.tag, "passed" if result["passed"] else "the tests FAILED")
        return {"python": self.python, "round": self.round_number, "upgraded": upgraded,
                "passed": result["passed"], "output_tail": result["output_tail"]}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

