"""Smoke deploy: deploy the PROD image the way users do (the helm chart), before it is trusted.

Per Python version: build the Kubernetes test image FROM the PROD image, lint/render/validate the chart, then
kind + ``helm install --wait`` + health + ``helm upgrade`` where ``kind`` exists, else the Docker-backed run
of the rendered chart (smoke_mode setting); the teardown always runs. Triggered by hand (same params as
``build_images``; ``commit_sha`` picks ``prod:SHA`` instead of ``prod:latest``), and by the publication of
a new PROD ``latest``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import AssetAny, dag

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.request import SMOKE_SCHEMA
from airflow_image_factory.tasks.assets import prod_latest_asset
from airflow_image_factory.tasks.deploy_groups import narrow_to_published, smoke_deploy_group
from airflow_image_factory.tasks.groups import dag_default_args, validate
from airflow_image_factory.tasks.params import request_params

SETTINGS = load_settings()  # file + environment only: no Variable lookup at parse time

PROD_LATEST = [
    prod_latest_asset(SETTINGS.registry, SETTINGS.repository, branch, python, SETTINGS.naming)
    for branch in dict.fromkeys([SETTINGS.branch, *SETTINGS.nightly_branches])
    for python in SETTINGS.python_versions
]


@dag(
    dag_id="smoke_deploy",
    schedule=AssetAny(*PROD_LATEST),
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=2,
    params=request_params(SMOKE_SCHEMA, SETTINGS),
    tags=["images", "smoke", "kubernetes"],
    default_args=dag_default_args(SETTINGS),
    doc_md=__doc__,
)
def smoke_deploy():
    smoke_deploy_group(narrow_to_published(validate(smoke=True)))


smoke_deploy()
