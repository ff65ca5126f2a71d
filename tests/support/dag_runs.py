"""Run DAGs for real with ``airflow dags test`` (one process per run) and read what they left behind.

Every run's stdout+stderr is kept under ``test-artifacts/`` so a failure can be read after the fact.
``env`` adds or overrides environment variables for that run only (settings, connections).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).parent / "airflow")
ARTIFACTS = REPO_ROOT / "test-artifacts"


@dataclass
class DagRun:
    name: str
    returncode: int
    output: str  # stdout + stderr
    seconds: float
    log_path: Path

    @property
    def run_id(self) -> str | None:
        match = re.search(r"(manual__\d{4}-\d\d-\d\dT[\d:.]+\+00:00)", self.output)
        return match.group(1) if match else None

    def started_tasks(self) -> list[str]:
        """task ids that `dags test` started, in order (``python.build_ci`` etc.)."""
        return re.findall(r"\[DAG TEST\] starting task_id=(\S+)", self.output)


def _command(dag_id: str, conf: Mapping) -> list[str]:
    return [AIRFLOW, "dags", "test", dag_id, "--conf", json.dumps(conf)]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**os.environ, **(env or {})}


def _log_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{name}.log"


def stack_versions() -> list[str]:
    """The Python versions the local stack has bases for (``make stack`` writes them to its env file)."""
    return json.loads(os.environ.get("IMAGE_FACTORY_PYTHON_VERSIONS", '["3.11", "3.13"]'))


def _next_name(dag_id: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return f"{dag_id}-{len(list(ARTIFACTS.glob(f'{dag_id}-*.log')))}"


def run_dag(
    dag_id: str, conf: Mapping, *, name: str = "", env: Mapping[str, str] | None = None, timeout: float = 3600
) -> DagRun:
    """One ``airflow dags test`` run; its output is kept as ``test-artifacts/<name>.log``."""
    name = name or _next_name(dag_id)
    started = time.monotonic()
    result = subprocess.run(
        _command(dag_id, conf), capture_output=True, text=True, timeout=timeout, env=_env(env), cwd=REPO_ROOT,
        check=False,
    )
    output = result.stdout + "\n--- stderr ---\n" + result.stderr
    path = _log_path(name)
    path.write_text(output)
    return DagRun(name, result.returncode, output, time.monotonic() - started, path)


def airflow_db() -> Path:
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


def xcom_values(dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """(task_id, value as text) of every XCom a run stored in the SQLite metadata database."""
    with sqlite3.connect(f"file:{airflow_db()}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return [(task_id, value if isinstance(value, str) else bytes(value or b"").decode(errors="replace"))
                for task_id, value in rows]


def task_log_files(dag_id: str, run_id: str) -> list[Path]:
    """The run's task log files under $AIRFLOW_HOME/logs (if the logging config writes any)."""
    root = Path(os.environ["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


AIRFLOW_SERVER_SCRIPT = REPO_ROOT / "include/stack/airflow_server.py"


def airflow_server(
    *args: str, env: Mapping[str, str] | None = None, log: str = "airflow-server", timeout: float = 900
) -> subprocess.CompletedProcess:
    """``include/stack/airflow_server.py ARGS`` (up, down, trigger), its output appended to
    ``test-artifacts/<log>.log``; ``env`` is the whole environment of the call (default: this one's)."""
    result = subprocess.run([sys.executable, str(AIRFLOW_SERVER_SCRIPT), *args], capture_output=True, text=True,
                            timeout=timeout, env=env, check=False)
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / f"{log}.log").open("a") as out:
        out.write(f"$ airflow_server.py {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    return result
