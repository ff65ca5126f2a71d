#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# install_os_packages.sh MODE
#
# Installs the Debian packages of one kind of Airflow image on a python:X.Y-slim-<debian>
# base (Docker Hub's, whose python lives in /usr/local, or a Debian-python based one whose
# python is /usr/bin/python3).
#
#   build    compilers and headers needed to build Airflow's dependencies from sdists
#            (mysqlclient needs them): the PROD image's `airflow-build-image` stage
#   runtime  runtime libraries only: the PROD image's final stage
#   ci       build + runtime: the CI image (which, like Airflow's own CI image, keeps the
#            build tools)
#
# The packages the image's AIRFLOW_EXTRAS need (comma separated, as the install takes them) are
# added by extra: headers to build their sdists, libraries and tools to run them (ldap, odbc, git,
# ssh/sftp, ...). An image without extras (the slim variant) gets none of them.
#
# Extra packages: ADDITIONAL_DEV_APT_DEPS (build, ci), ADDITIONAL_RUNTIME_APT_DEPS
# (runtime, ci) - space separated.
#
# Works with or without BuildKit cache mounts on /var/cache/apt and /var/lib/apt/lists:
# when they are mounts, downloaded .debs and the package lists are kept there (and so stay
# out of the layer); otherwise everything is cleaned up at the end.
set -euo pipefail

mode="${1:?usage: install_os_packages.sh build|runtime|ci}"
export DEBIAN_FRONTEND=noninteractive

# python3 is the interpreter the venv will be made from: /usr/local/bin/python3 on Docker
# Hub's python images, /usr/bin/python3 on Debian-python bases.
python_mm="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
python_prefix="$(python3 -c 'import sys; print(sys.base_prefix)')"
python_headers="$(python3 -c 'import os, sysconfig; print(os.path.join(sysconfig.get_config_var("INCLUDEPY"), "Python.h"))')"

build_packages=(
    build-essential
    pkg-config
    libpq-dev
    default-libmysqlclient-dev
)
runtime_packages=(
    ca-certificates
    dumb-init
    libpq5
    libmariadb3
    tzdata
)

# Debian's soname packages differ between releases (libldap-2.5-0 on bookworm, libldap2 on trixie).
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
ldap_runtime=libldap-2.5-0
[[ "${codename}" == "bookworm" ]] || ldap_runtime=libldap2

# extra -> "build packages|runtime packages". Extras whose dependencies ship manylinux wheels need
# nothing here; those below build from sdists (python-ldap), dlopen a system library (pyodbc's
# libodbc) or run a system tool (git bundles, ssh/sftp).
declare -A extra_packages=(
    [ldap]="libldap-dev libsasl2-dev|${ldap_runtime} libsasl2-2 libsasl2-modules"
    [odbc]="unixodbc-dev|unixodbc"
    [git]="|git"
    [ssh]="|openssh-client"
    [sftp]="|openssh-client"
    [graphviz]="|graphviz"
)
extras_build=()
extras_runtime=()
IFS=',' read -r -a requested_extras <<<"${AIRFLOW_EXTRAS:-}"
for extra in "${requested_extras[@]}"; do
    extra="${extra// /}"
    [[ -n "${extra}" && -n "${extra_packages[${extra}]:-}" ]] || continue
    read -r -a found <<<"${extra_packages[${extra}]%%|*}"
    extras_build+=("${found[@]}")
    read -r -a found <<<"${extra_packages[${extra}]#*|}"
    extras_runtime+=("${found[@]}")
done

python_dev_packages() {
    # Headers for the python that is actually used. Docker Hub's images ship them in
    # /usr/local/include; Debian's python3-dev there would be the WRONG python (Debian's
    # /usr/bin/python3, possibly even another X.Y), so it is only added when the headers are
    # missing AND the interpreter is Debian's own.
    if [[ -f "${python_headers}" ]]; then
        echo "Python.h found at ${python_headers}: no python dev package needed" >&2
    elif [[ "${python_prefix}" == "/usr" ]]; then
        echo "Python.h missing for Debian's python${python_mm}: adding python${python_mm}-dev" >&2
        echo "python${python_mm}-dev"
    else
        echo "WARNING: ${python_headers} is missing and python ${python_prefix}/bin/python3 is not" \
            "Debian's: C extensions cannot be built from sdists (wheels still install)." >&2
    fi
}

# Space separated lists from build args, split deliberately.
python_dev=()
if [[ "${mode}" != "runtime" ]]; then
    read -r -a python_dev <<<"$(python_dev_packages)"
fi
read -r -a extra_dev <<<"${ADDITIONAL_DEV_APT_DEPS:-}"
read -r -a extra_runtime <<<"${ADDITIONAL_RUNTIME_APT_DEPS:-}"

packages=()
case "${mode}" in
    build)
        packages+=("${build_packages[@]}" "${python_dev[@]}" "${extras_build[@]}" "${extra_dev[@]}")
        ;;
    runtime)
        packages+=("${runtime_packages[@]}" "${extras_runtime[@]}" "${extra_runtime[@]}")
        ;;
    ci)
        packages+=("${build_packages[@]}" "${runtime_packages[@]}" "${python_dev[@]}")
        packages+=("${extras_build[@]}" "${extras_runtime[@]}" "${extra_dev[@]}" "${extra_runtime[@]}")
        ;;
    *)
        echo "unknown mode ${mode}: expected build, runtime or ci" >&2
        exit 2
        ;;
esac

cache_is_mounted=false
if mountpoint -q /var/cache/apt 2>/dev/null; then
    cache_is_mounted=true
fi
lists_are_mounted=false
if mountpoint -q /var/lib/apt/lists 2>/dev/null; then
    lists_are_mounted=true
fi

# Debian's docker images delete every downloaded .deb after each install (docker-clean);
# with a cache mount we want to keep them, so it is set aside for this run only.
docker_clean=/etc/apt/apt.conf.d/docker-clean
restore_docker_clean() {
    if [[ -f "${docker_clean}.image-factory" ]]; then
        mv "${docker_clean}.image-factory" "${docker_clean}"
    fi
}
apt_options=()
if [[ "${cache_is_mounted}" == "true" ]]; then
    if [[ -f "${docker_clean}" ]]; then
        mv "${docker_clean}" "${docker_clean}.image-factory"
        trap restore_docker_clean EXIT
    fi
    apt_options+=(-o "APT::Keep-Downloaded-Packages=true" -o "Binary::apt::APT::Keep-Downloaded-Packages=true")
fi

echo "Installing (${mode}, python ${python_mm} from ${python_prefix}): ${packages[*]}" >&2
apt-get "${apt_options[@]}" update
apt-get "${apt_options[@]}" install -y --no-install-recommends "${packages[@]}"

if [[ "${cache_is_mounted}" != "true" ]]; then
    apt-get clean
fi
if [[ "${lists_are_mounted}" != "true" ]]; then
    rm -rf /var/lib/apt/lists/*
fi
# Logs of this run are of no use in the image.
rm -rf /var/log/apt/* /var/log/dpkg.log /var/cache/debconf/*-old
