#!/usr/bin/env bash
# The file store against redb and fjall (docs/BENCHMARKS.md, issue 13):
# durable appends with group commit from 64 writers, EVENTS events (default
# 1,000,000) over CARTS carts (default 200,000), then bytes on disk, and the
# time to reopen and read 1000 carts (median of 3 opens, each a new
# process), with the RSS after. Builds bench/engines (its own workspace,
# not part of the test suite's build).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${EVENTS:-1000000}
carts=${CARTS:-200000}
cargo build --release --quiet --manifest-path bench/engines/Cargo.toml
bin=bench/engines/target/release/engines-bench
work=$(mktemp -d -p "$PWD/target" engines.XXXX)
trap 'rm -rf "$work"' EXIT
echo "## machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
median_open() {
  for _ in 1 2 3; do "$bin" open "$1" "$2" "$carts"; done | sort -t= -k2 -n | sed -n 2p
}
for engine in file redb fjall; do
  echo "## $engine: $events durable appends, 64 writers, $carts carts"
  "$bin" write "$engine" "$work/$engine" "$events" "$carts"
  echo "disk bytes: $(du -sb "$work/$engine" | cut -f1)"
  echo "reopen: $(median_open "$engine" "$work/$engine")"
  if [ "$engine" = file ]; then
    rm -f "$work"/file/index-*.checkpoint
    echo "reopen without the index checkpoint: $("$bin" open file "$work/file" "$carts")"
  fi
done
echo "## code size (lines of Rust)"
echo "file store: $(cat crates/store/src/{file,log,committer,compaction,checkpoint,gather,high_water,record,sync,cart_index,chain}.rs | wc -l)"
reg=$(dirname "$(cargo metadata --format-version 1 --manifest-path bench/engines/Cargo.toml 2>/dev/null | python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="redb"][0])')")
for crate in redb fjall lsm-tree; do
  dir=$(ls -d "$(dirname "$reg")/$crate"-[0-9]* 2>/dev/null | sort -V | tail -1)
  [ -n "$dir" ] && echo "$crate ($(basename "$dir")): $(find "$dir/src" -name '*.rs' -exec cat {} + | wc -l)"
done
