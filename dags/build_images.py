"""Manual build of one branch: CI and PROD images per Python version, verified, pushed, promoted.

Trigger with a conf (or the trigger form): branch, python_versions, registry, repository, source_repo,
commit_sha, cache, push, upgrade_to_newer_dependencies, airflow_version, test_command, naming.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.request import BUILD_SCHEMA
from airflow_image_factory.tasks.groups import (
    build_and_publish,
    check_publishing,
    dag_default_args,
    resolve_sha,
    validate,
)
from airflow_image_factory.tasks.params import request_params

SETTINGS = load_settings()  # file + environment only: no Variable lookup at parse time


@dag(
    dag_id="build_images",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=4,
    params=request_params(BUILD_SCHEMA, SETTINGS),  # the form and validate() share one schema
    tags=["images", "build"],
    default_args=dag_default_args(SETTINGS),
    doc_md=__doc__,
)
def build_images():
    build_and_publish(SETTINGS, check_publishing(resolve_sha(validate())))


build_images()
