#!/usr/bin/env bash
# Bring up the local stack the DAGs run against: a Docker engine, a BuildKit-capable docker CLI,
# a local registry holding the python:X.Y-slim-<debian> base images, a stand-in git repository
# for the Airflow sources and an Airflow home with SQLite. Everything lives under $STACK_DIR.
#
# This script is the host bootstrap, what must be bash: Debian packages, dockerd, the registry
# process and debootstrap. The rest is include/stack/seed_stack.py, run with the repository's
# .venv python so that it uses the package's settings, BuildKit probe, engine and registry code.
#
# Idempotent: what already runs is reused and what was seeded is kept, so a second run takes
# seconds. Works offline (no Docker Hub): base images are then built with debootstrap.
#
# arm64: for each Python of ARM64_PYTHON_VERSIONS (and of PYTHON_VERSIONS) the stack registers QEMU's
# arm64 handler with binfmt_misc (qemu-user-static, binfmt-support), debootstraps an arm64 rootfs
# under emulation beside the amd64 ones, and the mirror's python:X.Y-slim-<debian> becomes an OCI image
# index over the amd64 and arm64 images, as Docker Hub's is (the amd64 image keeps its digest). The arm64
# rootfs takes 4-5 min on a 2-core machine, against the amd64 ones' 1-2; it goes on while the rest is
# seeded, and its image is built, checked and pushed last (40 s). None of it again in a later run.
# Where the machine does not allow emulation (not root, no binfmt_misc) it says so once and goes on
# amd64-only.
# $STACK_DIR/env records what the stack can build for: IMAGE_FACTORY_STACK_PLATFORMS="linux/amd64
# linux/arm64", or "linux/amd64".
#
# Usage: bash include/stack/up.sh          (see down.sh to stop it; needs .venv: make venv)
# Settings (environment, with defaults):
#   STACK_DIR=<repo>/.stack  REGISTRY_PORT=5000  PYTHON_VERSIONS="3.11 3.13"
#   ARM64_PYTHON_VERSIONS=3.11  (set and empty: no emulation, no arm64 bases)
#   UPSTREAM=docker.io/library/python  MIRROR=localhost:$REGISTRY_PORT/library/python
#   DEBIAN_MIRROR=http://deb.debian.org/debian  DEBIAN_SECURITY_MIRROR=http://deb.debian.org/debian-security
#   PULL_TIMEOUT=20  AIRFLOW_BIN=<repo>/.venv/bin/airflow  EXTRA_CA_BUNDLE=<system CA bundle>
#   DOCKER_CLI=<force a docker binary>  DOCKERD_ARGS=<extra dockerd flags when this script starts one>
set -euo pipefail

# --- settings -----------------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
REGISTRY=localhost:$REGISTRY_PORT
PYTHON_VERSIONS=${PYTHON_VERSIONS:-3.11 3.13}
# "-", not ":-": set and empty means no arm64 at all.
ARM64_PYTHON_VERSIONS=${ARM64_PYTHON_VERSIONS-3.11}
UPSTREAM=${UPSTREAM:-docker.io/library/python}
MIRROR=${MIRROR:-$REGISTRY/library/python}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
AIRFLOW_BIN=${AIRFLOW_BIN:-$REPO_ROOT/.venv/bin/airflow}
DOCKERD_ARGS=${DOCKERD_ARGS:-}
DOCKER_CLI=${DOCKER_CLI:-}
if [[ -z ${EXTRA_CA_BUNDLE:-} && -f /etc/ssl/certs/ca-certificates.crt ]]; then
    EXTRA_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
EXTRA_CA_BUNDLE=${EXTRA_CA_BUNDLE:-}
# seed_stack.py reads the same settings from the environment.
export STACK_DIR REGISTRY_PORT PYTHON_VERSIONS ARM64_PYTHON_VERSIONS UPSTREAM MIRROR PULL_TIMEOUT AIRFLOW_BIN \
    EXTRA_CA_BUNDLE DOCKER_CLI
# debootstrap, dockerd and chroot live in sbin, which a non-login shell may not have on PATH.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

LOGS=$STACK_DIR/logs
RUN=$STACK_DIR/run
REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
STARTED=$(date +%s)
VENV_PYTHON=$REPO_ROOT/.venv/bin/python
SEED=$REPO_ROOT/include/stack/seed_stack.py

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

[[ -x $VENV_PYTHON ]] ||
    die "$VENV_PYTHON not found: the stack is seeded with the package installed there; run make venv (make stack does)"
# The settings (PYTHON_VERSIONS, MIRROR) are checked before anything is installed or started.
"$VENV_PYTHON" "$SEED" check || exit 1

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
# Only to decide whether docker.io must be installed (the engine may not run yet): which CLI the stack
# builds with is decided later by the package's BuildKit probe (seed_stack.py bases).
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
# arm64 emulation, only when an arm64 base is wanted. Optional: without root they are not asked for, and
# seed_stack.py bases says why arm64 is unavailable instead of failing the stack.
arm64_wanted=false
for py in $ARM64_PYTHON_VERSIONS; do
    [[ " $PYTHON_VERSIONS " == *" $py "* ]] && arm64_wanted=true
done
if [[ $arm64_wanted == true && $(id -u) -eq 0 ]] && have apt-get; then
    have qemu-aarch64-static || missing_pkgs+=(qemu-user-static)
    have update-binfmts || missing_pkgs+=(binfmt-support)
fi
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
# 2. Registry (Debian's docker-registry as a plain process: no image can be pulled to run one)
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
# 3. Python base images the upstream cannot give: debootstrap
# ================================================================================================
# seed_stack.py bases chooses the docker CLI (the package's BuildKit probe), pulls what the mirror
# lacks and lists in $RUN/rootfs.todo what cannot be pulled; each of those becomes a rootfs tarball
# here, which seed_stack.py seed (finish, for arm64) imports, checks and pushes. It also sets up arm64
# emulation (binfmt_misc) and lists the arm64 rootfs the mirror lacks (arch, the fifth field, arm64).

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
# Leaves $STACK_DIR/rootfs/<tag>.tar (named so only once complete) and <tag>.python-version.
# The same for both architectures; arm64's dpkg and Python run under QEMU (binfmt_misc with the F flag
# lets chroot run them), which makes it several times slower.
build_base_offline() {
    local py=$1 debian=$2 tag=$3 image=$4 arch=${5:-amd64} rootfs pyfull
    local tarball=$STACK_DIR/rootfs/$tag.tar suffix= started=$SECONDS arch_args=()
    # The native one as it always was (debootstrap's default architecture is the host's).
    [[ $arch == amd64 ]] || { suffix=-$arch; arch_args=(--arch="$arch"); }
    # Every path below is inside the new rootfs: refuse to go on without one.
    rootfs=$(mktemp -d "$STACK_DIR/rootfs/$debian$suffix.XXXXXX") && [[ -d $rootfs && $rootfs != / ]] ||
        die "cannot make a directory for the $debian$suffix rootfs under $STACK_DIR/rootfs"
    CURRENT_ROOTFS=$rootfs
    trap cleanup_rootfs EXIT
    local log=$LOGS/debootstrap-$debian$suffix.log
    if [[ $arch == amd64 ]]; then
        say "  building $image offline: debootstrap $debian from $DEBIAN_MIRROR (about a minute; log: $log)"
    else
        say "  building $image offline: debootstrap --arch=$arch $debian, emulated (a few minutes; log: $log)"
    fi
    debootstrap --variant=minbase "${arch_args[@]}" --include=python3,python3-venv,python3-pip,ca-certificates \
        "$debian" "$rootfs" "$DEBIAN_MIRROR" >"$log" 2>&1 </dev/null ||
        die_with_log "$log" "debootstrap --arch=$arch $debian failed"

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
    tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -C "$rootfs" \
        -cf "$tarball.part" . || die "cannot write $tarball"
    echo "$pyfull" >"$STACK_DIR/rootfs/$tag.python-version"
    mv "$tarball.part" "$tarball"
    remove_rootfs "$rootfs"
    CURRENT_ROOTFS=
    trap - EXIT
    say "  $tag.tar ($arch rootfs) built in $((SECONDS - started)) s"
}

# Leftovers of an interrupted run (a finished tarball stays: seed_stack.py takes it).
for old in "$STACK_DIR"/rootfs/*; do
    [[ -d $old ]] && remove_rootfs "$old"
done
rm -f "$STACK_DIR"/rootfs/*.part

todo_file=$RUN/rootfs.todo
rm -f "$todo_file" "$RUN/buildkit-cli.json"
"$VENV_PYTHON" "$SEED" bases --todo "$todo_file" || exit 1
mapfile -t todo <"$todo_file"
# One subshell per base, at once: each is mostly downloads and dpkg, so two take little more than one.
# Each subshell removes its own half-made rootfs if it fails (its EXIT trap). The native ones are waited
# for here; an emulated one (minutes under QEMU) goes on while `seed` does the rest, and `finish` takes it.
native_builders=()
emulated_builders=()
builds_started=$SECONDS
for line in "${todo[@]}"; do
    read -r py debian tag image arch <<<"$line"
    build_base_offline "$py" "$debian" "$tag" "$image" "$arch" &
    if [[ $arch == amd64 ]]; then native_builders+=("$!"); else emulated_builders+=("$!"); fi
done
# Every one waited for, so none is left running when this script ends; 1 when any failed.
wait_for() {
    local pid failed=0
    for pid in "$@"; do
        wait "$pid" || failed=1
    done
    return $failed
}
rootfs_failed() {
    wait_for "${emulated_builders[@]}" || true
    die "a Python base could not be built (see the debootstrap logs in $LOGS)"
}
wait_for "${native_builders[@]}" || rootfs_failed
((${#native_builders[@]} == 0)) || say "  native rootfs builds done in $((SECONDS - builds_started)) s"

# ================================================================================================
# 4. The rest, in Python: the bases into the mirror, the source repository and its constraints,
#    the Airflow home, the env file (seed_stack.py seed); then the arm64 bases (seed_stack.py finish)
# ================================================================================================
if ! "$VENV_PYTHON" "$SEED" seed; then
    ((${#emulated_builders[@]} == 0)) || say "waiting for the arm64 rootfs build to end before stopping"
    wait_for "${emulated_builders[@]}" || true
    exit 1
fi
if ((${#emulated_builders[@]})); then
    wait_for "${emulated_builders[@]}" || die "an arm64 Python base could not be built (see the debootstrap logs in $LOGS)"
    say "  arm64 rootfs builds done $((SECONDS - builds_started)) s after they started"
fi
# exec: the stack lock (fd 9) stays held until it ends, and its exit status is this script's.
exec "$VENV_PYTHON" "$SEED" finish --started "$STARTED"
