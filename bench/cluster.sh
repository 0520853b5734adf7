#!/usr/bin/env bash
# Two-node cluster benchmarks of docs/BENCHMARKS.md: local versus remote
# (forwarded one hop over gRPC) durable mutations, latency at 1 connection and
# throughput at 64, both nodes and the load generator on this one machine.
source "$(dirname "$0")/lib.sh"

node() { # http grpc control [peers]
  "$bin" serve --http-addr "127.0.0.1:$1" --internal-addr "127.0.0.1:$(($1 - 1000))" --grpc-addr "127.0.0.1:$2" --control-addr "127.0.0.1:$3" \
    --advertise-host 127.0.0.1 --data-dir "$work/data" --log warn ${4:+--peers "$4"} &
}
node 18091 18191 18291
node 18092 18192 18292 127.0.0.1:18191:18291
for _ in $(seq 200); do
  n=$(curl -sf localhost:17091/api/cluster | grep -o '"host"' | wc -l || true)
  [ "$n" = 2 ] && break; sleep 0.1
done
echo "cluster: $(curl -sf localhost:17091/api/cluster)"

for conns in 1 64; do
  for placement in local remote; do
    "$bin" bench --url http://127.0.0.1:18091 --internal-url http://127.0.0.1:17091 --workload mutate --placement "$placement" \
      --connections "$conns" --carts 10000 --duration "$duration"
  done
done
