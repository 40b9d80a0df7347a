#!/usr/bin/env bash
# Runs every test: `swift test`, then the end-to-end suite (pytest under Tests/E2E) against the
# real `sfu` binary, with a throwaway PostgreSQL server on loopback. Everything started here is
# stopped on exit, pass or fail. Exit status: non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
status=0
work="$(mktemp -d /tmp/sfu-test.XXXXXX)"
chmod 755 "$work"  # the PostgreSQL server runs as user postgres and needs to reach $work/pg
pg_pid=""

cleanup() {
  if [ -n "$pg_pid" ]; then
    scripts/pg-throwaway.sh stop "$work/pg" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== swift build"
# Every product (sfu, and sfu-load for tests/E2E/test_load_tool.py) and the test targets.
if ! swift build --build-tests; then
  echo "swift build failed" >&2
  exit 1
fi

echo "== PostgreSQL (throwaway, loopback)"
if pg_url="$(scripts/pg-throwaway.sh start "$work/pg")"; then
  pg_pid="started"
  export SFU_TEST_POSTGRES_URL="$pg_url"
  export SFU_TEST_POSTGRES_DIR="$work/pg"
  echo "PostgreSQL at $pg_url"
else
  echo "could not start PostgreSQL" >&2
  status=1
fi

# After PostgreSQL: the store suite runs on both backends.
echo "== swift test"
swift test --skip-build --parallel --num-workers 2 || status=1

echo "== end-to-end (pytest)"
export SFU_BIN="$root/.build/debug/sfu"
export SFU_LOAD_BIN="$root/.build/debug/sfu-load"
"$root/.venv/bin/python" -m pytest -q -p no:cacheprovider Tests/E2E
rc=$?
if [ $rc -ne 0 ]; then status=1; fi

if [ $status -eq 0 ]; then echo "== all tests passed"; else echo "== FAILED" >&2; fi
exit $status
