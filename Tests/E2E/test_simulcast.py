"""Simulcast and downlink adaptation (issue 8) with headless Chromium on both ends.

A Chromium publisher plays a 1280x720 30 fps test pattern (ffmpeg testsrc2, Y4M through
`--use-file-for-fake-video-capture`) and publishes it through sfu-client.js with simulcast (rids
q/h/f: 320x180, 640x360, 1280x720). Chromium subscribers (the demo page with `publish=0`) read
their inbound-rtp figures through getStats; the server's view comes from
GET /v1/rooms/{id}/participants (`subscriptions[]` with current/target layers, caps, `paused`, and
`quality.downlink_estimate_bps`) and /metrics (`sfu_layer_switches_total`, `sfu_tracks_paused`).

- the publisher really sends three layers, and a subscriber on loopback gets the top one;
- `set_layer` caps (spatial, then temporal) are honoured within a keyframe interval and lifting
  them climbs back;
- a subscriber in a network namespace (netns_util: Chromium and chromedriver run inside it, the
  server listens on the host end of the veth pair) first just receives video; then its downlink is
  limited to 500 kbit/s with tc tbf: it gets the low layer within 10 s with < 2 % frames dropped,
  and the top layer again within 20 s after the limit is lifted, with no decode errors and less
  than 1 s of freezes in total;
- at a tiny downlink (100 kbit/s: audio fits, no video layer does) the video is paused with
  `track_paused` (the page shows the overlay) while audio keeps flowing; `track_resumed` after.

Every test prints its timeline (frame sizes over time, drops, freezes, the server's layers) so a
run documents the figures, pass or fail.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import SFUProcess
from netns_util import Chromium, Namespace, chromium_pool
from room_client import ControlAPI

WIDTH, HEIGHT, FPS = 1280, 720, 30
TOP_MIN_WIDTH = 960          # the top layer (1280 wide; 960 if Chromium had to scale it down)
LOW_MAX_WIDTH = 352          # the low layer (320 wide)
LIMIT_KBIT = 500
TINY_KBIT = 100              # Opus fits (~50 kbit/s on the wire), no video layer does with it


# --- fixtures and helpers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> pathlib.Path:
    """A 1280x720 30 fps testsrc2 clip (Y4M, 4 s; Chromium loops it)."""
    out = tmp_path_factory.mktemp("simulcast-media") / f"testsrc2-{WIDTH}x{HEIGHT}-{FPS}.y4m"
    try:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", "4", "-pix_fmt", "yuv420p",
                        str(out)], check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(f"ffmpeg could not make the test clip: {e}")
    return out


@pytest.fixture
def chromiums(tmp_path):
    with chromium_pool(tmp_path) as start:
        yield start


@pytest.fixture
def netns():
    ns = Namespace("sfusim")
    try:
        yield ns
    finally:
        ns.close()


def start_server(sfu_factory, key: str, host: str = "127.0.0.1") -> SFUProcess:
    """An sfu with an API key; HTTP and media on `host` (also the address in its candidates)."""
    env = {"SFU_API_KEY": key}
    if host != "127.0.0.1":
        env.update({"SFU_HTTP_HOST": host, "SFU_MEDIA_HOST": host})
    sfu = sfu_factory(env=env, wait=False)
    deadline = time.monotonic() + 20
    while True:
        if sfu.proc.poll() is not None:
            raise AssertionError(f"sfu exited with {sfu.proc.returncode}:\n{sfu.log()[-3000:]}")
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(f"http://{host}:{sfu.http_port}/healthz", timeout=1) as r:
                if r.status == 200:
                    break
        if time.monotonic() > deadline:
            raise AssertionError(f"sfu not healthy on {host}:{sfu.http_port}\n{sfu.log()[-3000:]}")
        time.sleep(0.1)
    sfu.host = host
    return sfu


def base_url(sfu) -> str:
    return f"http://{sfu.host}:{sfu.http_port}"


def page_url(sfu, token: str, publish: bool) -> str:
    url = f"{base_url(sfu)}/?token={urllib.parse.quote(token)}"
    return url if publish else url + "&publish=0"


def wait_joined(b: Chromium, timeout: float = 25) -> str:
    """The page's peer_id once it joined."""
    deadline = time.monotonic() + timeout
    info = None
    while time.monotonic() < deadline:
        info = b.execute("return window.sfuDemo ? {info: sfuDemo.info(), errors: sfuDemo.errors,"
                         " status: sfuDemo.state} : null;")
        if info and (info.get("info") or {}).get("state") == "joined" and info["info"].get("peer_id"):
            return info["info"]["peer_id"]
        if info and info.get("errors"):
            break
        time.sleep(0.3)
    raise AssertionError(f"page did not join: {json.dumps(info)[:2000]}")


def page_stats(b: Chromium) -> list[dict]:
    got = b.execute_async("const done = arguments[arguments.length - 1];"
                          "(window.sfuDemo ? sfuDemo.stats() : Promise.resolve([]))"
                          ".then(done, (e) => done({error: String(e)}));")
    if isinstance(got, dict) and "error" in got:
        raise AssertionError(f"sfuDemo.stats() failed: {got}")
    return got


def page_events(b: Chromium) -> list[dict]:
    return b.execute("return window.sfuDemo ? sfuDemo.events : [];")


def remote_track(b: Chromium, peer_id: str, kind: str, source: str = "camera") -> dict | None:
    parts = b.execute("return window.sfuDemo ? sfuDemo.participants() : [];")
    for p in parts:
        if p["peer_id"] != peer_id:
            continue
        for t in p["tracks"]:
            if t["kind"] == kind and (kind == "audio" or t["source"] == source):
                return t
    return None


PUBLISHER_STATS = """
const done = arguments[arguments.length - 1];
const pc = window.sfuDemo && sfuDemo.client && sfuDemo.client.publisher;
if (!pc) { done(null); return; }
pc.getStats().then((r) => {
  const out = {layers: {}, available: null};
  r.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.layers[s.rid || '-'] = {w: s.frameWidth || 0, h: s.frameHeight || 0, frames: s.framesEncoded || 0,
        fps: s.framesPerSecond || 0, bytes: s.bytesSent || 0, target: s.targetBitrate || 0,
        limit: s.qualityLimitationReason, mode: s.scalabilityMode, active: s.active,
        encoder: s.encoderImplementation};
    }
    if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) out.available = s.availableOutgoingBitrate;
  });
  done(out);
}, (e) => done({error: String(e)}));
"""


def publisher_stats(b: Chromium) -> dict | None:
    return b.execute_async(PUBLISHER_STATS)


def set_layer(b: Chromium, track_id: str, caps: dict) -> None:
    sent = b.execute("return sfuDemo.client.setLayer(arguments[0], arguments[1]);", track_id, caps)
    assert sent is True, f"setLayer did not send (socket closed?): {sent}"


class Timeline:
    """Samples a subscriber page's inbound video (and audio) from one publisher, and the server's
    view of that subscription; keeps everything for the report."""

    def __init__(self, name: str, b: Chromium, pub_peer: str, api: ControlAPI | None = None,
                 room_id: str | None = None, user_id: str | None = None):
        self.name, self.b, self.pub_peer = name, b, pub_peer
        self.api, self.room_id, self.user_id = api, room_id, user_id
        self.t0 = time.monotonic()
        self.samples: list[dict] = []
        self.marks: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> float:
        t = self.now()
        self.marks.append((t, what))
        return t

    def sample(self, server: bool = True) -> dict:
        stats = page_stats(self.b)
        video = next((s for s in stats if s.get("peer_id") == self.pub_peer and s.get("kind") == "video"
                      and s.get("source", "camera") == "camera"), {})
        audio = next((s for s in stats if s.get("peer_id") == self.pub_peer and s.get("kind") == "audio"), {})
        s = {"t": round(self.now(), 2), "w": video.get("frameWidth"), "h": video.get("frameHeight"),
             "fps": video.get("framesPerSecond"), "decoded": video.get("framesDecoded", 0),
             "received": video.get("framesReceived", 0), "dropped": video.get("framesDropped", 0),
             "freezes": video.get("freezeCount", 0), "freeze_s": video.get("totalFreezesDuration", 0.0),
             "keyframes": video.get("keyFramesDecoded", 0), "pli": video.get("pliCount", 0),
             "nack": video.get("nackCount", 0), "lost": video.get("packetsLost", 0),
             "bytes": video.get("bytesReceived", 0), "paused": video.get("paused"),
             "audio_packets": audio.get("packetsReceived", 0), "audio_lost": audio.get("packetsLost", 0),
             "audio_concealed": audio.get("concealedSamples", 0),
             "audio_samples": audio.get("totalSamplesReceived", 0),
             "track_id": video.get("track_id"), "decoder": video.get("decoderImplementation")}
        if server and self.api is not None:
            sub, quality = server_subscription(self.api, self.room_id, self.user_id, s["track_id"])
            s["server"] = sub
            s["estimate"] = (quality or {}).get("downlink_estimate_bps")
        self.samples.append(s)
        return s

    def wait(self, cond, timeout: float, interval: float = 0.5, server: bool = True) -> tuple[bool, dict, float]:
        """Samples until cond(sample) holds; (ok, last sample, seconds waited)."""
        start = time.monotonic()
        s = self.sample(server)
        while not cond(s):
            if time.monotonic() - start > timeout:
                return False, s, time.monotonic() - start
            time.sleep(interval)
            s = self.sample(server)
        return True, s, time.monotonic() - start

    def hold(self, seconds: float, interval: float = 0.5, server: bool = True) -> list[dict]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(self.sample(server))
            time.sleep(interval)
        return out

    def report(self) -> str:
        """The timeline, one line per sample where something visible changed (and every 2 s)."""
        lines = [f"timeline {self.name} (t in s; w x h fps | decoded received dropped | freezes/s | "
                 f"keyframes pli nack lost | server layer/target caps paused estimate):"]
        marks = list(self.marks)
        last_key, last_t = None, -10.0
        for s in self.samples:
            while marks and marks[0][0] <= s["t"]:
                lines.append(f"  --- {marks[0][0]:6.2f} {marks[0][1]}")
                marks.pop(0)
            srv = s.get("server") or {}
            srv_text = (f"S{srv.get('spatial_layer')}/{srv.get('target_spatial_layer')} "
                        f"T{srv.get('temporal_layer')}/{srv.get('target_temporal_layer')} "
                        f"cap {srv.get('max_spatial')},{srv.get('max_temporal')} "
                        f"paused={srv.get('paused')} {srv.get('bitrate_bps')}bps" if srv else "-")
            key = (s["w"], s["h"], s["paused"], srv.get("spatial_layer"), srv.get("target_spatial_layer"),
                   srv.get("paused"), s["freezes"])
            if key == last_key and s["t"] - last_t < 2.0:
                continue
            last_key, last_t = key, s["t"]
            lines.append(
                f"  {s['t']:6.2f} {s['w']}x{s['h']} {s['fps']}fps | {s['decoded']} {s['received']} {s['dropped']} | "
                f"{s['freezes']}/{s['freeze_s']} | {s['keyframes']} {s['pli']} {s['nack']} {s['lost']} | "
                f"{srv_text} est={s.get('estimate')} | audio pkts {s['audio_packets']}")
        for t, what in marks:
            lines.append(f"  --- {t:6.2f} {what}")
        return "\n".join(lines)


def participants(api: ControlAPI, room_id: str) -> dict[str, dict]:
    status, body = api.call("GET", f"/v1/rooms/{room_id}/participants")
    assert status == 200, (status, body)
    return {p["user_id"]: p for p in body["participants"]}


def server_subscription(api: ControlAPI, room_id: str, user_id: str, track_id: str | None) -> tuple[dict | None, dict | None]:
    """(the subscription of `user_id` to `track_id`, that participant's quality) per the API."""
    try:
        p = participants(api, room_id).get(user_id)
    except Exception:
        return None, None
    if not p:
        return None, None
    sub = next((s for s in p.get("subscriptions") or [] if s.get("track_id") == track_id), None)
    return sub, p.get("quality")


def metrics(sfu, key: str) -> dict[str, float]:
    """Every sample of /metrics: name (with labels as printed) -> value."""
    req = urllib.request.Request(base_url(sfu) + "/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def metric(values: dict[str, float], name: str) -> float | None:
    """The sum of a metric's samples over its labels; None when the server does not export it."""
    got = [v for k, v in values.items() if k == name or k.startswith(name + "{")]
    return sum(got) if got else None


DECODE_ERROR_NEEDLES = ("failed to decode", "decode error", "decoding error", "error decoding",
                        "vp8 decode", "decoder error")


UNDECODED_SLACK = 10         # frames legitimately between "received" and "decoded" at a sample


def decode_errors(b: Chromium, s: dict | None = None) -> list[str]:
    """Signs of decode failures. getStats has no decoder-error counter; a frame that fails to
    decode is counted in framesReceived but neither in framesDecoded nor in framesDropped, so the
    gap (beyond the few frames in flight) is the getStats evidence. Chromium's own log is searched
    as well (its browser-side log; libwebrtc's renderer-side lines may not reach it)."""
    out = []
    if s is not None:
        gap = s["received"] - s["decoded"] - s["dropped"]
        if gap > UNDECODED_SLACK:
            out.append(f"getStats: framesReceived {s['received']} - framesDecoded {s['decoded']} - "
                       f"framesDropped {s['dropped']} = {gap} frames neither decoded nor dropped")
    return out + b.log_lines(*DECODE_ERROR_NEEDLES)


def describe(sfu, pages: dict[str, Chromium], timelines: list[Timeline] = (), lines: int = 60) -> str:
    out = [t.report() for t in timelines]
    for name, b in pages.items():
        with contextlib.suppress(Exception):
            out.append(f"page {name} events: {json.dumps(page_events(b))[-1500:]}")
        with contextlib.suppress(Exception):
            if name == "publisher":
                out.append(f"publisher outbound: {json.dumps(publisher_stats(b))}")
        errs = b.log_lines(*DECODE_ERROR_NEEDLES)
        if errs:
            out.append(f"page {name} chromium log decode lines ({len(errs)}): " + "\n  ".join(errs[:10]))
    log = sfu.log().splitlines()
    out.append(f"server log (last {lines} of {len(log)} lines, {sfu.log_path}):")
    out.extend(log[-lines:])
    return "\n".join(out)


def is_top(s: dict) -> bool:
    return (s.get("w") or 0) >= TOP_MIN_WIDTH


def is_low(s: dict) -> bool:
    return 0 < (s.get("w") or 0) <= LOW_MAX_WIDTH


class Room:
    """A room with a Chromium publisher (simulcast, 720p test pattern) already sending 3 layers."""

    def __init__(self, sfu, key: str, chromiums, video_file: pathlib.Path, label: str, publisher_params: str = ""):
        self.sfu, self.key = sfu, key
        self.api = ControlAPI(base_url(sfu), key)
        self.id = self.api.create_room(name=label)["id"]
        secure = [base_url(sfu)] if sfu.host != "127.0.0.1" else []
        self.publisher = chromiums("publisher", video_file=video_file, secure_origins=secure)
        self.publisher.open(page_url(sfu, self.api.token(self.id, "pub", role="doctor", name="Publisher")["token"], True)
                            + publisher_params)
        self.pub_peer = wait_joined(self.publisher)
        self.pages = {"publisher": self.publisher}

    @staticmethod
    def three_layers(got: dict | None) -> bool:
        layers = (got or {}).get("layers") or {}
        return (set(layers) >= {"q", "h", "f"} and all(layers[r]["frames"] > 0 and layers[r]["fps"] for r in "qhf")
                and layers["f"]["w"] >= TOP_MIN_WIDTH and layers["q"]["w"] <= LOW_MAX_WIDTH)

    def wait_three_layers(self, timeout: float = 25) -> dict:
        """The publisher's outbound-rtp: q, h and f all encoding, f at (nearly) 720p."""
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = publisher_stats(self.publisher)
            if self.three_layers(got):
                return got
            time.sleep(0.5)
        raise AssertionError(f"the publisher does not send three simulcast layers (q/h/f) after {timeout}s: "
                             f"{json.dumps(got)}\nanswer:\n{self.publisher_answer()}\n"
                             + describe(self.sfu, self.pages))

    def publisher_answer(self) -> str:
        with contextlib.suppress(Exception):
            return self.publisher.execute("return sfuDemo.info().publisher.remote;") or ""
        return ""

    def subscriber(self, name: str, user_id: str, browser: Chromium) -> tuple[Chromium, str]:
        """Opens the demo page in `browser` as a subscribe-only participant; (browser, peer_id)."""
        b = browser
        b.open(page_url(self.sfu, self.api.token(self.id, user_id, role="observer", name=name)["token"], False))
        self.pages[name] = b
        return b, wait_joined(b)

    def camera_track(self, b: Chromium, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = remote_track(b, self.pub_peer, "video")
            if t and t.get("receiving"):
                return t["track_id"]
            time.sleep(0.3)
        raise AssertionError("subscriber page never got the publisher's camera track\n" + describe(self.sfu, self.pages))


# --- loopback: the top layer and set_layer ------------------------------------------------------

def test_publisher_sends_three_layers_and_loopback_subscriber_gets_the_top(sfu_factory, chromiums, video_file):
    key = "sim-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key)
    room = Room(sfu, key, chromiums, video_file, "simulcast-top")
    sub = chromiums("subscriber")
    tl = Timeline("loopback subscriber", sub, room.pub_peer, room.api, room.id, "sub")
    tl.mark("subscriber page opened")
    sub.open(page_url(sfu, room.api.token(room.id, "sub", role="observer", name="Sub")["token"], False))
    room.pages["subscriber"] = sub
    publisher_ready: list[float] = []

    def top_and_publisher(x: dict) -> bool:
        # Also notes when the publisher first sends all three layers (its uplink ramps up too).
        if not publisher_ready and Room.three_layers(publisher_stats(room.publisher)):
            publisher_ready.append(tl.mark("publisher sends q, h and f"))
        return is_top(x)

    ok, s, _ = tl.wait(top_and_publisher, timeout=15 - tl.now())
    layers = room.wait_three_layers(timeout=5 if publisher_ready else 20)
    print(f"publisher layers: {json.dumps(layers)}\npublisher on three layers at "
          f"{publisher_ready[0] if publisher_ready else None}s, subscriber on the top layer "
          f"{'after' if ok else 'not within'} {s['t']:.1f}s of opening its page")
    context = describe(sfu, room.pages, [tl])
    assert ok, f"no top layer (frameWidth >= {TOP_MIN_WIDTH}) within 15 s of joining: {s}\n{context}"
    track = s["track_id"]
    # Steady: it stays there, decoding at the full frame rate.
    held = tl.hold(4)
    print(tl.report())
    assert all(is_top(x) for x in held), f"left the top layer on an unconstrained link\n{tl.report()}"
    frames = held[-1]["decoded"] - held[0]["decoded"]
    span = held[-1]["t"] - held[0]["t"]
    assert frames >= 0.7 * FPS * span, f"{frames} frames decoded in {span:.1f}s\n{context}"
    # The server says the same: top layer, no caps, not paused, and an estimate above its bitrate.
    srv = held[-1]["server"]
    assert srv is not None, f"no subscriptions[] entry for {track} in the participants route\n{context}"
    assert srv["kind"] == "video" and srv["peer_id"] == room.pub_peer and srv["source"] == "camera", srv
    assert srv["spatial_layer"] == 2 and srv["target_spatial_layer"] == 2, srv
    assert srv["max_spatial"] is None and srv["paused"] is False, srv
    assert srv["temporal_layer"] is not None, srv
    assert held[-1]["estimate"] and held[-1]["estimate"] >= srv["bitrate_bps"] > 0, held[-1]
    pub = participants(room.api, room.id)["pub"]
    assert any(t["kind"] == "video" and t["simulcast"] is True for t in pub["tracks"]), pub["tracks"]
    errors = decode_errors(sub, tl.sample())
    assert not errors, errors[:10]
    assert sfu.proc.poll() is None


def test_set_layer_spatial_cap(sfu_factory, chromiums, video_file):
    """set_layer {max_spatial: 0}: the low layer within a keyframe interval; lifted: the top again."""
    key = "sim-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key)
    room = Room(sfu, key, chromiums, video_file, "simulcast-set-layer")
    sub, _ = room.subscriber("subscriber", "sub", browser=chromiums("subscriber"))
    tl = Timeline("set_layer spatial", sub, room.pub_peer, room.api, room.id, "sub")
    track = room.camera_track(sub)
    room.wait_three_layers()
    ok, s, _ = tl.wait(is_top, timeout=20)
    assert ok, f"no top layer to start from\n{describe(sfu, room.pages, [tl])}"

    tl.mark("setLayer maxSpatial 0")
    set_layer(sub, track, {"maxSpatial": 0})
    ok, s, took_low = tl.wait(is_low, timeout=3, interval=0.2)
    held = tl.hold(3)
    tl.mark("setLayer {} (no cap)")
    set_layer(sub, track, {})
    ok_up, s_up, took_up = tl.wait(is_top, timeout=10, interval=0.3)
    after = tl.hold(2)
    report = tl.report()
    print(report + f"\nlow after {took_low:.2f}s, top again after {took_up:.2f}s")
    context = describe(sfu, room.pages, [tl])
    assert ok, f"set_layer max_spatial 0 not honoured within 3 s (one keyframe interval)\n{context}"
    assert all(is_low(x) for x in held), f"did not stay on the low layer under the cap\n{report}"
    srv = held[-1]["server"]
    assert srv and srv["max_spatial"] == 0 and srv["spatial_layer"] == 0 and srv["target_spatial_layer"] == 0, srv
    assert ok_up, f"did not climb back to the top layer within 10 s of lifting the cap\n{context}"
    srv = after[-1]["server"]
    assert srv and srv["max_spatial"] is None and srv["spatial_layer"] == 2, srv
    # The switches did not stall the video.
    freeze_s = after[-1]["freeze_s"] - held[0]["freeze_s"]
    assert freeze_s < 1.0, f"{freeze_s:.2f}s of freezes across the two switches\n{report}"
    errors = decode_errors(sub, tl.sample())
    assert not errors, errors[:10]
    switches = metric(metrics(sfu, key), "sfu_layer_switches_total")
    assert switches is not None and switches >= 2, f"sfu_layer_switches_total = {switches}"


def test_set_layer_temporal_cap(sfu_factory, chromiums, video_file):
    """set_layer {max_temporal: 0}: only the base temporal layer (L1T3: a quarter of the frame rate)
    at the same size; lifted: the full frame rate again."""
    key = "sim-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key)
    room = Room(sfu, key, chromiums, video_file, "simulcast-temporal")
    sub, _ = room.subscriber("subscriber", "sub", browser=chromiums("subscriber"))
    tl = Timeline("set_layer temporal", sub, room.pub_peer, room.api, room.id, "sub")
    track = room.camera_track(sub)
    room.wait_three_layers()
    ok, s, _ = tl.wait(lambda x: is_top(x) and (x["fps"] or 0) >= 20, timeout=20)
    assert ok, f"no top layer at full frame rate to start from\n{describe(sfu, room.pages, [tl])}"

    def rate(window: list[dict]) -> float:
        return (window[-1]["decoded"] - window[0]["decoded"]) / max(0.1, window[-1]["t"] - window[0]["t"])

    before = rate(tl.hold(3))
    tl.mark("setLayer maxTemporal 0")
    set_layer(sub, track, {"maxTemporal": 0})
    time.sleep(1.5)
    capped = tl.hold(4)
    tl.mark("setLayer {} (no cap)")
    set_layer(sub, track, {})
    time.sleep(1.5)
    lifted = tl.hold(3)
    ok_top, _, took_top = tl.wait(is_top, timeout=10, interval=0.3)
    report = tl.report()
    print(report + f"\nframe rate: {before:.1f} -> {rate(capped):.1f} (capped) -> {rate(lifted):.1f}; "
          f"top layer {'after' if ok_top else 'not within'} {took_top:.1f}s + 4.5s after lifting")
    assert rate(capped) <= 0.5 * before, f"max_temporal 0: {rate(capped):.1f} fps vs {before:.1f} before\n{report}"
    assert all(is_top(x) for x in capped), f"a temporal cap changed the spatial layer\n{report}"
    srv = capped[-1]["server"]
    assert srv and srv["max_temporal"] == 0 and srv["temporal_layer"] == 0, srv
    assert rate(lifted) >= 0.8 * before, f"lifted: {rate(lifted):.1f} fps vs {before:.1f}\n{report}"
    assert ok_top, f"lifting the temporal cap did not bring back the top spatial layer\n{report}"
    errors = decode_errors(sub, tl.sample())
    assert not errors, errors[:10]


# --- a subscriber in a network namespace ---------------------------------------------------------

def netns_room(sfu_factory, chromiums, video_file, netns: Namespace, label: str):
    key = "sim-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key, host=netns.host_ip)
    room = Room(sfu, key, chromiums, video_file, label)
    sub = chromiums("constrained", netns=netns)
    room.subscriber("constrained", "weak", browser=sub)
    return sfu, key, room, sub


def check_namespace_path(sub: Chromium, netns: Namespace) -> str | None:
    """The subscriber's nominated candidate pair goes to the server at host_ip, and the media went
    through the veth pair (the namespace has no other way out; its own address is an mDNS name in
    its candidates, so the host's byte counter for the veth is the evidence)."""
    pair = sub.execute_async(
        "const done = arguments[arguments.length - 1];"
        "sfuDemo.client.subscriber.getStats().then((r) => { const c = {}, pairs = {}; let selected = null;"
        " r.forEach((s) => { if (s.type === 'remote-candidate') c[s.id] = s.address || s.ip;"
        "  if (s.type === 'candidate-pair') pairs[s.id] = s;"
        "  if (s.type === 'transport' && s.selectedCandidatePairId) selected = s.selectedCandidatePairId; });"
        " const pair = pairs[selected] || Object.values(pairs).find((p) => p.nominated && p.state === 'succeeded');"
        " done(pair ? {remote: c[pair.remoteCandidateId], received: pair.bytesReceived} : null); },"
        " (e) => done(String(e)));")
    if not isinstance(pair, dict) or pair.get("remote") != netns.host_ip:
        return f"subscriber's nominated pair {pair}, expected the server at {netns.host_ip}"
    sent = netns.host_bytes_sent()
    if sent < pair["received"]:
        return f"the veth carried {sent} bytes toward the namespace, the page received {pair['received']}"
    return None


def test_chromium_in_namespace_receives_video(sfu_factory, chromiums, video_file, netns):
    """The infrastructure: Chromium (and chromedriver) inside the namespace, the server on the
    host end of the veth, no limit: the page decodes the publisher's video and hears its audio,
    over the veth pair."""
    sfu, key, room, sub = netns_room(sfu_factory, chromiums, video_file, netns, "netns-plain")
    tl = Timeline("namespace subscriber, no limit", sub, room.pub_peer)
    room.camera_track(sub)
    ok, s, took = tl.wait(lambda x: x["decoded"] > 60 and x["audio_packets"] > 100, timeout=30)
    print(tl.report() + f"\n{took:.1f}s to 60 frames")
    assert ok, f"no media in the namespace: {s}\n{describe(sfu, room.pages, [tl])}"
    problem = check_namespace_path(sub, netns)
    assert problem is None, problem
    assert sfu.proc.poll() is None


def test_constrained_subscriber_follows_its_downlink(sfu_factory, chromiums, video_file, netns):
    """500 kbit/s toward the namespace: the low layer within 10 s, < 2 % frames dropped; the limit
    lifted: the top layer within 20 s; no decode errors, under 1 s of freezes in total.
    Every criterion is checked and all failures are reported together (with the timeline)."""
    sfu, key, room, sub = netns_room(sfu_factory, chromiums, video_file, netns, "netns-500k")
    tl = Timeline("constrained subscriber (500 kbit/s)", sub, room.pub_peer, room.api, room.id, "weak")
    room.camera_track(sub)
    room.wait_three_layers()
    ok, s, took = tl.wait(is_top, timeout=25)
    assert ok, f"no top layer before the limit (unconstrained namespace link)\n{describe(sfu, room.pages, [tl])}"
    problem = check_namespace_path(sub, netns)
    assert problem is None, problem
    start = tl.hold(2)[-1]

    tl.mark(f"tc tbf {LIMIT_KBIT}kbit on {netns.host_if}")
    netns.limit(LIMIT_KBIT)
    t_limit = time.monotonic()
    ok_low, s_low, took_low = tl.wait(is_low, timeout=10, interval=0.3)
    constrained = tl.hold(max(0.0, 15 - (time.monotonic() - t_limit)))  # 15 s under the limit in all
    qdisc = netns.qdisc_stats()
    tl.mark("tc qdisc del (limit lifted)")
    netns.unlimit()
    ok_top, s_top, took_top = tl.wait(is_top, timeout=20, interval=0.3)
    end = tl.hold(3)[-1]
    switches = metric(metrics(sfu, key), "sfu_layer_switches_total")
    report = tl.report()
    limited = constrained[-1] if constrained else s_low
    received = limited["received"] - start["received"]
    dropped = limited["dropped"] - start["dropped"]
    freeze_s = end["freeze_s"] - start["freeze_s"]
    paused = [x["t"] for x in tl.samples if x["t"] >= start["t"] and (x.get("server") or {}).get("paused")]
    summary = (f"low layer after {took_low:.1f}s, top again {took_top:.1f}s after lifting; "
               f"under the limit {dropped}/{received} frames dropped; freezes "
               f"{end['freezes'] - start['freezes']} ({freeze_s:.2f}s); server paused the video at "
               f"{paused[:3]}{'...' if len(paused) > 3 else ''}; sfu_layer_switches_total {switches}; tbf: {qdisc}; "
               f"limit applied at monotonic {t_limit * 1000:.0f} ms (the server's t_ms clock)")
    print(report + "\n" + summary)

    problems = []
    if not ok_low:
        problems.append("not on the low layer within 10 s of the 500 kbit/s limit")
    elif not all(is_low(x) for x in constrained[2:]):
        problems.append("left the low layer under the limit")
    if not (received > 0 and dropped / received < 0.02):
        problems.append(f"{dropped}/{received} frames dropped under the limit (want < 2 %)")
    # Video kept flowing under the limit: 500 kbit/s carries the low layer, nothing to pause.
    if paused:
        problems.append(f"the server paused the video under a {LIMIT_KBIT} kbit/s link (samples at {paused[:5]})")
    span = constrained[-1]["t"] - constrained[0]["t"] if len(constrained) > 1 else 0
    if span > 2:
        rate = (constrained[-1]["decoded"] - constrained[0]["decoded"]) / span
        if rate < 15:
            problems.append(f"{rate:.1f} fps decoded under the limit")
    srv = limited.get("server")
    if not (srv and srv["spatial_layer"] == 0 and srv["paused"] is False):
        problems.append(f"server view under the limit: {srv}")
    est = limited.get("estimate")
    if est is None or est > 1.2 * LIMIT_KBIT * 1000:
        problems.append(f"downlink estimate {est} under a {LIMIT_KBIT} kbit/s link")
    if not ok_top:
        problems.append("not back on the top layer within 20 s of lifting the limit")
    srv = end.get("server")
    if not (srv and srv["spatial_layer"] == 2):
        problems.append(f"server view after lifting: {srv}")
    if freeze_s >= 1.0:
        problems.append(f"{freeze_s:.2f}s of freezes across the switches (want < 1 s)")
    errors = decode_errors(sub, end)
    if errors:
        problems.append(f"decode errors: {errors[:10]}")
    if switches is None or switches < 2:
        problems.append(f"sfu_layer_switches_total = {switches}")
    assert not problems, "\n".join(problems) + "\n" + summary + "\n" + describe(sfu, room.pages, [tl])
    assert sfu.proc.poll() is None


def test_tiny_downlink_pauses_video_keeps_audio(sfu_factory, chromiums, video_file, netns):
    """100 kbit/s toward the namespace: the video is paused (`track_paused`, overlay on the tile,
    `paused` in the API, `sfu_tracks_paused` 1) while audio keeps flowing; lifted: `track_resumed`
    and video again."""
    sfu, key, room, sub = netns_room(sfu_factory, chromiums, video_file, netns, "netns-tiny")
    tl = Timeline(f"subscriber at {TINY_KBIT} kbit/s", sub, room.pub_peer, room.api, room.id, "weak")
    track = room.camera_track(sub)
    ok, s, _ = tl.wait(lambda x: x["decoded"] > 30 and x["paused"] is False and (x["fps"] or 0) > 10, timeout=25)
    assert ok, f"no video before the limit\n{describe(sfu, room.pages, [tl])}"
    tl.hold(2)

    # Only what happens from the limit on counts (a pause at startup, while the estimate ramps up,
    # is not the one this test is about).
    since = len(page_events(sub))

    def paused_events(kind: str) -> list[dict]:
        return [e for e in page_events(sub)[since:] if e.get("event") == kind and e.get("trackId") == track]

    tl.mark(f"tc tbf {TINY_KBIT}kbit")
    netns.limit(TINY_KBIT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not paused_events("trackpaused"):
        tl.sample()
        time.sleep(0.5)
    got_pause = bool(paused_events("trackpaused"))
    t_pause = tl.mark("track_paused seen" if got_pause else "no track_paused")
    overlay = sub.execute("return sfuDemo.pausedTiles();")
    paused_metric = metric(metrics(sfu, key), "sfu_tracks_paused")
    held = tl.hold(6)
    tl.mark("tc qdisc del")
    netns.unlimit()
    since = len(page_events(sub))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not paused_events("trackresumed"):
        tl.sample()
        time.sleep(0.5)
    got_resume = bool(paused_events("trackresumed"))
    tl.mark("track_resumed seen" if got_resume else "no track_resumed")
    resumed = tl.hold(4)
    paused_after = metric(metrics(sfu, key), "sfu_tracks_paused")
    report = tl.report()
    print(report + f"\noverlay while paused: {overlay}; sfu_tracks_paused while paused: {paused_metric}, "
          f"after: {paused_after}")
    problems = []
    if not got_pause:
        problems.append(f"no track_paused for the video within 15 s at {TINY_KBIT} kbit/s")
    else:
        if room.pub_peer not in overlay:
            problems.append(f"the tile has no 'paused: low bandwidth' overlay: {overlay}")
        if paused_metric is None or paused_metric < 1:
            problems.append(f"sfu_tracks_paused = {paused_metric} while paused")
        srv = held[-1]["server"]
        if not (srv and srv["paused"] is True):
            problems.append(f"server view while paused: {srv}")
    # Audio kept flowing while the video was paused: ~50 packets/s, few concealed samples.
    span = held[-1]["t"] - held[0]["t"]
    audio = held[-1]["audio_packets"] - held[0]["audio_packets"]
    if audio < 0.8 * 50 * span:
        problems.append(f"{audio} audio packets in {span:.1f}s while video was paused")
    samples = held[-1]["audio_samples"] - held[0]["audio_samples"]
    concealed = held[-1]["audio_concealed"] - held[0]["audio_concealed"]
    if not (samples > 0 and concealed / samples < 0.1):
        problems.append(f"{concealed}/{samples} audio samples concealed while video was paused")
    if not got_resume:
        problems.append("no track_resumed within 20 s of lifting the limit")
    frames = resumed[-1]["decoded"] - resumed[0]["decoded"]
    if frames < 30:
        problems.append(f"{frames} frames decoded in the 4 s after track_resumed")
    if sub.execute("return sfuDemo.pausedTiles();"):
        problems.append("overlay still shown after track_resumed")
    srv = resumed[-1]["server"]
    if not (srv and srv["paused"] is False):
        problems.append(f"server view after resuming: {srv}")
    if paused_after != 0:
        problems.append(f"sfu_tracks_paused = {paused_after} after resuming")
    errors = decode_errors(sub, resumed[-1])
    if errors:
        problems.append(f"decode errors: {errors[:10]}")
    assert not problems, "\n".join(problems) + "\n" + describe(sfu, room.pages, [tl])
