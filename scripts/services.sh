#!/usr/bin/env bash
# Starts, stops or describes the project's throwaway local services:
#   - a PostgreSQL cluster under target/pg (initdb as an unprivileged user, its own port), with
#     TLS from a throwaway CA (target/pg/tls) and a role `nexingest_tls` that pg_hba.conf admits
#     only over TLS (hostssl, scram password);
#   - moto_server on 127.0.0.1 (local S3 + SQS for the real AWS SDKs), through
#     scripts/moto_server.py: a ranged GET reads only its range, as in S3 (moto itself reads the
#     whole object for each one: 0.25 s on a 300 MB object, whatever the range);
#   - with `start-bench`, also a second cluster configured like production (target/pg-bench,
#     port NEXINGEST_BENCH_PG_PORT, default the test port + 2): fsync, full_page_writes,
#     synchronous_commit on, wal_level = replica, RDS's default max_wal_size. Load and fleet
#     benchmarks run against it (NEXINGEST_BENCH_DATABASE_URL); tests use the fast cluster.
# Usage: scripts/services.sh start|start-bench|stop|status|env
# `env` prints the `export` lines tests, benchmarks and the demo read; `start` is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TEST_PG_PORT=${NEXINGEST_PG_PORT:-54329}
MOTO_PORT=${NEXINGEST_MOTO_PORT:-54330}
BENCH_PG_PORT=${NEXINGEST_BENCH_PG_PORT:-$((TEST_PG_PORT + 2))}
# The TLS files are shared by both clusters (one throwaway CA).
PG_TLS=$ROOT/target/pg/tls

# Selects the cluster the pg_* functions act on: `test` (fast, fsync off) or `bench`
# (production-like durability settings).
use_cluster() {
  PROFILE=$1
  case "$PROFILE" in
    test) PG_PORT=$TEST_PG_PORT; PG_DIR=$ROOT/target/pg ;;
    bench) PG_PORT=$BENCH_PG_PORT; PG_DIR=$ROOT/target/pg-bench ;;
  esac
  PG_DATA=$PG_DIR/data
  PG_SOCK=$PG_DIR/sock
  PG_LOG=$PG_DIR/postgres.log
}
use_cluster test
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
    [ ! -d "$PG_TLS" ] || chown -R "$PG_USER" "$PG_TLS"
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
  local durability
  if [ "$PROFILE" = bench ]; then
    # Like production (RDS defaults for PostgreSQL 15): every commit durable, WAL for replicas,
    # full-page images after each checkpoint, checkpoints every 2 GB of WAL.
    durability="shared_buffers = 1GB
max_wal_size = 2GB
wal_level = replica
fsync = on
synchronous_commit = on
full_page_writes = on"
  else
    durability="shared_buffers = 512MB
max_wal_size = 8GB
wal_level = minimal
max_wal_senders = 0
fsync = off
synchronous_commit = off
full_page_writes = off"
  fi
  cat >> "$conf" <<CONF
# nexingest throwaway cluster (rewritten by scripts/services.sh start; keep it last)
# profile: $PROFILE
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
$durability
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
    # Settings may have changed (a cluster from an older version of this script): reload them,
    # and restart when one needs it (ssl, wal_level, shared_buffers).
    as_owner "$bin/pg_ctl" -D "$PG_DATA" reload >/dev/null
    sleep 0.2
    if "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "select 1 from pg_settings where pending_restart" 2>/dev/null | grep -q 1 \
       || ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc "show ssl" 2>/dev/null | grep -q on; then
      echo "services: restarting postgres ($PROFILE) for changed settings"
      as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 restart >/dev/null
    fi
    echo "services: postgres ($PROFILE) already running on 127.0.0.1:$PG_PORT"
  else
    as_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null
    echo "services: postgres ($PROFILE) started on 127.0.0.1:$PG_PORT"
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
  if pg_running; then as_owner "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null; echo "services: postgres ($PROFILE) stopped"; fi
}

moto_running() { [ -f "$MOTO_DIR/pid" ] && kill -0 "$(cat "$MOTO_DIR/pid")" 2>/dev/null; }

moto_start() {
  mkdir -p "$MOTO_DIR"
  if moto_running; then echo "services: moto_server already running on 127.0.0.1:$MOTO_PORT"; return; fi
  [ -x .venv/bin/moto_server ] || { echo "services: .venv/bin/moto_server missing; run scripts/deps.sh" >&2; exit 1; }
  setsid .venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_DIR/moto.log" 2>&1 < /dev/null &
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
export NEXINGEST_DATABASE_URL='postgres://$PG_USER@127.0.0.1:$TEST_PG_PORT/$PG_DB'
export NEXINGEST_BENCH_DATABASE_URL='postgres://$PG_USER@127.0.0.1:$BENCH_PG_PORT/$PG_DB'
export NEXINGEST_AWS_ENDPOINT_URL='http://127.0.0.1:$MOTO_PORT'
export NEXINGEST_PSQL='$(pg_bin)/psql'
export NEXINGEST_TEST_CA='$PG_TLS/ca.crt'
export NEXINGEST_TEST_OTHER_CA='$PG_TLS/other-ca.crt'
export NEXINGEST_TEST_TLS_URL='postgres://$PG_TLS_USER:$PG_TLS_PASSWORD@localhost:$TEST_PG_PORT/$PG_DB?hostaddr=127.0.0.1'
export AWS_ACCESS_KEY_ID='testing'
export AWS_SECRET_ACCESS_KEY='testing'
export AWS_REGION='us-east-1'
ENV
}

case "${1:-}" in
  start) pg_start; moto_start ;;
  start-bench) pg_start; moto_start; use_cluster bench; pg_start ;;
  stop) moto_stop; pg_stop; use_cluster bench; pg_stop ;;
  status)
    for c in test bench; do
      use_cluster $c
      pg_running && echo "postgres ($c, :$PG_PORT): running" || echo "postgres ($c, :$PG_PORT): stopped"
    done
    moto_running && echo "moto: running" || echo "moto: stopped" ;;
  env) print_env ;;
  *) echo "usage: $0 start|start-bench|stop|status|env" >&2; exit 2 ;;
esac
