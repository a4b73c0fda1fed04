#!/usr/bin/env bash
# Tessera against PostgreSQL on this machine, with pgbench unmodified:
#   pgbench -i -s $SCALE, then -S -M prepared -c 8 -j 2 -T $SECONDS_PER_RUN (select-only)
#   and the TPC-B-like default -M prepared -c 8 -j 2 -T $SECONDS_PER_RUN, on both,
# printing TPS and the Tessera/PostgreSQL ratio. Both run in a temp dir on free ports.
#
# Usage: bash demo/pgbench_compare.sh [--processes]   (default: tessera local --embedded)
# Needs: Debian's postgresql package (server + pgbench), a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-10}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
mode=--embedded
[ "${1:-}" = "--processes" ] && mode=""

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d)
chmod 777 "$work"
tessera_pid=""
cleanup() {
  [ -n "$tessera_pid" ] && kill "$tessera_pid" 2>/dev/null && wait "$tessera_pid" 2>/dev/null || true
  as_postgres "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port)
as_postgres "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
as_postgres "$pgbin/pg_ctl" -D "$work/pg" -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" -l "$work/pg.log" -w start >/dev/null

cargo build --release -q
# One coordinator and one copy per shard: the same durability as the single PostgreSQL it is
# compared with.
target/release/tessera local --data-dir "$work/tessera" --port 0 --coordinators 1 --replicas 1 $mode > "$work/tessera.log" 2>&1 &
tessera_pid=$!
for _ in $(seq 1 300); do grep -q TESSERA_READY "$work/tessera.log" && break; sleep 0.1; done
tessera_port=$(sed -n 's/^TESSERA_READY local .*:\([0-9]*\)$/\1/p' "$work/tessera.log")

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1; }
bench() { # name port
  local port=$2
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
  local s t
  s=$(pgbench -h 127.0.0.1 -p "$port" -U postgres -S -M prepared -c 8 -j 2 -T "$SECONDS_PER_RUN" postgres 2>/dev/null | tps)
  t=$(pgbench -h 127.0.0.1 -p "$port" -U postgres -M prepared -c 8 -j 2 -T "$SECONDS_PER_RUN" postgres 2>/dev/null | tps)
  echo "$s $t"
}
echo "pgbench scale $SCALE, 8 clients, 2 threads, $SECONDS_PER_RUN s per run; tessera local ${mode:---processes}"
read -r pg_s pg_t < <(bench postgres "$pg_port")
read -r ts_s ts_t < <(bench tessera "$tessera_port")
ratio() { python3 -c "print(f'{float(\"$1\")/float(\"$2\"):.2f}')"; }
printf '%-28s %12s %12s %8s\n' workload postgresql tessera ratio
printf '%-28s %12.0f %12.0f %8s\n' "select-only (-S), TPS" "$pg_s" "$ts_s" "$(ratio "$ts_s" "$pg_s")"
printf '%-28s %12.0f %12.1f %8s\n' "TPC-B-like, TPS" "$pg_t" "$ts_t" "$(ratio "$ts_t" "$pg_t")"
