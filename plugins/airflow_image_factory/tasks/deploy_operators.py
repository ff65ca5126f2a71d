"""Smoke-deploy operators, one step each: build the Kubernetes test image, prepare (chart check; kind: cluster
and image), deploy (kind + helm, or the Docker-backed run), and the teardown that always runs.

The mode is decided at run time (``smoke_mode``: ``auto`` = kind where the ``kind`` binary exists, else
docker), so one DAG works on both kinds of workers.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_image_factory.clients.settings_loader import include_dir
from airflow_image_factory.exceptions import SettingsError
from airflow_image_factory.policy.naming import LATEST
from airflow_image_factory.policy.nightly import EXTRAS_LABEL
from airflow_image_factory.policy.settings import Settings
from airflow_image_factory.services.chart import (
    API_SERVER_PORT,
    SIMPLE_AUTH_MANAGER,
    ChartCheck,
    api_server_service,
    chart_dir,
    check_chart,
    deploy_values,
    values_for_extras,
)
from airflow_image_factory.services.kubernetes_image import build_kubernetes_image
from airflow_image_factory.tasks.hooks import EngineHook
from airflow_image_factory.tasks.operators import ImageFactoryOperator, run_settings

MODES = ("auto", "kind", "docker")


def resolve_mode(setting: str) -> str:
    if setting not in MODES:
        raise SettingsError(f"smoke_mode must be one of {', '.join(MODES)}, got {setting!r}")
    if setting == "auto":
        return "kind" if shutil.which("kind") else "docker"
    return setting


def smoke_run_id(dag_run_id: str, python: str) -> str:
    """Stable per DAG run and Python version, so the teardown finds what the deploy started."""
    return hashlib.sha256(f"{dag_run_id}/{python}".encode()).hexdigest()[:12]


def logs_dir(run_id: str) -> Path:
    from airflow.configuration import conf

    return Path(conf.get("logging", "base_log_folder")) / "smoke_deploy" / run_id


class SmokeOperator(ImageFactoryOperator):
    """Common ground of the smoke steps: the image under test, the values, the mode and the run id."""

    template_fields: Sequence[str] = (*ImageFactoryOperator.template_fields, "kubernetes_image")
    ui_color = "#e3f4e8"
    timeout_setting = "timeout_smoke_minutes"

    def __init__(self, *, kubernetes_image: dict[str, Any] | Any = None, mode: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.kubernetes_image = kubernetes_image
        self.mode = mode

    def image_ref(self) -> str:
        if isinstance(self.kubernetes_image, dict):
            return self.kubernetes_image["image"]
        return self.kubernetes_image or self.images.kubernetes.ref(self.request.commit_sha or LATEST)

    def values(self, settings: Settings) -> dict[str, Any]:
        # kind deploys with `helm install --wait`: its Jobs cannot be post-install hooks (see HELM_WAIT_VALUES).
        extra = values_for_extras(self.image_extras(settings))
        if extra:
            self.log.warning("%s was built without the fab extra: deployed with %s and no create-user Job, not "
                             "the chart's FAB defaults", self.image_ref(), SIMPLE_AUTH_MANAGER)
        return deploy_values(image=self.image_ref(), postgres_image=settings.smoke_postgres_image, extra=extra,
                             helm_wait=self.run_mode(settings) == "kind")

    def image_extras(self, settings: Settings) -> str | None:
        """The extras label of the image under test, where the engine has it (None: unknown)."""
        engine = EngineHook(settings=settings).get_conn()
        if not engine.has_image(self.image_ref()):
            return None
        return (engine.inspect(self.image_ref()).get("Config", {}).get("Labels") or {}).get(EXTRAS_LABEL)

    def check(self, settings: Settings) -> ChartCheck:
        """Lint, render and validate the chart with exactly the values this deploy uses."""
        return check_chart(self.values(settings), release=settings.smoke_helm_release,
                           namespace=settings.smoke_helm_namespace, versions=settings.smoke_kubernetes_versions)

    def run_mode(self, settings: Settings) -> str:
        return resolve_mode(self.mode or settings.smoke_mode)

    def run_id(self, context: Any) -> str:
        return smoke_run_id(context["run_id"], self.python)

    def kind_manager(self, settings: Settings):
        from airflow_image_factory.tasks.kind_manager import KindDeploy, KindDeployManager, cluster_name
        from airflow_image_factory.tasks.kubernetes_hooks import HelmHook, KindHook, KubectlHook

        deploy = KindDeploy(
            cluster=cluster_name(settings.smoke_kind_cluster_name, self.python),
            kind_config=include_dir() / settings.smoke_kind_config,
            node_image=settings.smoke_kind_node_image,
            chart=chart_dir(),
            release=settings.smoke_helm_release,
            namespace=settings.smoke_helm_namespace,
            values=self.values(settings),
            helm_timeout=settings.smoke_helm_timeout,
            helm_tries=settings.smoke_helm_retries,
            health_tries=settings.smoke_health_tries,
            health_interval=settings.smoke_health_interval,
            health_service=api_server_service(settings.smoke_helm_release),
        )
        say = self.log.info
        return KindDeployManager(
            deploy,
            kind=KindHook(on_line=say),
            helm_factory=lambda kubeconfig: HelmHook(kubeconfig=kubeconfig, on_line=say),
            kubectl_factory=lambda kubeconfig: KubectlHook(kubeconfig=kubeconfig, on_line=say),
            docker_cli=settings.docker_cli or "docker",
            say=say,
        )


class BuildKubernetesImageOperator(ImageFactoryOperator):
    """``REG/REPO/BRANCH/kubernetes/pythonX.Y:TAG`` FROM the PROD image ``:TAG`` (the run's SHA, else latest)."""

    timeout_setting = "timeout_build_minutes"

    def __init__(self, *, tag: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.tag = tag

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        tag = self.tag or self.request.commit_sha or LATEST
        prod = self.images.prod.ref(tag)
        target = self.images.kubernetes.ref(tag)
        engine = EngineHook(settings=settings).get_conn()
        registry = self.registry_hook(settings)
        self.log.info("Building %s FROM %s", target, prod)
        report = build_kubernetes_image(engine, prod_image=prod, target=target, on_line=self.log.info,
                                        auth=registry.credentials)
        self.log.info("The Kubernetes test image %s (%s) is ready for smoke deploys", target, report.image_id)
        return {"python": self.python, "image": target, "prod_image": prod, "image_id": report.image_id}


class PrepareSmokeDeployOperator(SmokeOperator):
    """The setup: lint, render and validate the chart with the deploy's values; kind: create the cluster and
    load the image (a failure half-way deletes the cluster again)."""

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        mode = self.run_mode(settings)
        summary = self.check(settings).summary()
        self.log.info("Chart checked with %s: %d objects valid for Kubernetes %s", summary["engine"],
                      len(summary["objects"]), ", ".join(summary["validated_versions"]))
        if mode == "kind":
            manager = self.kind_manager(settings)
            engine = EngineHook(settings=settings).get_conn()
            # The nodes pull nothing from the worker's registries: every image of the chart is loaded.
            images = (self.image_ref(), settings.smoke_postgres_image)
            for image in images:
                if not engine.has_image(image):
                    engine.pull(image)
            try:
                manager.create_cluster()
                for image in images:
                    manager.load_image(image)
            except Exception:
                manager.teardown(logs_dir(self.run_id(context)))
                raise
        return {"python": self.python, "mode": mode, "image": self.image_ref(), "chart": summary}


class SmokeDeployOperator(SmokeOperator):
    """kind: ``helm install --wait`` → health → ``helm upgrade`` → health. docker: the Docker-backed run."""

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        mode = self.run_mode(settings)
        run_id = self.run_id(context)
        if mode == "kind":
            import tempfile

            manager = self.kind_manager(settings)
            with tempfile.TemporaryDirectory(prefix="smoke-kind-") as tmp:
                workdir = Path(tmp)
                manager.install(workdir)
                health = manager.check_health(workdir)
                manager.upgrade(workdir)
                health = manager.check_health(workdir)
            return {"python": self.python, "mode": mode, "image": self.image_ref(), "health": health}

        from airflow_image_factory.services.docker_smoke import DockerSmokeRun, HealthCheck

        rendered = self.check(settings).rendered
        engine = EngineHook(settings=settings).get_conn()
        run = DockerSmokeRun(
            engine.client, rendered, namespace=settings.smoke_helm_namespace, timeout=settings.smoke_timeout,
            health=HealthCheck(api_server_service(settings.smoke_helm_release), API_SERVER_PORT,
                               tries=settings.smoke_health_tries, interval=settings.smoke_health_interval),
            run_id=run_id, on_line=self.log.info, logs_dir=logs_dir(run_id),
        )
        result = run.run()
        self.log.info("Docker-backed smoke run of %s passed in %.0fs", self.image_ref(), result["seconds"])
        return {"python": self.python, "mode": mode, "image": self.image_ref(), "seconds": result["seconds"],
                "pods": result["pods"]}


class SmokeTeardownOperator(SmokeOperator):
    """Always runs: kind: export the cluster's logs, delete the cluster; docker: remove anything left behind."""

    def execute(self, context: Any) -> dict[str, Any]:
        settings = run_settings()
        mode = self.run_mode(settings)
        run_id = self.run_id(context)
        if mode == "kind":
            self.kind_manager(settings).teardown(logs_dir(run_id))
            return {"python": self.python, "mode": mode, "logs": str(logs_dir(run_id))}
        from airflow_image_factory.services.docker_smoke import remove_run

        removed = remove_run(EngineHook(settings=settings).get_conn().client, run_id)
        self.log.info("Left behind by the smoke run and removed now: %s", ", ".join(removed) or "nothing")
        return {"python": self.python, "mode": mode, "removed": removed, "logs": str(logs_dir(run_id))}
