#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0 (the "License").
#
# with_extra_ca.sh COMMAND [ARGS...]
#
# Runs COMMAND with an extra CA bundle made available to pip, apt, curl and Python's
# ssl module - but only for the duration of COMMAND, and never in an image layer.
#
# The bundle reaches the build ONLY as a BuildKit secret:
#
#     RUN --mount=type=secret,id=extra_ca,required=false bash with_extra_ca.sh ...
#     docker build --secret id=extra_ca,src=/path/to/ca-bundle.crt ...
#
# BuildKit mounts the secret as a tmpfs file at /run/secrets/extra_ca (override with
# EXTRA_CA_SECRET) for that RUN only. This script concatenates the image's own trust
# store with the secret into a temporary file in /dev/shm (a tmpfs that is never part of
# a layer), points PIP_CERT / REQUESTS_CA_BUNDLE / SSL_CERT_FILE / CURL_CA_BUNDLE /
# NODE_EXTRA_CA_CERTS (node, npm, pnpm) and
# apt's Acquire::https::CAInfo (through APT_CONFIG, which apt reads in addition to
# /etc/apt/apt.conf.d) at it, runs COMMAND, and deletes the file again.
#
# The secret may be a full bundle (e.g. the host's /etc/ssl/certs/ca-certificates.crt)
# or just a corporate root CA: the public roots of the image are kept either way.
# Without the secret, COMMAND runs unchanged (builds without TLS inspection need nothing).
set -euo pipefail

secret="${EXTRA_CA_SECRET:-/run/secrets/extra_ca}"

if [[ ! -s "${secret}" ]]; then
    "$@"
    exit $?
fi

tmp_root=/dev/shm
if [[ ! -d "${tmp_root}" || ! -w "${tmp_root}" ]]; then
    tmp_root="${TMPDIR:-/tmp}"
fi
work_dir="$(mktemp -d "${tmp_root}/extra-ca.XXXXXX")"
# apt's https method runs as the unprivileged _apt user: it must be able to read the bundle
# (CA certificates are public; the directory lives only in a tmpfs, for this RUN only).
chmod 0755 "${work_dir}"
cleanup() { rm -rf "${work_dir}"; }
trap cleanup EXIT

bundle="${work_dir}/ca-bundle.pem"
for system_bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -s "${system_bundle}" ]]; then
        cat "${system_bundle}" >"${bundle}"
        echo >>"${bundle}"
        break
    fi
done
cat "${secret}" >>"${bundle}"
chmod 0644 "${bundle}"

apt_config="${work_dir}/apt-extra-ca.conf"
{
    # An additional APT_CONFIG file may have been given by the caller: keep it.
    if [[ -n "${APT_CONFIG:-}" && -f "${APT_CONFIG}" ]]; then
        cat "${APT_CONFIG}"
    fi
    echo "Acquire::https::CAInfo \"${bundle}\";"
} >"${apt_config}"

echo "with_extra_ca: using the extra CA bundle from the build secret (not stored in the image)" >&2
PIP_CERT="${bundle}" \
REQUESTS_CA_BUNDLE="${bundle}" \
SSL_CERT_FILE="${bundle}" \
CURL_CA_BUNDLE="${bundle}" \
NODE_EXTRA_CA_CERTS="${bundle}" \
APT_CONFIG="${apt_config}" \
    "$@"
