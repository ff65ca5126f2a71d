"""What the Docker-backed run makes of a rendered chart, before anything runs (pure: no engine).

The rendered chart is the real one (Helm's engine); the checks are on how a pod spec becomes a container:
command/args, env from Secrets, users and groups, files from ConfigMaps (subPath, items), DNS aliases, the
order (hooks by weight, Jobs before workloads), the restart back-off, and refusing what a kubelet would refuse.
"""

from __future__ import annotations

import copy

import pytest

from airflow_image_factory.exceptions import SmokeRunFailed
from airflow_image_factory.services.chart import HelmEngine, Rendered, chart_dir, deploy_values
from airflow_image_factory.services.docker_smoke import (
    BackOff,
    Probe,
    configured_modules,
    health_problems,
    import_failure,
    install_hook,
    missing_provider_hint,
    missing_providers,
    package_of,
    plan_pods,
)

IMAGE = "localhost:5000/helper5/airflow/main/kubernetes/python3.11:plan"
POSTGRES = "localhost:5000/library/postgres:15-bookworm"


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    values = deploy_values(image=IMAGE, postgres_image=POSTGRES, extra={"fernetKey": "fernet-from-values"})
    return HelmEngine().render(chart_dir(), values, release="airflow", namespace="smoke")


@pytest.fixture(scope="module")
def plans(rendered):
    return {p.workload: p for p in plan_pods(rendered, "smoke")}


def test_hooks_by_weight_then_the_database_then_the_services(plans):
    order = list(plans)
    assert order[:2] == ["Job/airflow-migrate-database", "Job/airflow-create-user"]  # weights 1, 2
    assert [plans[w].hook for w in order[:2]] == ["post-install", "post-install"]
    assert order[2] == "StatefulSet/airflow-postgresql"
    assert set(order[3:]) == {"Deployment/airflow-api-server", "Deployment/airflow-scheduler",
                              "Deployment/airflow-dag-processor", "Deployment/airflow-triggerer"}
    assert all(plans[w].is_job for w in order[:2]) and not any(plans[w].is_job for w in order[2:])


def _job(name: str, hook: str = "", weight: str | None = None) -> dict:
    annotations = {}
    if hook:
        annotations["helm.sh/hook"] = hook
    if weight is not None:
        annotations["helm.sh/hook-weight"] = weight
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "annotations": annotations},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "main", "image": "busybox"}]}}}}


def test_hook_weight_orders_hooks_and_jobs_start_before_the_workloads():
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox"}]}}}}
    objects = (
        deployment,
        _job("post-late", "post-install,post-upgrade", "5"),
        _job("post-early", "post-install", "-3"),
        _job("post-unweighted", "post-install"),
        _job("plain"),
        _job("pre", "pre-install", "10"),
        _job("upgrade-only", "post-upgrade", "0"),  # an install does not run it
        _job("test-hook", "test"),
    )
    order = [p.workload for p in plan_pods(Rendered(objects), "smoke")]
    assert order == ["Job/pre", "Job/plain", "Job/post-early", "Job/post-unweighted", "Job/post-late",
                     "Deployment/web"]
    assert install_hook(_job("x", " pre-upgrade , pre-install ", " 7 ")) == ("pre-install", 7)
    assert install_hook(_job("x")) == ("", 0)


def test_restart_back_off_doubles_from_ten_seconds_up_to_five_minutes():
    assert BackOff().schedule() == [10, 20, 40, 80]
    assert BackOff(max_restarts=7).schedule() == [10, 20, 40, 80, 160, 300, 300]
    assert BackOff(initial=1, factor=3, cap=5, max_restarts=3).schedule() == [1, 3, 5]
    assert BackOff(max_restarts=0).schedule() == []


def test_args_keep_the_image_entrypoint_and_env_comes_from_the_secrets(plans):
    scheduler = plans["Deployment/airflow-scheduler"].containers[0]
    assert scheduler.entrypoint is None  # no `command`: the image's ENTRYPOINT runs, as in a pod
    assert scheduler.command == ["scheduler"]
    assert scheduler.image == IMAGE
    assert scheduler.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgresql+psycopg2://airflow:airflow@airflow-postgresql:5432/airflow")
    assert scheduler.env["AIRFLOW__CORE__FERNET_KEY"] == "fernet-from-values"
    assert scheduler.user == "50000:0"
    assert scheduler.groups == ("0",)  # fsGroup
    assert scheduler.cap_drop == ["ALL"]
    init = plans["Deployment/airflow-scheduler"].init_containers[0]
    assert init.command == ["airflow", "db", "check-migrations", "--migration-wait-timeout=60"]
    assert [p.kind for p in scheduler.probes] == ["startup", "liveness"]


def test_a_sub_path_mount_is_one_file_with_the_keys_content(plans):
    for workload in ("Deployment/airflow-scheduler", "Deployment/airflow-api-server", "Job/airflow-create-user",
                     "Job/airflow-migrate-database"):
        pod = plans[workload]
        for container in (*pod.init_containers, pod.containers[0]):
            cfg = container.single_files["/opt/airflow/airflow.cfg"]
            assert "auth_manager = airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager" in cfg
            assert "/opt/airflow/airflow.cfg" not in container.files  # not a directory of keys
            assert "/opt/airflow/airflow.cfg" not in container.scratch


def test_config_map_items_sub_path_folders_and_missing_keys(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    config["data"]["extra.py"] = "X = 1"
    job = next(o for o in objects if o["metadata"]["name"] == "airflow-migrate-database")
    spec = job["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "picked", "configMap": {"name": "airflow-config", "items": [
        {"key": "airflow.cfg", "path": "conf/airflow.cfg"}, {"key": "extra.py", "path": "extra.py"}]}})
    spec["containers"][0]["volumeMounts"] += [
        {"name": "picked", "mountPath": "/etc/picked"},  # the items, at their paths
        {"name": "picked", "mountPath": "/etc/conf-only", "subPath": "conf"},  # a folder of the volume
        {"name": "picked", "mountPath": "/etc/one.py", "subPath": "extra.py"},
        {"name": "config", "mountPath": "/etc/nothing", "subPath": "no-such-key"},  # the kubelet: empty dir
    ]
    plan = next(p for p in plan_pods(Rendered(tuple(objects)), "smoke") if p.name.startswith("airflow-migrate"))
    container = plan.containers[0]
    assert set(container.files["/etc/picked"]) == {"conf/airflow.cfg", "extra.py"}
    assert set(container.files["/etc/conf-only"]) == {"airflow.cfg"}
    assert container.single_files["/etc/one.py"] == "X = 1"
    assert container.files["/etc/nothing"] == {}
    spec["volumes"][-1]["configMap"]["items"].append({"key": "missing", "path": "m"})
    with pytest.raises(SmokeRunFailed, match=r"no key 'missing'.*CreateContainerConfigError"):
        plan_pods(Rendered(tuple(objects)), "smoke")


def test_a_sub_path_into_an_empty_dir_is_refused_not_faked(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    scheduler = next(o for o in objects if o["metadata"]["name"] == "airflow-scheduler")
    scheduler["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "logs", "mountPath": "/opt/airflow/logs/sub", "subPath": "sub"})
    with pytest.raises(SmokeRunFailed, match="only ConfigMap and Secret volumes take a subPath"):
        plan_pods(Rendered(tuple(objects)), "smoke")


def test_log_groomers_share_the_components_logs_volume(plans):
    for component in ("scheduler", "dag-processor", "triggerer"):
        pod = plans[f"Deployment/airflow-{component}"]
        main, groomer = pod.containers
        assert groomer.name == f"{component}-log-groomer"
        assert groomer.entrypoint is None and groomer.command == ["bash", "/clean-logs"]
        assert groomer.env["AIRFLOW__LOG_RETENTION_DAYS"] == "15"
        assert main.scratch == groomer.scratch == {"/opt/airflow/logs": "logs"}
        assert groomer.probes == ()
        assert pod.scratch_volumes == ("logs",) and pod.fs_group == 0
    assert len(plans["Deployment/airflow-api-server"].containers) == 1


def test_service_names_resolve_to_the_pods_they_select(plans):
    api = plans["Deployment/airflow-api-server"]
    assert {"airflow-api-server", "airflow-api-server.smoke", "airflow-api-server.smoke.svc.cluster.local"} <= set(
        api.aliases)
    pg = plans["StatefulSet/airflow-postgresql"]
    assert "airflow-postgresql" in pg.aliases
    assert "airflow-api-server" not in plans["Deployment/airflow-scheduler"].aliases
    assert pg.containers[0].user == "999:999"
    assert pg.containers[0].groups == ("999",)
    assert pg.containers[0].scratch == {"/var/lib/postgresql/data": "data"}
    assert pg.fs_group == 999 and pg.scratch_volumes == ("data",)


def test_a_missing_secret_key_is_refused_like_a_kubelet_does(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "airflow")
    del secret["data"]["jwt-secret"]
    with pytest.raises(SmokeRunFailed, match=r"has no key 'jwt-secret'.*CreateContainerConfigError"):
        plan_pods(Rendered(tuple(objects)), "smoke")


def test_kubernetes_variable_references_are_expanded(rendered):
    objects = [copy.deepcopy(o) for o in rendered.objects]
    job = next(o for o in objects if o["metadata"]["name"] == "airflow-migrate-database")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "GREETING", "value": "tries=$(CONNECTION_CHECK_MAX_COUNT) $$(kept)"})
    container["command"] = ["echo", "$(GREETING)"]
    plan = next(p for p in plan_pods(Rendered(tuple(objects)), "smoke") if p.name.startswith("airflow-migrate"))
    assert plan.containers[0].env["GREETING"] == "tries=40 $(kept)"
    assert plan.containers[0].entrypoint == ["echo", "tries=40 $(kept)"]
    assert plan.containers[0].command == ["bash", "-c", "exec airflow db migrate"]


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


def test_a_missing_provider_is_named_with_where_it_was_seen():
    api = ("Traceback (most recent call last):\nModuleNotFoundError: No module named 'airflow.providers.fab'\n"
           "AirflowConfigException: The object could not be loaded.")
    init = "  import psycopg2\nModuleNotFoundError: No module named 'psycopg2'"
    migrate = "[warning] No module named 'airflow.providers.fab.www' [parser]\nNo module named 'yaml'"
    assert missing_providers(api) == {"airflow.providers.fab": "apache-airflow-providers-fab"}
    assert missing_providers(migrate) == {"airflow.providers.fab": "apache-airflow-providers-fab"}  # not yaml
    hint = missing_provider_hint({"api-server": api, "migrate": migrate, "init": init, "user": "invalid choice"})
    assert hint.splitlines() == [
        "the image lacks airflow.providers.fab (the package apache-airflow-providers-fab): "
        "No module named 'airflow.providers.fab' in api-server, migrate",
        "the image lacks psycopg2 (the package apache-airflow-providers-postgres): "
        "No module named 'psycopg2' in init",
    ]
    assert missing_provider_hint({"x": "No module named 'requests'"}) == ""
    # what the image check found joins what the logs said, per provider
    merged = missing_provider_hint({"init": init}, {
        "airflow.providers.fab.auth_manager.fab_auth_manager": "[core] auth_manager",
        "psycopg2": "[database] sql_alchemy_conn (postgresql+psycopg2://)"})
    assert merged.splitlines() == [
        "the image lacks airflow.providers.fab (the package apache-airflow-providers-fab), which [core] "
        "auth_manager names",
        "the image lacks psycopg2 (the package apache-airflow-providers-postgres), which [database] "
        "sql_alchemy_conn (postgresql+psycopg2://) names: No module named 'psycopg2' in init",
    ]


def test_an_import_error_ends_the_output_or_not():
    assert import_failure("Traceback...\n  import psycopg2\nModuleNotFoundError: No module named 'psycopg2'\n\n") == (
        "ModuleNotFoundError: No module named 'psycopg2'")
    cannot = "ImportError: cannot import name 'x' from 'y'"
    assert import_failure(cannot) == cannot
    # a warning about a module on the way is no reason to stop restarting
    assert import_failure("[warning] No module named 'airflow.providers.fab'\nStill unapplied migrations") == ""
    assert import_failure("") == ""


def test_the_configured_modules_are_the_auth_manager_executor_and_database_driver(plans, rendered):
    assert configured_modules(plans.values()) == {
        "airflow.providers.fab.auth_manager.fab_auth_manager": "[core] auth_manager",
        "psycopg2": "[database] sql_alchemy_conn (postgresql+psycopg2://)",
    }
    assert package_of("airflow.providers.fab.auth_manager.fab_auth_manager") == "apache-airflow-providers-fab"
    assert package_of("psycopg2") == "apache-airflow-providers-postgres"
    objects = [copy.deepcopy(o) for o in rendered.objects]
    scheduler = next(o for o in objects if o["metadata"]["name"] == "airflow-scheduler")
    # the environment wins over airflow.cfg, as in Airflow
    scheduler["spec"]["template"]["spec"]["initContainers"][0]["env"].append(
        {"name": "AIRFLOW__CORE__EXECUTOR", "value": "my_company.executors.BatchExecutor"})
    only_scheduler = [p for p in plan_pods(Rendered(tuple(objects)), "smoke") if p.name == "airflow-scheduler-smoke"]
    assert configured_modules(only_scheduler)["my_company.executors"] == "[core] executor"
