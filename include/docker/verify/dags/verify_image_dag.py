"""A small DAG the image verification suite parses (DagBag) and runs (`airflow dags test`)."""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

with DAG(
    dag_id="verify_image_dag",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["image-verification"],
):

    @task
    def produce() -> int:
        return 21

    @task
    def double(value: int) -> int:
        if value * 2 != 42:
            raise ValueError(f"unexpected {value * 2}")
        return value * 2

    echo = BashOperator(task_id="echo", bash_command="echo image-verification-ok")

    double(produce()) >> echo
