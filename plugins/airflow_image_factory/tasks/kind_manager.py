"""kind + helm smoke deploy, step by step, over the hooks (as the cncf-kubernetes provider's PodManager sits
between its hook and its operator): cluster, image, install (retried only on Helm's wait timeout), health
through a port-forward (bounded tries; a failed check says what the cluster holds, read through the
cncf-kubernetes provider's KubernetesHook), upgrade, and always logs + cluster deletion in :meth:`teardown`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from airflow_image_factory.exceptions import HelmWaitTimeout, SmokeRunFailed
from airflow_image_factory.services.chart import API_SERVER_PORT, HEALTH_PATH
from airflow_image_factory.services.docker_smoke import poll_health
from airflow_image_factory.tasks.kubernetes_hooks import ClusterHook, HelmHook, KindHook, KubectlHook


def cluster_name(base: str, python: str) -> str:
    """One cluster per Python version (they deploy in parallel): ``airflow-smoke-py3-11``."""
    return f"{base}-py{python.replace('.', '-')}"


@dataclass(frozen=True)
class KindDeploy:
    cluster: str
    kind_config: Path
    node_image: str
    chart: Path
    release: str
    namespace: str
    values: Mapping[str, Any]
    helm_timeout: str = "10m0s"
    helm_tries: int = 3
    health_tries: int = 12
    health_interval: float = 10.0
    health_service: str = ""
    health_port: int = API_SERVER_PORT
    health_path: str = HEALTH_PATH


class KindDeployManager:
    def __init__(self, deploy: KindDeploy, *, kind: KindHook, helm_factory: Callable[[str], HelmHook],
                 kubectl_factory: Callable[[str], KubectlHook], docker_cli: str = "docker",
                 say: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
                 cluster_factory: Callable[[str], ClusterHook] = lambda kubeconfig: ClusterHook(kubeconfig=kubeconfig)):
        self.deploy = deploy
        self.kind = kind
        self.helm_factory = helm_factory
        self.kubectl_factory = kubectl_factory
        self.cluster_factory = cluster_factory
        self.docker_cli = docker_cli
        self.say = say
        self.sleep = sleep
        self._kubeconfig: Path | None = None

    def kubeconfig(self, workdir: Path) -> str:
        if self._kubeconfig is None:
            path = workdir / f"kubeconfig-{self.deploy.cluster}"
            path.write_text(self.kind.kubeconfig_of(self.deploy.cluster))
            path.chmod(0o600)
            self._kubeconfig = path
        return str(self._kubeconfig)

    def create_cluster(self) -> None:
        d = self.deploy
        if d.cluster in self.kind.clusters():
            self.say(f"kind cluster {d.cluster} exists (an earlier try); deleting it first")
            self.kind.delete_cluster(d.cluster)
        self.kind.create_cluster(d.cluster, config=d.kind_config, node_image=d.node_image)

    def load_image(self, image: str) -> None:
        self.kind.load_image(self.deploy.cluster, image, docker_cli=self.docker_cli)

    def _with_retries(self, verb: str, action: Callable[[], Any]) -> None:
        for attempt in range(1, self.deploy.helm_tries + 1):
            try:
                action()
                return
            except HelmWaitTimeout:
                if attempt == self.deploy.helm_tries:
                    raise
                self.say(f"helm {verb}: timed out waiting for the condition (try {attempt}/{self.deploy.helm_tries})"
                         "; trying again")

    def install(self, workdir: Path) -> None:
        d = self.deploy
        helm = self.helm_factory(self.kubeconfig(workdir))
        self._with_retries("install", lambda: helm.install(d.release, d.chart, d.values, namespace=d.namespace,
                                                            timeout=d.helm_timeout))

    def upgrade(self, workdir: Path) -> None:
        d = self.deploy
        helm = self.helm_factory(self.kubeconfig(workdir))
        self._with_retries("upgrade", lambda: helm.upgrade(d.release, d.chart, d.values, namespace=d.namespace,
                                                            timeout=d.helm_timeout))

    def check_health(self, workdir: Path) -> dict[str, Any]:
        """The api-server's health through a fresh port-forward per try (a pod may have been replaced)."""
        d = self.deploy
        kubectl = self.kubectl_factory(self.kubeconfig(workdir))

        def fetch() -> requests.Response:
            with kubectl.port_forward(f"svc/{d.health_service}", d.health_port, namespace=d.namespace) as port:
                return requests.get(f"http://127.0.0.1:{port}{d.health_path}", timeout=10)

        try:
            return poll_health(fetch, tries=d.health_tries, interval=d.health_interval, what=d.health_service,
                               say=self.say, sleep=self.sleep)
        except SmokeRunFailed:
            self.say_what_the_cluster_holds(workdir)
            raise

    def say_what_the_cluster_holds(self, workdir: Path) -> None:
        """Pods, events and the logs of containers that are not ready, for the task log; a cluster that
        cannot be read is said so, and does not hide the failure being explained."""
        namespace = self.deploy.namespace
        try:
            cluster = self.cluster_factory(self.kubeconfig(workdir))
            self.say(f"namespace {namespace} of {self.deploy.cluster}:\n{cluster.describe_all(namespace)}")
            for container, text in cluster.unready_logs(namespace).items():
                self.say(f"last lines of {container} (not ready):\n{text}")
        except Exception as exc:
            self.say(f"could not read namespace {namespace} of {self.deploy.cluster}: {type(exc).__name__}: {exc}")

    def teardown(self, logs_dir: Path) -> None:
        """Always: keep the cluster's logs, then delete it (each step runs even if the other failed)."""
        errors = []
        try:
            if self.deploy.cluster in self.kind.clusters():
                self.kind.export_logs(self.deploy.cluster, logs_dir)
                self.say(f"kind logs of {self.deploy.cluster} in {logs_dir}")
        except Exception as exc:
            errors.append(f"export logs: {exc}")
        try:
            if self.deploy.cluster in self.kind.clusters():
                self.kind.delete_cluster(self.deploy.cluster)
        except Exception as exc:
            errors.append(f"delete cluster: {exc}")
        if errors:
            raise SmokeRunFailed(f"teardown of {self.deploy.cluster}: " + "; ".join(errors))
