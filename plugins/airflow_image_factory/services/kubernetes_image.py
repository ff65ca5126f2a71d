"""The Kubernetes test image: ``FROM`` the PROD image, with example DAGs and pod templates (include/kubernetes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from airflow_image_factory.clients.engine import BuildReport, BuildSpec, Engine
from airflow_image_factory.clients.settings_loader import include_dir


def kubernetes_context() -> Path:
    return include_dir() / "kubernetes"


def build_spec(*, prod_image: str, target: str, context: Path | None = None) -> BuildSpec:
    """``prod_image`` (``name:SHA`` or ``name:latest``) → ``target``; no registry cache: two COPYs are cheap."""
    return BuildSpec(
        context=context or kubernetes_context(),
        dockerfile="Dockerfile",
        tags=(target,),
        build_args={"AIRFLOW_PROD_IMAGE": prod_image},
        inline_cache=False,
    )


def build_kubernetes_image(
    engine: Engine, *, prod_image: str, target: str, on_line: Callable[[str], None] | None = None,
    auth: tuple[str, str] | None = None,
) -> BuildReport:
    """Pull the PROD image when the engine lacks it, then build the test image on top of it."""
    if not engine.has_image(prod_image):
        engine.pull(prod_image, auth=auth)
    return engine.build(build_spec(prod_image=prod_image, target=target), on_line=on_line)
