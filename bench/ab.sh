#!/usr/bin/env bash
# A/B of the single-node hot path (docs/BENCHMARKS.md): CPU per durable
# mutation and throughput of an older build against this one, alternated
# RUNS times in one go. Each binary serves and drives itself with its own
# `bench` (storefront adds, 64 connections, 10,000 carts, --fsync always).
# usage: bench/ab.sh path/to/old/cart-actor   (RUNS=3, DURATION=5s, CARTS=10000)
source "$(dirname "$0")/lib.sh"
need bc bc
old=${1:?usage: bench/ab.sh path/to/old/cart-actor}
runs=${RUNS:-3}

run() { # label binary
  local data; data=$(mktemp -d -p "$work" ab.XXXX)
  local internal=()
  # Builds from before the internal listener have no --internal-addr.
  "$2" serve --help | grep -q -- --internal-addr && internal=(--internal-addr 127.0.0.1:17090)
  "$2" serve --http-addr 127.0.0.1:18090 "${internal[@]}" --data-dir "$data" --log warn &
  local pid=$!
  for _ in $(seq 100); do curl -sf localhost:18090/readyz >/dev/null && break; sleep 0.1; done
  local extra=(); [ ${#internal[@]} -gt 0 ] && extra=(--internal-url http://127.0.0.1:17090)
  local t0; t0=$(ticks $pid)
  local out; out=$("$2" bench --url http://127.0.0.1:18090 "${extra[@]}" --workload mutate \
    --connections 64 --carts "${CARTS:-10000}" --duration "$duration")
  echo "$1 $(grep -o 'throughput=[0-9]*' <<<"$out") cpu_per_mutation=$(per_op "$t0" "$(ticks $pid)" "$(sent <<<"$out")")us"
  kill $pid; wait $pid 2>/dev/null || true
}
for _ in $(seq "$runs"); do
  run old "$old"
  run new "$bin"
done
