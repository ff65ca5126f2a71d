"""A mapped task group and a setup/teardown pair: features a broken image or scheduler would trip on."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, setup, task, teardown


@dag(dag_id="smoke_mapped", schedule=None, start_date=datetime(2025, 1, 1), catchup=False, tags=["smoke"])
def smoke_mapped():
    @setup
    def prepare() -> list[int]:
        return [1, 2, 3]

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @teardown
    def clean() -> None:
        print("teardown ran")

    numbers = prepare()
    total(square.expand(x=numbers)) >> clean()


smoke_mapped()
