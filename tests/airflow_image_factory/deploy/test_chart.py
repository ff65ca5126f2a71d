"""The helm chart, rendered and linted by Helm's own engine and validated against the Kubernetes schemas.

Unit tier: no engine, registry or cluster. The engine is the helm CLI where one is on PATH, else the
helm-python-sdk package (Helm's Go SDK); the CLI-only test skips with the reason where there is no helm.
"""

from __future__ import annotations

import base64
import copy
import shutil

import pytest

from airflow_image_factory.deploy.chart import (
    HelmEngine,
    api_server_service,
    chart_dir,
    check_chart,
    deploy_values,
    split_image,
    validate_objects,
)
from airflow_image_factory.exceptions import ChartInvalid
from airflow_image_factory.settings import load_settings

IMAGE = "localhost:5000/helper5/airflow/main/kubernetes/python3.11:0123abc"
POSTGRES = "localhost:5000/library/postgres:15-bookworm"
VERSIONS = load_settings().smoke_kubernetes_versions


@pytest.fixture(scope="module")
def engine() -> HelmEngine:
    return HelmEngine()


@pytest.fixture(scope="module")
def checked(engine):
    return check_chart(deploy_values(image=IMAGE, postgres_image=POSTGRES), release="airflow", namespace="airflow",
                       versions=VERSIONS, engine=engine)


def _render(engine, values, release="airflow"):
    return engine.render(chart_dir(), values, release=release, namespace="airflow")


def _container(obj, name=None):
    containers = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def test_every_component_is_rendered_and_valid_for_each_supported_version(checked):
    kinds = {f"{o['kind']}/{o['metadata']['name']}" for o in checked.rendered.objects}
    assert {
        "Deployment/airflow-api-server", "Deployment/airflow-scheduler", "Deployment/airflow-dag-processor",
        "Deployment/airflow-triggerer", "Job/airflow-migrate-database", "StatefulSet/airflow-postgresql",
        "Service/airflow-api-server", "Service/airflow-postgresql", "Secret/airflow",
    } <= kinds
    assert sorted(checked.validated) == sorted(VERSIONS) and len(VERSIONS) >= 3
    for version in VERSIONS:
        assert len(checked.validated[version]) == len(checked.rendered.objects)
    assert not checked.lint.errors and not checked.lint.warnings


def test_image_repository_and_tag_come_from_the_values(checked):
    airflow_pods = checked.rendered.of_kind("Deployment", "Job")
    assert len(airflow_pods) == 5
    for obj in airflow_pods:
        spec = obj["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            assert container["image"] == IMAGE
    pg = _container(checked.rendered.get("StatefulSet", "airflow-postgresql"))
    assert pg["image"] == POSTGRES


def test_probes_on_the_health_endpoints(checked):
    api = _container(checked.rendered.get("Deployment", "airflow-api-server"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/api/v2/monitor/health", "port": "api"}
    for component, job_type in (("scheduler", "SchedulerJob"), ("dag-processor", "DagProcessorJob"),
                                ("triggerer", "TriggererJob")):
        container = _container(checked.rendered.get("Deployment", f"airflow-{component}"))
        assert container["args"] == [component]
        assert container["livenessProbe"]["exec"]["command"] == [
            "airflow", "jobs", "check", "--job-type", job_type, "--local"]


def test_the_metadata_connection_reaches_every_airflow_container_from_the_secret(checked):
    secret = checked.rendered.get("Secret", "airflow")
    url = base64.b64decode(secret["data"]["connection"]).decode()
    assert url == "postgresql+psycopg2://airflow:airflow@airflow-postgresql:5432/airflow"
    migrate = _container(checked.rendered.get("Job", "airflow-migrate-database"))
    assert migrate["args"] == ["db", "migrate"]
    env = {e["name"]: e for e in migrate["env"]}
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]["valueFrom"]["secretKeyRef"] == {
        "name": "airflow", "key": "connection"}


def test_external_database_instead_of_the_in_chart_postgresql(engine):
    url = "postgresql+psycopg2://u:p@db.example:5432/airflow"
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES,
                                             extra={"data": {"metadataConnection": url}}))
    assert not rendered.of_kind("StatefulSet")
    assert base64.b64decode(rendered.get("Secret", "airflow")["data"]["connection"]).decode() == url
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES,
                                             extra={"data": {"metadataSecretName": "my-db"}}))
    assert "connection" not in rendered.get("Secret", "airflow")["data"]
    env = {e["name"]: e for e in _container(rendered.get("Deployment", "airflow-scheduler"))["env"]}
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]["valueFrom"]["secretKeyRef"]["name"] == "my-db"


def test_no_database_at_all_is_refused_with_the_reason(engine):
    with pytest.raises(ChartInvalid, match="metadataConnection"):
        _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={"postgresql": {"enabled": False}}))


def test_migration_job_as_a_helm_hook_when_asked(engine):
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES,
                                             extra={"migrateDatabaseJob": {"useHelmHooks": True}}))
    job = rendered.get("Job", "airflow-migrate-database")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert rendered.is_hook(job)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"images": {"airflow": {"repository": "", "tag": "x"}}}, "/images/airflow/repository"),
        ({"bogus": 1}, "bogus"),
        ({"executor": "CeleryExecutor"}, "/executor"),
        ({"apiServer": {"replicas": 1, "livenessProbe": {"periodSeconds": 0}}}, "/apiServer/livenessProbe"),
    ],
)
def test_values_schema_names_the_bad_key(engine, values, field):
    with pytest.raises(ChartInvalid, match=field.replace("/", ".") if field.startswith("/") else field):
        _render(engine, values)


def test_lint_is_clean_with_default_values(engine):
    report = engine.lint(chart_dir(), {})
    assert report.ok, report.errors


def test_a_broken_object_fails_validation_naming_it(checked):
    broken = copy.deepcopy(checked.rendered.get("Deployment", "airflow-scheduler"))
    broken["spec"]["replicas"] = "one"
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["comand"] = ["x"]
    with pytest.raises(ChartInvalid) as caught:
        validate_objects([broken], ["1.33"])
    assert "Deployment/airflow-scheduler" in str(caught.value)
    assert "replicas" in str(caught.value)


def test_notes_tell_how_to_reach_the_api_server(checked):
    assert "port-forward svc/airflow-api-server" in checked.rendered.notes
    assert "/api/v2/monitor/health" in checked.rendered.notes


@pytest.mark.parametrize("release", ["airflow", "smoke", "my-airflow-test"])
def test_api_server_service_name_matches_the_render(engine, release):
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES), release=release)
    names = [o["metadata"]["name"] for o in rendered.of_kind("Service")]
    assert api_server_service(release) in names


def test_split_image_keeps_registry_ports():
    assert split_image("localhost:5000/a/b:tag") == ("localhost:5000/a/b", "tag")
    assert split_image("localhost:5000/a/b") == ("localhost:5000/a/b", "latest")


@pytest.mark.skipif(not shutil.which("helm"), reason="no helm binary on PATH here: the SDK engine is tested instead")
def test_helm_cli_and_sdk_render_the_same_objects():
    values = deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={"fernetKey": "k", "apiSecretKey": "a",
                                                                        "jwtSecret": "j"})
    cli = HelmEngine()
    sdk = HelmEngine(binary="")  # empty: the embedded SDK even where a CLI exists
    assert [o["metadata"]["name"] for o in cli.render(chart_dir(), values, release="r", namespace="n").objects] == [
        o["metadata"]["name"] for o in sdk.render(chart_dir(), values, release="r", namespace="n").objects]
