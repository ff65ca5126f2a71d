"""Copy a branch's ``latest`` images (CI, CI manifest, PROD, PROD build stage, Python base) to another
branch's names inside the registry — no pull, no rebuild, identical digests. Used when a release branch
is cut. ``dry_run`` lists what would change and changes nothing.

Conf: source_branch, target_branch, python_versions, registry, repository, naming, variants, dry_run.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.retag import RETAG_SCHEMA, validate_retag_request
from airflow_image_factory.tasks.groups import dag_default_args
from airflow_image_factory.tasks.operators import fails_at_once
from airflow_image_factory.tasks.params import request_params
from airflow_image_factory.tasks.retag import RetagImagesOperator

SETTINGS = load_settings()  # file + environment only: no Variable lookup at parse time


@task(retries=0)  # a rejected request fails the same way every time
@fails_at_once
def validate_retag() -> dict:
    """The run's conf over the settings → one validated retag request (errors name the field)."""
    from airflow_image_factory.tasks.operators import run_settings

    # The conf as given: the validator says "conf must be an object" for a list, text or number.
    return validate_retag_request(get_current_context()["dag_run"].conf, run_settings()).to_dict()


@dag(
    dag_id="retag_images",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["images", "retag"],
    default_args=dag_default_args(SETTINGS),
    doc_md=__doc__,
    params=request_params(RETAG_SCHEMA, SETTINGS),  # the form and validate_retag share one schema
)
def retag_images():
    RetagImagesOperator(task_id="retag", retag_request=validate_retag())


retag_images()
