#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# install_airflow.sh dependencies        create the virtualenv; install Airflow from the index
#                                        (AIRFLOW_INSTALL_FROM=pypi), or only the dependencies of the
#                                        sources (AIRFLOW_INSTALL_FROM=sources: the metadata wheels in
#                                        docker-context-files/airflow-metadata/, see below)
# install_airflow.sh airflow             the same as dependencies with AIRFLOW_INSTALL_FROM=pypi
# install_airflow.sh wheel-builder       a virtualenv at /opt/wheel-builder with the sources' build
#                                        requirements (docker-context-files/airflow-build-requirements.txt)
# install_airflow.sh distributions OUT   build the wheels of the sources at /airflow-sources (with
#                                        the compiled UI of /ui-assets in place) into OUT
# install_airflow.sh from-sources        distributions into /opt/airflow/dist, then
#                                        from-distributions of it (one layer; an empty dist/ for pypi)
# install_airflow.sh from-distributions DIR
#                                        install the wheels in DIR over the dependencies (--no-deps);
#                                        nothing when DIR has none (AIRFLOW_INSTALL_FROM=pypi)
# install_airflow.sh editable DIR        install the checkout at DIR editable over the dependencies
#                                        (the CI image); nothing when DIR has no pyproject.toml
# install_airflow.sh packages PKG...     install more packages (e.g. test tooling) into it
#
# The metadata wheels: for a build from sources, the worker writes one wheel per distribution of
# the sources (apache-airflow, apache-airflow-core, apache-airflow-task-sdk) that holds only its
# metadata (name, version with the local label +metadata, dependencies, extras). Installing
# "apache-airflow[EXTRAS]" from them installs exactly the dependencies the branch declares (a
# provider's "apache-airflow>=X" is met by the branch's own version, never by PyPI's Airflow),
# in a layer that depends on nothing but that metadata; the real distributions replace them.
#
# Settings (environment; the Dockerfiles pass their build args through):
#   AIRFLOW_VENV                      the virtualenv (default /opt/airflow/venv)
#   AIRFLOW_INSTALL_FROM              pypi (default) or sources
#   AIRFLOW_VERSION                   e.g. 3.3.2; empty: the newest one available (pypi); the
#                                     version of the sources, checked after installing (sources)
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
#   AIRFLOW_USE_UV                    true (default): the large installs (dependencies, packages) run
#                                     with uv, as Airflow's own CI image builds do (measured 2.5x faster
#                                     than pip, cold, for ~340 distributions); false: pip.
#                                     pip stays in the venv either way (`pip install` in containers).
#   AIRFLOW_UV_VERSION                the uv release installed at /opt/uv (outside the venv: the PROD
#                                     image, which copies only the venv, never holds it)
#   DOCKER_CONTEXT_FILES_DIR          where docker-context-files/ is mounted
#                                     (default /docker-context-files)
set -euo pipefail

what="${1:?usage: install_airflow.sh dependencies | wheel-builder | from-sources | distributions OUT | from-distributions DIR | editable DIR | packages PKG...}"
shift

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
export PIP_PROGRESS_BAR=off
export PIP_ROOT_USER_ACTION=ignore

builder=/opt/wheel-builder
if [[ "${what}" == "from-sources" ]]; then
    # Kept in the build image: the PROD image installs the same wheels from there.
    dist=/opt/airflow/dist
    bash "${BASH_SOURCE[0]}" distributions "${dist}"
    bash "${BASH_SOURCE[0]}" from-distributions "${dist}"
    exit 0
fi
if [[ "${what}" == "wheel-builder" ]]; then
    if [[ "${AIRFLOW_INSTALL_FROM:-pypi}" != "sources" ]]; then
        exit 0  # nothing is built from sources
    fi
    requirements_file="${DOCKER_CONTEXT_FILES_DIR:-/docker-context-files}/airflow-build-requirements.txt"
    python3 -m venv "${builder}"
    if [[ -s "${requirements_file}" ]]; then
        "${builder}/bin/python" -m pip install -r "${requirements_file}"
    fi
    exit 0
fi

if [[ "${what}" == "distributions" ]]; then
    out="${1:?usage: install_airflow.sh distributions OUT}"
    sources=/airflow-sources
    mkdir -p "${out}"
    if [[ ! -f "${sources}/pyproject.toml" ]]; then
        echo "No sources at ${sources}: no distributions to build" >&2
        exit 0
    fi
    # A writable copy: the compiled UI goes into the tree, and builds may write next to it.
    work=$(mktemp -d)
    cp -a "${sources}/." "${work}/"
    if [[ -d /ui-assets/airflow-core ]]; then
        cp -a /ui-assets/airflow-core/. "${work}/airflow-core/"
    fi
    isolation=(--no-build-isolation)
    if [[ ! -x "${builder}/bin/python" ]]; then
        python3 -m venv "${builder}"
        isolation=()
    fi
    for project in task-sdk airflow-core .; do
        echo "Building the wheel of ${project}" >&2
        "${builder}/bin/python" -m pip wheel --no-deps "${isolation[@]}" --wheel-dir "${out}" "${work}/${project}"
    done
    rm -rf "${work}"
    ls -l "${out}" >&2
    exit 0
fi

venv="${AIRFLOW_VENV:-/opt/airflow/venv}"
context_dir="${DOCKER_CONTEXT_FILES_DIR:-/docker-context-files}"
upgrade="${UPGRADE_TO_NEWER_DEPENDENCIES:-false}"
from_context="${INSTALL_FROM_DOCKER_CONTEXT_FILES:-false}"

if [[ ! -x "${venv}/bin/python" ]]; then
    echo "Creating the virtualenv ${venv} with $(command -v python3) ($(python3 --version))" >&2
    python3 -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip)

# The official image's venv is group-writable: `pip install` works under any uid of group 0. Only what
# lacks the bits is changed, in the layer that wrote it (a chmod of every file would copy them all up).
group_writable() {
    find "${venv}" \( ! -perm -g+rw -o -type d ! -perm -g+x \) ! -type l -exec chmod g+rwX {} +
}
trap 'status=$?; if [[ ${status} -eq 0 ]]; then group_writable; fi' EXIT

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
if [[ "${what}" == "from-distributions" || "${what}" == "editable" ]]; then
    # --no-deps installs over the dependencies layer: no constraints apply (none are mounted).
    location=""
    upgrade=false
fi
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

# The installed distributions must be the version the build says (the sources' own version).
check_version() {
    [[ -n "${AIRFLOW_VERSION:-}" ]] || return 0
    local installed
    installed=$("${venv}/bin/python" -c 'import airflow; print(airflow.__version__)')
    if [[ "${installed}" != "${AIRFLOW_VERSION}" ]]; then
        echo "Installed Airflow is ${installed}, expected ${AIRFLOW_VERSION}" >&2
        exit 1
    fi
    echo "Airflow ${installed} installed" >&2
}

extras_suffix=""
if [[ -n "${AIRFLOW_EXTRAS:-}" ]]; then
    extras_suffix="[${AIRFLOW_EXTRAS// /}]"
fi
install_from="${AIRFLOW_INSTALL_FROM:-pypi}"
if [[ "${what}" == "airflow" ]]; then
    what=dependencies
    install_from=pypi
fi

case "${what}" in
    dependencies)
        # shellcheck disable=SC2206  # ADDITIONAL_PYTHON_DEPS is a space separated list
        additional=(${ADDITIONAL_PYTHON_DEPS:-})
        if [[ "${install_from}" == "sources" ]]; then
            metadata_dir="${context_dir}/airflow-metadata"
            meta_wheel=$(find "${metadata_dir}" -maxdepth 1 -name 'apache_airflow-*.whl' -print -quit 2>/dev/null)
            if [[ -z "${meta_wheel}" ]]; then
                echo "AIRFLOW_INSTALL_FROM=sources but ${metadata_dir} holds no apache_airflow-*.whl" \
                    "metadata wheel (the worker writes it next to the staged sources)" >&2
                exit 1
            fi
            index_options+=(--find-links "${metadata_dir}")
            requirements=("apache-airflow${extras_suffix} @ file://${meta_wheel}")
            # Every distribution of the sources named directly by its wheel: a development version
            # (3.4.0.dev0) is then allowed by pip and uv alike, without allowing pre-releases of others.
            while IFS= read -r wheel; do
                name=$(basename "${wheel}" | cut -d- -f1 | tr _ -)
                requirements+=("${name} @ file://${wheel}")
            done < <(find "${metadata_dir}" -maxdepth 1 -name 'apache_airflow_*.whl' | sort)
            requirements+=("${additional[@]}")
        elif [[ "${install_from}" == "pypi" ]]; then
            spec="apache-airflow${extras_suffix}"
            if [[ -n "${AIRFLOW_VERSION:-}" ]]; then
                spec+="==${AIRFLOW_VERSION}"
            fi
            requirements=("${spec}" "${additional[@]}")
        else
            echo "AIRFLOW_INSTALL_FROM=${install_from}: expected pypi or sources" >&2
            exit 2
        fi
        ;;
    from-distributions)
        dir="${1:?usage: install_airflow.sh from-distributions DIR}"
        mapfile -t wheels < <(find "${dir}" -maxdepth 1 -name '*.whl' | sort)
        if [[ ${#wheels[@]} -eq 0 ]]; then
            echo "No distributions in ${dir}: Airflow came from the index" >&2
            exit 0
        fi
        # The dependencies are in place (the layer before); these replace the metadata wheels.
        "${pip[@]}" install --no-deps --force-reinstall "${wheels[@]}"
        "${pip[@]}" check
        check_version
        exit 0
        ;;
    editable)
        dir="${1:?usage: install_airflow.sh editable DIR}"
        if [[ ! -f "${dir}/pyproject.toml" ]]; then
            echo "No sources at ${dir}: Airflow came from the index" >&2
            exit 0
        fi
        "${pip[@]}" install --no-deps --force-reinstall -e "${dir}/task-sdk" -e "${dir}/airflow-core" -e "${dir}"
        "${pip[@]}" check
        check_version
        exit 0
        ;;
    packages)
        requirements=("$@")
        ;;
    *)
        echo "unknown target ${what}: expected dependencies, distributions, from-distributions, editable or packages" >&2
        exit 2
        ;;
esac

if [[ ${#requirements[@]} -eq 0 ]]; then
    echo "Nothing to install" >&2
    exit 0
fi

# uv needs the index (or its own wheel among the context files): an offline build from docker-context-files
# installs with pip.
if [[ "${AIRFLOW_USE_UV:-true}" == "true" && "${from_context}" != "true" ]]; then
    uv_env=/opt/uv
    if [[ ! -x "${uv_env}/bin/uv" ]]; then
        python3 -m venv "${uv_env}"
        "${uv_env}/bin/python" -m pip install "uv==${AIRFLOW_UV_VERSION:?AIRFLOW_UV_VERSION is not set}"
    fi
    # The cache is a BuildKit cache mount (another filesystem: copy, not hardlink); bytecode is compiled
    # as pip compiles it, so the image's first imports are not slower; never a Python of uv's own.
    export UV_CACHE_DIR=/root/.cache/uv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never \
        UV_HTTP_TIMEOUT=300 UV_NO_PROGRESS=1
    uv_upgrade=()
    if [[ ${#upgrade_options[@]} -gt 0 ]]; then
        uv_upgrade=(--upgrade)  # uv's --upgrade is eager: every package to its newest allowed version
    fi
    # uv reads constraints from paths and http(s) URLs; a file:// URL is its path.
    uv_constraints=("${constraint_options[@]/#file:\/\//}")
    echo "uv pip install ${requirements[*]} ${index_options[*]} ${uv_constraints[*]} ${uv_upgrade[*]}" >&2
    "${uv_env}/bin/uv" pip install --python "${venv}/bin/python" "${index_options[@]}" "${uv_constraints[@]}" \
        "${uv_upgrade[@]}" "${requirements[@]}"
else
    echo "pip install ${requirements[*]} ${index_options[*]} ${constraint_options[*]} ${upgrade_options[*]}" >&2
    "${pip[@]}" install "${index_options[@]}" "${constraint_options[@]}" "${upgrade_options[@]}" \
        "${requirements[@]}"
fi

# A broken dependency set must fail the build, not the first DAG run.
"${pip[@]}" check
