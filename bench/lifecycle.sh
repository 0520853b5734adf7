#!/usr/bin/env bash
# Log lifecycle benchmarks of docs/BENCHMARKS.md (issue 13), in one run:
# durable mutations/s with compaction running against none, disk bytes per
# live cart before and after compaction against the snapshot size, and
# start-up to ready with the history before and after compaction.
# DURATION sets each load phase (default 10s); CARTS the live carts.
source "$(dirname "$0")/lib.sh"
need curl curl
need python3 python3
carts=${CARTS:-20000}

serve() {
  local started; started=$(date +%s%N)
  "$bin" serve --http-addr 127.0.0.1:18090 --internal-addr 127.0.0.1:17090 --data-dir "$1" \
    --log warn --compact-above-bytes 0 "${@:2}" >/dev/null &
  wait_ready 18090 "$started"
}
load() {
  "$bin" bench --url http://127.0.0.1:18090 --internal-url http://127.0.0.1:17090 \
    --workload mutate --connections 64 --carts "$carts" --duration "$duration"
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$(pgrep -f 'serve --http-addr 127.0.0.1:18090')/status"; }
metric() { curl -s localhost:17090/metrics | awk -v m="$1" '$1 == m {print $2}'; }

echo "## durable mutations, --fsync always, 64 connections, $carts carts, no compaction"
serve "$work/a"
load | tail -1
echo "## the same, with POST /api/admin/compact in a loop"
( while curl -sf -X POST localhost:17090/api/admin/compact >/dev/null; do :; done ) &
compactor=$!
load | tail -1
kill "$compactor" 2>/dev/null || true; wait "$compactor" 2>/dev/null || true
echo "compactions run: $(metric cart_log_compactions_total)"
pause_sum=$(metric cart_log_compaction_pause_seconds_sum); pauses=$(metric cart_log_compaction_pause_seconds_count)
echo "appends held back (seal and switch): $pauses times, mean $(echo "scale=2; $pause_sum * 1000 / $pauses" | bc) ms, longest $(echo "scale=2; $(metric 'cart_log_compaction_pause_seconds{quantile="1"}') * 1000 / 1" | bc) ms"
stop

echo "## history: a second store with $duration x 2 of mutations, its carts then passivated (idle)"
serve "$work/b" --idle-ttl 2s
load >/dev/null; load >/dev/null
wait_passivated 17090
snap_sum=$(metric cart_snapshot_bytes_sum); snap_count=$(metric cart_snapshot_bytes_count)
stop
before=$(log_bytes "$work/b")
cp -a "$work/b" "$work/b-uncompacted"
echo "log bytes before compaction: $before"
echo "## start-up to ready (and RSS) with the whole history"
serve "$work/b-uncompacted"; ms=$(cat "$work/ready_ms"); echo "ready after ${ms} ms, RSS $(rss_kb) kB"
stop
serve "$work/b"; ms=$(cat "$work/ready_ms"); echo "ready after ${ms} ms (before compaction, second copy)"
out=$(curl -sf -X POST localhost:17090/api/admin/compact); echo "compact: $out"
stop
after=$(log_bytes "$work/b")
serve "$work/b"; ms=$(cat "$work/ready_ms"); echo "## after compaction: ready after ${ms} ms, RSS $(rss_kb) kB"
stop
echo "log bytes after compaction: $after ($(echo "scale=2; $before / $after" | bc)x smaller)"
live=$(echo "$out" | sed -n 's/.*"carts":\([0-9]*\).*/\1/p')
echo "bytes per live cart after: $(echo "$after / $live" | bc) ($live live carts)"
echo "what compaction kept (bench/compacted_records.py):"
python3 bench/compacted_records.py "$work/b"/compacted-*.log
if [ -n "$snap_count" ] && [ "$snap_count" != 0 ]; then
  echo "mean snapshot size: $(echo "$snap_sum / $snap_count" | bc) bytes"
fi
