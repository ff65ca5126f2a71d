"""Test-only DAG (not in dags/): take the promotion lock as promote_latest does, in a real task process, and
hold it for a while (tests/dags/test_deferral_stack.py reads pg_locks meanwhile)."""

from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import dag, get_current_context, task


@task
def hold_promotion_lock(repository: str, seconds: float) -> str:
    from airflow_image_factory.clients.locks import promotion_lock
    from airflow_image_factory.tasks.hooks import find_connection
    from airflow_image_factory.tasks.operators import run_settings

    lock = promotion_lock(run_settings(), registry="localhost:5000", repository=repository, branch="main",
                          owner=get_current_context()["run_id"], find_connection=find_connection, on_wait=print)
    with lock.hold():
        print(f"HOLDING {lock.name}")
        time.sleep(float(seconds))
    return lock.name


@dag(dag_id="promotion_lock_probe", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     params={"repository": "", "seconds": 0})
def promotion_lock_probe():
    hold_promotion_lock("{{ params.repository }}", "{{ params.seconds }}")


promotion_lock_probe()
