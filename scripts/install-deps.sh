#!/usr/bin/env bash
# Installs what the project needs, only what is missing, quietly when nothing is.
#   scripts/install-deps.sh run    -> what `make run` needs (build + runtime libraries)
#   scripts/install-deps.sh test   -> plus what the test suites need (postgresql, chromium, ffmpeg,
#                                     tshark, nftables, iproute2) and the Python venv with pinned packages
set -euo pipefail
mode="${1:-run}"
here="$(cd "$(dirname "$0")/.." && pwd)"

run_pkgs=(pkg-config libsrtp2-dev libssl-dev libopus-dev libvpx-dev libpq-dev libsqlite3-dev libturbojpeg0-dev libpng-dev libfreetype-dev libavcodec-dev fonts-dejavu-core)
test_pkgs=(postgresql chromium chromium-driver ffmpeg tshark nftables iproute2 python3-venv wrk procps coturn)

pkgs=("${run_pkgs[@]}")
if [ "$mode" = "test" ]; then pkgs+=("${test_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "install-deps: the Swift toolchain (6.1 or later) is not on PATH; install it from swift.org first" >&2
  exit 1
fi

if [ "$mode" = "test" ]; then
  venv="$here/.venv"
  req="$here/Tests/E2E/requirements.txt"
  stamp="$venv/.requirements.sha256"
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "install-deps: preparing the Python venv in .venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
fi
