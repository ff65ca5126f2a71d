"""`make dag`: one DAG run in-process (``airflow dags test``) on the stack's SQLite home, with Airflow's
api-server on that home beside it for the run's duration.

Why the api-server: Airflow 3's Task SDK gives a task no way to write its run's note, so a task that
has one (nightly_images' bisection verdict) writes it through the REST API (``run_note_connection``).
Without a server on the run's own database the note would have nowhere to go. The note is printed when
the run ends. The server listens on loopback only, with a throw-away admin password in the home
(mode 0600); it stops with the run. If it cannot start, the run goes on and its log says the note was
not written.

Reads DAG and CONF from the environment (the Makefile exports them); exits with ``airflow dags test``'s
code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(REPO_ROOT / ".venv/bin/airflow")
USER = "dag-runner"
RUN_ID = re.compile(r"\b(manual__\d{4}-\d\d-\d\dT[\d:.]+\+00:00)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api_server(home: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    password = secrets.token_urlsafe(18)
    passwords = home / "dag-api-passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    passwords.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        server = subprocess.Popen([AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return server, f"http://127.0.0.1:{port}", password


def connection_env(url: str, password: str) -> dict[str, str]:
    """The environment that gives a run's tasks the http Connection ``image_factory_airflow_api`` (the
    default ``run_note_connection``) to the api-server at ``url``."""
    connection = {"conn_type": "http", "host": url, "login": USER, "password": password}
    return {"AIRFLOW_CONN_IMAGE_FACTORY_AIRFLOW_API": json.dumps(connection)}


def stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def run_note(url: str, password: str, dag_id: str, run_id: str) -> str | None:
    """The run's note, read over the REST API; None when it cannot be read."""
    from airflow_image_factory.clients.airflow_api import get_run_note
    from airflow_image_factory.exceptions import RunNoteNotSet

    try:
        return get_run_note(url, username=USER, password=password, dag_id=dag_id, run_id=run_id)
    except RunNoteNotSet:
        return None


def main() -> int:
    dag_id, conf = os.environ["DAG"], os.environ.get("CONF") or "{}"
    home = Path(os.environ["AIRFLOW_HOME"])
    stack_dir = Path(os.environ.get("STACK_DIR", REPO_ROOT / ".stack"))
    server, url, password = start_api_server(home, stack_dir / "logs" / "dag-api-server.log")
    env = {**os.environ, **connection_env(url, password)}
    print(f"[stack] airflow dags test {dag_id} --conf {conf}  (its REST API, for the run's note: {url})", flush=True)
    run_id = None
    try:
        run = subprocess.Popen([AIRFLOW, "dags", "test", dag_id, "--conf", conf], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
        assert run.stdout is not None
        for line in run.stdout:
            sys.stdout.write(line)
            if run_id is None and (found := RUN_ID.search(line)):
                run_id = found.group(1)
        code = run.wait()
        if run_id:
            note = run_note(url, password, dag_id, run_id)
            if note:
                print(f"[stack] the note of run {run_id}:\n{note}")
            elif note is None:
                print(f"[stack] the run's note could not be read (api-server log: {stack_dir}/logs/dag-api-server.log)")
    finally:
        stop(server)
    return code


if __name__ == "__main__":
    sys.exit(main())
