#!/usr/bin/env bash
# Bring up the local stack the DAGs run against: a Docker engine, a BuildKit-capable docker CLI,
# a local registry holding the python:X.Y-slim-<debian> base images, a stand-in git repository
# for the Airflow sources and an Airflow home with SQLite. Everything lives under $STACK_DIR.
#
# Idempotent: what already runs is reused and what was seeded is kept, so a second run takes
# seconds. Works offline (no Docker Hub): base images are then built with debootstrap.
#
# Usage: bash include/stack/up.sh          (see down.sh to stop it)
# Settings (environment, with defaults):
#   STACK_DIR=<repo>/.stack  REGISTRY_PORT=5000  PYTHON_VERSIONS="3.11 3.13"
#   UPSTREAM=docker.io/library/python  MIRROR=localhost:$REGISTRY_PORT/library/python
#   DEBIAN_MIRROR=http://deb.debian.org/debian  DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
#   PULL_TIMEOUT=20  AIRFLOW_BIN=<repo>/.venv/bin/airflow  EXTRA_CA_BUNDLE=<system CA bundle>
#   DOCKER_CLI=<force a docker binary>  DOCKERD_ARGS=<extra dockerd flags when this script starts one>
set -euo pipefail

# --- Python version -> Debian release (the one place to edit) ---------------------------------
# The Debian release of python:X.Y-slim-<debian> for each supported Python version ...
declare -A DEBIAN_FOR_PYTHON=([3.10]=bookworm [3.11]=bookworm [3.12]=bookworm [3.13]=trixie)
# ... and the python3 each Debian release ships: an image can be built offline only when they agree
# (so 3.10 and 3.12 need the upstream image: there is no Debian release with them as python3).
declare -A PYTHON3_OF_DEBIAN=([bookworm]=3.11 [trixie]=3.13)

# --- settings -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
REGISTRY=localhost:$REGISTRY_PORT
PYTHON_VERSIONS=${PYTHON_VERSIONS:-3.11 3.13}
UPSTREAM=${UPSTREAM:-docker.io/library/python}
MIRROR=${MIRROR:-$REGISTRY/library/python}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
AIRFLOW_BIN=${AIRFLOW_BIN:-$REPO_ROOT/.venv/bin/airflow}
DOCKERD_ARGS=${DOCKERD_ARGS:-}
if [[ -z ${EXTRA_CA_BUNDLE:-} && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    EXTRA_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
EXTRA_CA_BUNDLE=${EXTRA_CA_BUNDLE:-}
# debootstrap, dockerd and chroot live in sbin, which a non-login shell may not have on PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

LOGS=$STACK_DIR/logs
RUN=$STACK_DIR/run
REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
AIRFLOW_HOME_DIR=$STACK_DIR/airflow
SOURCE_REPO=$STACK_DIR/source.git
STARTED=$SECONDS

say() { echo "[stack] $*"; }
die() {
    echo "[stack] ERROR: $*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
# Show the end of a log when something we started fails, so the cause is on screen.
die_with_log() {
    local log=$1
    shift
    if [[ -f $log ]]; then
        echo "[stack] --- last lines of $log ---" >&2
        tail -n 20 "$log" >&2
    fi
    die "$@"
}

for py in $PYTHON_VERSIONS; do
    [[ -n ${DEBIAN_FOR_PYTHON[$py]:-} ]] ||
        die "Python $py is not supported (known: $(printf '%s\n' "${!DEBIAN_FOR_PYTHON[@]}" | sort -V | xargs)); fix PYTHON_VERSIONS"
done

mkdir -p "$LOGS" "$RUN" "$STACK_DIR/rootfs" "$STACK_DIR/registry/data"
# down.sh --purge deletes only a directory carrying this marker, never an arbitrary STACK_DIR.
echo "created by include/stack/up.sh" >"$STACK_DIR/.stack-dir"
# Two up.sh at once would start two registries/dockerds or debootstrap into the same image.
exec 9>"$RUN/stack.lock"
if ! flock -n 9; then
    say "another up.sh is running for $STACK_DIR; waiting for it (up to 15 min)"
    flock -w 900 9 || die "$RUN/stack.lock is still held after 15 min; see who holds it: fuser -v $RUN/stack.lock"
fi

# ================================================================================================
# 1. Engine and Debian packages
# ================================================================================================
FIRST_DOCKER=$(command -v docker || true)

engine_answers() {
    local cli=${1:-$FIRST_DOCKER}
    [[ -n $cli ]] && timeout 15 "$cli" info --format '{{.ServerVersion}}' >/dev/null 2>&1
}
buildx_works() { [[ -n $FIRST_DOCKER ]] && "$FIRST_DOCKER" buildx version >/dev/null 2>&1; }
# Docker < 23 runs BuildKit builds itself; 23+ hands them to the buildx plugin.
cli_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1; }

ENGINE_UP=false
engine_answers && ENGINE_UP=true

missing_pkgs=()
have docker-registry || missing_pkgs+=(docker-registry)
have debootstrap || missing_pkgs+=(debootstrap)
have git || missing_pkgs+=(git)
have htpasswd || missing_pkgs+=(apache2-utils)
have curl || missing_pkgs+=(curl)
have flock || missing_pkgs+=(util-linux)
# The UI tests (tests/reliability/test_ui_stack.py) drive Debian's headless Chromium with Selenium.
have chromium || missing_pkgs+=(chromium)
have chromedriver || missing_pkgs+=(chromium-driver)
if [[ $ENGINE_UP == false ]] && ! have dockerd; then
    missing_pkgs+=(docker.io)
elif ! buildx_works && [[ ! -x /usr/bin/docker ]]; then
    # No buildx and no Debian CLI: docker.io brings a CLI (20.10) that still runs BuildKit builds
    # itself. Never next to Docker's own packages though: apt would replace them.
    if dpkg-query -W -f='${Status}' docker-ce-cli 2>/dev/null | grep -q 'ok installed'; then
        die "the docker CLI has no buildx plugin; install docker-buildx-plugin (Docker's apt repository)"
    fi
    major=$([[ -n $FIRST_DOCKER ]] && cli_major "$FIRST_DOCKER" || true)
    if [[ -z $major || $major -ge 23 ]]; then
        missing_pkgs+=(docker.io)
    fi
fi

if ((${#missing_pkgs[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! have apt-get; then
        die "missing Debian packages: ${missing_pkgs[*]} (install them, or run this script as root on Debian/Ubuntu so it can apt-get install them)"
    fi
    say "installing Debian packages: ${missing_pkgs[*]} (log: $LOGS/apt.log)"
    # Containers have no init, but a package's postinst may still start its service (a dockerd or a
    # registry on :5000 with data outside $STACK_DIR). A policy-rc.d answering 101 forbids that;
    # add one only for this apt call and only when none exists.
    policy_added=false
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=true
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    {
        apt-get update &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing_pkgs[@]}"
    } >>"$LOGS/apt.log" 2>&1 || die_with_log "$LOGS/apt.log" "apt-get install ${missing_pkgs[*]} failed"
    if [[ $policy_added == true ]]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    # A fresh machine may have had no docker CLI at all before docker.io.
    FIRST_DOCKER=$(command -v docker || true)
fi

if [[ $ENGINE_UP == true ]]; then
    if [[ -f $RUN/dockerd.pid ]] && kill -0 "$(cat "$RUN/dockerd.pid")" 2>/dev/null; then
        say "engine: reusing dockerd${DOCKER_HOST:+ at $DOCKER_HOST} (started by this stack, pid $(cat "$RUN/dockerd.pid"))"
    else
        say "engine: using the running Docker engine${DOCKER_HOST:+ at $DOCKER_HOST}"
    fi
else
    pidfile=$RUN/dockerd.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "engine: dockerd started earlier by this stack (pid $(cat "$pidfile")) is not answering yet; waiting"
    else
        [[ $(id -u) -eq 0 ]] || die "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST} and only root can start dockerd; start one or run as root"
        have dockerd || die "no Docker engine answers and dockerd is not installed (Debian package docker.io)"
        [[ -n $FIRST_DOCKER ]] || die "no docker CLI on PATH (Debian package docker.io)"
        host_args=()
        if [[ -n ${DOCKER_HOST:-} ]]; then
            # We can only start an engine on a local socket; a remote DOCKER_HOST must be fixed by hand.
            [[ $DOCKER_HOST == unix://* ]] || die "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local unix socket; not starting an engine for it"
            host_args=(-H "$DOCKER_HOST")
        fi
        rm -f "$pidfile"
        say "engine: starting dockerd (log: $LOGS/dockerd.log)"
        # setsid: the engine must outlive this script and not get make's Ctrl-C. 9>&-: it must not
        # inherit the stack lock fd, or it would hold the lock for as long as it runs.
        # shellcheck disable=SC2086  # DOCKERD_ARGS is a list of flags on purpose
        setsid dockerd "${host_args[@]}" --pidfile "$pidfile" $DOCKERD_ARGS \
            >>"$LOGS/dockerd.log" 2>&1 </dev/null 9>&- &
        dockerd_pid=$!
    fi
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        engine_answers && break
        if [[ -n ${dockerd_pid:-} ]] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
            die_with_log "$LOGS/dockerd.log" "dockerd exited right after starting"
        fi
        sleep 1
    done
    engine_answers || die_with_log "$LOGS/dockerd.log" "dockerd did not answer within 60 s"
fi

# ================================================================================================
# 2. A docker CLI that can run BuildKit builds
# ================================================================================================
# Docker 23+ CLIs refuse `DOCKER_BUILDKIT=1 docker build` without the buildx plugin, while the
# Debian CLI (20.10) runs BuildKit builds on the engine itself. The probe is a real (tiny) build:
# FROM scratch, one file, output to a directory, so it needs no image and leaves none behind.
probe_dir=$RUN/buildkit-probe
buildkit_build_works() {
    rm -rf "$probe_dir"
    mkdir -p "$probe_dir/ctx"
    echo probe >"$probe_dir/ctx/probe.txt"
    printf 'FROM scratch\nCOPY probe.txt /probe.txt\n' >"$probe_dir/ctx/Dockerfile"
    DOCKER_BUILDKIT=1 timeout 120 "$1" build -q -o "type=local,dest=$probe_dir/out" "$probe_dir/ctx" \
        >"$probe_dir/build.log" 2>&1 && [[ -f $probe_dir/out/probe.txt ]]
}

BUILDX=false
if [[ -n ${DOCKER_CLI:-} ]]; then
    buildkit_build_works "$DOCKER_CLI" || die_with_log "$probe_dir/build.log" "DOCKER_CLI=$DOCKER_CLI cannot run a BuildKit build"
    "$DOCKER_CLI" buildx version >/dev/null 2>&1 && BUILDX=true
elif buildx_works; then
    DOCKER_CLI=$FIRST_DOCKER
    BUILDX=true
else
    DOCKER_CLI=
    mapfile -t candidates < <({
        echo /usr/bin/docker
        type -ap docker
    } | awk '!seen[$0]++')
    for cli in "${candidates[@]}"; do
        [[ -x $cli ]] || continue
        if buildkit_build_works "$cli"; then
            DOCKER_CLI=$cli
            break
        fi
    done
    [[ -n $DOCKER_CLI ]] || die "no docker CLI can run BuildKit builds (tried: ${candidates[*]}); install the buildx plugin or Debian's docker.io"
fi
rm -rf "$probe_dir"
ENGINE_VERSION=$("$DOCKER_CLI" version --format '{{.Server.Version}}')
say "docker CLI: $DOCKER_CLI ($(cli_major "$DOCKER_CLI").x client, buildx=$BUILDX), engine $ENGINE_VERSION"

# ================================================================================================
# 3. Registry (Debian's docker-registry as a plain process: no image can be pulled to run one)
# ================================================================================================
v2_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$REGISTRY_URL/v2/" || true; }

status=$(v2_status)
if [[ $status == 200 ]]; then
    if [[ -f $RUN/registry.pid ]] && kill -0 "$(cat "$RUN/registry.pid")" 2>/dev/null; then
        say "registry: reusing $REGISTRY (started by this stack, pid $(cat "$RUN/registry.pid"))"
    else
        say "registry: something already serves $REGISTRY (not started by this stack); reusing it"
    fi
elif [[ $status != 000 ]]; then
    die "port $REGISTRY_PORT answers /v2/ with HTTP $status, not 200 (a registry with auth, or another service); free the port or set REGISTRY_PORT"
else
    cat >"$STACK_DIR/registry/config.yml" <<EOF
# Written by include/stack/up.sh; rewritten on each start.
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $STACK_DIR/registry/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    say "registry: starting docker-registry on $REGISTRY (log: $LOGS/registry.log)"
    # 9>&-: the lock fd must not be inherited, or the registry would hold the stack lock forever.
    # The bash wrapper writes its own pid and then becomes the registry (exec), so the pidfile is
    # exactly the registry's pid; setsid keeps it alive after this script and make exit.
    setsid bash -c 'echo $$ >"$1"; exec docker-registry serve "$2"' _ \
        "$RUN/registry.pid" "$STACK_DIR/registry/config.yml" >>"$LOGS/registry.log" 2>&1 </dev/null 9>&- &
    registry_pid=$!
    for _ in $(seq 30); do
        [[ $(v2_status) == 200 ]] && break
        kill -0 "$registry_pid" 2>/dev/null || die_with_log "$LOGS/registry.log" "docker-registry exited right after starting"
        sleep 0.5
    done
    [[ $(v2_status) == 200 ]] || die_with_log "$LOGS/registry.log" "docker-registry did not answer on $REGISTRY_URL/v2/ within 15 s"
fi

# ================================================================================================
# 4. Python base images in the mirror
# ================================================================================================
MIRROR_HOST=${MIRROR%%/*}
MIRROR_PATH=${MIRROR#*/}
case $MIRROR_HOST in
localhost | localhost:* | 127.* | "[::1]"*) MIRROR_SCHEME=http ;;
*) MIRROR_SCHEME=https ;;
esac

# HEAD on the manifest: answers "is it there" without pulling anything. All four manifest types,
# since a pushed upstream image may be an index and an imported one a single manifest.
mirror_has() {
    curl -sf -o /dev/null -I --max-time 10 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        "$MIRROR_SCHEME://$MIRROR_HOST/v2/$MIRROR_PATH/manifests/$1"
}

push_with_retries() {
    local image=$1 attempt
    for attempt in 1 2 3; do
        "$DOCKER_CLI" push "$image" >>"$LOGS/push.log" 2>&1 && return 0
        say "push of $image failed (attempt $attempt/3)"
        sleep $((attempt * 2))
    done
    die_with_log "$LOGS/push.log" "cannot push $image"
}

# Remove a debootstrap target safely: first unmount whatever an interrupted debootstrap left
# mounted inside it (/proc, /sys, ...), deepest first, then delete without crossing filesystems,
# so a leftover bind mount can never make rm reach the host.
remove_rootfs() {
    local dir=$1 mnt
    [[ -d $dir ]] || return 0
    dir=$(realpath "$dir")
    [[ $dir == "$(realpath "$STACK_DIR/rootfs")"/* ]] || die "refusing to remove $dir (not under $STACK_DIR/rootfs)"
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    if awk -v d="$dir/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        die "cannot unmount everything under $dir; remove it by hand"
    fi
    rm -rf --one-file-system -- "$dir"
}

CURRENT_ROOTFS=
cleanup_rootfs() { [[ -z $CURRENT_ROOTFS ]] || remove_rootfs "$CURRENT_ROOTFS"; }

# Like the official python:X.Y-slim image: the Python runtime with pip and venv, no compilers.
build_base_offline() {
    local py=$1 debian=$2 image=$3 rootfs pyfull
    rootfs=$(mktemp -d "$STACK_DIR/rootfs/$debian.XXXXXX")
    CURRENT_ROOTFS=$rootfs
    trap cleanup_rootfs EXIT
    local log=$LOGS/debootstrap-$debian.log
    say "  building $image offline: debootstrap $debian from $DEBIAN_MIRROR (about a minute; log: $log)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$debian" "$rootfs" "$DEBIAN_MIRROR" >"$log" 2>&1 ||
        die_with_log "$log" "debootstrap $debian failed"

    # python/pip on PATH as in the official image (it has them in /usr/local/bin).
    [[ -e $rootfs/usr/bin/python ]] || ln -s /usr/bin/python3 "$rootfs/usr/local/bin/python"
    [[ -e $rootfs/usr/bin/pip ]] || ln -s /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    # The official image lets root `pip install` and `pip install --user`; Debian's PEP 668 marker
    # would refuse both and break Dockerfiles written for the official image.
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    # Apt sources as in the official Debian images (release, updates, security), so packages
    # installed on top of this base get security fixes like they would on the real one.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $debian $debian-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: $debian-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Nothing of the build host in the image; the engine provides these files at run time.
    : >"$rootfs/etc/resolv.conf"
    echo localhost >"$rootfs/etc/hostname"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/root/.cache
    pyfull=$(chroot "$rootfs" python3 -c 'import platform; print(platform.python_version())')
    [[ $pyfull == "$py".* ]] || die "Debian $debian has Python $pyfull, not $py"

    # /dev, /proc and /sys stay empty: the engine mounts them in every container.
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$rootfs" -c . |
        "$DOCKER_CLI" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change "ENV PYTHON_VERSION=$pyfull" \
            --change "LABEL org.opencontainers.image.version=$pyfull" \
            --change "LABEL org.opencontainers.image.description=\"Offline stand-in for python:$py-slim-$debian, built by include/stack/up.sh with debootstrap\"" \
            --change 'CMD ["python3"]' \
            - "$image" >/dev/null || die "docker import of $image failed"
    remove_rootfs "$rootfs"
    CURRENT_ROOTFS=
    trap - EXIT
}

# Runs without network: the base must work with nothing but itself.
sanity_check() {
    "$DOCKER_CLI" run --rm --network none "$1" sh -ec \
        'python --version; python -m venv /tmp/v; /tmp/v/bin/python -c "import ssl, sqlite3, ensurepip"; pip --version' |
        sed 's/^/[stack]   /'
}

# Leftovers of an interrupted run.
for old in "$STACK_DIR"/rootfs/*; do
    [[ -e $old ]] && remove_rootfs "$old"
done

IMAGES=()
for py in $PYTHON_VERSIONS; do
    debian=${DEBIAN_FOR_PYTHON[$py]}
    tag=$py-slim-$debian
    image=$MIRROR:$tag
    IMAGES+=("$image")
    if mirror_has "$tag"; then
        say "python base: $image present"
        continue
    fi
    say "python base: $image missing; trying $UPSTREAM:$tag (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" "$DOCKER_CLI" pull "$UPSTREAM:$tag" >>"$LOGS/pull.log" 2>&1; then
        "$DOCKER_CLI" tag "$UPSTREAM:$tag" "$image"
    else
        say "  $UPSTREAM:$tag cannot be pulled (see $LOGS/pull.log)"
        [[ ${PYTHON3_OF_DEBIAN[$debian]:-} == "$py" ]] ||
            die "python:$tag cannot be built offline: Debian $debian ships Python ${PYTHON3_OF_DEBIAN[$debian]:-?}, not $py (offline builds exist for: $(printf '%s\n' "${PYTHON3_OF_DEBIAN[@]}" | sort -V | xargs)). Make $UPSTREAM reachable, or drop $py from PYTHON_VERSIONS."
        build_base_offline "$py" "$debian" "$image"
    fi
    sanity_check "$image" || die "$image does not pass the sanity check (python --version, python -m venv)"
    push_with_retries "$image"
    mirror_has "$tag" || die "$image was pushed but $MIRROR_HOST does not list it"
    say "  pushed $image"
done

# ================================================================================================
# 5. Stand-in for the apache/airflow source repository
# ================================================================================================
# A faithful Airflow source tree made from the PyPI sdists of a pinned release (seed_sources.py says
# how): v3-3-test holds the release, main starts the next minor's development. A repository that
# already has them is kept; the old README-only stand-in is moved aside (its constraints branches stay
# there). The sdists are downloaded once, into $STACK_DIR/cache/sdists.
seed_python=$REPO_ROOT/.venv/bin/python
[[ -x $seed_python ]] || seed_python=python3
seed_log=$LOGS/seed-sources.log
"$seed_python" "$REPO_ROOT/include/stack/seed_sources.py" --repo "$SOURCE_REPO" \
    --cache "$STACK_DIR/cache/sdists" >"$seed_log" 2>&1 ||
    die_with_log "$seed_log" "could not seed the source repository $SOURCE_REPO (log: $seed_log)"
# What it did: "present: ...", or "moved aside: ..." (the old stand-in) and "created: ... (main at ...)".
while IFS= read -r line; do
    case $line in present:* | "moved aside:"* | created:*) say "source repo: $line" ;; esac
done <"$seed_log"

# Its constraints branches, as Airflow's own: resolved as PyPI stood at the release (seed_constraints.py
# says why; GitHub's are unreachable). Needs the package (the venv): its resolver, settings and git code.
constraints_log=$LOGS/seed-constraints.log
python_args=()
for version in $PYTHON_VERSIONS; do python_args+=(--python "$version"); done
IMAGE_FACTORY_EXTRA_CA_BUNDLE="$EXTRA_CA_BUNDLE" "$seed_python" "$REPO_ROOT/include/stack/seed_constraints.py" \
    --repo "$SOURCE_REPO" "${python_args[@]}" >"$constraints_log" 2>&1 ||
    die_with_log "$constraints_log" "could not seed the constraints branches of $SOURCE_REPO (log: $constraints_log)"
while IFS= read -r line; do
    case $line in present:* | created:*) say "constraints: $line" ;; esac
done <"$constraints_log"

# ================================================================================================
# 6. Airflow home (SQLite)
# ================================================================================================
mkdir -p "$AIRFLOW_HOME_DIR"
airflow_env=(
    AIRFLOW_HOME="$AIRFLOW_HOME_DIR"
    AIRFLOW__CORE__DAGS_FOLDER="$REPO_ROOT/dags"
    AIRFLOW__CORE__PLUGINS_FOLDER="$REPO_ROOT/plugins"
    AIRFLOW__CORE__LOAD_EXAMPLES=False
)
if [[ -x $AIRFLOW_BIN ]]; then
    # Starting Airflow costs seconds; migrate only when the installed Airflow changed (its
    # dist-info name carries the version) or the database is new.
    venv=$(dirname "$(dirname "$AIRFLOW_BIN")")
    stamp=$(find "$venv"/lib/python3*/site-packages -maxdepth 1 -name 'apache_airflow-*.dist-info' -printf '%f\n' 2>/dev/null | sort | head -n 1)
    stamp=${stamp:-$AIRFLOW_BIN $(stat -c %Y "$AIRFLOW_BIN")}
    marker=$AIRFLOW_HOME_DIR/.stack-migrated
    if [[ -f $AIRFLOW_HOME_DIR/airflow.db && -f $marker && $(cat "$marker") == "$stamp" ]]; then
        say "airflow: $AIRFLOW_HOME_DIR already migrated ($stamp)"
    else
        say "airflow: migrating the SQLite database in $AIRFLOW_HOME_DIR (log: $LOGS/airflow.log)"
        env "${airflow_env[@]}" "$AIRFLOW_BIN" db migrate >>"$LOGS/airflow.log" 2>&1 ||
            die_with_log "$LOGS/airflow.log" "airflow db migrate failed"
        env "${airflow_env[@]}" "$AIRFLOW_BIN" pools set image_builds 2 "concurrent image builds on one engine" \
            >>"$LOGS/airflow.log" 2>&1 || die_with_log "$LOGS/airflow.log" "airflow pools set image_builds failed"
        echo "$stamp" >"$marker"
        say "airflow: migrated; pool image_builds has 2 slots"
    fi
else
    say "airflow: $AIRFLOW_BIN not found; skipping db migrate (create the venv, then rerun)"
fi

# ================================================================================================
# 7. Env file for make, tests and the DAGs
# ================================================================================================
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
py_json=$(printf '"%s",' $PYTHON_VERSIONS)
py_json="[${py_json%,}]"
# release_images here: the first stack Python is the default one, and no constraints (GitHub is unreachable).
{
    echo "# Written by include/stack/up.sh; source it: . $STACK_DIR/env"
    for kv in STACK_DIR="$STACK_DIR" "${airflow_env[@]}" \
        ${DOCKER_HOST:+DOCKER_HOST="$DOCKER_HOST"} \
        IMAGE_FACTORY_DOCKER_CLI="$DOCKER_CLI" \
        IMAGE_FACTORY_BUILDX="$BUILDX" \
        IMAGE_FACTORY_REGISTRY="$REGISTRY" \
        IMAGE_FACTORY_PYTHON_BASE_MIRROR="$MIRROR" \
        IMAGE_FACTORY_SOURCE_REPO="$SOURCE_REPO" \
        IMAGE_FACTORY_EXTRA_CA_BUNDLE="$EXTRA_CA_BUNDLE" \
        IMAGE_FACTORY_PYTHON_VERSIONS="$py_json" \
        IMAGE_FACTORY_RELEASE_DEFAULT_PYTHON="${PYTHON_VERSIONS%% *}" \
        IMAGE_FACTORY_RELEASE_CONSTRAINTS_URL=""; do
        echo "export ${kv%%=*}=$(quote "${kv#*=}")"
    done
} >"$STACK_DIR/env.tmp"
mv "$STACK_DIR/env.tmp" "$STACK_DIR/env"
STACK_DIR=$STACK_DIR REGISTRY_PORT=$REGISTRY_PORT DOCKER_CLI=$DOCKER_CLI EXTRA_CA_BUNDLE=$EXTRA_CA_BUNDLE bash "$REPO_ROOT/include/stack/postgres-image.sh" # postgres for smoke deploys; adds its setting to env

# --- summary -------------------------------------------------------------------------------------
say "ready in $((SECONDS - STARTED)) s"
say "  engine:    Docker $ENGINE_VERSION${DOCKER_HOST:+ at $DOCKER_HOST}; CLI $DOCKER_CLI (buildx=$BUILDX)"
repos=$(curl -s --max-time 5 "$REGISTRY_URL/v2/_catalog?n=1000" | grep -o '"[^"]*"' | sed 1d | wc -l)
tags=$(curl -s --max-time 5 "$MIRROR_SCHEME://$MIRROR_HOST/v2/$MIRROR_PATH/tags/list" |
    sed -n 's/.*"tags":\[\(.*\)\].*/\1/p' | tr -d '"' | tr ',' ' ')
say "  registry:  $REGISTRY_URL ($repos repositories; list: curl -s $REGISTRY_URL/v2/_catalog)"
say "  python:    $MIRROR: ${tags:-none} (wanted: ${IMAGES[*]##*:})"
say "  sources:   $SOURCE_REPO"
say "  airflow:   AIRFLOW_HOME=$AIRFLOW_HOME_DIR"
say "  env file:  . $STACK_DIR/env"
