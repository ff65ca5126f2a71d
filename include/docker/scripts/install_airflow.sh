#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# install_airflow.sh airflow          create the virtualenv and install Airflow into it
# install_airflow.sh packages PKG...  install more packages (e.g. test tooling) into it
#
# Settings (environment; the Dockerfiles pass their build args through):
#   AIRFLOW_VENV                      the virtualenv (default /opt/airflow/venv)
#   AIRFLOW_VERSION                   e.g. 3.3.2; empty: the newest one available
#   AIRFLOW_EXTRAS                    e.g. postgres,mysql; empty: none
#   AIRFLOW_CONSTRAINTS_LOCATION      a URL (http(s):// or file://), or a path inside the
#                                     build context under docker-context-files/ (e.g.
#                                     docker-context-files/constraints.txt), or an absolute
#                                     path inside the image; empty: no constraints
#   ADDITIONAL_PYTHON_DEPS            more requirements, space separated
#   INSTALL_FROM_DOCKER_CONTEXT_FILES true: install only from the wheels/sdists in
#                                     docker-context-files/ (--no-index --find-links)
#   UPGRADE_TO_NEWER_DEPENDENCIES     anything but "false": ignore the constraints and
#                                     upgrade everything eagerly (nightly builds; a random
#                                     value also invalidates the layer cache)
#   AIRFLOW_PIP_VERSION               pip version to install into the venv; empty: keep
#   DOCKER_CONTEXT_FILES_DIR          where docker-context-files/ is mounted
#                                     (default /docker-context-files)
set -euo pipefail

what="${1:?usage: install_airflow.sh airflow | packages PKG...}"
shift

venv="${AIRFLOW_VENV:-/opt/airflow/venv}"
context_dir="${DOCKER_CONTEXT_FILES_DIR:-/docker-context-files}"
upgrade="${UPGRADE_TO_NEWER_DEPENDENCIES:-false}"
from_context="${INSTALL_FROM_DOCKER_CONTEXT_FILES:-false}"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export PIP_PROGRESS_BAR=off
export PIP_ROOT_USER_ACTION=ignore

if [[ ! -x "${venv}/bin/python" ]]; then
    echo "Creating the virtualenv ${venv} with $(command -v python3) ($(python3 --version))" >&2
    python3 -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip)

index_options=()
if [[ "${from_context}" == "true" ]]; then
    if ! find "${context_dir}" -maxdepth 2 \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) \
            -print -quit | grep -q .; then
        echo "INSTALL_FROM_DOCKER_CONTEXT_FILES=true but docker-context-files/ holds no" \
            "wheels or sdists" >&2
        exit 1
    fi
    index_options+=(--no-index --find-links "${context_dir}")
fi

if [[ -n "${AIRFLOW_PIP_VERSION:-}" ]]; then
    "${pip[@]}" install "${index_options[@]}" "pip==${AIRFLOW_PIP_VERSION}"
fi

constraint_options=()
upgrade_options=()
location="${AIRFLOW_CONSTRAINTS_LOCATION:-}"
if [[ "${upgrade}" != "false" ]]; then
    echo "UPGRADE_TO_NEWER_DEPENDENCIES=${upgrade}: ignoring constraints, upgrading eagerly" >&2
    upgrade_options+=(--upgrade --upgrade-strategy eager)
elif [[ -z "${location}" ]]; then
    echo "No constraints (AIRFLOW_CONSTRAINTS_LOCATION is empty)" >&2
elif [[ "${location}" =~ ^(https?|file):// ]]; then
    constraint_options+=(--constraint "${location}")
else
    case "${location}" in
        docker-context-files/*) path="${context_dir}/${location#docker-context-files/}" ;;
        ./docker-context-files/*) path="${context_dir}/${location#./docker-context-files/}" ;;
        /*) path="${location}" ;;
        *)
            echo "AIRFLOW_CONSTRAINTS_LOCATION=${location}: a path must be under" \
                "docker-context-files/ in the build context (or be a URL)" >&2
            exit 1
            ;;
    esac
    if [[ ! -f "${path}" ]]; then
        echo "AIRFLOW_CONSTRAINTS_LOCATION=${location}: ${path} does not exist in the build" >&2
        exit 1
    fi
    constraint_options+=(--constraint "${path}")
fi

case "${what}" in
    airflow)
        spec="apache-airflow"
        if [[ -n "${AIRFLOW_EXTRAS:-}" ]]; then
            spec+="[${AIRFLOW_EXTRAS// /}]"
        fi
        if [[ -n "${AIRFLOW_VERSION:-}" ]]; then
            spec+="==${AIRFLOW_VERSION}"
        fi
        # shellcheck disable=SC2206  # ADDITIONAL_PYTHON_DEPS is a space separated list
        requirements=("${spec}" ${ADDITIONAL_PYTHON_DEPS:-})
        ;;
    packages)
        requirements=("$@")
        ;;
    *)
        echo "unknown target ${what}: expected airflow or packages" >&2
        exit 2
        ;;
esac

if [[ ${#requirements[@]} -eq 0 ]]; then
    echo "Nothing to install" >&2
    exit 0
fi

echo "pip install ${requirements[*]} ${index_options[*]} ${constraint_options[*]} ${upgrade_options[*]}" >&2
"${pip[@]}" install "${index_options[@]}" "${constraint_options[@]}" "${upgrade_options[@]}" \
    "${requirements[@]}"

# A broken dependency set must fail the build, not the first DAG run.
"${pip[@]}" check
