#!/usr/bin/env bash
# Starts, stops or describes the project's throwaway local services:
#   - a PostgreSQL cluster under target/pg (initdb as an unprivileged user, its own port), with
#     TLS from a throwaway CA (target/pg/tls) and a role `nexingest_tls` that pg_hba.conf admits
#     only over TLS (hostssl, scram password);
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
PG_TLS=$PG_DIR/tls
MOTO_DIR=$ROOT/target/moto
PG_USER=nexingest
PG_DB=nexingest
# A role admitted only over TLS (like RDS with rds.force_ssl=1); a throwaway test password.
PG_TLS_USER=nexingest_tls
PG_TLS_PASSWORD=tls-only-test-password

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

# A throwaway CA and a server certificate for `localhost` only (so that 127.0.0.1 fails a host
# name check), plus an unrelated CA (a wrong sslrootcert for tests). Made once; remade when a
# file is missing or the server certificate no longer verifies against the CA.
tls_certs() {
  mkdir -p "$PG_TLS"
  if [ -f "$PG_TLS/server.crt" ] && [ -f "$PG_TLS/server.key" ] && [ -f "$PG_TLS/other-ca.crt" ] \
     && openssl verify -CAfile "$PG_TLS/ca.crt" "$PG_TLS/server.crt" >/dev/null 2>&1 \
     && openssl x509 -checkend 86400 -noout -in "$PG_TLS/server.crt" >/dev/null 2>&1; then
    return
  fi
  echo "services: making a throwaway CA and server certificate in $PG_TLS"
  local t=$PG_TLS
  for ca in ca other-ca; do
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
      -keyout "$t/$ca.key" -out "$t/$ca.crt" -subj "/CN=nexingest throwaway $ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  openssl req -new -nodes -newkey rsa:2048 -sha256 -keyout "$t/server.key" -out "$t/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost" > "$t/server.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$t/server.ext" -out "$t/server.crt" 2>/dev/null
  rm -f "$t/server.csr" "$t/server.ext" "$t/ca.srl"
  chmod 600 "$t"/*.key
  chmod 644 "$t"/*.crt
}

# Everything the script sets in postgresql.conf, rewritten on each start (a cluster made by an
# older version of this script gets the new settings: its block ran to the end of the file).
pg_conf() {
  local conf=$PG_DATA/postgresql.conf
  sed -i '/^# nexingest throwaway cluster/,$d' "$conf"
  cat >> "$conf" <<CONF
# nexingest throwaway cluster (rewritten by scripts/services.sh start; keep it last)
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
ssl = on
ssl_cert_file = '$PG_TLS/server.crt'
ssl_key_file = '$PG_TLS/server.key'
password_encryption = 'scram-sha-256'
CONF
  # First match wins: the TLS-only role is refused without TLS (as with RDS rds.force_ssl=1),
  # everyone else keeps trust over the socket and loopback TCP, with or without TLS.
  cat > "$PG_DATA/pg_hba.conf" <<HBA
# nexingest throwaway cluster (rewritten by scripts/services.sh start)
local     all          all                          trust
hostnossl all          $PG_TLS_USER   all           reject
hostssl   all          $PG_TLS_USER   127.0.0.1/32  scram-sha-256
hostssl   all          $PG_TLS_USER   ::1/128       scram-sha-256
host      all          all            127.0.0.1/32  trust
host      all          all            ::1/128       trust
local     replication  all                          trust
host      replication  all            127.0.0.1/32  trust
HBA
}

pg_start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    echo "services: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_owner "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 --no-locale >/dev/null
  fi
  tls_certs
  pg_conf
  if pg_running; then
    # Settings may have changed (a cluster from an older version of this script): reload them.
    as_owner "$bin/pg_ctl" -D "$PG_DATA" reload >/dev/null
    if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "show ssl" 2>/dev/null | grep -q on; then
      echo "services: restarting postgres for ssl = on"
      as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 restart >/dev/null
    fi
    echo "services: postgres already running on 127.0.0.1:$PG_PORT"
  else
    as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null
    echo "services: postgres started on 127.0.0.1:$PG_PORT"
  fi
  local psql=("$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -v ON_ERROR_STOP=1 -q)
  if ! "${psql[@]}" -d postgres -tAc "select 1 from pg_database where datname='$PG_DB'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
  fi
  "${psql[@]}" -d postgres <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_TLS_USER') THEN
    CREATE ROLE $PG_TLS_USER LOGIN;
  END IF;
END \$\$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE $PG_TLS_USER LOGIN PASSWORD '$PG_TLS_PASSWORD';
SQL
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
export NEXINGEST_TEST_CA='$PG_TLS/ca.crt'
export NEXINGEST_TEST_OTHER_CA='$PG_TLS/other-ca.crt'
export NEXINGEST_TEST_TLS_URL='postgres://$PG_TLS_USER:$PG_TLS_PASSWORD@localhost:$PG_PORT/$PG_DB?hostaddr=127.0.0.1'
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
