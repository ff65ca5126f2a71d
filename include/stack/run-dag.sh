#!/usr/bin/env bash
# One DAG run on the local stack through Airflow itself (`airflow dags test`: in-process, SQLite).
# Reads DAG and CONF from the environment; exits non-zero when the conf is rejected or the run fails.
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
stack_dir="${STACK_DIR:-$repo_root/.stack}"
: "${DAG:?set DAG to a dag_id}"
conf="${CONF:-}"
[[ -n "$conf" ]] || conf='{}'
# shellcheck disable=SC1091
source "$stack_dir/env"
export CONF="$conf"
# airflow dags test, with an api-server on this home beside it for the run's note (run_dag.py says why)
exec "$repo_root/.venv/bin/python" "$repo_root/include/stack/run_dag.py"
