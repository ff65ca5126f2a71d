"""Image verification suite: shared setup.

Runs INSIDE an Airflow image (the CI image ships it at /opt/airflow/verify and runs
`pytest -q /opt/airflow/verify` by default). Every test works in a throw-away AIRFLOW_HOME
with a SQLite metadata database, so the suite never touches the image's own
/opt/airflow and can run as the image's non-root user with a read-only suite directory.

Optional environment (the CI image sets the first two from its build args):
  IMAGE_AIRFLOW_VERSION   the Airflow version the image must contain
  IMAGE_AIRFLOW_EXTRAS    the extras it was built with (their providers must be present)
  VERIFY_KEEP_HOME        keep the temporary AIRFLOW_HOME (for debugging)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

VERIFY_DIR = Path(__file__).resolve().parent
DAGS_DIR = VERIFY_DIR / "dags"

# Must happen before anything imports airflow: its configuration is read at import time.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="airflow-verify-"))


def airflow_env(home: Path) -> dict[str, str]:
    """Environment of an Airflow process that lives entirely in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONWARNINGS": "ignore",
        }
    )
    return env


os.environ.update(airflow_env(_SESSION_HOME))


def pytest_unconfigure(config):
    if not os.environ.get("VERIFY_KEEP_HOME"):
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME


@pytest.fixture
def fresh_home(tmp_path: Path) -> Path:
    home = tmp_path / "airflow-home"
    home.mkdir()
    return home


@pytest.fixture(scope="session")
def run():
    """Run a command, fail the test with its output when it fails."""

    def _run(args, *, env=None, timeout=600, check=True):
        proc = subprocess.run(
            args,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(map(str, args))} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
            )
        return proc

    return _run


@pytest.fixture(scope="session")
def airflow_bin() -> str:
    path = shutil.which("airflow")
    if path is None:
        # The venv's bin directory, even when PATH does not contain it.
        candidate = Path(sys.executable).parent / "airflow"
        if candidate.exists():
            return str(candidate)
        pytest.fail("no `airflow` executable on PATH")
    return path
