"""Copy one branch's ``latest`` images to another branch's names, inside the registry (seed 000's retag script).

Used when a release branch is cut: CI, CI manifest, PROD, PROD build stage and the Python base of every
Python version are copied by manifest (blobs mounted across repositories, never downloaded), so the
target names point at the very same digests. ``dry_run`` lists what would change and changes nothing.

:class:`RetagRequest` / :func:`validate_retag_request` are the request here; the plan is
:mod:`airflow_image_factory.policy.retag` (pure), the registry I/O :mod:`airflow_image_factory.services.retag`,
run by :class:`RetagImagesOperator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseOperator

from airflow_image_factory.exceptions import InvalidBuildRequest, InvalidBuildRequests
from airflow_image_factory.policy.request import (
    RequestRecord,
    _branch_error,
    invalid,
    screen_conf,
    show,
    validate_request,
)
from airflow_image_factory.policy.retag import COPY
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, image_asset
from airflow_image_factory.tasks.operators import fails_at_once

RETAG_PARAM_NAMES = (
    "source_branch",
    "target_branch",
    "python_versions",
    "registry",
    "repository",
    "naming",
    "variants",
    "dry_run",
)


@dataclass(frozen=True)
class RetagRequest(RequestRecord):
    source_branch: str
    target_branch: str
    python_versions: tuple[str, ...]
    registry: str
    repository: str
    naming: str
    dry_run: bool
    debian: Mapping[str, str] = field(default_factory=dict)
    variants: tuple[str, ...] = ("regular",)


def retag_defaults(settings: Settings) -> dict[str, Any]:
    d = settings.request_defaults()
    return {
        "source_branch": d["branch"],
        "target_branch": "",
        "python_versions": d["python_versions"],
        "registry": d["registry"],
        "repository": d["repository"],
        "naming": d["naming"],
        "variants": d["variants"],
        "dry_run": False,
    }


def validate_retag_request(conf: Mapping[str, Any] | None, settings: Settings) -> RetagRequest:
    """``conf`` over the settings → a RetagRequest; raises InvalidBuildRequests naming every bad field."""
    conf, errors = screen_conf(conf, RETAG_PARAM_NAMES, what="retag request")
    values = {**retag_defaults(settings), **conf}

    # The fields a build request shares are checked by the build request's own rules, under our names.
    shared = {
        "branch": values["source_branch"],
        "python_versions": values["python_versions"],
        "registry": values["registry"],
        "repository": values["repository"],
        "naming": values["naming"],
        "variants": values["variants"],
    }
    build = None
    try:
        build = validate_request(shared, settings)
    except InvalidBuildRequests as exc:
        for error in exc.errors:
            name = "source_branch" if error.field == "branch" else error.field
            errors.append(InvalidBuildRequest(name, error.message))

    target = values["target_branch"]
    if not isinstance(target, str) or not target:
        errors.append(InvalidBuildRequest("target_branch", "is required: the branch whose names receive the images"))
    elif problem := _branch_error(target):
        errors.append(InvalidBuildRequest("target_branch", problem))
    elif target == values["source_branch"]:
        errors.append(InvalidBuildRequest("target_branch", "must differ from source_branch"))

    dry_run = values["dry_run"]
    if not isinstance(dry_run, bool):
        errors.append(InvalidBuildRequest("dry_run", f"must be true or false, got {show(dry_run)}"))

    if errors or build is None:
        raise invalid(errors, "retag request")
    return RetagRequest(
        source_branch=build.branch,
        target_branch=target,
        python_versions=build.python_versions,
        registry=build.registry,
        repository=build.repository,
        naming=build.naming,
        dry_run=dry_run,
        debian=dict(build.debian),
        variants=build.variants,
    )


class RetagImagesOperator(BaseOperator):
    """Carry out a retag (:func:`airflow_image_factory.services.retag.retag`): HEAD every source and target,
    then copy what differs, all-or-nothing (or only list it)."""

    template_fields: Sequence[str] = ("retag_request",)
    ui_color = "#e8f1fb"

    def __init__(self, *, retag_request: dict[str, Any] | Any, **kwargs: Any):
        # The target branch's latest images are published images too: DAGs scheduled on them hear of it.
        kwargs.setdefault("outlets", [PUBLISHED_IMAGES_ALIAS])
        super().__init__(**kwargs)
        self.retag_request = retag_request

    @fails_at_once  # a missing source image is permanent: not retried
    def execute(self, context: Any) -> list[dict[str, Any]]:
        from airflow_image_factory.services.retag import retag
        from airflow_image_factory.tasks.hooks import RegistryHook
        from airflow_image_factory.tasks.operators import run_settings

        request = RetagRequest.from_dict(self.retag_request)
        with RegistryHook(request.registry, settings=run_settings()).get_conn() as client:
            actions = retag(client, request, log=self.log.info)  # a missing source is permanent: no retry
        if not request.dry_run:
            events = context["outlet_events"][PUBLISHED_IMAGES_ALIAS]
            for action in actions:
                if action.action == COPY:
                    events.add(image_asset(action.step.target_ref), extra={"digest": action.digest})
        return [a.to_dict() | {"dry_run": request.dry_run} for a in actions]
