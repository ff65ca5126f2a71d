"""The Docker-backed smoke run on the local stack, for real, where it must fail: the published PROD 3.11 image
(conftest.py: by reference, failing when it is not published), turned into a Kubernetes test image under this
test's own name, deployed from the rendered chart with the stack's PostgreSQL image, broken in one point each
(its entrypoint, the api-server's args, the database's env). That the same chart comes up healthy on the regular
image is test_chart_defaults_stack's; on a Kubernetes test image, tests/dags/test_smoke_deploy_stack's.

The PROD image is used read-only; everything this module builds is tagged under ``smoke-tests/`` and
removed again.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from airflow_image_factory.exceptions import SmokeRunFailed
from airflow_image_factory.services.chart import api_server_service, check_chart, deploy_values
from airflow_image_factory.services.docker_smoke import RUN_LABEL, BackOff, DockerSmokeRun, HealthCheck
from airflow_image_factory.services.kubernetes_image import build_kubernetes_image

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PYTHON = "3.11"


@pytest.fixture(scope="module")
def prod_image(regular_prod_image) -> str:
    return regular_prod_image  # read-only: published by main's build


@pytest.fixture(scope="module")
def kubernetes_image(settings, engine, prod_image):
    target = f"{settings.registry}/smoke-tests/airflow/main/kubernetes/python{PYTHON}:smoke"
    build_kubernetes_image(engine, prod_image=prod_image, target=target, on_line=lambda line: None)
    yield target
    engine.remove(target)


@pytest.fixture(scope="module")
def broken_image(settings, engine, kubernetes_image, tmp_path_factory):
    """The Kubernetes test image with an entrypoint that calls a program that does not exist."""
    context = tmp_path_factory.mktemp("broken-entrypoint")
    (context / "Dockerfile").write_text(textwrap.dedent(f"""\
        FROM {kubernetes_image}
        USER 0
        RUN printf '#!/usr/bin/env bash\\nset -euo pipefail\\nexec airflw "$@"\\n' > /entrypoint
        USER 50000
        """))
    target = f"{settings.registry}/smoke-tests/airflow/main/kubernetes/python{PYTHON}:broken-entrypoint"
    subprocess.run([engine.cli, "build", "-q", "-t", target, str(context)], check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=300)
    yield target
    engine.remove(target)


def smoke_run(settings, engine, image: str, lines: list[str], backoff: BackOff | None = None) -> DockerSmokeRun:
    checked = check_chart(deploy_values(image=image, postgres_image=settings.smoke_postgres_image),
                          release="airflow", namespace="airflow", versions=settings.smoke_kubernetes_versions)
    return DockerSmokeRun(
        engine.client, checked.rendered, namespace="airflow", timeout=420,
        health=HealthCheck(api_server_service("airflow"), 8080, tries=12, interval=5), on_line=lines.append,
        backoff=backoff,
    )


def leftovers(engine, run_id: str) -> list[str]:
    label = {"label": f"{RUN_LABEL}={run_id}"}
    return ([c.name for c in engine.client.containers.list(all=True, filters=label)]
            + [n.name for n in engine.client.networks.list(filters=label)]
            + [v.name for v in engine.client.volumes.list(filters=label)])


def test_the_stack_points_the_in_chart_database_at_its_mirror(settings):
    assert settings.smoke_postgres_image.startswith(f"{settings.registry}/library/postgres:"), (
        "run include/stack/postgres-image.sh (up.sh calls it)")


def test_broken_entrypoint_fails_the_run_and_leaves_nothing(settings, engine, broken_image):
    lines: list[str] = []
    run = smoke_run(settings, engine, broken_image, lines, backoff=BackOff(initial=2))
    with pytest.raises(SmokeRunFailed) as caught:
        run.run()
    message = str(caught.value)
    assert "Job/airflow-migrate-database" in message and "BackoffLimitExceeded" in message
    assert "airflw" in message  # the container's own error is in the failure
    assert leftovers(engine, run.run_id) == []


def test_wrong_args_fail_the_run(settings, engine, kubernetes_image):
    """A chart whose api-server args are wrong: the pod starts and exits, as CrashLoopBackOff would show."""
    lines: list[str] = []
    checked = check_chart(deploy_values(image=kubernetes_image, postgres_image=settings.smoke_postgres_image),
                          release="airflow", namespace="airflow", versions=settings.smoke_kubernetes_versions)
    api = checked.rendered.get("Deployment", "airflow-api-server")
    api["spec"]["template"]["spec"]["containers"][0]["args"] = ["api-server", "--prot", "8080"]
    api["spec"]["template"]["spec"].pop("initContainers")  # straight to the broken container
    objects = tuple(o for o in checked.rendered.objects if o["kind"] != "Job" and (
        o["kind"] != "Deployment" or o is api))
    from airflow_image_factory.services.chart import Rendered

    run = DockerSmokeRun(engine.client, Rendered(objects), namespace="airflow", timeout=240, on_line=lines.append,
                         backoff=BackOff(initial=1, max_restarts=1))
    with pytest.raises(SmokeRunFailed, match=r"api-server.*exited with code 2 \(CrashLoopBackOff\)"):
        run.run()
    assert leftovers(engine, run.run_id) == []


def test_missing_env_fails_the_run(settings, engine, kubernetes_image):
    """The database container without its password env: it refuses to start, and the run says which pod."""
    lines: list[str] = []
    run = smoke_run(settings, engine, kubernetes_image, lines, backoff=BackOff(initial=1, max_restarts=1))
    statefulset = run.rendered.get("StatefulSet", "airflow-postgresql")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "POSTGRES_PASSWORD"]
    with pytest.raises(SmokeRunFailed, match=r"airflow-postgresql-0/postgresql exited with code 1") as caught:
        run.run()
    assert "POSTGRES_PASSWORD" in str(caught.value)
    assert leftovers(engine, run.run_id) == []
