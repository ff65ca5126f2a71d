"""Test-only DAG (not in dags/): wait for an image with ImageAvailableSensor, then use the registry it found.

Run by tests/airflow_image_factory/test_sensors.py with ``airflow dags test -f <this file> --conf``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import dag, task

from airflow_image_factory.tasks.sensors import ImageAvailableSensor

# The test sets the wait bound; reading the environment at parse time is fine in a test-only DAG.
TIMEOUT = float(os.environ.get("WAIT_FOR_IMAGE_PROBE_TIMEOUT", "60"))


@task
def use_registry(found: dict) -> str:
    """Downstream of the sensor: reads the image from the registry the sensor found, nowhere else."""
    from airflow_image_factory.clients.registry import parse_reference
    from airflow_image_factory.tasks.hooks import RegistryHook
    from airflow_image_factory.tasks.operators import run_settings

    hook = RegistryHook(found["registry"], settings=run_settings())
    reference = parse_reference(found["ref"])
    with hook.get_conn() as client:
        digest = client.manifest_digest(reference.repository, reference.reference)
    print(f"USING REGISTRY {found['registry']} naming={found['naming']} digest={digest}")
    assert digest == found["digest"]
    return found["registry"]


@dag(
    dag_id="wait_for_image_probe",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    params={"candidates": [], "repository": "", "branch": "main", "python": "3.11", "kind": "prod"},
)
def wait_for_image_probe():
    deferred = ImageAvailableSensor(
        task_id="wait_deferred",
        candidates="{{ params.candidates }}",
        repository="{{ params.repository }}",
        branch="{{ params.branch }}",
        python="{{ params.python }}",
        kind="{{ params.kind }}",
        poke_interval=1,
        timeout=TIMEOUT,
    )
    poking = ImageAvailableSensor(
        task_id="wait_poking",
        candidates="{{ params.candidates }}",
        repository="{{ params.repository }}",
        branch="{{ params.branch }}",
        python="{{ params.python }}",
        kind="{{ params.kind }}",
        deferrable=False,
        poke_interval=1,
        timeout=TIMEOUT,
    )
    deferred >> poking
    use_registry(deferred.output)


wait_for_image_probe()
