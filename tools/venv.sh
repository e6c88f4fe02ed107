#!/usr/bin/env bash
# Create .venv and install edgefleet with its test tools. Re-runs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stamp=.venv/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c "import edgefleet" 2>/dev/null; then
  exit 0
fi
if ! "$PYTHON" -c "import venv, ensurepip" 2>/dev/null; then
  echo "installing python3-venv from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
mkdir -p .cache/pip
.venv/bin/python -m pip install -q --cache-dir .cache/pip --upgrade pip
.venv/bin/python -m pip install -q --cache-dir .cache/pip -e '.[test]'
touch "$stamp"
