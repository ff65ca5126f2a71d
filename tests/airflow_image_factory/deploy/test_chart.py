"""The helm chart, rendered and linted by Helm's own engine and validated against the Kubernetes schemas.

Unit tier: no engine, registry or cluster. The engine is the helm CLI where one is on PATH, else the
helm-python-sdk package (Helm's Go SDK); the CLI-only test skips with the reason where there is no helm.
"""

from __future__ import annotations

import base64
import copy
import shutil

import pytest

from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.exceptions import ChartInvalid
from airflow_image_factory.services.chart import (
    HelmEngine,
    api_server_service,
    chart_dir,
    check_chart,
    deploy_values,
    validate_objects,
    values_for_extras,
)

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
    assert len(airflow_pods) == 6
    containers = 0
    for obj in airflow_pods:
        spec = obj["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            assert container["image"] == IMAGE
            containers += 1
    assert containers == 6 + 4 + 3  # main containers, wait-for-migrations, log groomers
    pg = _container(checked.rendered.get("StatefulSet", "airflow-postgresql"))
    assert pg["image"] == POSTGRES


def test_probes_on_the_health_endpoints(checked):
    api = _container(checked.rendered.get("Deployment", "airflow-api-server"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/api/v2/monitor/health", "port": "api"}
    for component, job_type in (("scheduler", "SchedulerJob"), ("dag-processor", "DagProcessorJob"),
                                ("triggerer", "TriggererJob")):
        container = _container(checked.rendered.get("Deployment", f"airflow-{component}"), component)
        assert container["args"] == [component]
        shell, flag, script = container["livenessProbe"]["exec"]["command"]
        assert (shell, flag) == ("sh", "-c")
        # through the image's entrypoint, without its database wait (a probe has a timeout)
        assert script.startswith("CONNECTION_CHECK_MAX_COUNT=0 ")
        assert script.endswith(f"exec /entrypoint airflow jobs check --job-type {job_type} --local")
        assert container["startupProbe"]["exec"] == container["livenessProbe"]["exec"]


def test_the_metadata_connection_reaches_every_airflow_container_from_the_secret(checked):
    secret = checked.rendered.get("Secret", "airflow")
    url = base64.b64decode(secret["data"]["connection"]).decode()
    assert url == "postgresql+psycopg2://airflow:airflow@airflow-postgresql:5432/airflow"
    migrate = _container(checked.rendered.get("Job", "airflow-migrate-database"))
    assert migrate["args"] == ["bash", "-c", "exec airflow db migrate"]
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


def test_the_jobs_are_post_install_hooks_migrations_first_unless_helm_waits(engine, checked):
    migrate = checked.rendered.get("Job", "airflow-migrate-database")
    create_user = checked.rendered.get("Job", "airflow-create-user")
    for job in (migrate, create_user):
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    weights = [int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in (migrate, create_user)]
    assert weights[0] < weights[1]
    waiting = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES, helm_wait=True))
    for name in ("airflow-migrate-database", "airflow-create-user"):
        assert not waiting.is_hook(waiting.get("Job", name))


def _config_file(rendered) -> str:
    return rendered.get("ConfigMap", "airflow-config")["data"]["airflow.cfg"]


def test_airflow_cfg_holds_the_fab_auth_manager_and_is_mounted_as_one_file(checked):
    cfg = _config_file(checked.rendered)
    assert "[core]\nauth_manager = airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager\n" in cfg
    assert "execution_api_server_url = http://airflow-api-server:8080/execution/" in cfg
    assert "executor = LocalExecutor" in cfg and "[logging]\nbase_log_folder = /opt/airflow/logs" in cfg
    for obj in checked.rendered.of_kind("Deployment", "Job"):
        if obj["metadata"]["name"] == "airflow-postgresql":
            continue
        spec = obj["spec"]["template"]["spec"]
        assert {"name": "config", "configMap": {"name": "airflow-config"}} in spec["volumes"]
        airflow_containers = [*spec.get("initContainers", []),
                              *(c for c in spec["containers"] if not c["name"].endswith("log-groomer"))]
        for container in airflow_containers:
            assert {"name": "config", "mountPath": "/opt/airflow/airflow.cfg", "subPath": "airflow.cfg",
                    "readOnly": True} in container["volumeMounts"], (obj["metadata"]["name"], container["name"])
            # only secrets come from the environment: a setting there would hide a cfg that is not read
            assert all(e["name"].startswith(("AIRFLOW__DATABASE__SQL", "AIRFLOW__CORE__FERNET", "AIRFLOW__API",
                                              "CONNECTION_CHECK", "DEFAULT_USER"))
                       for e in container["env"]), container["name"]


def test_config_values_win_over_the_derived_ones_and_local_settings_are_mounted(engine):
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={
        "config": {"core": {"executor": "airflow.executors.local_executor.LocalExecutor"},
                   "webserver": {"expose_config": True}},
        "airflowLocalSettings": "POLICY = None\n"}))
    cfg = _config_file(rendered)
    assert "executor = airflow.executors.local_executor.LocalExecutor" in cfg
    assert "auth_manager = airflow.providers.fab" in cfg  # the default of a key not given stays
    assert "[webserver]\nexpose_config = true" in cfg
    assert rendered.get("ConfigMap", "airflow-config")["data"]["airflow_local_settings.py"] == "POLICY = None"
    mounts = _container(rendered.get("Deployment", "airflow-api-server"))["volumeMounts"]
    assert {"name": "config", "mountPath": "/opt/airflow/config/airflow_local_settings.py",
            "subPath": "airflow_local_settings.py", "readOnly": True} in mounts


def test_create_user_job_makes_the_default_admin_with_the_password_from_the_secret(checked, engine):
    job = checked.rendered.get("Job", "airflow-create-user")
    container = _container(job)
    shell, flag, script, _process_name, *args = container["args"]
    assert (shell, flag) == ("bash", "-c") and "airflow users create" in script
    assert dict(zip(args[::2], args[1::2], strict=True)) == {
        "--role": "Admin", "--username": "admin", "--email": "admin@example.com", "--firstname": "admin",
        "--lastname": "user"}
    env = {e["name"]: e for e in container["env"]}
    ref = env["DEFAULT_USER_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert base64.b64decode(checked.rendered.get("Secret", ref["name"])["data"][ref["key"]]).decode() == "admin"
    assert "admin" not in script
    off = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES,
                                        extra={"createUserJob": {"enabled": False}}))
    assert "Job/airflow-create-user" not in {f"{o['kind']}/{o['metadata']['name']}" for o in off.objects}
    assert "default-user-password" not in off.get("Secret", "airflow")["data"]


def test_log_groomer_sidecars_clean_the_logs_the_component_writes(checked, engine):
    for component in ("scheduler", "dag-processor", "triggerer"):
        deployment = checked.rendered.get("Deployment", f"airflow-{component}")
        main, groomer = deployment["spec"]["template"]["spec"]["containers"]
        assert groomer["name"] == f"{component}-log-groomer"
        assert groomer["args"] == ["bash", "/clean-logs"]
        env = {e["name"]: e["value"] for e in groomer["env"]}
        assert env == {"AIRFLOW_HOME": "/opt/airflow", "AIRFLOW__LOG_RETENTION_DAYS": "15",
                       "AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES": "15"}
        logs = {"name": "logs", "mountPath": "/opt/airflow/logs"}
        assert logs in groomer["volumeMounts"] and logs in main["volumeMounts"]
        assert {"name": "logs", "emptyDir": {}} in deployment["spec"]["template"]["spec"]["volumes"]
    api = checked.rendered.get("Deployment", "airflow-api-server")
    assert [c["name"] for c in api["spec"]["template"]["spec"]["containers"]] == ["api-server"]
    tuned = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={
        "scheduler": {"logGroomerSidecar": {"retentionMinutes": 90, "maxSizeBytes": 10_000_000_000}},
        "triggerer": {"logGroomerSidecar": {"enabled": False}}}))
    scheduler_groomer = _container(tuned.get("Deployment", "airflow-scheduler"), "scheduler-log-groomer")
    env = {e["name"]: e["value"] for e in scheduler_groomer["env"]}
    assert env["AIRFLOW__LOG_RETENTION_MINUTES"] == "90" and env["AIRFLOW__LOG_MAX_SIZE_BYTES"] == "10000000000"
    assert len(tuned.get("Deployment", "airflow-triggerer")["spec"]["template"]["spec"]["containers"]) == 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"images": {"airflow": {"repository": "", "tag": "x"}}}, "/images/airflow/repository"),
        ({"bogus": 1}, "bogus"),
        ({"executor": "CeleryExecutor"}, "/executor"),
        ({"apiServer": {"replicas": 1, "livenessProbe": {"periodSeconds": 0}}}, "/apiServer/livenessProbe"),
        ({"scheduler": {"logGroomerSidecar": {"maxSizePercent": 150}}}, "/scheduler/logGroomerSidecar"),
        ({"createUserJob": {"defaultUser": {"password": ""}}}, "/createUserJob/defaultUser/password"),
        ({"config": {"core": "auth_manager=x"}}, "/config/core"),
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




@pytest.mark.skipif(not shutil.which("helm"), reason="no helm binary on PATH here: the SDK engine is tested instead")
def test_helm_cli_and_sdk_render_the_same_objects():
    values = deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={"fernetKey": "k", "apiSecretKey": "a",
                                                                        "jwtSecret": "j"})
    cli = HelmEngine()
    sdk = HelmEngine(binary="")  # empty: the embedded SDK even where a CLI exists
    assert [o["metadata"]["name"] for o in cli.render(chart_dir(), values, release="r", namespace="n").objects] == [
        o["metadata"]["name"] for o in sdk.render(chart_dir(), values, release="r", namespace="n").objects]


def test_an_image_without_the_fab_extra_is_deployed_with_the_simple_auth_manager(engine):
    assert values_for_extras(None) == {} and values_for_extras("aiobotocore,fab,postgres") == {}
    light = values_for_extras("postgres,mysql")
    assert values_for_extras("") == light  # slim: no extras at all
    rendered = _render(engine, deploy_values(image=IMAGE, postgres_image=POSTGRES, extra=light))
    assert "auth_manager = airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager" in (
        _config_file(rendered))
    assert not [o for o in rendered.of_kind("Job") if o["metadata"]["name"] == "airflow-create-user"]
