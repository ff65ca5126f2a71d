"""Nightly rebuilds: for each configured branch and Python version, rebuild only what changed.

A version is rebuilt when upstream's Python base moved (manifest digest vs the label on our
published base; nothing pulled), when dependencies have newer versions than the branch's
constraints (resolved on the worker), or when its images are missing. Rebuilt versions install the
newest set, are verified, pushed and promoted by digest as in build_images; then
constraints-X.Y.txt from the tested CI images are committed to constraints-BRANCH (canonical
source only, never forced). Nothing changed: nothing is built, pushed or committed.

Released images (X.Y.Z-pythonA.B) whose Python base got a new digest are rebuilt by a
release_images run each, republishing the same tags.

The conf is checked first, by validate_conf: every other task is downstream of it, so a rejected conf
stops the whole run (the registry is not asked about released images either).
"""

from __future__ import annotations

import re
from datetime import datetime

from airflow.sdk import TaskGroup, dag, get_current_context, task

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.request import NIGHTLY_SCHEMA
from airflow_image_factory.tasks.groups import (
    check_publishing,
    dag_default_args,
    fail_run_if_a_task_failed,
    nightly_branch,
    rebuild_released_images,
    resolve_sha,
    task_ids_so_far,
    validate,
)
from airflow_image_factory.tasks.operators import fails_at_once
from airflow_image_factory.tasks.params import request_params

SETTINGS = load_settings()  # file + environment only: no Variable lookup at parse time


@task(retries=0)  # a rejected request fails the same way every time
@fails_at_once
def validate_conf() -> None:
    """The run's conf, for every nightly branch and the released-images check, before anything runs."""
    from airflow_image_factory.policy.request import validate_nightly_request
    from airflow_image_factory.tasks.operators import run_settings

    validate_nightly_request(get_current_context()["dag_run"].conf, run_settings(), branches=SETTINGS.nightly_branches)


@dag(
    dag_id="nightly_images",
    schedule=SETTINGS.nightly_schedule or None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=request_params(NIGHTLY_SCHEMA, SETTINGS),  # without the fields the nightly decides itself
    tags=["images", "nightly"],
    default_args=dag_default_args(SETTINGS),
    doc_md=__doc__,
)
def nightly_images():
    gate = validate_conf()
    before = task_ids_so_far(gate)
    for branch in SETTINGS.nightly_branches:
        with TaskGroup(group_id=re.sub(r"[^A-Za-z0-9_-]", "_", branch)):
            nightly_branch(SETTINGS, check_publishing(resolve_sha(validate(branch=branch))))
    rebuild_released_images()
    # Every task that would start first waits for the conf check instead; the rest follow them.
    tasks = gate.operator.dag.task_dict
    for task_id in sorted(set(tasks) - before):
        if not tasks[task_id].upstream_task_ids:
            gate >> tasks[task_id]
    fail_run_if_a_task_failed()


nightly_images()
