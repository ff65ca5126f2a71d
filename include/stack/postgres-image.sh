#!/usr/bin/env bash
# Put a PostgreSQL image into the stack's registry for smoke deploys of the helm chart, and point the
# smoke_postgres_image setting at it in $STACK_DIR/env.
#
# Nothing can be pulled from Docker Hub here, so the image is built FROM the stack's own Debian base
# (the python:3.11-slim-bookworm stand-in that up.sh put into the mirror) with Debian's postgresql-15.
# It behaves like docker.io/library/postgres for what the chart uses: POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB / PGDATA on first start, `postgres` as the command, uid 999, pg_isready on PATH.
# Real users keep the upstream image (the chart's default); only the stack's setting names this one.
#
# Idempotent: an image already in the registry is kept (seconds). Called by make stack (seed_stack.py), or by hand:
#   bash include/stack/postgres-image.sh
# Settings (environment): STACK_DIR  REGISTRY_PORT=5000  DOCKER_CLI  EXTRA_CA_BUNDLE
#   POSTGRES_IMAGE=localhost:$REGISTRY_PORT/library/postgres:15-bookworm
#   POSTGRES_BASE=localhost:$REGISTRY_PORT/library/python:3.11-slim-bookworm
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
REGISTRY=localhost:$REGISTRY_PORT
POSTGRES_IMAGE=${POSTGRES_IMAGE:-$REGISTRY/library/postgres:15-bookworm}
POSTGRES_BASE=${POSTGRES_BASE:-$REGISTRY/library/python:3.11-slim-bookworm}
DOCKER_CLI=${DOCKER_CLI:-${IMAGE_FACTORY_DOCKER_CLI:-/usr/bin/docker}}
if [[ -z ${EXTRA_CA_BUNDLE:-} && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    EXTRA_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
LOGS=$STACK_DIR/logs
mkdir -p "$LOGS"

say() { echo "[stack] $*"; }
die() {
    echo "[stack] ERROR: $*" >&2
    exit 1
}

name=${POSTGRES_IMAGE%:*}
tag=${POSTGRES_IMAGE##*:}
path=${name#*/}
present() {
    curl -sf -o /dev/null -I --max-time 10 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://127.0.0.1:$REGISTRY_PORT/v2/$path/manifests/$tag"
}

if present; then
    say "postgres: $POSTGRES_IMAGE present"
else
    ctx=$(mktemp -d)
    trap 'rm -rf "$ctx"' EXIT
    cp "$REPO_ROOT/include/docker/scripts/with_extra_ca.sh" "$ctx/"
    # First start: create the cluster with the asked-for superuser, password and database, then run
    # the command as is (`postgres`, listening on every address).
    cat >"$ctx/postgres-entrypoint" <<'EOF'
#!/bin/bash
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [[ ${1:-} == postgres && ! -s $PGDATA/PG_VERSION ]]; then
    [[ -n ${POSTGRES_PASSWORD:-} ]] || { echo "postgres-entrypoint: POSTGRES_PASSWORD is not set" >&2; exit 1; }
    mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
    pwfile=$(mktemp) && printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [[ $POSTGRES_DB != postgres ]]; then
        postgres --single -D "$PGDATA" -j postgres <<<"CREATE DATABASE \"$POSTGRES_DB\";" >/dev/null
    fi
    echo "postgres-entrypoint: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
if [[ ${1:-} == postgres ]]; then
    shift
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
EOF
    cat >"$ctx/Dockerfile" <<EOF
FROM $POSTGRES_BASE
# uid/gid 999 as in the upstream image, made before the package so it takes them.
RUN groupadd -r -g 999 postgres && useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres
RUN --mount=type=secret,id=extra_ca,required=false --mount=type=bind,source=with_extra_ca.sh,target=/tmp/with_extra_ca.sh \\
    bash /tmp/with_extra_ca.sh bash -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 && rm -rf /var/lib/apt/lists/*' \\
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 2777 /var/run/postgresql
COPY --chmod=0755 postgres-entrypoint /usr/local/bin/postgres-entrypoint
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
USER 999
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
LABEL org.opencontainers.image.description="PostgreSQL 15 from Debian bookworm for the image factory's smoke deploys (stand-in for postgres:15-bookworm)"
EOF
    secret_args=()
    [[ -n ${EXTRA_CA_BUNDLE:-} ]] && secret_args=(--secret "id=extra_ca,src=$EXTRA_CA_BUNDLE")
    say "postgres: building $POSTGRES_IMAGE FROM $POSTGRES_BASE with Debian's postgresql-15 (log: $LOGS/postgres-image.log)"
    DOCKER_BUILDKIT=1 "$DOCKER_CLI" build --progress=plain "${secret_args[@]}" -t "$POSTGRES_IMAGE" "$ctx" \
        >"$LOGS/postgres-image.log" 2>&1 || { tail -n 20 "$LOGS/postgres-image.log" >&2; die "build of $POSTGRES_IMAGE failed"; }
    # It must start and accept connections before it is published.
    cid=$("$DOCKER_CLI" run -d -e POSTGRES_PASSWORD=check "$POSTGRES_IMAGE")
    ok=false
    for _ in $(seq 30); do
        if "$DOCKER_CLI" exec "$cid" pg_isready -q -h 127.0.0.1 -U postgres; then
            ok=true
            break
        fi
        sleep 1
    done
    "$DOCKER_CLI" logs "$cid" >>"$LOGS/postgres-image.log" 2>&1 || true
    "$DOCKER_CLI" rm -f "$cid" >/dev/null
    [[ $ok == true ]] || die "$POSTGRES_IMAGE does not accept connections (see $LOGS/postgres-image.log)"
    "$DOCKER_CLI" push "$POSTGRES_IMAGE" >>"$LOGS/postgres-image.log" 2>&1 || die "push of $POSTGRES_IMAGE failed"
    say "postgres: pushed $POSTGRES_IMAGE"
fi

# The stack's setting (after seed_stack.py wrote the env file; replaced on every run).
env_file=$STACK_DIR/env
if [[ -f $env_file ]]; then
    umask 077 # the env file holds the stack's signing key
    grep -v '^export IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE=' "$env_file" >"$env_file.tmp" || true
    echo "export IMAGE_FACTORY_SMOKE_POSTGRES_IMAGE='$POSTGRES_IMAGE'" >>"$env_file.tmp"
    mv "$env_file.tmp" "$env_file"
fi
