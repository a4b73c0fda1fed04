#!/usr/bin/env bash
# Tessera against PostgreSQL on this machine, with pgbench unmodified:
#   pgbench -i -s $SCALE, then -S -M prepared -c 8 -j 2 -T $SECONDS_PER_RUN (select-only)
#   and the TPC-B-like default -M prepared -c 8 -j 2 -T $SECONDS_PER_RUN, on both, $ROUNDS
#   rounds taking turns; prints the median TPS, the Tessera/PostgreSQL ratio, and the share of
#   TPC-B transactions that failed (serialization or deadlock). Both run in a temp dir on free
#   ports.
#
# Usage: bash demo/pgbench_compare.sh [--processes | --default]
#   (no flag: tessera local --embedded, one copy per shard; --processes: storage nodes as
#   processes, one copy; --default: the default `tessera local`, three copies of every shard)
# Needs: Debian's postgresql package (server + pgbench), a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-10}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-30}
ROUNDS=${ROUNDS:-3}
case "${1:-}" in
  --processes) mode="--coordinators 1 --replicas 1"; label="nodes as processes, one copy" ;;
  --default) mode=""; label="the default cluster: 3 nodes, 3 coordinators, 3 copies" ;;
  *) mode="--embedded --coordinators 1 --replicas 1"; label="--embedded, one copy" ;;
esac

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
# By default one coordinator and one copy per shard: the same durability as the single
# PostgreSQL it is compared with.
# shellcheck disable=SC2086
target/release/tessera local --data-dir "$work/tessera" --port 0 $mode > "$work/tessera.log" 2>&1 &
tessera_pid=$!
for _ in $(seq 1 300); do grep -q TESSERA_READY "$work/tessera.log" && break; sleep 0.1; done
tessera_port=$(sed -n 's/^TESSERA_READY local .*:\([0-9]*\)$/\1/p' "$work/tessera.log")

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1; }
failed() { sed -n 's/^number of failed transactions: [0-9]* (\([0-9.]*\)%).*/\1/p' | head -n 1; }
run() { # port args...: "tps failed%"
  local port=$1; shift
  local out
  out=$(pgbench -h 127.0.0.1 -p "$port" -U postgres "$@" -M prepared -c 8 -j 2 -T "$SECONDS_PER_RUN" postgres 2>/dev/null || true)
  echo "$(echo "$out" | tps) $(echo "$out" | failed)"
}
median() { python3 -c "import sys,statistics; v=[float(x) for x in sys.argv[1:] if x]; print(statistics.median(v) if v else 0)" "$@"; }
ratio() { python3 -c "print(f'{float(\"$1\")/float(\"$2\"):.2f}')"; }

echo "pgbench scale $SCALE, 8 clients, 2 threads, $SECONDS_PER_RUN s per run, median of $ROUNDS rounds; tessera local: $label"
for port in "$pg_port" "$tessera_port"; do
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
done
pg_s=(); ts_s=(); pg_t=(); ts_t=(); pg_f=(); ts_f=()
for round in $(seq 1 "$ROUNDS"); do
  read -r v _ < <(run "$pg_port" -S); pg_s+=("$v")
  read -r v _ < <(run "$tessera_port" -S); ts_s+=("$v")
  read -r v f < <(run "$pg_port"); pg_t+=("$v"); pg_f+=("${f:-0}")
  read -r v f < <(run "$tessera_port"); ts_t+=("$v"); ts_f+=("${f:-0}")
  echo "round $round: -S ${pg_s[-1]} / ${ts_s[-1]}; TPC-B ${pg_t[-1]} (${pg_f[-1]}% failed) / ${ts_t[-1]} (${ts_f[-1]}% failed)"
done
m_pg_s=$(median "${pg_s[@]}"); m_ts_s=$(median "${ts_s[@]}")
m_pg_t=$(median "${pg_t[@]}"); m_ts_t=$(median "${ts_t[@]}")
printf '%-28s %12s %12s %8s\n' workload postgresql tessera ratio
printf '%-28s %12.0f %12.0f %8s\n' "select-only (-S), TPS" "$m_pg_s" "$m_ts_s" "$(ratio "$m_ts_s" "$m_pg_s")"
printf '%-28s %12.0f %12.1f %8s\n' "TPC-B-like, TPS" "$m_pg_t" "$m_ts_t" "$(ratio "$m_ts_t" "$m_pg_t")"
printf '%-28s %12s %12s\n' "TPC-B-like, failed %" "$(median "${pg_f[@]}")" "$(median "${ts_f[@]}")"
