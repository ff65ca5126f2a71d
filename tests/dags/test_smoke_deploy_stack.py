"""smoke_deploy through Airflow on the local stack (`airflow dags test`): the Kubernetes test image is built
FROM the published PROD 3.11 image, the chart is checked and run on the Docker engine, the teardown runs."""

from __future__ import annotations

import os

import docker
import pytest

from airflow_image_factory.services.docker_smoke import RUN_LABEL
from airflow_image_factory.tasks.deploy_operators import smoke_run_id
from tests.support.dag_runs import run_dag

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def test_smoke_deploy_of_main_python_3_11(main_build):
    result = run_dag("smoke_deploy", {"branch": "main", "python_versions": ["3.11"]}, timeout=900)
    out = result.output
    assert result.returncode == 0, out[-6000:]
    assert "state=success" in out
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    kubernetes_image = f"{registry}/apache/airflow/main/kubernetes/python3.11:latest"
    assert f"Building {kubernetes_image} FROM {registry}/apache/airflow/main/prod/python3.11:latest" in out
    assert "Chart checked with" in out
    assert "Docker-backed smoke run of" in out and "passed in" in out
    assert "[DAG TEST] end task task_id=smoke_deploy.teardown" in out
    client = docker.from_env()
    assert client.images.get(kubernetes_image).labels.get("org.apache.airflow.image.kind") == "kubernetes"
    # none of this run's containers is left (another stream's smoke runs may be going on beside it)
    mine = f"{RUN_LABEL}={smoke_run_id(result.run_id, '3.11')}"
    assert client.containers.list(all=True, filters={"label": mine}) == []
    assert client.networks.list(names=[f"smoke-{smoke_run_id(result.run_id, '3.11')}"]) == []


def test_a_rejected_conf_fails_before_anything_is_built(stack_env):
    result = run_dag("smoke_deploy", {"branch": "main", "python_versions": ["2.7"]}, timeout=300)
    out = result.output
    assert result.returncode != 0
    assert "python_versions" in out
    assert "Building " not in out
