"""The official image's contract on the local stack, for real: the regular and slim PROD variants built
with the defaults' extras (the ``official_build`` session fixture), checked as Airflow's own
``docker-tests`` check the official image, from outside the package (docker CLI, registry API); and an
image broken on purpose, in one point each, fails exactly the checks ``verify_prod`` runs for them."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from airflow_image_factory.clients.engine import Engine
from airflow_image_factory.clients.registry import RegistryClient, config_labels
from airflow_image_factory.clients.settings_loader import load_settings
from airflow_image_factory.policy.image_contract import prod_checks
from tests.conftest import OFFICIAL_REPOSITORY
from tests.support.dag_runs import stack_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

CORE_PROVIDERS = {"common-compat", "common-io", "common-sql", "smtp", "standard"}


def _image(kind: str) -> str:
    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    return f"{registry}/{OFFICIAL_REPOSITORY}/main/{kind}/python{stack_versions()[0]}:latest"


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600, check=check)


def _providers(image: str) -> set[str]:
    out = _docker("run", "--rm", "-e", "AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR", "-e", "CONNECTION_CHECK_MAX_COUNT=0",
                  image, "airflow", "providers", "list", "--output", "json").stdout
    return {p["package_name"].removeprefix("apache-airflow-providers-") for p in json.loads(out)}


@pytest.fixture(scope="module")
def images(official_build) -> dict[str, str]:
    found = {kind: _image(kind) for kind in ("prod", "prod-slim")}
    for ref in found.values():
        _docker("pull", "-q", ref)
    return found


def test_both_variants_were_verified_with_every_check_of_airflows_image_tests(official_build):
    out = official_build.output
    for task in ("python.verify_prod", "python.verify_prod_slim", "python.push_prod", "python.push_prod_slim"):
        assert f"starting task_id={task}" in out, task
    for check in ("default user", "providers", "imports", "as root", "arbitrary uid", "group other than 0",
                  "no command", "airflow alone"):
        assert out.count(f"check {check}") == 2, check  # once in each variant's image


def test_the_variants_are_published_with_their_own_names_and_extras(official_build):
    registry = RegistryClient(os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000"))
    defaults = load_settings(env={})
    extras = {}
    for kind in ("prod", "prod-slim", "prod-build", "prod-slim-build"):
        path = f"{OFFICIAL_REPOSITORY}/main/{kind}/python{stack_versions()[0]}"
        assert registry.manifest_digest(path, "latest"), path
        extras[kind] = config_labels(registry.image_config(path, "latest")).get("org.apache.airflow.extras")
    assert extras["prod"] == extras["prod-build"] == defaults.airflow_extras
    assert extras["prod-slim"] == extras["prod-slim-build"] == ""


def test_the_regular_image_has_airflows_default_providers(images):
    providers = _providers(images["prod"])
    # the providers Airflow's regular image is known for, and airflow-core's own
    assert {"fab", "celery", "cncf-kubernetes", "amazon", "google", "microsoft-azure", "postgres", "mysql",
            "docker", "ssh", "sftp", "http", "openlineage", "opensearch", "snowflake"} | CORE_PROVIDERS <= providers
    assert len(providers) >= 30  # Airflow 3.3 lists 30 in prod_image_installed_providers.txt


def test_the_slim_image_has_only_airflow_cores_providers(images):
    assert _providers(images["prod-slim"]) == CORE_PROVIDERS
    imports = _docker("run", "--rm", "-e", "CONNECTION_CHECK_MAX_COUNT=0", images["prod-slim"], "python", "-c",
                      "import psycopg2", check=False)
    assert imports.returncode != 0  # no extras, no drivers: as Airflow's slim image


@pytest.mark.parametrize("kind", ["prod", "prod-slim"])
def test_no_command_and_airflow_alone_exit_2_as_upstream(images, kind):
    for command in ([], ["airflow"]):
        proc = _docker("run", "--rm", "-e", "CONNECTION_CHECK_MAX_COUNT=0", images[kind], *command, check=False)
        assert proc.returncode == 2, (command, proc.stdout[-500:], proc.stderr[-500:])


def test_an_image_broken_in_each_point_fails_exactly_those_checks(images, tmp_path):
    """FROM the verified regular image: no /clean-logs, a provider and sshtunnel uninstalled, CMD --help,
    and celery without ``celery.backends.database.retry`` (what celery 5.7 did to providers-celery 3.26:
    the provider's package imports, the CeleryExecutor the chart defaults to does not)."""
    broken = f"{images['prod'].rsplit(':', 1)[0]}-broken:test"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {images['prod']}\n"
        "USER 0\n"
        "RUN rm /clean-logs && /opt/airflow/venv/bin/pip uninstall -q -y sshtunnel apache-airflow-providers-ftp\n"
        "RUN echo 'del retry' >> \"$(/opt/airflow/venv/bin/python -c "
        "'import celery.backends.database as m; print(m.__file__)')\"\n"
        "USER 50000\n"
        'CMD ["--help"]\n'
    )
    _docker("build", "-q", "-t", broken, str(tmp_path))
    try:
        engine = Engine(cli=os.environ.get("IMAGE_FACTORY_DOCKER_CLI", ""))
        labels = json.loads(_docker("inspect", "--format", "{{json .Config.Labels}}", broken).stdout)
        failed = {}
        for check in prod_checks(labels["org.opencontainers.image.version"],
                                 extras=labels["org.apache.airflow.extras"]):
            result = engine.run(broken, command=check.command, user=check.user, environment=check.environment,
                                on_line=lambda line: None, timeout=600)
            if problems := check.failures(result.exit_code, result.output):
                failed[check.name] = "; ".join(problems)
        assert set(failed) == {"default user", "providers", "imports", "no command"}, failed
        assert "clean_logs" in failed["default user"]
        assert "apache-airflow-providers-ftp" in failed["providers"]
        assert "sshtunnel" in failed["imports"]
        executors = next(p for p in failed["imports"].split("; ") if p.startswith("imports_executors:"))
        assert "airflow.providers.celery.executors.celery_executor (ImportError: cannot import name 'retry'" \
            in executors
        assert "exit code 0, expected 2" in failed["no command"]
    finally:
        _docker("rmi", "-f", broken, check=False)
