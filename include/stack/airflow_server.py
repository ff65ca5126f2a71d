"""The stack's real Airflow, as users run one: PostgreSQL, api-server, scheduler (LocalExecutor),
dag-processor and triggerer, with this package's DAGs and plugins folders; and a run triggered through
the REST API and followed live in the terminal.

    python include/stack/airflow_server.py up                 start what is not running (a second call reuses it)
    python include/stack/airflow_server.py down               stop what `up` started (the database's data stays)
    python include/stack/airflow_server.py trigger DAG [CONF] trigger a run (CONF: a JSON object) and follow it;
                                                              exits 0 when the run succeeded, 1 when it failed

Run with the stack's environment (``source .stack/env``: the package's settings, the DAGs and plugins
folders). Its own Airflow home is ``$STACK_DIR/airflow-server`` (``make dag`` and the tests keep their
in-process SQLite home), logs go to ``$STACK_DIR/logs/airflow-<component>.log``.

Environment: STACK_DIR; AIRFLOW_SERVER_PORT (8080) and AIRFLOW_SERVER_DB_PORT (55432) on 127.0.0.1;
IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE (the stack's PostgreSQL image, set by include/stack/postgres-image.sh);
AIRFLOW_SERVER_POOL_SLOTS (2: concurrent image builds on the engine); AIRFLOW_SERVER_FOLLOW_TIMEOUT (7200 s);
AIRFLOW_SERVER_INSTANCE (empty: a second server beside the first, with its own home, database container
and volume, pid files and logs - give it other ports too); AIRFLOW_SERVER_EXTRA_DAGS (a folder served as a
second DAG bundle beside the DAGs folder, e.g. tests/dags/dag_files for the stack tests).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STACK_DIR") or REPO_ROOT / ".stack")
INSTANCE = os.environ.get("AIRFLOW_SERVER_INSTANCE", "")
SUFFIX = f"-{INSTANCE}" if INSTANCE else ""
HOME = STACK_DIR / f"airflow-server{SUFFIX}"
LOGS = STACK_DIR / "logs"
RUN = STACK_DIR / "run"
API_PORT = int(os.environ.get("AIRFLOW_SERVER_PORT", "8080"))
DB_PORT = int(os.environ.get("AIRFLOW_SERVER_DB_PORT", "55432"))
URL = f"http://127.0.0.1:{API_PORT}"
DB_CONTAINER = f"image-factory-airflow-db{SUFFIX}"
DB_VOLUME = f"image-factory-airflow-db{SUFFIX}"
EXTRA_DAGS = os.environ.get("AIRFLOW_SERVER_EXTRA_DAGS", "")
USER = "admin"
POOL = "image_builds"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
# Each runs in its own session so that `down` stops it with the workers it started.
COMPONENTS = {
    "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(API_PORT), "-w", "1"],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
}
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}


def say(message: str) -> None:
    print(f"[airflow] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[airflow] ERROR: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def secret_file(name: str, make) -> str:
    """A value made once and kept (0600) in the server's home: the same on every `up`."""
    path = HOME / name
    if not path.exists():
        HOME.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


def db_password() -> str:
    return secret_file("db-password", lambda: secrets.token_urlsafe(24))


def admin_password() -> str:
    """The simple auth manager reads users' passwords from this JSON file (its own format)."""
    passwords = json.loads(secret_file("passwords.json", lambda: json.dumps({USER: secrets.token_urlsafe(18)})))
    return passwords[USER]


def dag_bundles() -> dict[str, str]:
    """The DAGs folder, and the extra folder as a bundle of its own (Airflow keeps the DAGs apart by bundle)."""
    if not EXTRA_DAGS:
        return {}
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [{"name": "dags-folder", "classpath": local, "kwargs": {}},
               {"name": "extra-dags", "classpath": local, "kwargs": {"path": str(Path(EXTRA_DAGS).resolve())}}]
    return {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)}


def server_env() -> dict[str, str]:
    """The stack's environment (settings, DAGs and plugins folders) with the server's own home and database."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"postgresql+psycopg2://airflow:{db_password()}@127.0.0.1:{DB_PORT}/airflow"
        ),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(HOME / "passwords.json"),
        # Every component signs or checks the tasks' tokens: one secret for all of them.
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file("jwt-secret", lambda: secrets.token_urlsafe(32)),
        "AIRFLOW__API__BASE_URL": URL,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{URL}/execution/",
        # New DAG files show up within seconds, not the default five minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # The promotion lock is held in the metadata database (locks.py), through the Connection a
        # deployment with a PostgreSQL metadata database defines: tasks cannot read Airflow's own setting.
        "AIRFLOW_CONN_IMAGE_FACTORY_PROMOTION_LOCK": json.dumps({
            "conn_type": "postgres", "host": "127.0.0.1", "port": DB_PORT, "login": "airflow",
            "password": db_password(), "schema": "airflow",
        }),
        # The run's note is written through the REST API (clients/airflow_api.py: the Task SDK cannot).
        "AIRFLOW_CONN_IMAGE_FACTORY_AIRFLOW_API": json.dumps({
            "conn_type": "http", "host": URL, "login": USER, "password": admin_password(),
        }),
        **dag_bundles(),
    }


# ---------------------------------------------------------------------------------------- the database


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cli = os.environ.get("IMAGE_FACTORY_DOCKER_CLI") or "docker"
    try:
        return subprocess.run([cli, *args], capture_output=True, text=True, check=check)
    except FileNotFoundError:
        if check:
            fail(f"no docker CLI ({cli}): run `make stack`")
        return subprocess.CompletedProcess([cli, *args], 127, "", f"{cli}: not found")


def start_database() -> None:
    if not (HOME / "db-password").exists():
        # A database left by a server home that is gone has a password no one knows any more: make it anew.
        if docker("volume", "inspect", DB_VOLUME, check=False).returncode == 0:
            say(f"postgres: volume {DB_VOLUME} belongs to a server home that is gone (with its password): made anew")
            docker("rm", "-f", DB_CONTAINER, check=False)
            docker("volume", "rm", "-f", DB_VOLUME)
    state = docker("inspect", "-f", "{{.State.Running}}", DB_CONTAINER, check=False)
    if state.returncode == 0 and state.stdout.strip() == "true":
        say(f"postgres: {DB_CONTAINER} is running (127.0.0.1:{DB_PORT})")
    else:
        if state.returncode == 0:
            docker("rm", "-f", DB_CONTAINER)
        image = os.environ.get("IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE")
        if not image:
            fail("IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE is not set: run `make stack` (postgres-image.sh sets it)")
        say(f"postgres: starting {image} as {DB_CONTAINER} on 127.0.0.1:{DB_PORT} (data: volume {DB_VOLUME})")
        docker("run", "-d", "--name", DB_CONTAINER, "-p", f"127.0.0.1:{DB_PORT}:5432",
               "-v", f"{DB_VOLUME}:/var/lib/postgresql/data",
               "-e", "POSTGRES_USER=airflow", "-e", "POSTGRES_DB=airflow", "-e", f"POSTGRES_PASSWORD={db_password()}",
               image)
    deadline = time.monotonic() + 90
    while docker("exec", DB_CONTAINER, "pg_isready", "-h", "127.0.0.1", "-U", "airflow", check=False).returncode:
        if time.monotonic() > deadline:
            fail(f"postgres did not accept connections in 90 s: {docker('logs', '--tail', '20', DB_CONTAINER).stderr}")
        time.sleep(1)
    login = docker("exec", "-e", f"PGPASSWORD={db_password()}", DB_CONTAINER, "psql", "-h", "127.0.0.1",
                   "-U", "airflow", "-d", "airflow", "-tAc", "SELECT 1", check=False)
    if login.returncode:
        fail(f"the database in volume {DB_VOLUME} does not take the password in {HOME / 'db-password'} (it was "
             f"made with another server home): restore that file, or drop the database with `make airflow-down` "
             f"and `docker volume rm {DB_VOLUME}`")


# ---------------------------------------------------------------------------------------- the components


def pidfile(name: str) -> Path:
    return RUN / f"airflow{SUFFIX}-{name}.pid"


def running(name: str) -> int | None:
    """The pid of ``name`` when `up` started it and it still runs. `up` starts each component as the
    leader of a session of its own, so a pid reused by another process does not pass (its session
    differs); the command line does not tell, as Airflow's processes retitle themselves."""
    try:
        pid = int(pidfile(name).read_text())
        return pid if os.getsid(pid) == pid else None
    except (OSError, ValueError):
        return None


def health() -> dict[str, str | None]:
    """The api-server's word on the database and each component: ``healthy`` or not (None: no answer)."""
    try:
        answer = requests.get(f"{URL}/api/v2/monitor/health", timeout=5)
        report = answer.json() if answer.ok else {}
    except (requests.RequestException, ValueError):
        report = {}
    return {part: (report.get(part) or {}).get("status")
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")}


def healthy() -> bool:
    return all(state == "healthy" for state in health().values())


def up() -> None:
    for directory in (HOME, LOGS, RUN):
        directory.mkdir(parents=True, exist_ok=True)
    start_database()
    if all(running(name) for name in COMPONENTS) and healthy():
        say(f"already running: {URL}")
        return
    env = server_env()
    say(f"migrating the metadata database (log: {LOGS / f'airflow{SUFFIX}-migrate.log'})")
    with (LOGS / f"airflow{SUFFIX}-migrate.log").open("a") as log:
        for argv in (["db", "migrate"],
                     ["pools", "set", POOL, os.environ.get("AIRFLOW_SERVER_POOL_SLOTS", "2"), "image builds"]):
            if subprocess.run([AIRFLOW, *argv], env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
                fail(f"airflow {' '.join(argv)} failed; see {log.name}")
    for name, argv in COMPONENTS.items():
        if running(name):
            continue
        with (LOGS / f"airflow{SUFFIX}-{name}.log").open("a") as log:
            process = subprocess.Popen([AIRFLOW, *argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        pidfile(name).write_text(f"{process.pid}\n")
        say(f"{name}: started (pid {process.pid}, log: {LOGS / f'airflow{SUFFIX}-{name}.log'})")
    deadline = time.monotonic() + 240
    while True:
        states = health()
        if all(state == "healthy" for state in states.values()):
            break
        dead = [name for name in COMPONENTS if not running(name)]
        if dead or time.monotonic() > deadline:
            fail(f"not healthy ({states}); {'exited: ' + ', '.join(dead) if dead else 'timed out'}; see {LOGS}")
        time.sleep(2)
    say(f"running: {URL} (user {USER}, password in {HOME / 'passwords.json'})")


def down() -> None:
    for name in COMPONENTS:
        pid = running(name)
        if pid is None:
            pidfile(name).unlink(missing_ok=True)
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while running(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        if running(name):
            os.killpg(pid, signal.SIGKILL)
        pidfile(name).unlink(missing_ok=True)
        say(f"{name}: stopped")
    if docker("inspect", DB_CONTAINER, check=False).returncode == 0:
        docker("rm", "-f", DB_CONTAINER)
        say(f"postgres: {DB_CONTAINER} stopped (its data stays in volume {DB_VOLUME})")


# ---------------------------------------------------------------------------------------- a run


class Api:
    """The REST API as the trigger form's user: a token from the simple auth manager's /auth/token."""

    def __init__(self) -> None:
        self.session = requests.Session()
        answer = self.session.post(f"{URL}/auth/token", json={"username": USER, "password": admin_password()},
                                   timeout=30)
        if not answer.ok:
            fail(f"no token from {URL}/auth/token: HTTP {answer.status_code} {answer.text[:200]}")
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        answer = self.session.request(method, f"{URL}/api/v2{path}", timeout=30, **kwargs)
        if answer.status_code not in ok:
            fail(f"{method} {path}: HTTP {answer.status_code} {answer.text[:400]}")
        return answer


def task_label(ti: dict) -> str:
    version = ti.get("rendered_map_index") or (str(ti["map_index"]) if ti.get("map_index", -1) >= 0 else "")
    return f"{ti['task_id']} [{version}]" if version else ti["task_id"]


def trigger(dag_id: str, conf: dict) -> int:
    api = Api()
    deadline = time.monotonic() + 180
    while api.call("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 404:
        if time.monotonic() > deadline:
            fail(f"{dag_id} was not parsed within 180 s; see {LOGS / f'airflow{SUFFIX}-dag-processor.log'}")
        time.sleep(2)
    api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    answer = api.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, ok=(200, 400))
    if answer.status_code == 400:  # the DAG's params refused the conf: nothing was queued
        detail = answer.json().get("detail", answer.text) if answer.headers.get("content-type", "").startswith(
            "application/json") else answer.text
        fail(f"{dag_id} refused the conf, nothing ran: {str(detail)[:1500]}")
    run = answer.json()
    run_id = run["dag_run_id"]
    run_path = f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
    ui = f"{URL}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
    say(f"triggered {dag_id} {run_id} by {run.get('triggering_user_name') or USER}: {ui}")
    seen: dict[tuple[str, int], str] = {}
    last_progress = ""
    limit = time.monotonic() + float(os.environ.get("AIRFLOW_SERVER_FOLLOW_TIMEOUT", "7200"))
    while True:
        state = api.call("GET", run_path).json()["state"]
        tis = api.call("GET", f"{run_path}/taskInstances", params={"limit": 1000}).json()["task_instances"]
        for ti in sorted(tis, key=lambda t: (t.get("start_date") or "~", t["task_id"], t.get("map_index", -1))):
            key = (ti["task_id"], ti.get("map_index", -1))
            now = ti.get("state") or "none"
            if seen.get(key) != now:
                before = seen.get(key)
                seen[key] = now
                if before is not None or now != "none":
                    stamp = datetime.now().strftime("%H:%M:%S")
                    print(f"{stamp} {task_label(ti):45} {before or 'none':>15} -> {now}", flush=True)
        counts = {"done": 0, "running": 0, "queued": 0}
        # The run's tasks as they are now: a mapped task's placeholder is gone once it is expanded.
        for now in ((ti.get("state") or "none") for ti in tis):
            if now in TERMINAL:
                counts["done"] += 1
            elif now in ("running", "deferred", "up_for_retry", "restarting"):
                counts["running"] += 1
            else:
                counts["queued"] += 1
        progress = f"done {counts['done']} / running {counts['running']} / queued {counts['queued']} of {len(tis)}"
        if progress != last_progress:
            print(f"         progress: {progress}", flush=True)
            last_progress = progress
        if state in ("success", "failed"):
            break
        if time.monotonic() > limit:
            fail(f"{run_id} still {state} after the follow timeout; it goes on in Airflow: {ui}")
        time.sleep(2)
    report_table(api, run_path)
    # Tasks that failed themselves (not upstream_failed), the first to end first: that is the cause.
    failed = sorted((ti for ti in tis if ti.get("state") == "failed"), key=lambda ti: ti.get("end_date") or "~")
    if failed:
        say(f"failed tasks: {', '.join(task_label(ti) for ti in failed)}")
        say(f"{task_label(failed[0])}: {task_error(api, run_path, failed[0])}")
    say(f"{dag_id} {run_id}: {state} - {ui}")
    return 0 if state == "success" else 1


def task_error(api: Api, run_path: str, ti: dict) -> str:
    """The exception a failed task ended with, from its structured log (the last error logged)."""
    answer = api.call("GET", f"{run_path}/taskInstances/{ti['task_id']}/logs/{ti.get('try_number') or 1}",
                      ok=(200, 404), params={"map_index": ti.get("map_index", -1)},
                      headers={"Accept": "application/json"})
    entries = answer.json().get("content", []) if answer.status_code == 200 else []
    for entry in reversed(entries if isinstance(entries, list) else []):
        for detail in entry.get("error_detail") or []:
            return f"{detail.get('exc_type')}: {detail.get('exc_value')}"
    errors = [e.get("event", "") for e in entries if isinstance(e, dict) and e.get("level") == "error"]
    return errors[-1] if errors else "no error in its log; see the UI"


def report_table(api: Api, run_path: str) -> None:
    """The images the run published (promote_latest's return value), as a table."""
    answer = api.call("GET", f"{run_path}/taskInstances/promote_latest/xcomEntries/return_value", ok=(200, 404))
    if answer.status_code != 200:
        return
    value = answer.json().get("value")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return
    rows = [item for item in value or [] if isinstance(item, dict)]
    if rows:
        width = max(len(str(item.get("image", ""))) for item in rows)
        print(f"{'published':{width}}  digest")
        for item in rows:
            print(f"{item.get('image', ''):{width}}  {item.get('digest', '')}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["up"]:
        up()
        return 0
    if argv[:1] == ["down"]:
        down()
        return 0
    if argv[:1] == ["trigger"] and len(argv) in (2, 3):
        try:
            conf = json.loads(argv[2]) if len(argv) == 3 and argv[2].strip() else {}
        except ValueError as exc:
            fail(f"CONF is not JSON: {exc}")
        if not isinstance(conf, dict):
            fail("CONF must be a JSON object")
        return trigger(argv[1], conf)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
