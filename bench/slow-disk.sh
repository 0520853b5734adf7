#!/usr/bin/env bash
# Durable writes on a slow disk, in one run on one machine: Redis 7
# (appendfsync always) SETs versus cart-actor mutations with and without the
# commit wait, when every fsync/fdatasync takes DELAYS_US longer (an
# LD_PRELOAD shim, bench/slow-sync.c, built here with gcc). This is the regime
# of a slow SSD or a network volume, where Redis does ~10k SET/s, rather than
# this machine's disk, which syncs in ~0.1 ms.
# Installs redis-server, redis-benchmark and bc from Debian if missing.
source "$(dirname "$0")/lib.sh"
need redis-server redis-server
need redis-benchmark redis-tools
need bc bc
gcc -O2 -shared -fPIC -o "$work/slow-sync.so" bench/slow-sync.c -ldl
preload="$work/slow-sync.so"

serve() { # commit-wait
  LD_PRELOAD="$preload" "$bin" serve --http-addr 127.0.0.1:18093 --internal-addr 127.0.0.1:17093 --data-dir "$work/cart-$1-$SLOW_SYNC_US" \
    --log warn --commit-wait "$1" &
  for _ in $(seq 100); do curl -sf localhost:18093/readyz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}

for delay in ${DELAYS_US:-2000 5000}; do
  export SLOW_SYNC_US=$delay
  echo "## every sync takes $delay us longer"
  LD_PRELOAD="$preload" redis-server --port 16380 --appendonly yes --appendfsync always --save '' \
    --dir "$work" --appendfilename "slow-$delay.aof" --daemonize yes >/dev/null
  for _ in $(seq 50); do redis-cli -p 16380 ping >/dev/null 2>&1 && break; sleep 0.1; done
  # About 8 s of SETs at the rate Redis reaches with 64 clients.
  echo "redis: $(redis-benchmark -p 16380 -c 64 -n $((256000000 / delay)) -r 100000 -t set -q 2>/dev/null \
    | tr '\r' '\n' | grep -E '^SET: [0-9.]+ requests per second' | tail -1)"
  redis-cli -p 16380 shutdown nosave >/dev/null 2>&1 || true
  for wait in 2ms 0ms; do
    serve "$wait"
    echo "cart-actor --commit-wait $wait: $("$bin" bench --url http://127.0.0.1:18093 --internal-url http://127.0.0.1:17093 --workload mutate \
      --connections 64 --carts 10000 --duration "$duration")"
    curl -s localhost:17093/metrics | grep -E '^cart_log_fsync_batch_size_(sum|count)' | tr '\n' ' '; echo
    stop
  done
done
