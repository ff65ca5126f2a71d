"""The helm chart: the values a smoke deploy uses, rendering and linting with Helm's own engine, and
validation of every rendered object against the Kubernetes schema of the supported versions.

Helm's engine is the ``helm`` binary where one is on PATH, else the ``helm-python-sdk`` package (Helm's Go
SDK as a shared library), so rendering never depends on a hand-written template engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_image_factory.clients.settings_loader import include_dir
from airflow_image_factory.exceptions import ChartInvalid
from airflow_image_factory.policy.reference import name_and_tag
from airflow_image_factory.policy.settings import extras_of

HOOK_ANNOTATION = "helm.sh/hook"
API_SERVER_PORT = 8080  # the chart's default apiServer.port and service port
HEALTH_PATH = "/api/v2/monitor/health"


def chart_dir() -> Path:
    """``helm/`` at the top of the repository (next to ``include/``)."""
    return include_dir().parent / "helm"


def api_server_service(release: str, chart_name: str = "airflow") -> str:
    """The api-server Service's name, as the chart's ``airflow.fullname`` helper makes it (tested against a render)."""
    fullname = release if chart_name in release else f"{release}-{chart_name}"
    return f"{fullname[:63].rstrip('-')}-api-server"[:63].rstrip("-")


# `helm install --wait` waits for the pods before it runs any post-install hook, and the pods wait for the
# migration hook: with --wait the Jobs must be plain Jobs (the official chart gives the same advice).
HELM_WAIT_VALUES: dict[str, Any] = {"migrateDatabaseJob": {"useHelmHooks": False},
                                    "createUserJob": {"useHelmHooks": False}}


SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# The chart's FAB defaults need the fab provider; an image built without it (a slim image, the test suite's
# light builds) is deployed as its users must deploy it: Airflow's own auth manager and no FAB user.
WITHOUT_FAB_VALUES: dict[str, Any] = {"config": {"core": {"auth_manager": SIMPLE_AUTH_MANAGER}},
                                      "createUserJob": {"enabled": False}}


def values_for_extras(extras: str | None) -> dict[str, Any]:
    """Values an image's extras (its EXTRAS_LABEL) call for: none where the label is unknown or has fab."""
    if extras is None or "fab" in extras_of(extras):
        return {}
    return WITHOUT_FAB_VALUES


def deploy_values(
    *, image: str, postgres_image: str, extra: Mapping[str, Any] | None = None, helm_wait: bool = False,
) -> dict[str, Any]:
    """The values every smoke deploy sets: the image under test and the in-chart database's image.

    kind + helm and the Docker-backed run both use exactly these, so both deploy the same thing; except that
    ``helm_wait`` (kind's ``helm install --wait``) turns the hook Jobs into plain Jobs.
    """
    repository, tag = name_and_tag(image)
    pg_repository, pg_tag = name_and_tag(postgres_image)
    values: dict[str, Any] = {
        "images": {
            "airflow": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
            "postgresql": {"repository": pg_repository, "tag": pg_tag, "pullPolicy": "IfNotPresent"},
        },
        "postgresql": {"enabled": True},
    }
    if helm_wait:
        values = _merge(values, HELM_WAIT_VALUES)
    return _merge(values, dict(extra or {}))


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Rendered:
    """The objects of one render, in file order, plus NOTES.txt."""

    objects: tuple[dict[str, Any], ...]
    notes: str = ""

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
                return obj
        raise KeyError(f"{kind}/{name} is not in the rendered chart")

    @staticmethod
    def is_hook(obj: Mapping[str, Any]) -> bool:
        return HOOK_ANNOTATION in ((obj.get("metadata") or {}).get("annotations") or {})


@dataclass(frozen=True)
class LintReport:
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class HelmEngine:
    """Helm's template engine: the ``helm`` CLI when present (or named), else the embedded Go SDK."""

    binary: str | None = None
    timeout: float = 120
    _sdk: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.binary is None:
            self.binary = shutil.which("helm")
        if not self.binary:
            try:
                import helm_python
            except ImportError as exc:  # pragma: no cover - the package is a test/runtime dependency
                raise ChartInvalid(
                    "no helm binary on PATH and the helm-python-sdk package is not installed: nothing can render"
                ) from exc
            self._sdk = helm_python

    @property
    def name(self) -> str:
        return f"helm CLI ({self.binary})" if self.binary else f"helm-python-sdk {self._sdk.__version__}"

    def _cli(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        assert self.binary
        return subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=self.timeout, check=False)

    def render(
        self, chart: Path, values: Mapping[str, Any], *, release: str, namespace: str, kube_version: str | None = None
    ) -> Rendered:
        """``helm template``: every object of an install (hooks included) and NOTES.txt."""
        if self._sdk is not None:
            with self._sdk.Chart.load(str(chart)) as loaded:
                try:
                    loaded.validate_schema(dict(values))
                    files = loaded.render(dict(values), name=release, namespace=namespace, is_install=True)
                except self._sdk.HelmError as exc:
                    raise ChartInvalid(f"helm render of {chart} failed: {exc}") from exc
            notes = "".join(text for path, text in files.items() if path.endswith("NOTES.txt"))
            docs = [text for path, text in sorted(files.items()) if not path.endswith(".txt")]
            return Rendered(tuple(_parse(docs)), notes)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(values, handle)
            handle.flush()
            args = ["template", release, str(chart), "--namespace", namespace, "--values", handle.name]
            if kube_version:
                args += ["--kube-version", kube_version]
            result = self._cli(args)
            if result.returncode != 0:
                raise ChartInvalid(f"helm template of {chart} failed: {result.stderr.strip()}")
            notes_result = self._cli([*args, "--show-only", "templates/NOTES.txt"])
        return Rendered(tuple(_parse([result.stdout])), notes_result.stdout if notes_result.returncode == 0 else "")

    def lint(self, chart: Path, values: Mapping[str, Any], *, kube_version: str | None = None) -> LintReport:
        """``helm lint --strict`` with the given values."""
        if self._sdk is not None:
            report = self._sdk.lint(str(chart), dict(values), strict=True, kube_version=kube_version)
            by_level: dict[int, list[str]] = {1: [], 2: [], 3: []}
            for message in report.get("messages", []):
                by_level.setdefault(message["severity"], []).append(f"{message['path']}: {message['error']}")
            errors = [*by_level[3], *report.get("errors", [])]
            return LintReport(tuple(errors), tuple(by_level[2]), tuple(by_level[1]))
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(values, handle)
            handle.flush()
            args = ["lint", str(chart), "--strict", "--values", handle.name]
            if kube_version:
                args += ["--kube-version", kube_version]
            result = self._cli(args)
        lines = (result.stdout + result.stderr).splitlines()
        errors = [line for line in lines if line.startswith("[ERROR]")]
        if result.returncode != 0 and not errors:
            errors = [line for line in lines if line.strip()][-5:]
        return LintReport(
            tuple(errors),
            tuple(line for line in lines if line.startswith("[WARNING]")),
            tuple(line for line in lines if line.startswith("[INFO]")),
        )


def _parse(documents: Iterable[str]) -> list[dict[str, Any]]:
    objects = []
    for text in documents:
        for obj in yaml.safe_load_all(text):
            if obj:
                if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
                    raise ChartInvalid(f"the chart rendered something that is not a Kubernetes object: {obj!r:.200}")
                objects.append(obj)
    return objects


def validate_objects(objects: Iterable[Mapping[str, Any]], versions: Sequence[str]) -> dict[str, list[str]]:
    """Check every object against the (strict) Kubernetes schema of each version; raise naming all failures.

    Returns ``{version: [kind/name, ...]}`` of what was validated.
    """
    import kubernetes_validate

    if not versions:
        raise ChartInvalid("no Kubernetes versions to validate against (smoke_kubernetes_versions is empty)")
    checked: dict[str, list[str]] = {}
    problems: list[str] = []
    for version in versions:
        checked[version] = []
        for obj in objects:
            ident = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
            try:
                kubernetes_validate.validate(dict(obj), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"{ident} (Kubernetes {version}) at {where or '<root>'}: {exc.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as exc:
                problems.append(f"{ident} (Kubernetes {version}): no schema: {exc}")
            else:
                checked[version].append(ident)
    if problems:
        raise ChartInvalid("rendered objects do not validate:\n" + "\n".join(problems))
    return checked


@dataclass(frozen=True)
class ChartCheck:
    """Result of :func:`check_chart`: the render (for the run that follows) and what was checked."""

    rendered: Rendered
    engine: str
    lint: LintReport
    validated: dict[str, list[str]]

    def summary(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in self.rendered.objects],
            "lint_warnings": list(self.lint.warnings),
            "validated_versions": sorted(self.validated),
        }


def check_chart(
    values: Mapping[str, Any], *, release: str, namespace: str, versions: Sequence[str],
    chart: Path | None = None, engine: HelmEngine | None = None,
) -> ChartCheck:
    """Lint, render and validate: the chart a smoke deploy is about to deploy, with the values it will use."""
    chart = chart or chart_dir()
    engine = engine or HelmEngine()
    report = engine.lint(chart, values)
    if not report.ok:
        raise ChartInvalid(f"helm lint of {chart} failed ({engine.name}):\n" + "\n".join(report.errors))
    rendered = engine.render(chart, values, release=release, namespace=namespace)
    validated = validate_objects(rendered.objects, versions)
    return ChartCheck(rendered, engine.name, report, validated)
