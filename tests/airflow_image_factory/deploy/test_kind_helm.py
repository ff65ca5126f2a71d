"""kind + helm hooks and the deploy manager.

There is no kind, helm or cluster on this machine: the real deploy test skips with that reason. The retry,
image-loading and teardown rules are tested through the real hooks and subprocess calls against STAND-IN
scripts (named ``stand_in_*``) that only record their arguments and answer like the real tools do.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

from airflow_image_factory.clients.settings_loader import include_dir, load_settings
from airflow_image_factory.exceptions import DeployToolError, HelmWaitTimeout, SmokeRunFailed
from airflow_image_factory.services.chart import api_server_service, chart_dir, deploy_values
from airflow_image_factory.tasks.kind_manager import KindDeploy, KindDeployManager, cluster_name
from airflow_image_factory.tasks.kubernetes_hooks import (
    HELM_WAIT_TIMEOUT,
    ClusterHook,
    HelmHook,
    KindHook,
    KubectlHook,
    _seconds,
)

IMAGE = "localhost:5000/helper5/airflow/main/kubernetes/python3.11:kind"


def stand_in(tmp_path: Path, name: str, body: str) -> str:
    """A stand-in executable that appends its argv (one JSON list per line) to calls-<name>.log."""
    script = tmp_path / f"stand_in_{name}"
    log = tmp_path / f"calls-{name}.log"
    script.write_text("#!/usr/bin/env python3\nimport json, sys, pathlib\n"
                      f"log = pathlib.Path({str(log)!r})\n"
                      "with log.open('a') as f: f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                      "calls = len(log.read_text().splitlines())\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return str(script)


def calls(tmp_path: Path, name: str) -> list[list[str]]:
    log = tmp_path / f"calls-{name}.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def manager(tmp_path, *, helm_body="", kind_body="print('airflow-smoke-py3-11')", helm_tries=3):
    deploy = KindDeploy(
        cluster="airflow-smoke-py3-11", kind_config=include_dir() / "kubernetes" / "kind-config.yaml",
        node_image="kindest/node:v1.33.1", chart=chart_dir(), release="airflow", namespace="airflow",
        values=deploy_values(image=IMAGE, postgres_image="localhost:5000/library/postgres:15-bookworm"),
        helm_tries=helm_tries, health_service=api_server_service("airflow"),
    )
    kind = KindHook(binary=stand_in(tmp_path, "kind", kind_body), on_line=lambda line: None)
    helm_bin = stand_in(tmp_path, "helm", helm_body)
    return KindDeployManager(
        deploy, kind=kind,
        helm_factory=lambda kc: HelmHook(binary=helm_bin, kubeconfig=kc, on_line=lambda line: None),
        kubectl_factory=lambda kc: KubectlHook(binary="/bin/false", kubeconfig=kc),
        docker_cli=stand_in(tmp_path, "docker", "open(sys.argv[sys.argv.index('--output') + 1], 'w').write('tar')"),
        say=lambda line: None, sleep=lambda seconds: None,
    )


def test_install_is_retried_only_on_helms_wait_timeout(tmp_path):
    body = f"""
    if sys.argv[1] == 'install' and calls <= 2:
        sys.stderr.write('Error: INSTALLATION FAILED: {HELM_WAIT_TIMEOUT}\\n'); sys.exit(1)
    values = json.load(open(sys.argv[sys.argv.index('--values') + 1]))
    print(values['images']['airflow']['repository'], values['images']['airflow']['tag'])
    """
    mgr = manager(tmp_path, helm_body=body)
    mgr.install(tmp_path)
    installs = calls(tmp_path, "helm")
    assert len(installs) == 3
    first = installs[0]
    assert first[:3] == ["install", "airflow", str(chart_dir())]
    assert "--wait" in first and first[first.index("--timeout") + 1] == "10m0s"
    assert first[first.index("--namespace") + 1] == "airflow"


def test_other_helm_errors_fail_at_once(tmp_path):
    mgr = manager(tmp_path, helm_body="sys.stderr.write('Error: chart requires kubeVersion\\n'); sys.exit(1)")
    with pytest.raises(DeployToolError, match="kubeVersion") as caught:
        mgr.install(tmp_path)
    assert not isinstance(caught.value, HelmWaitTimeout)
    assert len(calls(tmp_path, "helm")) == 1


def test_retries_are_bounded(tmp_path):
    mgr = manager(tmp_path, helm_body=f"sys.stderr.write('Error: UPGRADE FAILED: {HELM_WAIT_TIMEOUT}'); sys.exit(1)",
                  helm_tries=2)
    with pytest.raises(HelmWaitTimeout):
        mgr.upgrade(tmp_path)
    assert [c[0] for c in calls(tmp_path, "helm")] == ["upgrade", "upgrade"]


def test_cluster_from_the_config_and_node_image_and_image_loaded_as_an_archive(tmp_path):
    mgr = manager(tmp_path, kind_body="print('other-cluster') if sys.argv[1] == 'get' else None")
    mgr.create_cluster()
    mgr.load_image(IMAGE)
    kind_calls = calls(tmp_path, "kind")
    create = next(c for c in kind_calls if c[:2] == ["create", "cluster"])
    assert create[create.index("--name") + 1] == "airflow-smoke-py3-11"
    assert create[create.index("--config") + 1].endswith("include/kubernetes/kind-config.yaml")
    assert create[create.index("--image") + 1] == "kindest/node:v1.33.1"
    docker_save = calls(tmp_path, "docker")[0]
    assert docker_save[0] == "save" and docker_save[-1] == IMAGE
    load = next(c for c in kind_calls if c[0] == "load")
    assert load[:2] == ["load", "image-archive"] and load[-2:] == ["--name", "airflow-smoke-py3-11"]


def test_teardown_deletes_the_cluster_even_when_the_log_export_fails(tmp_path):
    body = """
    if sys.argv[1] == 'get': print('airflow-smoke-py3-11')
    if sys.argv[1] == 'export': sys.stderr.write('no space left'); sys.exit(1)
    """
    mgr = manager(tmp_path, kind_body=body)
    with pytest.raises(SmokeRunFailed, match="export logs"):
        mgr.teardown(tmp_path / "logs")
    assert ["delete", "cluster", "--name", "airflow-smoke-py3-11"] in calls(tmp_path, "kind")


def test_health_check_has_bounded_tries(tmp_path):
    mgr = manager(tmp_path)
    with pytest.raises(SmokeRunFailed, match="failed 12 times"):
        mgr.check_health(tmp_path)  # kubectl is /bin/false here: every port-forward fails


def test_names_and_durations():
    assert cluster_name("airflow-smoke", "3.11") == "airflow-smoke-py3-11"
    assert _seconds("10m0s") == 600 and _seconds("1h") == 3600 and _seconds("90") == 90
    with pytest.raises(ValueError):
        _seconds("ten minutes")


def test_missing_binaries_are_named():
    if shutil.which("kind"):
        pytest.skip("kind is installed here")
    with pytest.raises(DeployToolError, match="kind is not on PATH"):
        KindHook()


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("kind") and shutil.which("helm") and shutil.which("kubectl")),
                    reason="kind, helm and kubectl are not all installed here; the Docker-backed run covers the chart")
def test_real_kind_deploy(tmp_path):  # pragma: no cover - needs kind, helm and a pullable node image
    settings = load_settings()
    image = f"{settings.registry}/apache/airflow/main/kubernetes/python3.11:latest"
    deploy = KindDeploy(
        cluster=cluster_name("image-factory-test", "3.11"), kind_config=include_dir() / settings.smoke_kind_config,
        node_image=settings.smoke_kind_node_image, chart=chart_dir(), release="airflow", namespace="airflow",
        values=deploy_values(image=image, postgres_image=settings.smoke_postgres_image, helm_wait=True),
        health_service=api_server_service("airflow"),
    )
    mgr = KindDeployManager(deploy, kind=KindHook(), helm_factory=lambda kc: HelmHook(kubeconfig=kc),
                            kubectl_factory=lambda kc: KubectlHook(kubeconfig=kc))
    try:
        mgr.create_cluster()
        mgr.load_image(image)
        mgr.install(tmp_path)
        assert mgr.check_health(tmp_path)
        mgr.upgrade(tmp_path)
        assert mgr.check_health(tmp_path)
    finally:
        mgr.teardown(tmp_path / "logs")


# ---- the cluster's API: the cncf-kubernetes provider's KubernetesHook ------------------------------


def _pod(name, *containers):
    statuses = [SimpleNamespace(name=c, ready=ready, restart_count=restarts) for c, ready, restarts in containers]
    return SimpleNamespace(metadata=SimpleNamespace(name=name),
                           status=SimpleNamespace(phase="Running", container_statuses=statuses))


class _FakeCore:
    """The three CoreV1Api calls ClusterHook makes, answered from fixed pods and events."""

    def __init__(self):
        self.log_requests = []

    def list_namespaced_pod(self, namespace):
        assert namespace == "airflow"
        return SimpleNamespace(items=[_pod("airflow-api-server-0", ("api-server", False, 3)),
                                      _pod("airflow-postgresql-0", ("postgresql", True, 0))])

    def list_namespaced_event(self, namespace):
        thing = SimpleNamespace(kind="Pod", name="airflow-api-server-0")
        return SimpleNamespace(items=[SimpleNamespace(type="Warning", reason="BackOff", involved_object=thing,
                                                      message="Back-off restarting failed container")])

    def read_namespaced_pod_log(self, name, namespace, *, container, tail_lines):
        self.log_requests.append((name, container, tail_lines))
        return "ImportError: no module named fab"


def _cluster(kubeconfig: str, core: _FakeCore) -> ClusterHook:
    hook = ClusterHook(kubeconfig=kubeconfig)
    hook.__dict__["core_v1_client"] = core  # KubernetesHook's cached client, faked: no cluster here
    return hook


def test_the_cluster_hook_is_the_providers_kubernetes_hook_on_the_clusters_kubeconfig(tmp_path):
    hook = ClusterHook(kubeconfig=str(tmp_path / "kubeconfig"))  # nothing connects yet: no cluster needed
    assert isinstance(hook, KubernetesHook)
    assert hook.config_file == str(tmp_path / "kubeconfig") and hook.conn_id is None
    assert hook.conn_extras == {}  # no Connection is looked up, nor the worker's default kubeconfig


def test_the_cluster_hook_describes_pods_and_events_and_reads_unready_logs():
    core = _FakeCore()
    hook = _cluster("kubeconfig", core)
    described = hook.describe_all("airflow")
    assert "pod/airflow-api-server-0: Running, 0/1 ready, 3 restart(s)" in described
    assert "event Warning BackOff pod/airflow-api-server-0: Back-off restarting failed container" in described
    assert hook.unready_logs("airflow") == {"airflow-api-server-0/api-server": "ImportError: no module named fab"}
    assert core.log_requests == [("airflow-api-server-0", "api-server", 40)]


def test_a_failed_health_check_says_what_the_cluster_holds(tmp_path):
    said, kubeconfigs = [], []
    mgr = manager(tmp_path)
    mgr.say, mgr.deploy = said.append, dataclasses.replace(mgr.deploy, health_tries=2)

    def cluster_factory(kubeconfig):
        kubeconfigs.append(kubeconfig)
        return _cluster(kubeconfig, _FakeCore())

    mgr.cluster_factory = cluster_factory
    with pytest.raises(SmokeRunFailed, match="failed 2 times"):
        mgr.check_health(tmp_path)
    assert kubeconfigs == [str(tmp_path / "kubeconfig-airflow-smoke-py3-11")]  # the cluster's own kubeconfig
    text = "\n".join(said)
    assert "3 restart(s)" in text and "last lines of airflow-api-server-0/api-server (not ready)" in text


def test_a_cluster_that_cannot_be_read_does_not_hide_the_health_failure(tmp_path):
    said = []
    mgr = manager(tmp_path)  # the stand-in kind's kubeconfig is no kubeconfig: the real ClusterHook fails
    mgr.say, mgr.deploy = said.append, dataclasses.replace(mgr.deploy, health_tries=2)
    with pytest.raises(SmokeRunFailed, match="failed 2 times"):
        mgr.check_health(tmp_path)
    assert any(line.startswith("could not read namespace airflow of airflow-smoke-py3-11") for line in said)
