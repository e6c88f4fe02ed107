#!/usr/bin/env bash
# A private PostgreSQL server for the tests, on 127.0.0.1 only.
#   tools/postgres.sh start   install (Debian package) if missing, init once, start; prints the URL
#   tools/postgres.sh stop
#   tools/postgres.sh url
# Idempotent: start on a running server only prints the URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${EDGEFLEET_PG_PORT:-55432}"
DB=edgefleet_test
URL="postgresql://postgres@127.0.0.1:${PORT}/${DB}"

pgbin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install() {
  if [ -z "$(pgbin)" ] || [ ! -x "$(pgbin)/initdb" ]; then
    echo "installing PostgreSQL from Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  fi
}

datadir() {
  # The server refuses to run as root: it runs as 'postgres', which must reach the folder.
  local dir="$PWD/.cache/postgres"
  mkdir -p "$dir"
  if runuser -u postgres -- test -x "$dir" 2>/dev/null; then
    echo "$dir"
  else
    echo "/tmp/edgefleet-postgres-$(echo "$PWD" | md5sum | cut -c1-8)"
  fi
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  install
  local bin dir
  bin="$(pgbin)"
  dir="$(datadir)"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p ${PORT} -k ${dir} -c fsync=off -c max_connections=200" >/dev/null
  fi
  if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='${DB}'" postgres | grep -q 1; then
    as_postgres "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
  fi
  echo "$URL"
}

stop() {
  local bin dir
  bin="$(pgbin)"
  dir="$(datadir)"
  [ -n "$bin" ] && [ -f "$dir/data/PG_VERSION" ] || return 0
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
