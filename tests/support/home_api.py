"""Airflow's real api-server on the suite's own metadata database (the SQLite home ``airflow dags test``
runs write to), started as `make dag` starts it (include/stack/run_dag.py), so a run made in-process can
be written to and read through the REST API as users do: e.g. the nightly's note, which a task can only
write through that API (``run_note_connection``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.dag_runs import ARTIFACTS, REPO_ROOT

_spec = importlib.util.spec_from_file_location("run_dag", REPO_ROOT / "include/stack/run_dag.py")
run_dag_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_dag_script)


@dataclass
class HomeApi:
    url: str
    password: str
    process: subprocess.Popen

    def connection_env(self) -> dict[str, str]:
        """The environment that gives a run's tasks the Connection to this server, as `make dag` does."""
        return run_dag_script.connection_env(self.url, self.password)

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

    def note(self, dag_id: str, run_id: str) -> str | None:
        return run_dag_script.run_note(self.url, self.password, dag_id, run_id)


@contextlib.contextmanager
def home_api() -> Iterator[HomeApi]:
    """`make dag`'s api-server on this process's AIRFLOW_HOME, stopped when the block ends; its log:
    ``test-artifacts/home-api-server.log``."""
    ARTIFACTS.mkdir(exist_ok=True)
    process, url, password = run_dag_script.start_api_server(Path(os.environ["AIRFLOW_HOME"]),
                                                             ARTIFACTS / "home-api-server.log")
    try:
        yield HomeApi(url, password, process)
    finally:
        run_dag_script.stop(process)
