#!/usr/bin/env bash
# Install Debian's Chromium for the web UI's browser tests (Playwright drives it by path; no
# browser is ever downloaded by a test tool). The .deb files are kept in .cache/apt, so a second
# install on the same checkout needs no download. Idempotent, quiet when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "browser: chromium is missing; run this script as root (it uses apt-get)" >&2
  exit 1
fi
echo "browser: installing chromium from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
mkdir -p .cache/apt/archives/partial
apt-get update -qq
apt-get install -y -qq -o Dir::Cache::archives="$PWD/.cache/apt/archives" chromium >/dev/null
