#!/usr/bin/env bash
# Single-node benchmarks of docs/BENCHMARKS.md, in one run on one machine:
# Redis 7 (appendfsync always) SETs versus durable cart mutations, hot cart
# reads versus a trivial axum handler, and resident memory per cart.
# Needs redis-server, redis-benchmark and wrk (Debian: redis-server wrk).
source "$(dirname "$0")/lib.sh"

echo "## redis: redis-benchmark -c 64 -t set, appendfsync always"
redis-server --port 16379 --appendonly yes --appendfsync always --save '' --dir "$work" --daemonize yes >/dev/null
sleep 0.5
redis-benchmark -p 16379 -c 64 -n 400000 -r 100000 -t set -q 2>/dev/null | tr '\r' '\n' | grep -E '^SET: [0-9.]+ requests per second' | tail -1
redis-cli -p 16379 shutdown nosave >/dev/null 2>&1 || true

serve() {
  "$bin" serve --http-addr 127.0.0.1:18090 --data-dir "$work/$1" --log warn "${@:2}" &
  for _ in $(seq 100); do curl -sf localhost:18090/readyz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop() { kill "$(jobs -p | tail -1)"; wait "$(jobs -p | tail -1)" 2>/dev/null || true; }
cpu() { awk '{print $14+$15}' "/proc/$(pgrep -f 'serve --http-addr 127.0.0.1:18090')/stat"; }

echo "## durable mutations, --fsync always, 64 connections, 10000 carts"
serve mutate
t0=$(cpu)
"$bin" bench --url http://127.0.0.1:18090 --workload mutate --connections 64 --carts 10000 --duration "$duration"
t1=$(cpu)
echo "server CPU seconds during bench (incl. 2 s warm-up): $(echo "scale=2; ($t1-$t0)/$(getconf CLK_TCK)" | bc)"
wrk -t1 -c64 -d"$duration" --latency -s bench/mutate.lua http://127.0.0.1:18090 | grep -E 'Requests/sec|  50%|  99%'
curl -s localhost:18090/metrics | grep -E '^cart_log_fsync_(batch_size|duration_seconds)_(sum|count)'
stop

echo "## hot cart reads versus a trivial handler (GET /healthz), 64 connections"
serve read
"$bin" bench --url http://127.0.0.1:18090 --workload healthz --connections 64 --duration "$duration"
"$bin" bench --url http://127.0.0.1:18090 --workload read --carts 100 --connections 64 --duration "$duration"
stop

echo "## memory: 100000 resident 5-line carts"
serve fill --fsync never
"$bin" bench --url http://127.0.0.1:18090 --workload fill --carts 100000 --lines 5 --connections 32
stop
