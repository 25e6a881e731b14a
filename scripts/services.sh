#!/usr/bin/env bash
# Starts, stops or describes the project's throwaway local services:
#   - a PostgreSQL cluster under target/pg (initdb as an unprivileged user, its own port);
#   - moto_server on 127.0.0.1 (local S3 + SQS for the real AWS SDKs).
# Usage: scripts/services.sh start|stop|status|env
# `env` prints the `export` lines tests and the demo read; `start` is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PG_PORT=${NEXINGEST_PG_PORT:-54329}
MOTO_PORT=${NEXINGEST_MOTO_PORT:-54330}
PG_DIR=$ROOT/target/pg
PG_DATA=$PG_DIR/data
PG_SOCK=$PG_DIR/sock
PG_LOG=$PG_DIR/postgres.log
MOTO_DIR=$ROOT/target/moto
PG_USER=nexingest
PG_DB=nexingest

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  dirname "$(command -v initdb)"
}

# Runs a command as the unprivileged OS user that owns the cluster (root cannot run initdb).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
    chown -R "$PG_USER" "$PG_DIR"
    # The owner must be able to reach the cluster directory.
    local d=$PG_DIR
    while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

pg_running() { [ -f "$PG_DATA/postmaster.pid" ] && as_owner "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    echo "services: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_owner "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --no-locale >/dev/null
    cat >> "$PG_DATA/postgresql.conf" <<CONF
# nexingest throwaway cluster
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
shared_buffers = 512MB
max_wal_size = 8GB
wal_level = minimal
max_wal_senders = 0
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
CONF
  fi
  if pg_running; then
    echo "services: postgres already running on 127.0.0.1:$PG_PORT"
  else
    as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null
    echo "services: postgres started on 127.0.0.1:$PG_PORT"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "select 1 from pg_database where datname='$PG_DB'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
}

pg_stop() {
  if pg_running; then as_owner "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null; echo "services: postgres stopped"; fi
}

moto_running() { [ -f "$MOTO_DIR/pid" ] && kill -0 "$(cat "$MOTO_DIR/pid")" 2>/dev/null; }

moto_start() {
  mkdir -p "$MOTO_DIR"
  if moto_running; then echo "services: moto_server already running on 127.0.0.1:$MOTO_PORT"; return; fi
  [ -x .venv/bin/moto_server ] || { echo "services: .venv/bin/moto_server missing; run scripts/deps.sh" >&2; exit 1; }
  setsid .venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_DIR/moto.log" 2>&1 < /dev/null &
  echo $! > "$MOTO_DIR/pid"
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" && { echo "services: moto_server started on 127.0.0.1:$MOTO_PORT"; return; }
    sleep 0.2
  done
  echo "services: moto_server did not come up; see $MOTO_DIR/moto.log" >&2; exit 1
}

moto_stop() {
  if moto_running; then kill "$(cat "$MOTO_DIR/pid")"; rm -f "$MOTO_DIR/pid"; echo "services: moto_server stopped"; fi
}

print_env() {
  cat <<ENV
export NEXINGEST_DATABASE_URL='postgres://$PG_USER@127.0.0.1:$PG_PORT/$PG_DB'
export NEXINGEST_AWS_ENDPOINT_URL='http://127.0.0.1:$MOTO_PORT'
export NEXINGEST_PSQL='$(pg_bin)/psql'
export AWS_ACCESS_KEY_ID='testing'
export AWS_SECRET_ACCESS_KEY='testing'
export AWS_REGION='us-east-1'
ENV
}

case "${1:-}" in
  start) pg_start; moto_start ;;
  stop) moto_stop; pg_stop ;;
  status) pg_running && echo "postgres: running" || echo "postgres: stopped"; moto_running && echo "moto: running" || echo "moto: stopped" ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
