"""Copy one branch's ``latest`` images to another branch's names, inside the registry (seed 000's retag script).

Used when a release branch is cut: CI, CI manifest, PROD, PROD build stage and the Python base of every
Python version are copied by manifest (blobs mounted across repositories, never downloaded), so the
target names point at the very same digests. ``dry_run`` lists what would change and changes nothing.

The request, its schema (the trigger form and the validation) and the plan are
:mod:`airflow_image_factory.policy.retag` (pure), the registry I/O :mod:`airflow_image_factory.services.retag`,
run by :class:`RetagImagesOperator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from airflow_image_factory.policy.retag import COPY, RetagRequest
from airflow_image_factory.tasks.assets import PUBLISHED_IMAGES_ALIAS, image_asset
from airflow_image_factory.tasks.operators import fails_at_once


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
