"""Airflow's real api-server on the suite's own metadata database (the SQLite home ``airflow dags test``
runs write to), so a run made in-process can be read, and written to, through the REST API as users do:
e.g. the nightly's note, which a task can only write through that API (``run_note_connection``)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.dag_runs import AIRFLOW, ARTIFACTS

USER = "notes"


@dataclass
class HomeApi:
    url: str
    password: str
    process: subprocess.Popen

    def connection_env(self, conn_id: str = "image_factory_airflow_api") -> dict[str, str]:
        """The environment that gives a run's tasks the http Connection ``conn_id`` to this server."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(
            {"conn_type": "http", "host": self.url, "login": USER, "password": self.password})}

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the api-server exited with {self.process.returncode} (see test-artifacts)")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    return
            time.sleep(1)
        raise TimeoutError(f"the api-server at {self.url} did not answer within {timeout:.0f} s")

    def session(self) -> requests.Session:
        session = requests.Session()
        answer = session.post(f"{self.url}/auth/token", json={"username": USER, "password": self.password},
                              timeout=30)
        answer.raise_for_status()
        session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        return session

    def run(self, dag_id: str, run_id: str) -> dict:
        answer = self.session().get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30)
        answer.raise_for_status()
        return answer.json()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def home_api() -> Iterator[HomeApi]:
    """Start ``airflow api-server`` (one worker, loopback, the simple auth manager with one admin of a
    throw-away password) on this process's AIRFLOW_HOME; stopped when the block ends. Its log:
    ``test-artifacts/home-api-server.log``."""
    password = secrets.token_urlsafe(16)
    work = Path(tempfile.mkdtemp(prefix="home-api-"))
    (work / "passwords.json").write_text(json.dumps({USER: password}))
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "home-api-server.log").open("ab") as log:
        process = subprocess.Popen([AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield HomeApi(f"http://127.0.0.1:{port}", password, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
