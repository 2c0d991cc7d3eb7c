#!/usr/bin/env bash
# Runs every benchmark of xecm-bridge, one after the other: each measures throughput, so they
# must not compete for the machine. Figures go to stdout; BENCHMARKS.md records them.
#
# Environment (optional):
#   BENCH_REQUESTS, BENCH_CONCURRENCY, BENCH_TURNS   ingest (defaults 20000, 64, 3)
#   BENCH_TRANSFER_MIB                  transfer size in MiB (default 1024)
#   BENCH_PRODUCTS, BENCH_OT_RATE, BENCH_WORK_SECS   backfill (defaults 50000, 20, 60)
set -euo pipefail
cd "$(dirname "$0")/.."

benches=(ingest pipeline transfer console)

# Build everything first so that compiling never overlaps a measurement.
build=()
for bench in "${benches[@]}"; do
    build+=(--bench "${bench}")
done
cargo bench --no-run "${build[@]}"

for bench in "${benches[@]}"; do
    echo
    echo "== cargo bench --bench ${bench}"
    cargo bench --bench "${bench}"
done

# The backfill benchmark drives the real binary against both simulators as processes.
echo
echo "== scripts/bench_backfill.py"
cargo build
python3 scripts/bench_backfill.py "${CARGO_TARGET_DIR:-target}/debug/xecm-bridge"
