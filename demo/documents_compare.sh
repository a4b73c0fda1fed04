#!/usr/bin/env bash
# Tessera's document tables against a PostgreSQL 15 jsonb table on this machine (load, point
# get/put, a 0.1 % filter without and with a path index), and a one-group read against a
# full-row read of a table with column groups. Prints a table with ratios.
#
# Usage: bash demo/documents_compare.sh [--docs N] [--secs S]   (default 1 000 000 documents, 20 s)
# Needs: Debian's postgresql package, a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d)
chmod 777 "$work"
cleanup() {
  as_postgres "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
pg_port=$(free_port)
as_postgres "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
as_postgres "$pgbin/pg_ctl" -D "$work/pg" -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" -l "$work/pg.log" -w start >/dev/null
cargo build --release -q
cargo run --release -q --example documents_bench -- --pg-port "$pg_port" "$@"
