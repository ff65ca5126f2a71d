"""ImageAvailableSensor: candidate naming (pure), and real DAG runs (`airflow dags test`, deferral run inline
by Airflow) where the image is pushed while the sensor waits, or never comes.

The DAG runs use a throw-away AIRFLOW_HOME whose dags folder is tests/dags/dag_files (the probe DAG is a
test fixture, not a product DAG), so the shared stack database is not touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.tasks.sensors import resolve_candidates
from tests.support.oci_images import push_image
from tests.support.registry_servers import unique_repo

pytest_plugins = ["tests.support.registry_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


# ---- candidate naming (pure) -------------------------------------------------------------------


def test_candidates_are_named_by_each_registrys_convention():
    candidates = resolve_candidates(
        [{"registry": "ghcr.io", "naming": "slash"}, {"registry": "GHCR.io", "naming": "ghcr-v2"},
         {"registry": "docker.pkg.github.com", "naming": "github-packages", "conn_id": "gh_packages"}],
        kind=ImageKind.CI, repository="Apache/Airflow", branch="main", python="3.11", tag=None, debian="bookworm",
        conn_ids={"ghcr.io": ("image_factory_registry", False)},
    )
    assert [c.ref for c in candidates] == [
        "ghcr.io/apache/airflow/main/ci/python3.11:latest",
        "ghcr.io/apache/airflow-main-python3.11-ci-v2:latest",
        "docker.pkg.github.com/apache/airflow/main-python3.11-ci-v2:latest",
    ]
    assert [(c.conn_id, c.conn_explicit) for c in candidates] == [
        ("image_factory_registry", False), ("image_factory_registry", False), ("gh_packages", True)
    ]


def test_python_base_waits_for_its_fixed_tag_and_a_given_tag_wins():
    base = resolve_candidates([{"registry": "ghcr.io"}], kind=ImageKind.PYTHON_BASE, repository="apache/airflow",
                              branch="v3-1-test", python="3.13", tag=None, debian="trixie")
    assert base[0].ref == "ghcr.io/apache/airflow/v3-1-test/python:3.13-slim-trixie"
    sha = resolve_candidates([{"registry": "ghcr.io"}], kind=ImageKind.PROD, repository="apache/airflow",
                             branch="main", python="3.11", tag="abc1234", debian="bookworm")
    assert sha[0].ref == "ghcr.io/apache/airflow/main/prod/python3.11:abc1234"


@pytest.mark.parametrize("bad", [[], [{"naming": "slash"}], [{"registry": "ghcr.io", "password": "x"}]])
def test_bad_candidates_are_rejected(bad):
    with pytest.raises(ValueError, match="candidates"):
        resolve_candidates(bad, kind=ImageKind.PROD, repository="a/b", branch="main", python="3.11", tag=None,
                           debian="bookworm")


def test_unknown_naming_is_rejected():
    with pytest.raises(ValueError, match="naming convention"):
        resolve_candidates([{"registry": "ghcr.io", "naming": "dots"}], kind=ImageKind.PROD, repository="a/b",
                           branch="main", python="3.11", tag=None, debian="bookworm")


# ---- real DAG runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_env(stack_env, tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("probe-airflow-home")
    dags = str(REPO_ROOT / "tests" / "dags" / "dag_files")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": dags}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def run_probe(env: dict[str, str], conf: dict, *, on_line=None, timeout: int = 300) -> tuple[int, str]:
    """`airflow dags test wait_for_image_probe`, streaming its output to ``on_line``."""
    process = subprocess.Popen(
        [AIRFLOW, "dags", "test", "wait_for_image_probe", "--conf", json.dumps(conf)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if on_line:
            on_line(line)
        if time.monotonic() > deadline:
            process.kill()
    code = process.wait(timeout=30)
    output = "".join(lines)
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"wait_for_image_probe-{int(time.time() * 1000)}.log").write_text(output)
    return code, output


@pytest.mark.stack
def test_sensor_finds_an_image_pushed_while_it_waits_using_the_registrys_connection(
    probe_env, basic_registry, stack_env
):
    repo = unique_repo("helper5-sensor")
    stack_registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    # The authenticated registry is reachable only with its docker Connection (anonymous gets 401),
    # named for it in the registry_connections setting: the sensor, its trigger and the task after it
    # all find the credentials the same way.
    conn = {"conn_type": "docker", "host": basic_registry.host, "login": basic_registry.username,
            "password": basic_registry.password}
    env = {**probe_env, "AIRFLOW_CONN_PROBE_BASIC": json.dumps(conn), "WAIT_FOR_IMAGE_PROBE_TIMEOUT": "90",
           "IMAGE_FACTORY_REGISTRY_CONNECTIONS": json.dumps({basic_registry.host: "probe_basic"})}
    conf = {
        "candidates": [
            {"registry": stack_registry, "naming": "slash"},  # never gets it
            {"registry": basic_registry.host, "naming": "github-packages"},
        ],
        "repository": repo, "branch": "main", "python": "3.11", "kind": "prod",
    }
    target_path = f"{repo}/main-python3.11-v2"  # github-packages naming of the PROD image
    pushed = {}

    def push_when_waiting(line: str) -> None:
        if "Waiting (deferred" in line and "image" not in pushed:
            pushed["image"] = None

            def push():
                time.sleep(3)
                with basic_registry.client() as client:
                    pushed["image"] = push_image(client, target_path, "latest")

            pushed["thread"] = threading.Thread(target=push)
            pushed["thread"].start()

    code, output = run_probe(env, conf, on_line=push_when_waiting)
    pushed.get("thread") and pushed["thread"].join()
    assert code == 0, output[-5000:]
    assert pushed.get("image") is not None, "the sensor never started waiting"
    assert "Not yet in any of" in output  # it waited: the first rounds found nothing
    assert f"USING REGISTRY {basic_registry.host} naming=github-packages digest={pushed['image'].digest}" in output
    assert basic_registry.password not in output  # the secret stays out of logs and XCom


@pytest.mark.stack
def test_sensor_times_out_cleanly_when_no_image_comes(probe_env, stack_env):
    repo = unique_repo("helper5-nothing")
    stack_registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    env = {**probe_env, "WAIT_FOR_IMAGE_PROBE_TIMEOUT": "4"}
    conf = {"candidates": [{"registry": stack_registry, "naming": "slash"}], "repository": repo}
    started = time.monotonic()
    code, output = run_probe(env, conf)
    assert code != 0
    assert "AirflowSensorTimeout" in output
    assert f"none of {stack_registry}/{repo}/main/prod/python3.11:latest appeared within 4s" in output
    assert "USING REGISTRY" not in output  # nothing downstream ran
    assert time.monotonic() - started < 120
    with RegistryClient(stack_registry) as client:
        assert client.manifest_digest(f"{repo}/main/prod/python3.11", "latest") is None
