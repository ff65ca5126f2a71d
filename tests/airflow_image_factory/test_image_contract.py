"""The official image's contract: the checks verify_prod runs (pure), and the image's own entrypoint and
log groomer run for real with bash on this machine. Only ``airflow`` (and ``id`` where a uid/gid is the
point) are stand-ins: small scripts on PATH that record how they were called."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_image_factory.policy.image_contract import (
    ImageCheck,
    expected_executors,
    expected_imports,
    prod_checks,
    providers_in_list_file,
    providers_in_pyproject,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "include/docker/entrypoint_prod.sh"
CLEAN_LOGS = REPO_ROOT / "include/docker/clean-logs.sh"


# ---- the checks -----------------------------------------------------------------------------------


def test_a_check_names_every_contract_point_that_broke():
    check = ImageCheck(name="c", command=("bash",), values={"umask": "0002", "node": "", "v": lambda v: v > "3"},
                       contains=("usage",), lacks=("ran",))
    assert check.failures(0, "umask=0002\nnode=\nv=3.4\nusage: x") == []
    problems = check.failures(1, "umask=0022\nnode=/usr/bin/node\nv=2.0\nran")
    assert problems == [
        "exit code 1, expected 0",
        "umask: '0022', expected '0002'",
        "node: '/usr/bin/node', expected ''",
        "v: '2.0' is not what the official image gives",
        "output lacks 'usage'",
        "output holds 'ran'",
    ]
    assert check.failures(0, "usage") == ["umask: not reported", "node: not reported", "v: not reported"]


def test_the_prod_checks_cover_the_official_contract():
    checks = {c.name: c for c in prod_checks("3.4.0.dev0")}
    default = checks["default user"]
    assert default.values["airflow_version"] == default.values["AIRFLOW_VERSION"] == "3.4.0.dev0"
    assert default.values["umask"] == "0002" and default.values["load_examples"]("false")
    assert default.environment["_AIRFLOW_DB_MIGRATE"] == "true" and default.command[0] == "bash"
    assert checks["arbitrary uid"].user == "12345:0"
    assert checks["group other than 0"].exit_code == 1
    assert checks["no command"].command is None and checks["no command"].exit_code == 2


# ---- the entrypoint, run by bash ------------------------------------------------------------------

FAKE_AIRFLOW = """#!/usr/bin/env bash
echo "airflow $*" >> "$CALLS"
if [[ "$1 $2" == "db check" ]]; then
    n=$(cat "$CALLS.dbcheck" 2>/dev/null || echo 0); echo $((n + 1)) > "$CALLS.dbcheck"
    (( n + 1 >= ${DB_UP_AFTER:-1} )) || { echo "db down"; exit 1; }
fi
if [[ "$1 $2" == "config get-value" ]]; then
    case "$3 $4" in
        "core executor") echo "${FAKE_EXECUTOR:-LocalExecutor}" ;;
        "celery broker_url") echo "${FAKE_BROKER:-redis://127.0.0.1:1/0}" ;;
    esac
fi
if [[ $# -eq 0 ]]; then
    echo "airflow command error: the following arguments are required: GROUP_OR_COMMAND" >&2
    exit 2
fi
exit 0
"""


@pytest.fixture
def image_env(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text(FAKE_AIRFLOW)
    (bin_dir / "airflow").chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()

    def run(*args: str, env: dict[str, str] | None = None, fake_id: tuple[int, int] | None = None):
        if fake_id is not None:
            uid, gid = fake_id
            (bin_dir / "id").write_text(f'#!/bin/sh\ncase "$1" in -u) echo {uid};; -g) echo {gid};; esac\n')
            (bin_dir / "id").chmod(0o755)
        environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls), "HOME": str(tmp_path),
                       "CONNECTION_CHECK_SLEEP_TIME": "0", "AIRFLOW_USER_HOME_DIR": str(tmp_path), **(env or {})}
        result = subprocess.run(["bash", str(ENTRYPOINT), *args], capture_output=True, text=True, env=environment,
                                timeout=60, check=False)
        return result, calls.read_text().splitlines()

    return run


def test_no_command_is_airflow_alone_and_exits_2(image_env):
    result, calls = image_env()
    assert result.returncode == 2 and "required: GROUP_OR_COMMAND" in result.stderr
    assert calls == ["airflow db check", "airflow "]


def test_the_database_is_waited_for_before_every_command_bash_included(image_env):
    result, calls = image_env("bash", "-c", "echo ran", env={"DB_UP_AFTER": "3"})
    assert result.returncode == 0 and result.stdout.strip() == "ran"
    assert calls == ["airflow db check"] * 3


def test_the_wait_gives_up_after_connection_check_max_count_tries_with_the_last_answer(image_env):
    result, calls = image_env("version", env={"DB_UP_AFTER": "99", "CONNECTION_CHECK_MAX_COUNT": "4"})
    assert result.returncode == 1 and "4 tries of 'airflow db check' failed" in result.stderr
    assert "db down" in result.stderr and calls == ["airflow db check"] * 4


def test_no_wait_when_connection_check_max_count_is_0(image_env):
    result, calls = image_env("version", env={"CONNECTION_CHECK_MAX_COUNT": "0"})
    assert result.returncode == 0 and calls == ["airflow version"]


def test_db_migrate_runs_before_python_and_bash_commands_too(image_env):
    for command in (["python3", "-c", "print('py')"], ["bash", "-c", "echo sh"]):
        result, calls = image_env(*command, env={"_AIRFLOW_DB_MIGRATE": "true", "CONNECTION_CHECK_MAX_COUNT": "0"})
        assert result.returncode == 0, result.stderr
        assert calls[-1] == "airflow db migrate"


def test_the_deprecated_upgrade_variable_still_migrates_and_says_so(image_env):
    result, calls = image_env("version", env={"_AIRFLOW_DB_UPGRADE": "1", "CONNECTION_CHECK_MAX_COUNT": "0"})
    assert calls == ["airflow db migrate", "airflow version"] and "deprecated" in result.stderr


def test_airflow_is_dropped_in_front_of_its_subcommands(image_env):
    result, calls = image_env("airflow", "dags", "list", env={"CONNECTION_CHECK_MAX_COUNT": "0"})
    assert result.returncode == 0 and calls == ["airflow dags list"]


def test_the_umask_lets_group_0_share_what_is_written(image_env):
    result, _ = image_env("bash", "-c", "umask", env={"CONNECTION_CHECK_MAX_COUNT": "0"})
    assert result.stdout.strip() == "0002"


def test_a_group_other_than_0_is_refused_naming_uid_and_gid(image_env):
    result, calls = image_env("bash", "-c", "echo ran", fake_id=(12345, 12345))
    assert result.returncode == 1 and "ran" not in result.stdout
    assert "UID=12345 GID=12345" in result.stderr and "GID=0" in result.stderr and calls == []


def test_the_airflow_user_with_another_group_is_only_warned(image_env):
    result, _ = image_env("bash", "-c", "echo ran", env={"CONNECTION_CHECK_MAX_COUNT": "0"}, fake_id=(50000, 1000))
    assert result.returncode == 0 and result.stdout.strip() == "ran" and "WARNING" in result.stderr


def test_the_www_user_is_created_with_the_password_from_its_command(image_env):
    result, calls = image_env("version", env={"CONNECTION_CHECK_MAX_COUNT": "0", "_AIRFLOW_WWW_USER_CREATE": "true",
                                              "_AIRFLOW_WWW_USER_PASSWORD_CMD": "echo s3cret"})
    assert result.returncode == 0
    assert calls[0].startswith("airflow users create --username admin") and calls[0].endswith("--password s3cret")


def test_a_www_user_without_a_password_is_refused(image_env):
    result, _ = image_env("version", env={"CONNECTION_CHECK_MAX_COUNT": "0", "_AIRFLOW_WWW_USER_CREATE": "true"})
    assert result.returncode == 1 and "_AIRFLOW_WWW_USER_PASSWORD" in result.stderr


def test_the_scheduler_waits_for_a_celery_broker(image_env):
    env = {"CONNECTION_CHECK_MAX_COUNT": "2", "FAKE_EXECUTOR": "CeleryExecutor",
           "FAKE_BROKER": "redis://127.0.0.1:1/0"}  # port 1: nothing listens
    result, calls = image_env("scheduler", env=env)
    assert result.returncode == 1 and "2 tries of 'can_connect redis://127.0.0.1:1/0' failed" in result.stderr
    assert "airflow scheduler" not in calls
    local = image_env("scheduler", env={"CONNECTION_CHECK_MAX_COUNT": "2"})[1]
    assert local[-1] == "airflow scheduler"  # LocalExecutor: no broker to wait for
    with socket.create_server(("127.0.0.1", 0)) as broker:
        port = broker.getsockname()[1]
        env |= {"FAKE_BROKER": f"redis://127.0.0.1:{port}/0"}
        result, calls = image_env("scheduler", env=env)
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "airflow scheduler"


# ---- /clean-logs, run by bash ----------------------------------------------------------------------


def _log(root: Path, relative: str, *, days_old: float = 0, size: int = 10) -> Path:
    path = root / "logs" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - days_old * 86400
    os.utime(path, (stamp, stamp))
    return path


def _clean(home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLEAN_LOGS)], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(home), "CLEAN_LOGS_ONCE": "true", **env})


def test_clean_logs_removes_logs_past_the_retention_and_the_empty_folders(tmp_path):
    old = _log(tmp_path, "dag_id=a/run_id=1/task_id=t/attempt=1.log", days_old=20)
    recent = _log(tmp_path, "dag_id=a/run_id=2/task_id=t/attempt=1.log", days_old=2)
    other = _log(tmp_path, "dag_id=a/notes.txt", days_old=40)
    assert _clean(tmp_path).returncode == 0
    assert not old.exists() and not old.parent.exists() and recent.exists() and other.exists()
    assert _clean(tmp_path, AIRFLOW__LOG_RETENTION_DAYS="1").returncode == 0
    assert not recent.exists() and (tmp_path / "logs").is_dir()


def test_clean_logs_minutes_win_over_days(tmp_path):
    hour_old = _log(tmp_path, "a.log", days_old=1 / 24)
    assert _clean(tmp_path, AIRFLOW__LOG_RETENTION_MINUTES="30").returncode == 0
    assert not hour_old.exists()


def test_clean_logs_keeps_the_folder_under_its_size_bound_oldest_first(tmp_path):
    logs = [_log(tmp_path, f"dag_id=a/{n}.log", days_old=5 - n, size=1000) for n in range(5)]
    assert _clean(tmp_path, AIRFLOW__LOG_MAX_SIZE_BYTES="2500").returncode == 0
    assert [p.exists() for p in logs] == [False, False, False, True, True]


# ---- Airflow's own PROD image tests: providers and imports, run by this machine's Python and Airflow --


def _run_check(check: ImageCheck, **env: str) -> tuple[int, str]:
    """The check's command as the image would run it, here: this test environment's python and airflow."""
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, **check.environment, **env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(list(check.command), capture_output=True, text=True, env=environment, timeout=300,
                          check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_prod_checks_hold_airflows_own_image_tests():
    checks = {c.name: c for c in prod_checks("3.4.0.dev0", extras="amazon,postgres,fab,uv")}
    assert {"providers", "imports", "as root", "airflow alone"} <= set(checks)
    assert checks["airflow alone"].command == ("airflow",) and checks["airflow alone"].exit_code == 2
    assert checks["as root"].user == "0" and checks["as root"].values["custom_import"] == "Awesome"
    assert checks["default user"].values["opt_airflow_airflow"] == "0"
    # the modules of each extra that has a list, and every provider's package
    imports = checks["imports"].values
    assert imports["import_groups"] == "amazon,executors,postgres,providers"
    assert {k for k in imports if k.startswith("imports_")} == {"imports_amazon", "imports_executors",
                                                                "imports_postgres", "imports_providers"}


def test_expected_imports_follow_the_extras():
    assert expected_imports("") == {}  # slim: the providers' packages only
    assert expected_imports(" ssh , ldap,uv ") == {"ssh": ["paramiko", "sshtunnel"], "ldap": ["ldap"]}


def test_the_providers_check_passes_when_the_extras_explain_every_provider():
    # This environment has apache-airflow with the cncf-kubernetes and docker providers, and core's own.
    check = next(c for c in prod_checks("", extras="") if c.name == "providers")
    code, output = _run_check(check, IMAGE_AIRFLOW_EXTRAS="cncf-kubernetes,docker")
    assert code == 0 and "providers=ok" in output, output
    assert check.failures(code, output) == []


def test_the_providers_check_names_a_missing_and_a_stray_provider():
    check = next(c for c in prod_checks("", extras="") if c.name == "providers")
    # without the docker extra, its provider is a stray; an extra whose provider is absent is missing
    code, output = _run_check(check, IMAGE_AIRFLOW_EXTRAS="cncf-kubernetes,mysql")
    problems = check.failures(code, output)
    assert len(problems) == 1 and "apache-airflow-providers-mysql" in problems[0], problems
    assert "not expected ['apache-airflow-providers-docker']" in problems[0]


def test_the_providers_check_takes_airflows_own_list_when_given():
    check = next(c for c in prod_checks("", expected_providers=("apache-airflow-providers-fab",)) if
                 c.name == "providers")
    problems = check.failures(*_run_check(check))
    assert problems and "missing ['apache-airflow-providers-fab']" in problems[0]


def test_the_imports_check_names_the_module_that_does_not_import():
    check = next(c for c in prod_checks("", extras="docker") if c.name == "imports")
    assert check.failures(*_run_check(check)) == []
    broken = ImageCheck(name="imports", command=check.command, environment={
        "IMPORT_GROUPS": json.dumps({"docker": ["docker", "no_such_module_here"]})},
        values=check.values)
    problems = broken.failures(*_run_check(broken))
    assert len(problems) == 1 and "no_such_module_here (ModuleNotFoundError" in problems[0]


def test_expected_executors_follow_the_extras():
    assert expected_executors("") == {"LocalExecutor"}
    assert expected_executors("celery,cncf-kubernetes,fab") == {"LocalExecutor", "CeleryExecutor",
                                                               "KubernetesExecutor"}


def test_the_imports_check_loads_each_executor_whose_provider_is_installed():
    # This environment has the cncf-kubernetes provider and no celery one: Local and Kubernetes load.
    check = next(c for c in prod_checks("", extras="cncf-kubernetes") if c.name == "imports")
    code, output = _run_check(check)
    assert check.failures(code, output) == [], output
    assert "executors=KubernetesExecutor,LocalExecutor" in output
    assert "imports_executors=ok" in output
    # An image whose extras promise the CeleryExecutor must load it (the chart's default executor).
    celery = next(c for c in prod_checks("", extras="celery") if c.name == "imports")
    assert "executors: 'KubernetesExecutor,LocalExecutor' is not what the official image gives" in \
        celery.failures(code, output)


def test_the_imports_check_names_an_executor_that_does_not_import(tmp_path):
    # As celery 5.7 broke providers-celery 3.26: the provider's package imports, its executor does not.
    broken = "airflow.providers.cncf.kubernetes.executors.kubernetes_executor"
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {broken!r}:\n"
        "            raise ImportError('cannot import name retry from celery.backends.database')\n"
        "sys.meta_path.insert(0, Refuse())\n"
    )
    check = next(c for c in prod_checks("", extras="cncf-kubernetes") if c.name == "imports")
    problems = check.failures(*_run_check(check, PYTHONPATH=str(tmp_path)))
    assert len(problems) == 1, problems
    assert problems[0].startswith("imports_executors: 'failed: " + broken + " (ImportError: cannot import name")


def test_the_sources_lists_of_providers_are_read_as_airflows_tests_read_them():
    pyproject = '[project]\ndependencies = ["apache-airflow-providers-common-sql>=1.26", "pendulum>=3",\n' \
                '  "apache_airflow_providers_standard>=1.0 ; python_version < \'4\'"]\n'
    assert providers_in_pyproject(pyproject) == ("apache-airflow-providers-common-sql",
                                                 "apache-airflow-providers-standard")
    listed = "# providers\namazon\ncncf.kubernetes\nfab>=1.0\n"
    assert providers_in_list_file(listed, python="3.11") == (
        "apache-airflow-providers-amazon", "apache-airflow-providers-cncf-kubernetes", "apache-airflow-providers-fab")
    assert "apache-airflow-providers-fab" not in providers_in_list_file(listed, python="3.13")
