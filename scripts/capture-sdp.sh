#!/usr/bin/env bash
# Regenerates the browser SDP offers in Fixtures/sdp/ (see Fixtures/sdp/README.md). Re-runnable:
# every run overwrites the files it makes.
#
#   scripts/capture-sdp.sh [all|chromium|firefox]      (default: all)
#
#   chromium  chromium-offer.sdp: headless Chromium, fake camera + microphone, one
#             RTCPeerConnection (bundlePolicy max-bundle, rtcpMuxPolicy require, unified plan),
#             addTrack(audio), addTrack(video): the offer of a plain browser app (sendrecv).
#             chromium-simulcast-offer.sdp: the same with sendonly transceivers, the video one with
#             sendEncodings rid q/h/f at scaleResolutionDownBy 4/2/1.
#   firefox   firefox-offer.sdp: headless Firefox (firefox-esr), fake devices
#             (media.navigator.streams.fake), same page as chromium-offer.sdp.
#
# How: a small Python HTTP server serves a capture page; the browser runs it, waits until ICE
# gathering completes (at most 5 s) and POSTs pc.localDescription.sdp back; the server writes it
# byte for byte (CRLF line ends as the browser made them). No WebDriver needed.
# As root the browsers run in a private network namespace (`unshare -n`) whose only interfaces are
# its loopback and a veth pair with 192.0.2.2/24 (TEST-NET-1) and a default route, so the offers
# carry host candidates for 192.0.2.2 and nothing about this machine's addresses ends up in the
# files. Not as root: the machine's real addresses are in the files.
# Needs python3 and chromium (CHROMIUM_BIN) / firefox-esr (FIREFOX_BIN).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
out="$root/Fixtures/sdp"
self="$root/scripts/capture-sdp.sh"

write_files() { # DIR: the capture page and the server that collects offers
  cat >"$1/capture.html" <<'EOF'
<!doctype html><meta charset="utf-8"><title>sdp capture</title>
<script>
"use strict";
const post = (path, body) => fetch(path, { method: "POST", body });
function gathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}
async function capture(name, simulcast) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
  const [audio] = stream.getAudioTracks(), [video] = stream.getVideoTracks();
  if (simulcast) {
    pc.addTransceiver(audio, { direction: "sendonly", streams: [stream] });
    pc.addTransceiver(video, { direction: "sendonly", streams: [stream], sendEncodings: [
      { rid: "q", scaleResolutionDownBy: 4 }, { rid: "h", scaleResolutionDownBy: 2 },
      { rid: "f", scaleResolutionDownBy: 1 }] });
  } else {
    pc.addTrack(audio, stream);
    pc.addTrack(video, stream);
  }
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 5000);
  await post("/sdp/" + name, pc.localDescription.sdp);
  pc.close();
  stream.getTracks().forEach((t) => t.stop());
}
(async () => {
  try {
    const wanted = new URLSearchParams(location.search).get("files").split(",");
    for (const name of wanted) await capture(name, name.includes("simulcast"));
    await post("/done", navigator.userAgent);
  } catch (e) {
    await post("/error", String(e && e.stack || e));
  }
})();
</script>
EOF
  cat >"$1/collect.py" <<'EOF'
import http.server, pathlib, sys, threading
page_dir, out_dir, port_file = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
result = {}
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=str(page_dir), **kw)
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/sdp/"):
            name = pathlib.Path(self.path[5:]).name
            (out_dir / name).write_bytes(body)
            print(f"  {name}: {len(body)} bytes", file=sys.stderr)
        else:
            result[self.path] = body.decode(errors="replace")
        self.send_response(204)
        self.end_headers()
        if self.path in ("/done", "/error"):
            threading.Thread(target=server.shutdown).start()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
pathlib.Path(port_file).write_text(str(server.server_address[1]))
timer = threading.Timer(60, server.shutdown)
timer.start()
server.serve_forever()
timer.cancel()
if "/done" in result:
    print(f"  browser: {result['/done']}", file=sys.stderr)
    sys.exit(0)
print(f"  capture failed: {result.get('/error', 'timed out after 60 s')}", file=sys.stderr)
sys.exit(1)
EOF
}

run_browser() { # BROWSER TMP URL: starts the browser in its own process group, echoes its pid
  local browser="$1" tmp="$2" url="$3"
  if [ "$browser" = chromium ]; then
    local bin="${CHROMIUM_BIN:-$(command -v chromium || command -v chromium-browser)}"
    setsid "$bin" --headless=new --no-sandbox --no-first-run --disable-extensions --disable-gpu \
      --use-fake-device-for-media-stream --use-fake-ui-for-media-stream \
      --user-data-dir="$tmp/profile" "$url" \
      >"$tmp/browser.log" 2>&1 &
  else
    local bin="${FIREFOX_BIN:-$(command -v firefox-esr || command -v firefox)}"
    mkdir -p "$tmp/profile"
    cat >"$tmp/profile/user.js" <<'EOF'
user_pref("media.navigator.streams.fake", true);
user_pref("media.navigator.permission.disabled", true);
user_pref("media.peerconnection.ice.obfuscate_host_addresses", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("browser.aboutwelcome.enabled", false);
user_pref("app.update.enabled", false);
EOF
    HOME="$tmp" setsid "$bin" --headless --no-remote --profile "$tmp/profile" "$url" \
      >"$tmp/browser.log" 2>&1 &
  fi
  echo $!
}

inner() { # BROWSER FILES TMP (inside `unshare -n` when root)
  local browser="$1" files="$2" tmp="$3"
  if [ "$(id -u)" = 0 ]; then
    # A veth pair stands in for a network card: the browsers gather one host candidate, 192.0.2.2
    # (TEST-NET-1, a documentation address, as in aiortc-offer.sdp).
    ip link set lo up
    ip link add sdp0 type veth peer name sdp1
    ip addr add 192.0.2.2/24 dev sdp0
    ip link set sdp1 up
    ip link set sdp0 up
    ip route add default via 192.0.2.1 dev sdp0 onlink
  fi
  write_files "$tmp"
  python3 "$tmp/collect.py" "$tmp" "$tmp" "$tmp/port" &
  local collector=$!
  for _ in $(seq 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
  [ -s "$tmp/port" ] || { echo "the collector did not start" >&2; exit 1; }
  local pid status=0
  pid="$(run_browser "$browser" "$tmp" "http://127.0.0.1:$(cat "$tmp/port")/capture.html?files=$files")"
  wait "$collector" || status=$?
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$pid" 2>/dev/null || true
  if [ "$status" != 0 ]; then tail -20 "$tmp/browser.log" >&2; exit 1; fi
}

capture() { # BROWSER FILE[,FILE...]
  local browser="$1" files="$2" tmp f
  tmp="$(mktemp -d /tmp/capture-sdp.XXXXXX)"
  echo "== $browser: $files"
  local run=("$self" __inner "$browser" "$files" "$tmp")
  if [ "$(id -u)" = 0 ]; then run=(unshare -n "${run[@]}"); else
    echo "  (not root: no private network namespace, the machine's addresses end up in the files)" >&2; fi
  if ! "${run[@]}"; then
    rm -rf "$tmp"
    echo "capture with $browser failed" >&2
    exit 1
  fi
  for f in ${files//,/ }; do
    [ -s "$tmp/$f" ] || { echo "$f was not written" >&2; exit 1; }
    cp "$tmp/$f" "$out/$f"
    chmod 644 "$out/$f"
  done
  rm -rf "$tmp"
}

case "${1:-all}" in
  __inner) inner "$2" "$3" "$4"; exit ;;
  all|chromium|firefox) ;;
  *) echo "usage: $0 [all|chromium|firefox]" >&2; exit 2 ;;
esac
what="${1:-all}"
mkdir -p "$out"
if [ "$what" = all ] || [ "$what" = chromium ]; then
  capture chromium chromium-offer.sdp,chromium-simulcast-offer.sdp
fi
if [ "$what" = all ] || [ "$what" = firefox ]; then
  capture firefox firefox-offer.sdp
fi
