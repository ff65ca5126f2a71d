#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# Entrypoint of the Airflow PROD image, run under dumb-init. The contract is the official image's
# (Airflow's docker-stack docs, "entrypoint"), so this image is a drop-in for apache/airflow:
#
#   docker run IMAGE                      -> airflow               (no command: airflow's usage, exit 2)
#   docker run IMAGE version              -> airflow version
#   docker run IMAGE airflow db migrate   -> airflow db migrate
#   docker run IMAGE bash -c '...'        -> bash -c '...'
#   docker run IMAGE python -c '...'      -> python -c '...'
#   docker run IMAGE id -u                -> id -u    (another program on PATH; an extension: upstream
#                                                      hands every other word to airflow)
#
# Before the command, for every command (bash and python too):
#   - the group must be 0 (uid 50000 with another group only warns): the image's files are group 0;
#   - umask 0002, so what one uid writes on a shared volume another uid of group 0 can change;
#   - an arbitrary uid (OpenShift, `--user 12345:0`) gets a passwd entry and HOME=/home/airflow;
#   - CONNECTION_CHECK_MAX_COUNT (default 20; 0: off) tries of `airflow db check`,
#     CONNECTION_CHECK_SLEEP_TIME (default 3) seconds apart;
#   - _AIRFLOW_DB_MIGRATE (or the deprecated _AIRFLOW_DB_UPGRADE), non-empty: `airflow db migrate`;
#   - _AIRFLOW_WWW_USER_CREATE, non-empty: `airflow users create` (FAB) from _AIRFLOW_WWW_USER_*;
#   - _PIP_ADDITIONAL_REQUIREMENTS: pip-installed over apache-airflow==AIRFLOW_VERSION (testing only).
# scheduler and celery, with the CeleryExecutor: the broker's host and port are waited for as well.
AIRFLOW_COMMAND="${1:-}"

set -euo pipefail

unset PIP_USER  # a virtualenv a task creates (PythonVirtualenvOperator) must not inherit --user

# Subcommands of the `airflow` CLI (Airflow 3): meant for airflow even where a program of that
# name happens to be on PATH.
is_airflow_command() {
    case "$1" in
        api-server | assets | backfill | celery | cheat-sheet | config | connections | dag-processor | \
            dags | db | edge | fab-db | info | jobs | kerberos | kubernetes | plugins | pools | \
            providers | rotate-fernet-key | scheduler | standalone | tasks | teams | triggerer | \
            users | roles | permissions | sync-perm | variables | version | webserver)
            return 0
            ;;
    esac
    return 1
}

check_group() {
    local uid gid
    uid=$(id -u)
    gid=$(id -g)
    [[ "${gid}" == "0" ]] && return 0
    if [[ "${uid}" == "${AIRFLOW_UID:-50000}" ]]; then
        >&2 echo "WARNING: run the image with group 0 (GID=0), also as the airflow user; it was started with" \
            "UID=${uid} GID=${gid}. Group 0 is what lets any UID use the image's files" \
            "(https://airflow.apache.org/docs/docker-stack/entrypoint.html)."
        return 0
    fi
    >&2 echo "ERROR: run the image with group 0 (GID=0), whatever the UID; it was started with UID=${uid}" \
        "GID=${gid}, and only group 0 can use the image's files with an arbitrary UID" \
        "(https://airflow.apache.org/docs/docker-stack/entrypoint.html)."
    exit 1
}

add_passwd_entry_if_missing() {
    # An arbitrary uid has no name: pip, git, getpass and ssh need one, and HOME must be writable.
    if ! whoami >/dev/null 2>&1; then
        if [[ -w /etc/passwd ]]; then
            echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR}:/sbin/nologin" \
                >>/etc/passwd
        fi
        export HOME="${AIRFLOW_USER_HOME_DIR}"
    fi
}

# Runs "$@" until it succeeds, CONNECTION_CHECK_MAX_COUNT times at most; the last output on failure.
retry_check() {
    local left="${CONNECTION_CHECK_MAX_COUNT}" output
    while true; do
        if output=$("$@" 2>&1); then
            return 0
        fi
        left=$((left - 1))
        if ((left <= 0)); then
            >&2 echo "ERROR: ${CONNECTION_CHECK_MAX_COUNT} tries of '$*' failed; the last said:"
            >&2 echo "${output}"
            exit 1
        fi
        sleep "${CONNECTION_CHECK_SLEEP_TIME}"
    done
}

# host:port of a URL (its backend's default port when it names none) can be connected to.
can_connect() {
    python3 - "$1" <<'PYTHON'
import socket, sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
defaults = {"postgres": 5432, "mysql": 3306, "mssql": 1433, "redis": 6379, "rediss": 6379, "amqp": 5672}
scheme = url.scheme.split("+")[0]
port = url.port or next((p for name, p in defaults.items() if scheme.startswith(name)), None)
if port is None:
    sys.exit(0)  # nothing to wait for (sqla+sqlite:// and the like)
socket.create_connection((url.hostname or "localhost", port), timeout=5).close()
PYTHON
}

wait_for_celery_broker() {
    local executor broker
    executor=$(airflow config get-value core executor 2>/dev/null || true)
    if [[ "${executor}" == *CeleryExecutor* ]]; then
        broker=$(airflow config get-value celery broker_url)
        retry_check can_connect "${broker}"
    fi
}

create_www_user() {
    local password=""
    if [[ -n "${_AIRFLOW_WWW_USER_PASSWORD_CMD:-}" ]]; then
        password=$(eval "${_AIRFLOW_WWW_USER_PASSWORD_CMD}")
    elif [[ -n "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]]; then
        password="${_AIRFLOW_WWW_USER_PASSWORD}"
    fi
    unset _AIRFLOW_WWW_USER_PASSWORD _AIRFLOW_WWW_USER_PASSWORD_CMD
    if [[ -z "${password}" ]]; then
        >&2 echo "ERROR: _AIRFLOW_WWW_USER_CREATE is set but no password is: set _AIRFLOW_WWW_USER_PASSWORD" \
            "or _AIRFLOW_WWW_USER_PASSWORD_CMD"
        exit 1
    fi
    airflow users create \
        --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
        --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
        --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" \
        --password "${password}" || true # it may exist already: a restart must not fail
}

install_additional_requirements() {
    >&2 echo "WARNING: installing _PIP_ADDITIONAL_REQUIREMENTS (${_PIP_ADDITIONAL_REQUIREMENTS}) at start-up:" \
        "for trying things out only, never in production; build an image FROM this one instead" \
        "(https://airflow.apache.org/docs/docker-stack/build.html)."
    # shellcheck disable=SC2086  # a space-separated list of requirements, as upstream takes it
    pip install --no-cache-dir --root-user-action ignore "apache-airflow==${AIRFLOW_VERSION}" \
        ${_PIP_ADDITIONAL_REQUIREMENTS}
    pip check
}

check_group
umask 0002

CONNECTION_CHECK_MAX_COUNT=${CONNECTION_CHECK_MAX_COUNT:-20}
CONNECTION_CHECK_SLEEP_TIME=${CONNECTION_CHECK_SLEEP_TIME:-3}
readonly CONNECTION_CHECK_MAX_COUNT CONNECTION_CHECK_SLEEP_TIME

add_passwd_entry_if_missing
if [[ "$(id -u)" == "0" ]]; then
    >&2 echo "The container runs as root; consider a regular user (the image's airflow user is ${AIRFLOW_UID:-50000})."
fi
if ((CONNECTION_CHECK_MAX_COUNT > 0)); then
    retry_check airflow db check
fi
if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" || -n "${_AIRFLOW_DB_UPGRADE:-}" ]]; then
    if [[ -n "${_AIRFLOW_DB_UPGRADE:-}" ]]; then
        >&2 echo "WARNING: _AIRFLOW_DB_UPGRADE is deprecated; set _AIRFLOW_DB_MIGRATE instead"
    fi
    airflow db migrate
fi
if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]]; then
    create_www_user
fi
if [[ -n "${_PIP_ADDITIONAL_REQUIREMENTS:-}" ]]; then
    install_additional_requirements
fi

case "${AIRFLOW_COMMAND}" in
    bash | sh)
        shift
        exec "/bin/${AIRFLOW_COMMAND}" "$@"
        ;;
    python | python3)
        shift
        exec "${AIRFLOW_COMMAND}" "$@"
        ;;
esac

if [[ "${AIRFLOW_COMMAND}" == "airflow" ]]; then
    shift
    AIRFLOW_COMMAND="${1:-}"
elif [[ -n "${AIRFLOW_COMMAND}" && "${AIRFLOW_COMMAND}" != -* ]] && ! is_airflow_command "${AIRFLOW_COMMAND}" \
    && { [[ "${AIRFLOW_COMMAND}" == */* ]] || type -P "${AIRFLOW_COMMAND}" >/dev/null; }; then
    exec "$@"
fi

if [[ "${AIRFLOW_COMMAND}" == "scheduler" || "${AIRFLOW_COMMAND}" == "celery" ]] \
    && ((CONNECTION_CHECK_MAX_COUNT > 0)); then
    wait_for_celery_broker
fi

exec airflow "$@"
