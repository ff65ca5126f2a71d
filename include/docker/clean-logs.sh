#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# /clean-logs: the log groomer of the official chart's sidecars (`args: ["bash", "/clean-logs"]`).
# Every AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES (default 15) it removes from $AIRFLOW_HOME/logs:
#   - *.log files older than AIRFLOW__LOG_RETENTION_MINUTES (when set, > 0) or else
#     AIRFLOW__LOG_RETENTION_DAYS (default 15) days;
#   - then, oldest first, *.log files while the folder holds more than AIRFLOW__LOG_MAX_SIZE_BYTES
#     (or AIRFLOW__LOG_MAX_SIZE_PERCENT of its file system; 0: no size bound);
#   - directories left empty.
# CLEAN_LOGS_ONCE=true makes one pass and exits (for tests and cron-like use).
set -euo pipefail

readonly LOGS="${AIRFLOW_HOME:-/opt/airflow}/logs"
readonly RETENTION_DAYS="${AIRFLOW__LOG_RETENTION_DAYS:-15}"
readonly RETENTION_MINUTES="${AIRFLOW__LOG_RETENTION_MINUTES:-0}"
readonly FREQUENCY_MINUTES="${AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES:-15}"
readonly MAX_SIZE_PERCENT="${AIRFLOW__LOG_MAX_SIZE_PERCENT:-0}"
MAX_SIZE_BYTES="${AIRFLOW__LOG_MAX_SIZE_BYTES:-0}"

trap "exit 0" INT TERM

if ((MAX_SIZE_BYTES == 0 && MAX_SIZE_PERCENT > 0)); then
    total_kib=$(df -Pk "${LOGS}" 2>/dev/null | awk 'NR == 2 {print $2}')
    MAX_SIZE_BYTES=$(( ${total_kib:-0} * 1024 * MAX_SIZE_PERCENT / 100 ))
fi
readonly MAX_SIZE_BYTES

one_pass() {
    [[ -d "${LOGS}" ]] || return 0
    local age=(-mtime "+${RETENTION_DAYS}") what="${RETENTION_DAYS} days"
    if ((RETENTION_MINUTES > 0)); then
        age=(-mmin "+${RETENTION_MINUTES}")
        what="${RETENTION_MINUTES} minutes"
    fi
    echo "Removing logs older than ${what} from ${LOGS}"
    find "${LOGS}" -type d -name 'lost+found' -prune -o -type f -name '*.log' "${age[@]}" -print0 \
        | xargs -0 -r rm -f -- || true
    if ((MAX_SIZE_BYTES > 0)); then
        local used path size
        used=$(find "${LOGS}" -type f -name '*.log' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
        if ((used > MAX_SIZE_BYTES)); then
            echo "Logs take ${used} bytes, more than ${MAX_SIZE_BYTES}: removing the oldest"
            while IFS=' ' read -r size path && ((used > MAX_SIZE_BYTES)); do
                rm -f -- "${path}" && used=$((used - size))
            done < <(find "${LOGS}" -type f -name '*.log' -printf '%T@ %s %p\n' | sort -n | cut -d' ' -f2-)
        fi
    fi
    find "${LOGS}" -mindepth 1 -type d -empty -delete 2>/dev/null || true
}

echo "Cleaning ${LOGS} every ${FREQUENCY_MINUTES} minutes"
while true; do
    one_pass
    [[ "${CLEAN_LOGS_ONCE:-false}" == "true" ]] && exit 0
    sleep "$((FREQUENCY_MINUTES * 60))" &
    wait $!  # a TERM (pod shutdown) ends the wait at once
done
