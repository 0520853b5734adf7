#!/usr/bin/env bash
# PostgreSQL benchmarks of docs/BENCHMARKS.md: durable mutations per second on
# PostgreSQL versus the file store, one and three nodes, and the activation
# time of a 200-event cart. PostgreSQL runs on the same box (a throwaway
# server, as in scripts/test).
source "$(dirname "$0")/lib.sh"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || install_package postgresql

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$(mktemp -d /tmp/cart-bench-pg.XXXXXX); run=()
if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; run=(runuser -u postgres --); fi
"${run[@]}" "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
"${run[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w -o "-p 15499 -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null
trap '"${run[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$pgdir"' EXIT
pg="postgres://postgres@127.0.0.1:15499/postgres"
echo "## PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on the same machine, default settings (synchronous_commit on)"

nodes() { # count store extra...
  local n=$1 store=$2; shift 2
  for i in $(seq 1 "$n"); do
    peers=""; [ "$i" -gt 1 ] && peers="--peers 127.0.0.1:$((18190 + i - 1)):$((18290 + i - 1))"
    "$bin" serve --http-addr "127.0.0.1:$((18090 + i))" --internal-addr "127.0.0.1:$((17090 + i))" --grpc-addr "127.0.0.1:$((18190 + i))" \
      --control-addr "127.0.0.1:$((18290 + i))" --advertise-host 127.0.0.1 --data-dir "$work/data" \
      --store "$store" --log warn $peers "$@" &
  done
  for _ in $(seq 200); do
    [ "$(curl -sf localhost:17091/api/cluster | grep -o '"host"' | wc -l)" = "$n" ] && return; sleep 0.1
  done
}
stop() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; }
load() { # nodes
  local n=$1 per=$((64 / $1))
  for i in $(seq 1 "$n"); do
    "$bin" bench --url "http://127.0.0.1:$((18090 + i))" --internal-url "http://127.0.0.1:$((17090 + i))" --workload mutate --connections "$per" --carts 10000 --duration "$duration" &
  done
  wait $(jobs -p | tail -n "$n")
}

for n in 1 3; do
  for store in file "$pg"; do
    echo "## $n node(s), store $( [ "$store" = file ] && echo file || echo postgres ), 64 connections in all"
    nodes "$n" "$store"; load "$n"; stop
    rm -rf "$work/data"
  done
done

echo "## activation of 200-event carts (first read after passivation)"
for store in file "$pg"; do
  nodes 1 "$store" --idle-ttl 1s
  "$bin" bench --url http://127.0.0.1:18091 --internal-url http://127.0.0.1:17091 --workload activation --carts 50 --events 200
  stop
done
