"""Example DAGs baked into the Kubernetes test image: the dag-processor must parse them in a smoke deploy."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="smoke_example", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["smoke"])
def smoke_example():
    @task
    def hello() -> str:
        return "hello from the smoke deploy"

    @task
    def echo(message: str) -> None:
        print(message)

    echo(hello())


smoke_example()
