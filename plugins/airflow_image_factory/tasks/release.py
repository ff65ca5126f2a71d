"""Release images (AIP-26): build the PROD image of a released Airflow X.Y.Z from PyPI with that release's
constraints, verify it, and publish ``X.Y.Z-pythonA.B``, ``X.Y-pythonA.B``, and for the default Python
``X.Y.Z`` and ``latest`` — moving tags only forward.

Here: the Airflow steps. The release request, its schema (the trigger form and the validation) and which
tags a release publishes are :mod:`airflow_image_factory.policy.release` (pure); publishing and reading
released images is :mod:`airflow_image_factory.services.release`. Operators reuse the build, verify and
push steps of a branch build with the release's names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from airflow.sdk import BaseOperator

from airflow_image_factory.policy.naming import (
    REGULAR,
    VARIANTS,
    ImageKind,
    ImageSet,
    images_for,
    release_image,
    release_staging_image,
    release_tag,
    variant_of,
)
from airflow_image_factory.policy.platforms import platform_tags
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.policy.release import ReleaseRequest, constraints_location, staged_digests
from airflow_image_factory.policy.request import BuildRequest
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, release_asset
from airflow_image_factory.tasks.evidence import AttestImageOperator, evidence_check
from airflow_image_factory.tasks.links import RegistryImageLink, record_image_ref
from airflow_image_factory.tasks.operators import (
    BuildImageOperator,
    PushImageOperator,
    TidyEngineOperator,
    VerifyImageOperator,
    fails_at_once,
)

# ---- operators -----------------------------------------------------------------------------------


class ReleaseImagesMixin:
    """A branch build's steps, renamed for a release: the PROD image is staged as
    ``REG/REPO/release-staging:X.Y.Z-pythonA.B`` (the "SHA" of a release build is its version tag)."""

    @property
    def images(self) -> ImageSet:
        request = self.request  # type: ignore[attr-defined]
        images = images_for(request, self.python)  # type: ignore[attr-defined]
        staging = release_staging_image(request.registry, request.repository)
        return replace(images, prod=staging, prod_slim=staging)

    @property
    def sha(self) -> str:
        variant = variant_of(getattr(self, "kind", ImageKind.PROD)) or REGULAR
        return release_tag(self.request.airflow_version, self.python, variant.name)  # type: ignore[attr-defined]


class ReleaseBuildOperator(ReleaseImagesMixin, BuildImageOperator):
    """Build the PROD image of a released version: ``apache-airflow==X.Y.Z`` from PyPI, with the release's
    constraints (the Dockerfile's AIRFLOW_CONSTRAINTS_LOCATION). The branch's images are the build cache."""

    template_fields: Sequence[str] = (*BuildImageOperator.template_fields, "constraints_url")
    from_sources = False
    # A release image is built anew from the index each time it is asked for, never reused.
    reuses_published = False

    def __init__(self, *, kind: str = "prod", constraints_url: str | Any = "", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)
        self.constraints_url = constraints_url

    def build_args(self, settings: Settings) -> dict[str, str]:
        args = super().build_args(settings)
        location = constraints_location(self.constraints_url or "", self.request.airflow_version, self.python)
        if not location:
            self.log.warning("No constraints for release %s: its dependencies are resolved afresh",
                             self.request.airflow_version)
        args["AIRFLOW_CONSTRAINTS_LOCATION"] = location
        args["REVISION"] = ""  # built from released distributions, not from a commit
        args["VERSION"] = self.request.airflow_version
        return args


class ReleaseVerifyOperator(ReleaseImagesMixin, VerifyImageOperator):
    """The PROD checks of a branch build, run on the release candidate."""

    from_sources = False  # built from the index: the image's extras decide the providers expected

    def __init__(self, *, kind: str = "prod", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)


class ReleaseStageOperator(ReleaseImagesMixin, PushImageOperator):
    """Push the verified candidate to the staging repository; returns its digest."""

    def __init__(self, *, kind: str = "prod", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)


class ReleaseAttestOperator(ReleaseImagesMixin, AttestImageOperator):
    """Sign the staged candidate's SBOM, provenance (of the released version, not a commit) and checks; the
    publish copies them along with the image to every release tag."""

    def __init__(self, *, kind: str = "prod", **kwargs: Any):
        super().__init__(kind=kind, **kwargs)

    @property
    def released_version(self) -> str:  # type: ignore[override]
        return self.request.airflow_version


class ReleaseTidyOperator(TidyEngineOperator):
    """tidy_engine for a release run: its one local image per Python version is the staged candidate."""

    def droppable(self, request: BuildRequest) -> list[str]:
        staging = release_staging_image(request.registry, request.repository)
        return [staging.ref(tag) for python in request.python_versions for variant in request.variants
                for tag in platform_tags(release_tag(request.airflow_version, python, variant),
                                         request.platforms).values()]


class PublishReleaseOperator(BaseOperator):
    """All-or-nothing: when every Python version staged a tested digest, copy each to its release tags.

    The registry work is :func:`airflow_image_factory.services.release.publish_release`: tags decided from
    the registry's tags before anything moves, every staged digest checked first, each tag a verified copy
    of exactly the tested digest, and every tag put back when any step fails.
    Emits an asset event for every published tag (through :data:`PUBLISHED_IMAGES_ALIAS`).
    """

    template_fields: Sequence[str] = ("release_request", "staged")
    ui_color = "#e8f1fb"
    operator_extra_links = (RegistryImageLink(),)

    def __init__(self, *, release_request: dict[str, Any] | Any, staged: Sequence[Mapping[str, Any]] | Any,
                 **kwargs: Any):
        kwargs.setdefault("outlets", [PUBLISHED_IMAGES_ALIAS])
        super().__init__(**kwargs)
        self.release_request = release_request
        self.staged = staged

    @fails_at_once  # a refused release (an untested Python, a moved tag) is not retried
    def execute(self, context: Any) -> list[dict[str, str]]:
        from airflow_image_factory.services.release import publish_release
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        release = ReleaseRequest.from_dict(self.release_request)
        variants = tuple(release.build.get("variants") or (REGULAR.name,))
        # Airflow hands a single mapped result over as itself rather than a one-item list.
        items = [self.staged] if isinstance(self.staged, Mapping) else list(self.staged or [])
        staged = staged_digests(items, release.python_versions, variants)
        settings = run_settings()
        with RegistryHook(release.registry, settings=settings).get_conn() as client:
            published = publish_release(client, release, staged, variants, log=self.log.info,
                                        evidence_problems=evidence_check(settings, client, push=True))
        events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
        for row in published:
            events.add(release_asset(release.registry, release.repository, name_and_tag(row["image"])[1]),
                       extra={"digest": row["digest"]})
        target = release_image(release.registry, release.repository)
        record_image_ref(context, target.ref(release_tag(release.version, release.default_python, variants[0])))
        return published


# ---- wiring shared with the DAG file -------------------------------------------------------------


def release_python_images(build_request: Any, constraints_url: Any, pool: str):
    """A task group, mapped over Python versions: base → PROD build → PROD checks → staged push → its
    signed evidence."""
    from airflow.sdk import task, task_group

    from airflow_image_factory.tasks.operators import PreparePythonBaseOperator

    # Every variant's chain is in the group; those the release does not build are skipped (no failure).
    @task(trigger_rule="none_failed")
    @fails_at_once
    def staged(python: str, digests: dict[str, str | None]) -> dict[str, Any]:
        return {"python": python, "digests": {variant: d for variant, d in digests.items() if d}}

    @task_group(group_id="python")
    def per_version(python: str):
        common = {"build_request": build_request, "python": python, "map_index_template": "{{ task.python }}"}
        base = PreparePythonBaseOperator(task_id="python_base", **common)
        digests, attests = {}, []
        for variant in VARIANTS.values():
            suffix = variant.task_suffix
            kind = variant.prod.value
            build = ReleaseBuildOperator(task_id=f"build_prod{suffix}", kind=kind, python_base=base.output,
                                         constraints_url=constraints_url, pool=pool, **common)
            verify = ReleaseVerifyOperator(task_id=f"verify_prod{suffix}", kind=kind, **common)
            stage = ReleaseStageOperator(task_id=f"stage_prod{suffix}", kind=kind, **common)
            attest = ReleaseAttestOperator(task_id=f"attest_prod{suffix}", kind=kind, build=build.output,
                                           verification=verify.output, pushed=stage.output,
                                           python_base=base.output, **common)
            build >> verify >> stage
            attests.append(attest)
            digests[variant.name] = stage.output
        done = staged(python, digests)
        attests >> done  # a candidate without its signed evidence is not staged for publishing
        return {"staged": done}

    return per_version
