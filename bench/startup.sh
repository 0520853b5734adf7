#!/usr/bin/env bash
# Start-up of docs/BENCHMARKS.md (issue 13): a file store with EVENTS events
# of history (default 1,000,000) over CARTS live carts (default 200,000),
# written through the real server, then time to ready and RSS after start:
# with the index checkpoint a clean close leaves, without it (the whole log
# scanned, as before checkpoints), after a SIGKILL (the last running
# checkpoint plus the log after it), and after a compaction. Also disk
# bytes per live cart after compaction against the mean snapshot size.
source "$(dirname "$0")/lib.sh"
need curl curl
need python3 python3
events=${EVENTS:-1000000}
carts=${CARTS:-200000}

serve() {
  local started; started=$(date +%s%N)
  "$bin" serve --http-addr 127.0.0.1:18091 --internal-addr 127.0.0.1:17091 --data-dir "$1" \
    --log warn --compact-above-bytes 0 --fsync never "${@:2}" >/dev/null &
  wait_ready 18091 "$started"
}
pid() { pgrep -f 'serve --http-addr 127.0.0.1:18091'; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$(pid)/status"; }
ready() { echo "$1: ready after $(cat "$work/ready_ms") ms, RSS $(rss_mb) MB"; }

# One load run, so the carts are the same CARTS throughout (each run mints
# its own); RATE is a guess of the mutations/s, to size it. Then every cart
# idles until it is passivated (snapshotted), as a shop's carts do.
rate=${RATE:-45000}
echo "## writing about $events events of history over $carts carts (--fsync never), then idling"
serve "$work/s" --idle-ttl 3s
"$bin" bench --url http://127.0.0.1:18091 --internal-url http://127.0.0.1:17091 \
  --workload mutate --connections 64 --carts "$carts" --duration "$(( events / rate + 1 ))s" --warmup 0s | tail -1
wait_passivated 17091
written=$(metric_sum 17091 cart_mutations_total)
snap_sum=$(metric_sum 17091 cart_snapshot_bytes_sum); snap_count=$(metric_sum 17091 cart_snapshot_bytes_count)
stop
echo "history: $written mutations, log $(log_bytes "$work/s") bytes, $(ls "$work/s")"

serve "$work/s"; ready "with the checkpoint of a clean close"; stop
rm -f "$work"/s/index-*.checkpoint
serve "$work/s"; ready "without a checkpoint (whole log scanned)"
# It checkpoints the log it scanned at once; then it is killed.
for _ in $(seq 3000); do ls "$work"/s/index-*.checkpoint >/dev/null 2>&1 && break; sleep 0.01; done
kill -9 "$(pid)"; wait 2>/dev/null || true
serve "$work/s"; ready "after SIGKILL (running checkpoint + the log after it)"
before=$(log_bytes "$work/s")
out=$(curl -sf -X POST localhost:17091/api/admin/compact); echo "$out"
stop
after=$(log_bytes "$work/s")
serve "$work/s"; ready "after compaction"; stop
echo "log bytes: $before before compaction, $after after"
live=$(echo "$out" | sed -n 's/.*"carts":\([0-9]*\).*/\1/p')
echo "disk bytes per live cart after compaction: $(( after / live )) ($live live carts)"
echo "what compaction kept (bench/compacted_records.py):"
python3 bench/compacted_records.py "$work/s"/compacted-*.log
if [ "$snap_count" -gt 0 ]; then
  echo "mean snapshot size: $(( snap_sum / snap_count )) bytes"
fi
