#!/usr/bin/env bash
# A CRUD walk-through over psql against a fresh local cluster, in one command:
#   bash demo/crud.sh
# It builds Tessera, starts `tessera local` on a free port in a temp dir, runs demo/crud.sql
# with psql (echoing each statement), prints the admin views, and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v psql >/dev/null || { echo "psql is needed (Debian: apt-get install postgresql-client)"; exit 1; }
cargo build --release --bin tessera
dir=$(mktemp -d)
out="$dir/tessera.out"
./target/release/tessera local --data-dir "$dir/data" --port 0 >"$out" 2>"$dir/tessera.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 600); do
  grep -q '^TESSERA_READY local' "$out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$dir/tessera.log"; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/^TESSERA_READY local 127.0.0.1:\([0-9]*\).*$/\1/p' "$out")
grep -v '^TESSERA_READY' "$out"
echo
psql -h 127.0.0.1 -p "$port" -U postgres -X -e -v ON_ERROR_STOP=1 -f demo/crud.sql
echo
echo '$ tessera admin nodes'
./target/release/tessera admin --port "$port" nodes
echo '$ tessera admin shards'
./target/release/tessera admin --port "$port" shards
