#!/usr/bin/env bash
# Build the hub's web UI (ui/) into src/edgefleet/hub/ui_assets with esbuild.
# npm packages come from the npm registry by package-lock.json, cached in .cache/npm; the build
# runs again only when the sources or the lock changed. Idempotent, quiet when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

out=src/edgefleet/hub/ui_assets
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ui: node and npm are needed to build the web UI; install them (apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "ui: installing nodejs and npm from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

stamp=ui/node_modules/.installed
if [ ! -f "$stamp" ] || [ ui/package-lock.json -nt "$stamp" ]; then
  echo "ui: installing the UI's npm packages (package-lock.json)" >&2
  (cd ui && npm ci --cache ../.cache/npm --prefer-offline --no-audit --no-fund --loglevel=error)
  touch "$stamp"
fi

if [ -f "$out/index.html" ] && [ -f "$out/app.js" ] && [ -f "$out/app.css" ] \
  && [ -z "$(find ui/src ui/build.mjs "$stamp" -newer "$out/app.js" -print -quit 2>/dev/null)" ]; then
  exit 0
fi
node ui/build.mjs
