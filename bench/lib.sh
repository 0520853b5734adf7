# Shared set-up of the benchmark scripts: release build, a scratch directory
# under target/ removed on exit (with every background server), the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/cart-actor
work=$(mktemp -d -p "$PWD/target" bench.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
duration=${DURATION:-10s}
echo "## machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
