"""Session-wide setup. Stack tests use the real engine, registry, git remote and Airflow home that
`make stack` started; the unit tier needs none of them and gets a throw-away AIRFLOW_HOME."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("STACK_DIR", REPO_ROOT / ".stack"))


def _load_stack_env() -> bool:
    env_file = STACK_DIR / "env"
    if not env_file.is_file():
        return False
    for line in env_file.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            os.environ.setdefault(key, shlex.split(value)[0] if value else "")
    return True


# Before anything imports airflow: its configuration is read once, at import.
STACK_ENV_LOADED = _load_stack_env()
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="image-factory-airflow-home-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The local stack's settings; fails (never skips) when the stack is not up: run `make stack`."""
    if not STACK_ENV_LOADED:
        pytest.fail(f"{STACK_DIR}/env is missing: the local stack is not set up (run `make stack`)")
    import requests

    registry = os.environ.get("IMAGE_FACTORY_REGISTRY", "localhost:5000")
    try:
        requests.get(f"http://{registry}/v2/", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"the stack's registry at {registry} does not answer ({exc}); run `make stack`")
    return {k: v for k, v in os.environ.items() if k.startswith(("IMAGE_FACTORY_", "AIRFLOW", "STACK_DIR"))}
