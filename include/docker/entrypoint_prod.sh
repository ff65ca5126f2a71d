#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# Entrypoint of the Airflow PROD (and CI) image, run under dumb-init:
#
#   docker run IMAGE                      -> airflow --help        (the image's CMD)
#   docker run IMAGE version              -> airflow version
#   docker run IMAGE api-server           -> airflow api-server
#   docker run IMAGE --help               -> airflow --help
#   docker run IMAGE airflow db migrate   -> airflow db migrate
#   docker run IMAGE bash -c '...'        -> bash -c '...'
#   docker run IMAGE python -c '...'      -> python -c '...'
#   docker run IMAGE id -u                -> id -u    (any program on PATH)
#
# Optional environment:
#   _AIRFLOW_DB_MIGRATE=true   run `airflow db migrate` before the command
#   _AIRFLOW_WAIT_FOR_DB=N     before that, wait up to N seconds for `airflow db check`
set -euo pipefail

# Subcommands of the `airflow` CLI (Airflow 3) that are always meant for airflow, even if a
# program of that name happened to be on PATH.
is_airflow_command() {
    case "$1" in
        api-server | assets | backfill | celery | cheat-sheet | config | connections | dag-processor | \
            dags | db | edge | fab-db | info | jobs | kerberos | kubernetes | plugins | pools | \
            providers | rotate-fernet-key | scheduler | standalone | tasks | teams | triggerer | \
            variables | version | webserver)
            return 0
            ;;
    esac
    return 1
}

# An arbitrary uid (OpenShift, `docker run --user 12345:0`) has no passwd entry and no home.
if [[ -z "${HOME:-}" || "${HOME}" == "/" || ! -w "${HOME}" ]]; then
    if [[ -w /home/airflow ]]; then
        export HOME=/home/airflow
    fi
fi

run_airflow_preparation() {
    if [[ -n "${_AIRFLOW_WAIT_FOR_DB:-}" ]]; then
        local deadline=$((SECONDS + _AIRFLOW_WAIT_FOR_DB))
        until airflow db check >/dev/null 2>&1; do
            if ((SECONDS >= deadline)); then
                echo "entrypoint: the metadata database did not answer in ${_AIRFLOW_WAIT_FOR_DB}s" >&2
                exit 1
            fi
            sleep 2
        done
    fi
    if [[ "${_AIRFLOW_DB_MIGRATE:-false}" == "true" ]]; then
        airflow db migrate
    fi
}

if [[ $# -eq 0 ]]; then
    set -- --help
fi

first="$1"
if [[ "${first}" == "airflow" ]]; then
    shift
    run_airflow_preparation
    exec airflow "$@"
elif [[ "${first}" == -* ]] || is_airflow_command "${first}"; then
    run_airflow_preparation
    exec airflow "$@"
elif [[ "${first}" == "bash" || "${first}" == "sh" ]]; then
    shift
    exec "/bin/${first}" "$@"
elif [[ "${first}" == "python" || "${first}" == "python3" ]]; then
    shift
    exec python "$@"
elif [[ "${first}" == */* ]] || type -P "${first}" >/dev/null; then
    exec "$@"
else
    # Not a program: let airflow explain what it does not know.
    run_airflow_preparation
    exec airflow "$@"
fi
