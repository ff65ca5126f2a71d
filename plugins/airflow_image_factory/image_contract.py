"""What a PROD image must do to be a drop-in for the official ``apache/airflow`` image: the checks
``verify_prod`` runs in every PROD image it builds, as data (pure: the operator runs them).

Each check is one ``docker run`` through the image's own entrypoint, as a user (or the official chart)
runs it: the default user, an arbitrary uid of group 0 (OpenShift), a group other than 0, and no
command at all. A check's script prints ``key=value`` lines; every expected key is compared, so a
failure names the contract point that broke (``umask: 0022, expected 0002``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ARBITRARY_USER = "12345:0"
OTHER_GROUP_USER = "12345:12345"
NO_DB_WAIT = {"CONNECTION_CHECK_MAX_COUNT": "0"}  # where waiting for the database is not the point

Expectation = str | Callable[[str], bool]

# The default user: versions, environment, umask, no node, a sane venv, the database migrated by the
# entrypoint before a *bash* command (_AIRFLOW_DB_MIGRATE), and the chart's log groomer.
_DEFAULT_USER_SCRIPT = r"""
echo "airflow_version=$(airflow version 2>/dev/null | tail -n 1)"
echo "AIRFLOW_VERSION=${AIRFLOW_VERSION:-}"
echo "load_examples=$(airflow config get-value core load_examples 2>/dev/null)"
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "umask=$(umask)"
echo "node=$(command -v node npm pnpm npx | head -n 1)"
echo "pip_check=$(python -m pip check 2>&1 | tr '\n' ' ' | sed 's/ *$//')"
migrated=no
airflow db check-migrations --migration-wait-timeout 0 >/dev/null 2>&1 && migrated=yes
echo "migrated=${migrated}"
logs="${AIRFLOW_HOME}/logs"
mkdir -p "${logs}/dag_id=contract/run_id=old"
touch -d '20 days ago' "${logs}/dag_id=contract/run_id=old/1.log"
touch "${logs}/fresh.log"
CLEAN_LOGS_ONCE=true bash /clean-logs >/dev/null 2>&1
groomed=failed
[ ! -e "${logs}/dag_id=contract" ] && [ -e "${logs}/fresh.log" ] && groomed=ok
echo "clean_logs=${groomed}"
"""

# An arbitrary uid of group 0: it gets a name and a home, and may pip-install into the venv.
_ARBITRARY_USER_SCRIPT = r"""
echo "whoami=$(whoami 2>&1)"
echo "HOME=${HOME}"
echo "umask=$(umask)"
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
venv=no
touch "${site}/.contract-probe" 2>/dev/null && rm -f "${site}/.contract-probe" && venv=yes
echo "venv_writable=${venv}"
logs=no
mkdir -p "${AIRFLOW_HOME}/logs/contract" 2>/dev/null && logs=yes
echo "logs_writable=${logs}"
"""


@dataclass(frozen=True)
class ImageCheck:
    name: str
    command: tuple[str, ...] | None  # None: the image's own CMD
    user: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    exit_code: int = 0
    values: Mapping[str, Expectation] = field(default_factory=dict)  # key → expected value (or a test)
    contains: tuple[str, ...] = ()  # text the output must hold
    lacks: tuple[str, ...] = ()  # text the output must not hold

    def failures(self, exit_code: int, output: str) -> list[str]:
        """What this check found wrong in one run's exit code and output; empty: passed."""
        problems = []
        if exit_code != self.exit_code:
            problems.append(f"exit code {exit_code}, expected {self.exit_code}")
        found = dict(
            line.split("=", 1) for line in output.splitlines() if "=" in line and not line.startswith(" ")
        )
        for key, expected in self.values.items():
            value = found.get(key)
            if value is None:
                problems.append(f"{key}: not reported")
            elif callable(expected):
                if not expected(value):
                    problems.append(f"{key}: {value!r} is not what the official image gives")
            elif value != expected:
                problems.append(f"{key}: {value!r}, expected {expected!r}")
        problems += [f"output lacks {text!r}" for text in self.contains if text not in output]
        problems += [f"output holds {text!r}" for text in self.lacks if text in output]
        return problems


def prod_checks(expected_version: str, *, airflow_uid: str = "50000") -> list[ImageCheck]:
    """The official image's contract, for an image built as Airflow ``expected_version``."""
    version: Expectation = expected_version or (lambda value: bool(value))
    return [
        ImageCheck(
            name="default user",
            command=("bash", "-c", _DEFAULT_USER_SCRIPT),
            environment={"_AIRFLOW_DB_MIGRATE": "true"},
            values={
                "airflow_version": version,
                "AIRFLOW_VERSION": version,
                "load_examples": lambda value: value.lower() == "false",  # the env var, as written
                "uid": airflow_uid,
                "gid": "0",
                "umask": "0002",
                "node": "",
                "pip_check": "No broken requirements found.",
                "migrated": "yes",
                "clean_logs": "ok",
            },
        ),
        ImageCheck(
            name="arbitrary uid",
            command=("bash", "-c", _ARBITRARY_USER_SCRIPT),
            user=ARBITRARY_USER,
            environment=NO_DB_WAIT,
            values={"whoami": "default", "HOME": "/home/airflow", "umask": "0002", "venv_writable": "yes",
                    "logs_writable": "yes"},
        ),
        ImageCheck(
            name="group other than 0",
            command=("bash", "-c", "echo the command ran"),
            user=OTHER_GROUP_USER,
            environment=NO_DB_WAIT,
            exit_code=1,
            contains=("GID=0",),
            lacks=("the command ran",),
        ),
        ImageCheck(
            name="no command",
            command=None,
            environment=NO_DB_WAIT,
            exit_code=2,  # `airflow` alone: its usage, as an error
            contains=("the following arguments are required: GROUP_OR_COMMAND",),
        ),
    ]
