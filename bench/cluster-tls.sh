#!/usr/bin/env bash
# The cost of mutual TLS between nodes (docs/BENCHMARKS.md): the same
# two-node cluster run twice in one go, plaintext then mTLS, measuring remote
# (forwarded) durable mutations: latency at 1 connection, throughput at 64,
# and CPU per mutation summed over both nodes. Certificates are made with
# openssl for the run.
source "$(dirname "$0")/lib.sh"
need openssl openssl
need bc bc

certs() { # dir
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
  for n in a b; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" \
      -keyout "$1/$n.key" -out "$1/$n.csr" 2>/dev/null
    openssl x509 -req -in "$1/$n.csr" -CA "$1/ca.crt" -CAkey "$1/ca.key" -CAcreateserial -days 1 \
      -extfile <(printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n' "$n") -out "$1/$n.crt" 2>/dev/null
  done
}

node() { # name http grpc control tls? [peers]
  local tls=()
  [ "$5" = tls ] && tls=(--cluster-tls-cert "$work/certs/$1.crt" --cluster-tls-key "$work/certs/$1.key" --cluster-tls-ca "$work/certs/ca.crt")
  "$bin" serve --http-addr "127.0.0.1:$2" --internal-addr "127.0.0.1:$(($2 - 1000))" --grpc-addr "127.0.0.1:$3" --control-addr "127.0.0.1:$4" \
    --advertise-host 127.0.0.1 --data-dir "$work/data-$5" --log warn "${tls[@]}" ${6:+--peers "$6"} &
}

certs "$work/certs"
for mode in plain tls; do
  node a 18091 18191 18291 "$mode"
  node b 18092 18192 18292 "$mode" 127.0.0.1:18191:18291
  for _ in $(seq 200); do
    n=$(curl -sf localhost:17091/api/cluster | grep -o '"host"' | wc -l || true)
    [ "$n" = 2 ] && break; sleep 0.1
  done
  pids=$(pgrep -f 'serve --http-addr 127.0.0.1:1809[12]' | tr '\n' ' ')
  echo "## $mode: remote durable mutations"
  for conns in 1 64; do
    t0=$(ticks $pids)
    out=$("$bin" bench --url http://127.0.0.1:18091 --internal-url http://127.0.0.1:17091 --workload mutate --placement remote \
      --connections "$conns" --carts 10000 --duration "$duration")
    echo "$out"
    echo "$mode, $conns connections: CPU per remote mutation (both nodes): $(per_op "$t0" "$(ticks $pids)" "$(sent <<<"$out")") us"
  done
  echo "$mode: connections from node a to node b's gRPC port: $(ss -Htn state established '( dport = :18192 )' | wc -l)"
  stop; stop
done
