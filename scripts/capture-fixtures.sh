#!/usr/bin/env bash
# Regenerates the capture files in Fixtures/pcap/ that Tests/E2E/test_inspect.py decodes with both
# `sfu inspect pcap` and tshark. Re-runnable: every run overwrites the files it makes.
#
#   scripts/capture-fixtures.sh [all|synthetic|ffmpeg|chromium]      (default: all)
#
#   synthetic  scripts/make_synthetic_pcap.py: hand-packed RTP/RTCP/STUN datagrams in seven link
#              types / file formats, plus rtcp-synthetic.expected.jsonl (no capture, no root).
#   ffmpeg     ffmpeg-vp8-opus.pcap: ffmpeg sends VP8 (lavfi testsrc, libvpx) to 127.0.0.1:5004
#              from port 40004 and Opus (lavfi sine, libopus) to 127.0.0.1:5006 from port 40006, as
#              plain RTP for 3 s; its RTCP (SR + SDES CNAME at the start, SR + SDES + BYE at
#              the end) goes
#              40005 -> 5005 and 40007 -> 5007.
#   chromium   chromium-loopback.pcap: headless Chromium, one page, two RTCPeerConnections
#              (max-bundle, rtcp-mux) sending audio + video (fake devices) to each other over
#              127.0.0.1 for ~3.5 s. Everything on the wire is STUN, DTLS, SRTP and SRTCP on one
#              random port pair (the test finds the ports itself).
#
# Captures are classic pcap (dumpcap -P), link type Ethernet (what Linux `lo` gives). Each capture
# runs in a private network namespace (`unshare -n`) whose only interface is its own loopback, so
# nothing else on the machine ends up in the file, ports never clash, and Chromium has no other
# interface to gather candidates on (--allow-loopback-in-peer-connection lets it use 127.0.0.1).
# Needs root (for unshare and dumpcap) and: dumpcap, ffmpeg (libvpx, libopus), chromium, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
out="$root/Fixtures/pcap"
self="$root/scripts/capture-fixtures.sh"

# Inside the namespace: start dumpcap on lo and wait until it has written its file header.
start_capture() { # FILE FILTER
  dumpcap -q -i lo -P -s 262144 -f "$2" -w "$1" 2>"$1.log" &
  cap_pid=$!
  for _ in $(seq 50); do
    [ -s "$1" ] && break
    sleep 0.1
  done
  [ -s "$1" ] || { echo "dumpcap did not start:" >&2; cat "$1.log" >&2; exit 1; }
  sleep 0.3
}

stop_capture() { # FILE
  sleep 0.3
  kill -INT "$cap_pid"
  wait "$cap_pid" || true
  rm -f "$1.log"
}

inner_ffmpeg() { # runs inside `unshare -n`
  local file="$1" tmp="$2"
  ip link set lo up
  # Something must own the destination ports, or the kernel answers with ICMP port unreachable
  # and ffmpeg's connected UDP sockets start failing with ECONNREFUSED.
  python3 - 5004 5005 5006 5007 <<'EOF' &
import select, socket, sys, time
socks = []
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", int(port)))
    socks.append(s)
end = time.monotonic() + 30
while time.monotonic() < end:
    for s in select.select(socks, [], [], 0.2)[0]:
        s.recv(65536)
EOF
  local sink_pid=$!
  sleep 0.5
  start_capture "$file" "udp and host 127.0.0.1"
  ffmpeg -hide_banner -loglevel error -nostdin \
    -re -f lavfi -i "testsrc=size=320x240:rate=15:duration=3" \
    -re -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=3" \
    -map 0:v -c:v libvpx -b:v 300k -deadline realtime -cpu-used 8 -g 15 \
      -pkt_size 800 -rtpflags send_bye -payload_type 96 -ssrc 287454020 -cname video@ffmpeg.fixture \
      -f rtp "rtp://127.0.0.1:5004?localrtpport=40004&localrtcpport=40005" \
    -map 1:a -c:a libopus -b:a 32k \
      -rtpflags send_bye -payload_type 111 -ssrc 1432778632 -cname audio@ffmpeg.fixture \
      -f rtp "rtp://127.0.0.1:5006?localrtpport=40006&localrtcpport=40007" \
    -sdp_file "$tmp/ffmpeg.sdp"
  stop_capture "$file"
  kill "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
}

write_page() { # FILE
  cat >"$1" <<'EOF'
<!doctype html><meta charset="utf-8"><title>loopback</title>
<script>
// Two peer connections in one page, connected over 127.0.0.1 only, media in both directions.
const log = (...a) => console.log("FIXTURE " + a.join(" "));
async function main() {
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: {width: 320, height: 240, frameRate: 15}});
  const cfg = {bundlePolicy: "max-bundle", rtcpMuxPolicy: "require"};
  const pc1 = new RTCPeerConnection(cfg), pc2 = new RTCPeerConnection(cfg);
  const forward = (from, to, tag) => from.onicecandidate = e => {
    if (!e.candidate || !e.candidate.candidate) return;
    const keep = e.candidate.address === "127.0.0.1";
    log(tag, keep ? "use" : "drop", e.candidate.candidate);
    if (keep) to.addIceCandidate(e.candidate);
  };
  forward(pc1, pc2, "pc1");
  forward(pc2, pc1, "pc2");
  pc1.oniceconnectionstatechange = () => log("pc1 ice", pc1.iceConnectionState);
  for (const t of stream.getTracks()) pc1.addTrack(t, stream);
  const offer = await pc1.createOffer();
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(offer);
  for (const t of stream.getTracks()) pc2.addTrack(t.clone(), stream);
  const answer = await pc2.createAnswer();
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(answer);
  for (const pc of [pc1, pc2]) for (const s of pc.getSenders()) {
    if (!s.track || s.track.kind !== "video") continue;
    const p = s.getParameters();
    if (p.encodings && p.encodings.length) { p.encodings[0].maxBitrate = 250000; await s.setParameters(p); }
  }
  setTimeout(async () => {
    for (const [tag, pc] of [["pc1", pc1], ["pc2", pc2]]) {
      (await pc.getStats()).forEach(r => {
        if (r.type === "outbound-rtp") log(tag, "sent", r.kind, r.packetsSent, "packets");
      });
    }
    log("done");
  }, 3500);
}
main().catch(e => log("error", e));
</script>
EOF
}

inner_chromium() { # runs inside `unshare -n`
  local file="$1" tmp="$2"
  ip link set lo up
  write_page "$tmp/page.html"
  start_capture "$file" "udp and src host 127.0.0.1 and dst host 127.0.0.1"
  setsid chromium --headless=new --no-sandbox --no-first-run --disable-extensions \
    --use-fake-device-for-media-stream --use-fake-ui-for-media-stream \
    --allow-loopback-in-peer-connection --enable-logging=stderr --v=0 \
    --user-data-dir="$tmp/profile" "file://$tmp/page.html" 2>"$tmp/chromium.log" &
  local browser=$!
  for _ in $(seq 150); do
    grep -aq "FIXTURE done\|FIXTURE error" "$tmp/chromium.log" && break
    sleep 0.2
  done
  kill -TERM -- "-$browser" 2>/dev/null || true
  wait "$browser" 2>/dev/null || true
  stop_capture "$file"
  grep -a "FIXTURE" "$tmp/chromium.log" | sed 's/.*"FIXTURE /  page: /; s/", source.*//' >&2
  grep -aq "FIXTURE done" "$tmp/chromium.log" || { echo "the page did not finish" >&2; exit 1; }
}

capture() { # NAME INNER
  local name="$1" inner="$2" tmp
  tmp="$(mktemp -d /tmp/capture-fixtures.XXXXXX)"
  echo "== $name"
  if ! unshare -n "$self" "$inner" "$tmp/$name" "$tmp"; then
    rm -rf "$tmp"
    echo "capture of $name failed" >&2
    exit 1
  fi
  cp "$tmp/$name" "$out/$name"
  chmod 644 "$out/$name"
  rm -rf "$tmp"
  capinfos -t -E -c -s "$out/$name" | sed 's/^/  /'
}

case "${1:-all}" in
  __ffmpeg) inner_ffmpeg "$2" "$3"; exit ;;
  __chromium) inner_chromium "$2" "$3"; exit ;;
esac

what="${1:-all}"
case "$what" in all|synthetic|ffmpeg|chromium) ;; *) echo "usage: $0 [all|synthetic|ffmpeg|chromium]" >&2; exit 2 ;; esac
mkdir -p "$out"
if [ "$what" = all ] || [ "$what" = synthetic ]; then
  echo "== synthetic"
  python3 "$root/scripts/make_synthetic_pcap.py" "$out"
fi
if [ "$what" != synthetic ] && [ "$(id -u)" != 0 ]; then
  echo "captures need root (unshare -n and dumpcap)" >&2
  exit 1
fi
if [ "$what" = all ] || [ "$what" = ffmpeg ]; then
  capture ffmpeg-vp8-opus.pcap __ffmpeg
fi
if [ "$what" = all ] || [ "$what" = chromium ]; then
  capture chromium-loopback.pcap __chromium
fi
