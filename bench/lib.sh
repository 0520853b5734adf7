# Shared set-up of the benchmark scripts: release build, a scratch directory
# under target/ removed on exit (with every background server), the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# `install_package package`: installs a Debian package.
install_package() {
  echo "bench: installing $1 (Debian package)" >&2
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}
# `need command package`: installs the package if the command is missing.
need() { command -v "$1" >/dev/null 2>&1 || install_package "$2"; }
cargo build --release --quiet
bin=target/release/cart-actor
work=$(mktemp -d -p "$PWD/target" bench.XXXX)
# Servers trim their log on a clean close: wait for them before removing it.
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
duration=${DURATION:-10s}
# CPU ticks (user + system) processes have used, and CPU microseconds per
# operation between two readings.
ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$pid/stat"))); done; echo "$t"; }
per_op() { echo "scale=1; ($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3" | bc; }
# Requests a bench run sent, warm-up included (its `sent=` field).
sent() { grep -o 'sent=[0-9]*' | cut -d= -f2; }
# Stops the newest background server and waits for its clean close.
stop() { kill "$(jobs -p | tail -1)"; wait "$(jobs -p | tail -1)" 2>/dev/null || true; }
echo "## machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
# `log_bytes dir`: the bytes of a file store's log (every segment and the
# compacted file; not the checkpoint).
log_bytes() {
  find "$1" -maxdepth 1 \( -name 'events*.log' -o -name 'segment-*.log' -o -name 'compacted-*.log' \) \
    -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'
}
# `metric_sum port family`: the sum of the family's samples (every label
# set) on localhost:port/metrics.
metric_sum() {
  curl -s "localhost:$1/metrics" | awk -v m="$2" \
    'index($1, m) == 1 && ($1 == m || substr($1, length(m) + 1, 1) == "{") {s += $2} END {printf "%d", s}'
}
# `wait_passivated port`: waits (up to 5 minutes) until the server on the
# internal port has passivated every grain it activated, their snapshots
# stored (a passivation round is counted once its snapshots are).
wait_passivated() {
  local deadline=$((SECONDS + 300))
  until [ "$(metric_sum "$1" cart_grain_passivations_total)" -ge "$(metric_sum "$1" cart_grain_activations_total)" ]; do
    [ $SECONDS -gt $deadline ] && { echo "grains not passivated" >&2; exit 1; }
    sleep 0.5
  done
}
# `wait_ready port started_ns`: waits (up to 2 minutes) for /readyz on
# localhost:port and writes the milliseconds since started_ns to
# $work/ready_ms.
wait_ready() {
  for _ in $(seq 24000); do
    curl -sf "localhost:$1/readyz" >/dev/null && { echo $(( ($(date +%s%N) - $2) / 1000000 )) > "$work/ready_ms"; return; }
    sleep 0.005
  done
  echo "server did not start" >&2; exit 1
}

