"""Release images (AIP-26) of a released Airflow version X.Y.Z, for each of its Python versions.

Builds the PROD image from the released distributions on PyPI with the release's constraints, runs the
PROD checks, stages every tested image, and only when all Python versions passed publishes
``X.Y.Z-pythonA.B`` and ``X.Y-pythonA.B``, plus ``X.Y.Z`` and ``latest`` for the default Python —
``X.Y`` and ``latest`` move only forward (decided from the registry's existing tags).

Conf: version, python_versions, variants, default_python, registry, repository, cache_branch, constraints_url.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.release import RELEASE_SCHEMA, validate_release_request
from airflow_image_factory.tasks.groups import (
    dag_default_args,
    fail_run_if_a_task_failed,
    python_versions,
    run_last,
    task_ids_so_far,
)
from airflow_image_factory.tasks.operators import fails_at_once
from airflow_image_factory.tasks.params import request_params
from airflow_image_factory.tasks.release import (
    PublishReleaseOperator,
    ReleaseTidyOperator,
    release_python_images,
)

SETTINGS = load_settings()  # file + environment only: no Variable lookup at parse time


@task(multiple_outputs=True, retries=0)  # a rejected request fails the same way every time
@fails_at_once
def validate_release() -> dict:
    """The run's conf over the settings → the release request, and the build request its steps reuse.

    Then one lookup at the package index: a version it does not have fails here, in seconds, not in a build;
    and the evidence signing key is read, so a release that could not be signed is not built either.
    """
    from airflow_image_factory.clients.index import check_airflow_release
    from airflow_image_factory.tasks.evidence import evidence_required, signing_keys
    from airflow_image_factory.tasks.operators import run_settings

    settings = run_settings()
    release = validate_release_request(get_current_context()["dag_run"].conf, settings)
    check_airflow_release(release.version, ca_bundle=settings.extra_ca_bundle)
    if evidence_required(settings, push=True):  # a release that could not be signed is not built
        signing_keys(settings)
    return {"release": release.to_dict(), "build": dict(release.build), "constraints_url": release.constraints_url}


@dag(
    dag_id="release_images",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["images", "release"],
    default_args=dag_default_args(SETTINGS),
    doc_md=__doc__,
    params=request_params(RELEASE_SCHEMA, SETTINGS),  # the form and validate_release share one schema
)
def release_images():
    request = validate_release()
    before = task_ids_so_far(request)
    per_version = release_python_images(request["build"], request["constraints_url"], SETTINGS.build_pool)
    groups = per_version.expand(python=python_versions(request["build"]))
    PublishReleaseOperator(task_id="publish", release_request=request["release"], staged=groups["staged"])
    run_last(ReleaseTidyOperator(task_id="tidy_engine", build_request=request["build"]).as_teardown(),
             after_all_since=before)
    fail_run_if_a_task_failed()


release_images()
