#!/usr/bin/env bash
# Stop what include/stack/up.sh started: the registry and the dockerd, and only those it started
# itself (it left pidfiles for them in $STACK_DIR/run). An engine or registry that was already
# running when up.sh came is left alone, and so is all data.
#
# Usage: bash include/stack/down.sh [--purge]
#   --purge  also delete $STACK_DIR (registry data, Airflow home, source repo, logs). Images in the
#            engine's own store (e.g. localhost:5000/library/python:*) are not touched.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-$REPO_ROOT/.stack}
RUN=$STACK_DIR/run

say() { echo "[stack] $*"; }
die() {
    echo "[stack] ERROR: $*" >&2
    exit 1
}

PURGE=false
for arg in "$@"; do
    case $arg in
    --purge) PURGE=true ;;
    -h | --help)
        sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $arg (usage: down.sh [--purge])" ;;
    esac
done

# stop NAME PIDFILE PROGRAM SECONDS: TERM the process in PIDFILE if it is still PROGRAM (a pid can
# be reused by an unrelated process after a reboot), wait, then KILL as a last resort.
stop() {
    local name=$1 pidfile=$2 program=$3 grace=$4 pid
    if [[ ! -f $pidfile ]]; then
        say "$name: not started by this stack; leaving it alone"
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null ||
        ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qw -- "$program"; then
        say "$name: not running (stale pidfile removed)"
        rm -f "$pidfile"
        return 0
    fi
    say "$name: stopping pid $pid"
    kill -TERM "$pid"
    for _ in $(seq $((grace * 2))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name: still running after ${grace} s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$pidfile"
    say "$name: stopped"
}

if [[ ! -d $STACK_DIR ]]; then
    say "nothing to do: $STACK_DIR does not exist"
    exit 0
fi

stop registry "$RUN/registry.pid" docker-registry 10
# dockerd stops its containers (10 s each by default) before it exits: give it time.
stop dockerd "$RUN/dockerd.pid" dockerd 60

if [[ $PURGE == false ]]; then
    say "data kept in $STACK_DIR (down.sh --purge deletes it)"
    exit 0
fi

# --purge: delete STACK_DIR and nothing outside it. Only a directory up.sh created (it carries
# .stack-dir) and never one of the obvious wrong targets, whatever STACK_DIR says.
target=$(realpath -e "$STACK_DIR")
case $target in
/ | "$(realpath "$REPO_ROOT")" | "$(realpath -m "${HOME:-/root}")" | /root | /home | /tmp | /var | /usr | /etc | /work)
    die "refusing to delete $target"
    ;;
esac
[[ -f $target/.stack-dir ]] || die "refusing to delete $target: it has no .stack-dir marker, so up.sh did not create it"

# An interrupted debootstrap can leave /proc or /sys mounted inside a rootfs: unmount whatever is
# mounted below the stack (deepest first), and never let rm cross into another filesystem.
while read -r mnt; do
    umount -l "$mnt" 2>/dev/null || true
done < <(awk -v d="$target/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
if awk -v d="$target/" 'index($5, d) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "something is still mounted under $target; unmount it and rerun"
fi
rm -rf --one-file-system -- "$target"
say "purged $target"
