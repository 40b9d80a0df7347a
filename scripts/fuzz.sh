#!/usr/bin/env bash
# Runs the libFuzzer harnesses (docs/FUZZING.md), one after the other on one core.
#
#   scripts/fuzz.sh [harness...]          default: all of them (rtp rtcp stun sdp vp8 h264 webm signaling jwt tcp)
#
# Environment:
#   FUZZ_RUNS   executions per harness (default 10000000)
#   FUZZ_TIME   seconds per harness at most, whichever limit comes first (default 900)
#   FUZZ_ARGS   extra libFuzzer flags
#   FUZZ_CONFIG release (default; optimized, ~10-50x the executions per second of debug) or debug
#   SWIFT_BUILD_LOCK  a lock file to take around the build (flock), for machines that share cores
#   FUZZ_NO_BUILD=1   reuse the last fuzz build (to resume a harness on its corpus without a rebuild)
#
# The fuzz build goes to .build-fuzz (-sanitize=fuzzer,address -DFUZZING). The growing corpus stays
# in .build-fuzz/corpus/<harness> (seeded from Fixtures/fuzz/<harness>); a crash is copied to
# Fixtures/fuzz/regressions/<harness>/, which `make test` replays (Tests/FuzzTests). The figures go to
# .build-fuzz/fuzz-summary.md. Exit status: non-zero if any harness found a crash.
set -uo pipefail
cd "$(dirname "$0")/.."
SWIFT="${SWIFT:-swift}"
RUNS="${FUZZ_RUNS:-10000000}"
TIME="${FUZZ_TIME:-900}"
CONFIG="${FUZZ_CONFIG:-release}"
ALL=(rtp rtcp stun sdp vp8 h264 webm signaling jwt tcp)
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=("${ALL[@]}")
out=.build-fuzz

build=("$SWIFT" build -c "$CONFIG" --build-path "$out" --product sfu-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -use-ld=lld)
if [ -n "${SWIFT_BUILD_LOCK:-}" ]; then build=(flock "$SWIFT_BUILD_LOCK" "${build[@]}"); fi
bin="$out/$CONFIG/sfu-fuzz"
if [ "${FUZZ_NO_BUILD:-0}" = 1 ] && [ -x "$bin" ]; then
  echo "== reusing $bin (FUZZ_NO_BUILD=1)"
else
  echo "== ${build[*]}"
  "${build[@]}" || { echo "fuzz build failed" >&2; exit 1; }
fi

summary="$out/fuzz-summary.md"
echo "| harness | executions | exec/s | time (s) | cov | ft | corpus | crashes |" > "$summary"
echo "|---|---|---|---|---|---|---|---|" >> "$summary"
status=0
for h in "${harnesses[@]}"; do
  corpus="$out/corpus/$h"
  crashes="$out/crashes/$h"
  regressions="Fixtures/fuzz/regressions/$h"
  mkdir -p "$corpus" "$crashes"
  rm -f "$crashes"/*  # this run's findings only (earlier ones are in Fixtures/fuzz/regressions)
  dirs=("$corpus" "Fixtures/fuzz/$h")
  [ -d "$regressions" ] && dirs+=("$regressions")
  dict=()
  [ -f "Fixtures/fuzz/dict/$h.dict" ] && dict=("-dict=Fixtures/fuzz/dict/$h.dict")
  log="$out/fuzz-$h.log"
  echo "== $h: up to $RUNS runs or $TIME s (log: $log)"
  start=$(date +%s)
  # One process, no -jobs/-workers: one core. -timeout flags a single input over 10 s as a hang.
  # LeakSanitizer off: the Swift runtime's and Foundation's caches look like leaks at exit.
  SFU_FUZZ_HARNESS="$h" "$bin" -runs="$RUNS" -max_total_time="$TIME" -timeout=10 -rss_limit_mb=2048 \
    -detect_leaks=0 -print_final_stats=1 -artifact_prefix="$crashes/" "${dict[@]}" ${FUZZ_ARGS:-} "${dirs[@]}" \
    > "$log" 2>&1
  rc=$?
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  size=$(ls "$corpus" | wc -l)
  found=0
  for f in "$crashes"/*; do
    [ -f "$f" ] || continue
    mkdir -p "$regressions"
    cp "$f" "$regressions/$(basename "$f")"
    echo "   crash input kept as $regressions/$(basename "$f")"
    found=$((found + 1))
  done
  if [ $rc -ne 0 ] || [ $found -gt 0 ]; then
    status=1
    echo "   $h FAILED (exit $rc): see $log"
    grep -m3 -E 'ERROR|Fatal error|fuzz invariant|deadly signal' "$log" | sed 's/^/   /'
  fi
  echo "   $h: ${execs:-?} runs, ${rate:-?} exec/s, ${elapsed} s, cov ${cov:-?}, ft ${ft:-?}, corpus $size, crashes $found"
  echo "| $h | ${execs:-?} | ${rate:-?} | $elapsed | ${cov:-?} | ${ft:-?} | $size | $found |" >> "$summary"
done
echo "== summary ($summary)"
cat "$summary"
exit $status
