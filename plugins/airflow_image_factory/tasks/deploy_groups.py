"""The smoke-deploy task group (shared by ``smoke_deploy``, and by build or nightly DAGs that include it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import get_current_context, task, task_group

from airflow_image_factory.policy.request import BuildRequest
from airflow_image_factory.tasks.deploy_operators import (
    BuildKubernetesImageOperator,
    PrepareSmokeDeployOperator,
    SmokeDeployOperator,
    SmokeTeardownOperator,
)
from airflow_image_factory.tasks.operators import fails_at_once

log = logging.getLogger(__name__)


def published_pythons(request: BuildRequest, event_names: Iterable[str]) -> list[str]:
    """The Python versions whose PROD ``latest`` asset is among the triggering events (pure)."""
    from airflow_image_factory.tasks.assets import prod_latest_asset

    names = set(event_names)
    return [
        python for python in request.python_versions
        if prod_latest_asset(request.registry, request.repository, request.branch, python, request.naming).name in names
    ]


@task
@fails_at_once
def narrow_to_published(build_request: dict[str, Any]) -> dict[str, Any]:
    """A run started by a new PROD ``latest`` deploys the versions that were published, not every version."""
    context = get_current_context()
    conf: Mapping[str, Any] = context["dag_run"].conf or {}
    events = context.get("triggering_asset_events") or {}
    names = [getattr(asset, "name", str(asset)) for asset in events]
    if "python_versions" in conf or not names:
        return build_request
    request = BuildRequest.from_dict(build_request)
    pythons = published_pythons(request, names)
    log.info("Triggered by %s: smoke deploys of Python %s", ", ".join(names), ", ".join(pythons) or "none")
    return {**build_request, "python_versions": pythons}


@task
@fails_at_once
def smoke_pythons(build_request: dict[str, Any]) -> list[str]:
    return list(build_request["python_versions"])


def smoke_deploy_group(build_request: Any, *, group_id: str = "smoke_deploy"):
    """Per Python version (mapped): Kubernetes test image → prepare (setup) → deploy → teardown (always).

    Returns the mapped group; its ``deploy`` results are the smoke deploys' summaries.
    """

    @task_group(group_id=group_id)
    def per_version(python: str):
        common = {"build_request": build_request, "python": python, "map_index_template": "{{ task.python }}"}
        image = BuildKubernetesImageOperator(task_id="build_kubernetes_image", **common)
        prepare = PrepareSmokeDeployOperator(task_id="prepare", kubernetes_image=image.output, **common)
        deploy = SmokeDeployOperator(task_id="deploy", kubernetes_image=image.output, **common)
        teardown = SmokeTeardownOperator(task_id="teardown", kubernetes_image=image.output, **common)
        image >> prepare >> deploy >> teardown
        # Runs whenever prepare succeeded (a cluster or containers may exist), whatever deploy did; the run's
        # state still follows deploy.
        teardown.as_teardown(setups=prepare)
        return deploy.output

    return per_version.expand(python=smoke_pythons(build_request))
