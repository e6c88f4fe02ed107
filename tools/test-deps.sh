#!/usr/bin/env bash
# Install the system packages that the tests use (dig and ping, for the DNS and test-bed tests).
# Idempotent and quiet when everything is already there; safe to run on every CI run.
set -euo pipefail

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)

if [ "${#need[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: missing ${need[*]}; run this script as root (it uses apt-get)" >&2
  exit 1
fi

echo "test-deps: installing ${need[*]} from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
