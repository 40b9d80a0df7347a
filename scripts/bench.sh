#!/usr/bin/env bash
# Benchmarks (docs/BENCHMARKS.md).
#
#   scripts/bench.sh                 the forwarding benchmark (what `make bench` runs): release build of
#                                    `sfu` and `sfu-load`, scenarios (a) 1 -> 50, (b) 10 rooms x 4 (also with
#                                    a composite recording of one room running),
#                                    (c) audio 1 -> 200 against the SFU and the floor, then the capacity ramp
#                                    (sfu-load --ramp-step 100) against both, tables in bench/results.md
#   scripts/bench.sh scenarios ARGS  the same with bench/load_scenarios.py options (--duration 10, --only a, ...)
#   scripts/bench.sh micro [ARGS]    the in-memory micro-benchmarks (Benchmarks/, ordo-one/benchmark), e.g.
#   scripts/bench.sh --target RoomBenchmarks   (any first argument starting with -- means micro)
#   scripts/bench.sh composite [ARGS] what a recording costs the server with 4 Chromium simulcast
#                                    publishers: release build of `sfu`, no recording / tracks / composite,
#                                    CPU and RSS per phase, the composite's split (bench/composite_cost.py,
#                                    table in bench/composite-results.md; needs the test venv, PYTHON overrides it)
#
# SWIFT overrides the swift command (e.g. SWIFT="flock /tmp/swift-build.lock swift").
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT="${SWIFT:-swift}"

mode="scenarios"
if [ $# -gt 0 ]; then
  case "$1" in
    micro) mode="micro"; shift ;;
    composite) mode="composite"; shift ;;
    scenarios) shift ;;
    --*) mode="micro" ;;
  esac
fi

if [ "$mode" = micro ]; then
  cd Benchmarks
  exec $SWIFT package --disable-sandbox benchmark --no-progress --format text "$@"
fi

if [ "$mode" = composite ]; then
  PYTHON="${PYTHON:-.venv/bin/python}"
  for tool in "$PYTHON" chromium chromedriver ffmpeg ffprobe; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is needed (make deps-test)" >&2; exit 1; }
  done
  echo "== release build (sfu)"
  $SWIFT build -c release --product sfu
  exec "$PYTHON" bench/composite_cost.py "$@"
fi

for tool in python3 taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done

echo "== release build (sfu, sfu-load)"
$SWIFT build -c release --product sfu
$SWIFT build -c release --product sfu-load
SWIFT_VERSION="$($SWIFT --version 2>/dev/null | head -1)" || SWIFT_VERSION=""
export SWIFT_VERSION
exec python3 bench/load_scenarios.py "$@"
