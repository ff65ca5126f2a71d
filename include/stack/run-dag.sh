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
echo "[stack] airflow dags test $DAG --conf $conf"
exec "$repo_root/.venv/bin/airflow" dags test "$DAG" --conf "$conf"
