#!/usr/bin/env bash
# Server instructions per request, counted by callgrind: a repeatable A/B of
# the hot path where wall-clock runs on a shared 2-core VM are not (their
# noise is about ±25 %). Each binary serves under valgrind's callgrind with
# --fsync never (the count is CPU work, not the disk); after a warm-up the
# counters are zeroed, this build's `bench` sends the load (4 connections,
# 200 carts), and the instructions the server executed are divided by the
# requests it was sent (mints and warm-up included, as `sent=` counts them).
# Callgrind counts user-space instructions only, and runs the threads one at
# a time, so batching differs from a real run: compare builds with it, do
# not read it as time.
# usage: bench/instructions.sh [BINARY...]   (default: this build;
#        WORKLOADS="mutate read healthz", DURATION=15s, KEEP=dir: keep each
#        callgrind dump there, for callgrind_annotate)
source "$(dirname "$0")/lib.sh"
need valgrind valgrind
binaries=("$@"); [ ${#binaries[@]} = 0 ] && binaries=("$bin")
workloads=${WORKLOADS:-mutate read healthz}

measure() { # binary workload
  local dir; dir=$(mktemp -d -p "$work" cg.XXXX)
  valgrind --tool=callgrind --callgrind-out-file="$dir/out.%p" "$1" serve \
    --http-addr 127.0.0.1:18090 --internal-addr 127.0.0.1:17090 \
    --data-dir "$dir/data" --fsync never --log warn 2>"$dir/valgrind.log" &
  local pid=$!
  for _ in $(seq 1200); do curl -sf localhost:18090/readyz >/dev/null && break; sleep 0.1; done
  local load=(--url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090
    --workload "$2" --connections 4 --carts 200)
  "$bin" bench "${load[@]}" --duration 3s >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  local out; out=$("$bin" bench "${load[@]}" --duration "${DURATION:-15s}")
  callgrind_control --dump "$pid" >/dev/null 2>&1
  local n; n=$(sent <<<"$out")
  # The dump after the zeroing is the newest part file; its totals line is
  # every thread's instructions since then.
  local part; part=$(ls -t "$dir"/out."$pid".* | head -1)
  local ir; ir=$(awk '/^totals:/ {print $2}' "$part")
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"; cp "$part" "$KEEP/$(basename "$1").$2.callgrind"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$1 $2: $((ir / n)) instructions per request (requests=$n, instructions=$ir)"
}

for workload in $workloads; do
  for binary in "${binaries[@]}"; do
    measure "$binary" "$workload"
  done
done
