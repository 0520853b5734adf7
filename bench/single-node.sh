#!/usr/bin/env bash
# Single-node benchmarks of docs/BENCHMARKS.md, in one run on one machine:
# Redis 7 (appendfsync always) SETs versus durable cart mutations, hot cart
# reads versus a trivial axum handler, and resident memory per cart.
# Installs redis-server, redis-benchmark and wrk from Debian if missing.
source "$(dirname "$0")/lib.sh"
need redis-server redis-server
need redis-benchmark redis-tools
need wrk wrk
need bc bc


echo "## redis: redis-benchmark -c 64 -t set, appendfsync always"
redis-server --port 16379 --appendonly yes --appendfsync always --save '' --dir "$work" --daemonize yes >/dev/null
sleep 0.5
redis_pid=$(pgrep -f 'redis-server.*:16379')
t0=$(ticks "$redis_pid")
redis-benchmark -p 16379 -c 64 -n 400000 -r 100000 -t set -q 2>/dev/null | tr '\r' '\n' | grep -E '^SET: [0-9.]+ requests per second' | tail -1
echo "redis-server CPU per SET: $(per_op "$t0" "$(ticks "$redis_pid")" 400000) us"
redis-cli -p 16379 shutdown nosave >/dev/null 2>&1 || true

serve() {
  "$bin" serve --http-addr 127.0.0.1:18090 --internal-addr 127.0.0.1:17090 --data-dir "$work/$1" --log warn "${@:2}" &
  for _ in $(seq 100); do curl -sf localhost:18090/readyz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
server() { pgrep -f 'serve --http-addr 127.0.0.1:18090'; }

echo "## durable mutations, --fsync always, 64 connections, 10000 carts"
serve mutate
t0=$(ticks "$(server)")
out=$("$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 --workload mutate --connections 64 --carts 10000 --duration "$duration")
echo "$out"
echo "server CPU per durable mutation: $(per_op "$t0" "$(ticks "$(server)")" "$(sent <<<"$out")") us"
"$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 --workload mint --carts 10000 > "$work/ids"
CART_IDS="$work/ids" wrk -t1 -c64 -d"$duration" --latency -s bench/mutate.lua http://127.0.0.1:18090 | grep -E 'Requests/sec|  50%|  99%'
curl -s localhost:17090/metrics | grep -E '^cart_log_fsync_(batch_size|duration_seconds)_(sum|count)'
stop

echo "## hot cart reads versus a trivial handler (GET /healthz), 64 connections"
serve read
t0=$(ticks "$(server)")
out=$("$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 --workload healthz --connections 64 --duration "$duration")
echo "$out"
echo "server CPU per /healthz request: $(per_op "$t0" "$(ticks "$(server)")" "$(sent <<<"$out")") us"
"$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 --workload read --carts 100 --connections 64 --duration "$duration"
stop

echo "## memory: 100000 resident 5-line carts"
serve fill --fsync never
"$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 --workload fill --carts 100000 --lines 5 --connections 32
stop
