"""The main job as users run it (`make run`): the stack's real Airflow - PostgreSQL, api-server,
scheduler with the LocalExecutor, dag-processor, triggerer - a run triggered through the REST API and
followed in the terminal (include/stack/airflow_server.py).

Main's images are published first (``main_build``), so the run here reuses them by content key: what
is shown is the scheduler's path (parsing, mapped tasks, the pool, the API), not another build.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import requests

from tests.support.dag_runs import AIRFLOW_SERVER_SCRIPT, stack_versions
from tests.support.dag_runs import airflow_server as server

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SCRIPT = str(AIRFLOW_SERVER_SCRIPT)


@pytest.fixture(scope="module")
def airflow_server(real_airflow):
    return real_airflow


@pytest.fixture(scope="module")
def api(real_api) -> requests.Session:
    return real_api


@pytest.fixture(scope="module")
def followed_run(airflow_server, main_build):
    conf = {"branch": "main", "python_versions": stack_versions()[:1]}
    return server("trigger", "build_images", json.dumps(conf))


def test_a_second_up_reuses_what_runs(airflow_server):
    again = server("up", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout


def test_the_run_is_followed_live_to_its_outcome(followed_run):
    out = followed_run.stdout
    assert followed_run.returncode == 0, out[-4000:] + followed_run.stderr[-2000:]
    version = stack_versions()[0]
    # one line per state change, each mapped task named with its Python version
    assert re.search(rf"python\.build_ci \[{re.escape(version)}\]\s+\S+ -> success", out), out[-3000:]
    assert re.search(r"promote_latest\s+\S+ -> success", out)
    done = re.findall(r"progress: done (\d+) / running (\d+) / queued (\d+) of (\d+)", out)
    assert done and done[-1][1:3] == ("0", "0") and done[-1][0] == done[-1][3], done[-3:]
    assert re.search(r"build_images \S+: success - http://127\.0\.0\.1:\d+/dags/build_images/runs/", out)
    assert f"/main/prod/python{version}:latest" in out  # the report table of what was published


def test_the_run_is_in_airflow_as_a_users_run(followed_run, api):
    run_id = re.search(r"triggered build_images (\S+) by", followed_run.stdout).group(1)
    run = api.get(f"{api.base}/api/v2/dags/build_images/dagRuns/{run_id}", timeout=30).json()
    assert run["state"] == "success" and run["run_type"] == "manual"
    assert run["triggering_user_name"] == "admin"
    tis = api.get(f"{api.base}/api/v2/dags/build_images/dagRuns/{run_id}/taskInstances",
                  params={"limit": 1000}, timeout=30).json()["task_instances"]
    builds = [ti for ti in tis if ti["task_id"] == "python.build_ci"]
    assert [ti["rendered_map_index"] for ti in builds] == stack_versions()[:1]
    assert {ti["pool"] for ti in tis if ti["task_id"].startswith("python.build_")} == {"image_builds"}
    # every task ran in a process of the scheduler's executor, not in the test's
    ran = [ti for ti in tis if ti["state"] == "success"]
    assert ran and all(ti["hostname"] and ti["pid"] and ti["pid"] != os.getpid() for ti in ran)


def test_a_conf_the_params_refuse_is_not_run_and_the_field_is_named(airflow_server):
    result = server("trigger", "build_images", json.dumps({"branch": "main", "python_versions": ["2.7"]}))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "build_images refused the conf, nothing ran" in result.stderr
    assert "python_versions" in result.stderr and "2.7" in result.stderr


def test_a_conf_the_validation_rejects_fails_the_followed_run_at_validate(airflow_server):
    result = server("trigger", "build_images", json.dumps({"branch": "main", "registry": "Not A Registry!"}))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "failed tasks: validate" in result.stdout
    # the cause, as the task raised it, naming the field
    assert "validate: InvalidBuildRequests: invalid build request (registry)" in result.stdout
    assert re.search(r"build_images \S+: failed - http://", result.stdout)
    assert not re.search(r"python\.build_\w+ .* -> (running|success)", result.stdout)
