"""A deferrable ImageAvailableSensor on a real Airflow (include/stack/airflow_server.py): while the image is
missing the task is ``deferred`` (REST API), its trigger runs in the triggerer and it holds no slot of its
pool; once the image is pushed, the triggerer fires and the task succeeds.

The server is an instance of its own (AIRFLOW_SERVER_INSTANCE, free ports), so a server `make run` keeps
for its user is neither needed nor touched; it serves tests/dags/dag_files (wait_for_image_probe) as an
extra DAG bundle, and is removed with its database at the end. The image is a tiny one pushed straight
through the registry API to a repository of this test, and deleted again. The same instance shows the
promotion lock as a real task takes it: in the server's PostgreSQL (tests/dags/dag_files/promotion_lock_probe.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_image_factory.clients.registry import RegistryClient
from airflow_image_factory.policy.naming import ImageKind
from airflow_image_factory.tasks.sensors import resolve_candidates
from tests.reliability.conftest import upstream_host
from tests.support.dag_runs import ARTIFACTS, airflow_server
from tests.support.oci_images import push_image

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "include/stack/airflow_server.py"
INSTANCE = "deferral-test"
DAG_ID = "wait_for_image_probe"
SENSOR = "wait_deferred"
TRIGGER_CLASS = "airflow_image_factory.tasks.triggers.ImageAvailableTrigger"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server(env: dict[str, str], *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return airflow_server(*args, env=env, log="airflow-server-deferral", timeout=timeout)


@pytest.fixture(scope="module")
def server(stack_env):
    """The running instance's module (its URL, logs, Api) with the env it was started with."""
    env = {
        **os.environ,
        "AIRFLOW_SERVER_INSTANCE": INSTANCE,
        "AIRFLOW_SERVER_PORT": str(_free_port()),
        "AIRFLOW_SERVER_DB_PORT": str(_free_port()),
        "AIRFLOW_SERVER_EXTRA_DAGS": str(REPO_ROOT / "tests/dags/dag_files"),
        "WAIT_FOR_IMAGE_PROBE_TIMEOUT": "300",  # the sensor's bound; the image comes long before
    }
    saved = {key: os.environ.get(key) for key in env if key.startswith(("AIRFLOW_SERVER_", "WAIT_FOR"))}
    os.environ.update({key: env[key] for key in saved})
    # A module of its own: its settings are read from the environment when it is loaded.
    spec = importlib.util.spec_from_file_location("airflow_server_deferral", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        started = _server(env, "up")
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield module
    finally:
        _server(env, "down", timeout=180)
        module.docker("volume", "rm", "-f", module.DB_VOLUME, check=False)
        shutil.rmtree(module.HOME, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def awaited_image(stack_env):
    """Where the sensor looks (a repository of this test), and the client that pushes it there; whatever
    was pushed is deleted afterwards."""
    repository = f"deferral-test/{secrets.token_hex(4)}"
    (candidate,) = resolve_candidates([{"registry": "localhost:5000", "naming": "slash"}], kind=ImageKind.PROD,
                                      repository=repository, branch="main", python="3.11", tag=None,
                                      debian="bookworm")
    client = RegistryClient(upstream_host(), retries=2, backoff=0.2)
    pushed: list[str] = []
    yield {"repository": repository, "candidate": candidate, "client": client, "pushed": pushed}
    for digest in pushed:
        client.delete_manifest(candidate.path, digest)
    client.close()


def _wait_for(what: str, probe, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:.0f}s")
        time.sleep(every)


def test_a_deferred_sensor_holds_no_slot_and_resumes_when_the_image_is_pushed(server, awaited_image):
    started = time.monotonic()
    api = server.Api()
    _wait_for(f"{DAG_ID} parsed from the extra bundle",
              lambda: api.call("GET", f"/dags/{DAG_ID}", ok=(200, 404)).status_code == 200, 120, 2)
    api.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    candidate = awaited_image["candidate"]
    conf = {"candidates": [{"registry": "localhost:5000", "naming": "slash"}],
            "repository": awaited_image["repository"], "branch": "main", "python": "3.11", "kind": "prod"}
    run_id = api.call("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}).json()[
        "dag_run_id"]
    ti_path = f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{SENSOR}"

    def sensor() -> dict:
        return api.call("GET", ti_path).json()

    def state_is(*states: str):
        return lambda: (ti := sensor())["state"] in states and ti

    deferred = _wait_for(f"{SENSOR} deferred", state_is("deferred", "failed", "success"), 90)
    assert deferred["state"] == "deferred", deferred
    assert deferred["trigger"]["classpath"] == TRIGGER_CLASS
    # The triggerer takes the trigger on (its job id on the trigger), the running triggerer of this server.
    trigger = _wait_for("the trigger taken by a triggerer",
                        lambda: (ti := sensor())["trigger"] and ti["trigger"]["triggerer_id"] and ti["trigger"], 30)
    jobs = api.call("GET", "/jobs", params={"job_type": "TriggererJob", "is_alive": True}).json()["jobs"]
    assert trigger["triggerer_id"] in {job["id"] for job in jobs}, (trigger, jobs)
    # The image is still missing: the registry has no such tag while the task waits.
    assert awaited_image["client"].manifest_digest(candidate.path, candidate.tag) is None

    def log_lines() -> list[str]:
        log = api.call("GET", f"{ti_path}/logs/{deferred['try_number']}", headers={"Accept": "application/json"})
        return [entry.get("event", "") for entry in log.json().get("content", []) if isinstance(entry, dict)]

    # The trigger asks the registry in the triggerer and finds nothing yet: its rounds are in the task's log.
    _wait_for("a round of the trigger without the image",
              lambda: any(line.startswith(f"Not yet in any of {candidate.ref}") for line in log_lines()), 60)
    # Meanwhile the task holds no slot of its pool: it counts as deferred there, not as occupied or running.
    pool = api.call("GET", f"/pools/{quote(deferred['pool'], safe='')}").json()
    assert pool["include_deferred"] is False, pool
    assert (pool["deferred_slots"], pool["occupied_slots"], pool["running_slots"]) == (1, 0, 0), pool
    assert sensor()["state"] == "deferred"

    # Airflow 3.3's scheduler fails a deferred task whose trigger fires before it has drained the
    # executor's "success" of the process that deferred (apache/airflow#71580, #72716: a stale defer-exit
    # event). A user's push comes minutes later; here it comes seconds later, so wait until that process
    # has ended and the scheduler has had a few loops to read its event.
    worker = deferred.get("pid")
    _wait_for("the process that deferred to exit",
              lambda: not (worker and Path(f"/proc/{worker}").exists()), 60, 0.5)
    time.sleep(5)
    image = push_image(awaited_image["client"], candidate.path, candidate.tag)
    awaited_image["pushed"].append(image.digest)
    done = _wait_for(f"{SENSOR} done after the push", state_is("success", "failed", "up_for_retry"), 60)
    assert done["state"] == "success", done
    assert done["try_number"] == deferred["try_number"]  # resumed, not retried

    lines = log_lines()
    (ARTIFACTS / "deferral-sensor-log.txt").write_text("\n".join(lines))
    # The lines of the trigger come from the triggerer job that took it (Airflow keeps them in a file of its
    # own per triggerer), and the found round follows rounds without the image.
    assert any(line.endswith(f".log.trigger.{trigger['triggerer_id']}.log") for line in lines), lines[:5]
    found_after = [line for line in lines if line.startswith(f"Found {candidate.ref} after ")]
    assert found_after and int(found_after[0].split(" after ")[1].split()[0]) >= 2, found_after
    found = api.call("GET", f"{ti_path}/xcomEntries/return_value").json()["value"]
    if isinstance(found, str):
        found = json.loads(found)
    assert found["ref"] == candidate.ref and found["digest"] == image.digest, found
    print(f"deferral shown and resumed in {time.monotonic() - started:.0f}s")


def test_a_real_task_holds_the_promotion_lock_in_the_metadata_database(server, stack_env):
    """The promotion lock as a task of this server takes it (auto: the server's lock Connection names its
    PostgreSQL metadata database): an advisory lock of the task's session, gone when the task is done."""
    import psycopg2

    from airflow_image_factory.clients.locks import advisory_key

    api = server.Api()
    dag_id = "promotion_lock_probe"
    _wait_for(f"{dag_id} parsed", lambda: api.call("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 200,
              120, 2)
    api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    repository = f"deferral-test/{secrets.token_hex(4)}"
    conf = {"repository": repository, "seconds": 15}
    run_id = api.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}).json()["dag_run_id"]
    unsigned = advisory_key("localhost:5000", repository, "main") & 0xFFFF_FFFF_FFFF_FFFF
    database = psycopg2.connect(host="127.0.0.1", port=server.DB_PORT, user="airflow", password=server.db_password(),
                                dbname="airflow")
    database.autocommit = True

    def holders() -> list[tuple]:
        with database.cursor() as cursor:
            cursor.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s",
                (unsigned >> 32, unsigned & 0xFFFF_FFFF))
            return cursor.fetchall()

    try:
        assert _wait_for("the task holding the lock", holders, 90, 0.5) == [(run_id[:63],)]
        ti_path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/hold_promotion_lock"
        done = _wait_for("the task done", lambda: (ti := api.call("GET", ti_path).json())["state"] in (
            "success", "failed", "up_for_retry") and ti, 60)
        assert done["state"] == "success", done
        name = api.call("GET", f"{ti_path}/xcomEntries/return_value").json()["value"]
        assert "PostgreSQL advisory lock" in name and "(Connection image_factory_promotion_lock)" in name, name
        assert holders() == []
    finally:
        database.close()
