#!/usr/bin/env bash
# Live-cart fan-out over three nodes (docs/BENCHMARKS.md): WATCHERS SSE
# watchers (default 1000) spread over the nodes and CARTS carts (default
# 100), one mutation per second per cart through a random node. Prints
# p50/p99 from sending a mutation to each watcher receiving it, and the
# nodes' resident memory per watcher.
source "$(dirname "$0")/lib.sh"
watchers=${WATCHERS:-1000}
carts=${CARTS:-100}
seconds=${SECONDS_RUN:-20}
ulimit -n 65536 2>/dev/null || true

node() { # http grpc control [peers]
  "$bin" serve --http-addr "127.0.0.1:$1" --internal-addr "127.0.0.1:$(($1 - 1000))" --grpc-addr "127.0.0.1:$2" --control-addr "127.0.0.1:$3" \
    --advertise-host 127.0.0.1 --data-dir "$work/data" --log warn --max-watchers 20000 \
    ${4:+--peers "$4"} &
}
node 18091 18191 18291
node 18092 18192 18292 127.0.0.1:18191:18291
node 18093 18193 18293 127.0.0.1:18192:18292
for _ in $(seq 200); do
  n=$(curl -sf localhost:17093/api/cluster | grep -o '"host"' | wc -l || true)
  [ "$n" = 3 ] && break; sleep 0.1
done
rss() { # total VmRSS of the three nodes, KiB
  for p in $(pgrep -f 'serve --http-addr 127.0.0.1:1809'); do grep VmRSS "/proc/$p/status"; done |
    awk '{s+=$2} END {print s}'
}
coproc FAN { python3 bench/watch_fanout.py "$watchers" "$carts" "$seconds" 17091,17092,17093; }
while read -r line <&"${FAN[0]}"; do [ "$line" = CARTS ] && break; done
before=$(rss)
echo go >&"${FAN[1]}"
while read -r line <&"${FAN[0]}"; do echo "$line"; [ "$line" = READY ] && break; done
after=$(rss)
echo "resident memory of the nodes: $before KiB before, $after KiB with $watchers watchers:" \
  "$(( (after - before) * 1024 / watchers )) bytes per watcher"
echo go >&"${FAN[1]}"
cat <&"${FAN[0]}"
