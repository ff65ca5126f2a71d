"""What the Docker-backed run makes of a rendered chart, before anything runs (pure: no engine).

The rendered chart is the real one (Helm's engine); the checks are on how a pod spec becomes a container:
command/args, env from Secrets, users, DNS aliases, the order, and refusing what a kubelet would refuse.
"""

from __future__ import annotations

import copy

import pytest

from airflow_image_factory.deploy.chart import HelmEngine, Rendered, chart_dir, deploy_values
from airflow_image_factory.deploy.docker_smoke import Probe, health_problems, plan_pods
from airflow_image_factory.exceptions import SmokeRunFailed

IMAGE = "localhost:5000/helper5/airflow/main/kubernetes/python3.11:plan"
POSTGRES = "localhost:5000/library/postgres:15-bookworm"


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    values = deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={"fernetKey": "fernet-from-values"})
    return HelmEngine().render(chart_dir(), values, release="airflow", namespace="smoke")


@pytest.fixture(scope="module")
def plans(rendered):
    return {p.workload: p for p in plan_pods(rendered, "smoke")}


def test_database_first_then_the_migration_job_then_the_services(plans):
    order = list(plans)
    assert order[0] == "StatefulSet/airflow-postgresql"
    assert order[1] == "Job/airflow-migrate-database"
    assert set(order[2:]) == {"Deployment/airflow-api-server", "Deployment/airflow-scheduler",
                              "Deployment/airflow-dag-processor", "Deployment/airflow-triggerer"}
    assert plans["Job/airflow-migrate-database"].is_job


def test_args_keep_the_image_entrypoint_and_env_comes_from_the_secrets(plans):
    scheduler = plans["Deployment/airflow-scheduler"].containers[0]
    assert scheduler.entrypoint is None  # no `command`: the image's ENTRYPOINT runs, as in a pod
    assert scheduler.command == ["scheduler"]
    assert scheduler.image == IMAGE
    assert scheduler.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:airflow@airflow-postgresql:5432/airflow")
    assert scheduler.env["AIRFLOW__CORE__FERNET_KEY"] == "fernet-from-values"
    assert scheduler.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
    assert scheduler.user == "50000:0"
    assert scheduler.cap_drop == ["ALL"]
    init = plans["Deployment/airflow-scheduler"].init_containers[0]
    assert init.command[:2] == ["db", "check-migrations"]
    assert [p.kind for p in scheduler.probes] == ["startup", "liveness"]


def test_service_names_resolve_to_the_pods_they_select(plans):
    api = plans["Deployment/airflow-api-server"]
    assert {"airflow-api-server", "airflow-api-server.smoke", "airflow-api-server.smoke.svc.cluster.local"} <= set(
        api.aliases)
    pg = plans["StatefulSet/airflow-postgresql"]
    assert "airflow-postgresql" in pg.aliases
    assert "airflow-api-server" not in plans["Deployment/airflow-scheduler"].aliases
    assert pg.containers[0].user == "999:999"
    assert pg.containers[0].scratch == {"/var/lib/postgresql/data": "data"}


def test_a_missing_secret_key_is_refused_like_a_kubelet_does(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "airflow")
    del secret["data"]["jwt-secret"]
    with pytest.raises(SmokeRunFailed, match=r"has no key 'jwt-secret'.*CreateContainerConfigError"):
        plan_pods(Rendered(tuple(objects)), "smoke")


def test_kubernetes_variable_references_are_expanded(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    job = next(o for o in objects if o["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "GREETING", "value": "conn=$(AIRFLOW__CORE__EXECUTOR) $$(kept)"})
    container["command"] = ["echo", "$(GREETING)"]
    plan = next(p for p in plan_pods(Rendered(tuple(objects)), "smoke") if p.is_job).containers[0]
    assert plan.env["GREETING"] == "conn=LocalExecutor $(kept)"
    assert plan.entrypoint == ["echo", "conn=LocalExecutor $(kept)"]
    assert plan.command == ["db", "migrate"]


def test_probe_defaults_are_kubernetes_defaults():
    probe = Probe.from_k8s("liveness", {"tcpSocket": {"port": 5432}})
    assert (probe.initial_delay, probe.period, probe.timeout, probe.failure_threshold, probe.success_threshold) == (
        0, 10, 1, 3, 1)
    with pytest.raises(SmokeRunFailed, match="exactly one handler"):
        Probe.from_k8s("readiness", {"periodSeconds": 3})


def test_health_answer_needs_every_component_healthy():
    healthy = {k: {"status": "healthy"} for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")}
    assert health_problems(healthy) == []
    assert health_problems({**healthy, "scheduler": {"status": "unhealthy"}}) == ["scheduler is unhealthy"]
    assert health_problems({**healthy, "dag_processor": None}) == ["dag_processor is missing"]
    assert health_problems("nope")
