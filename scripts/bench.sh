#!/usr/bin/env bash
# Micro-benchmarks of the hot path (Benchmarks/, ordo-one/benchmark, release build).
# Prints ns per operation, CPU time and malloc counts per operation for each benchmark.
# Later: the load scenarios of sfu-load (issue 9) are added here.
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
swift package --disable-sandbox benchmark --no-progress --format text "$@"
