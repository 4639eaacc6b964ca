#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 (installing Debian's package if needed).
# Usage: source .ci/postgres.sh  -> exports AUTHQL_TEST_DATABASE_URL; call pg_stop when done.
set -euo pipefail
PG_PORT=${PG_PORT:-$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
bash "$(dirname "${BASH_SOURCE[0]}")/system-packages.sh"
PG_BIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
PG_SCRATCH=$(mktemp -d /tmp/authql-pg.XXXXXX)
chown postgres:postgres "$PG_SCRATCH"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_SCRATCH/data" -U postgres --auth=trust --no-sync >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_SCRATCH/data" -l "$PG_SCRATCH/log" -w \
  -o "-h 127.0.0.1 -p $PG_PORT -k $PG_SCRATCH -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null
export AUTHQL_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/authql_test"
pg_stop() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_SCRATCH/data" -m fast stop >/dev/null || true; rm -rf "$PG_SCRATCH"; }
