"""Issue 20: adaptation with an HD publisher, through real Chromium peers and a real `tc tbf` link.

A Chromium publisher plays a clip with real texture (ffmpeg testsrc2 with temporal noise, so the top
layer needs its full rate, not the few hundred kbit/s of a flat test pattern) with simulcast, at
1280x720 (layers 320/640/1280, caps 200 k / 700 k / 2.5 M) or 1920x1080 (480/960/1920, caps 450 k /
1.2 M / 5 M: sfu-client.js takes libwebrtc's caps for the size the camera delivers). Once it sends
its three layers, two subscribers join: one on the host (an open path), one in a network namespace
whose downlink goes through `tc tbf`: no limit, then 500 kbit/s, then 1.2 Mbit/s, then no limit
again. What the issue asks, checked together and reported with the timelines:
- start-up: each subscriber decodes video within 1 s of its transport connecting, and reaches the
  top layer on its (still open) path within 3 s (measured in the page, from the subscriber peer
  connection's `connected` to the first decoded frame and the first top-layer frame);
- no `track_paused` for either subscriber (the server's `paused` never true): pausing is the last
  resort and the lowest layer fits every phase;
- under each limit, after its first 5 s, no freeze over 1 s;
- at 1.2 Mbit/s the constrained subscriber ends on the highest layer that fits (the publisher's
  measured layer rates decide: 640 wide at 720p), the open one on the top layer at the end of each phase;
- under each limit, after its first 5 s: the mean downlink estimate within 15% of the link's rate, and
  at most one layer switch in the remaining 20 s (2 a minute);
- figures per phase (printed): mean downlink estimate against the link rate, layer switches.
The 720p case runs in `make test`; `make bench-adaptation` runs it and the 1080p case
(adaptation_hd_1080p.py) RUNS times and prints the figures.

The Room/Timeline helpers come from test_simulcast.py.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from test_simulcast import (Room, Timeline, chromiums, describe, metric, metrics, netns,  # noqa: F401 (fixtures)
                            publisher_stats, start_server)

FPS = 30
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}

# In the subscriber page before it loads: when its peer connection connects, when it decodes its
# first video frame and its first frame at least `top` wide (performance.now(), ms). Polled every 50 ms.
STARTUP_WATCH = """
(() => {
  const w = window.__startup = { connected: null, firstFrame: null, top: null, topWidth: %d };
  const Native = window.RTCPeerConnection;
  class Watched extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("connectionstatechange", () => {
        if (this.connectionState === "connected" && w.connected === null) w.connected = performance.now();
      });
      const poll = () => {
        if (this.connectionState === "closed" || w.top !== null) return;
        this.getStats().then((r) => {
          r.forEach((s) => {
            if (s.type !== "inbound-rtp" || s.kind !== "video") return;
            if (s.framesDecoded > 0 && w.firstFrame === null) w.firstFrame = performance.now();
            if ((s.frameWidth || 0) >= w.topWidth && w.top === null) w.top = performance.now();
          });
        }).finally(() => setTimeout(poll, 50));
      };
      setTimeout(poll, 50);
    }
  }
  window.RTCPeerConnection = Watched;
})();
"""


def watch_startup(b, top_width: int) -> None:
    """Installs STARTUP_WATCH in every page `b` opens from now on (chromedriver's CDP passthrough)."""
    b._call("POST", f"/session/{b.session}/goog/cdp/execute",
            {"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": STARTUP_WATCH % top_width}})


def startup_times(b, timeout: float = 15) -> dict:
    """{first_frame_s, top_s} after the subscriber connection connected (None: not within timeout)."""
    deadline = time.monotonic() + timeout
    got = {}
    while time.monotonic() < deadline:
        got = b.execute("return window.__startup || {};") or {}
        if got.get("top") is not None:
            break
        time.sleep(0.2)
    c = got.get("connected")
    rel = lambda k: round((got[k] - c) / 1000, 2) if c is not None and got.get(k) is not None else None  # noqa: E731
    return {"first_frame_s": rel("firstFrame"), "top_s": rel("top")}


def textured_clip(tmp_path_factory, width: int, height: int):
    out = tmp_path_factory.mktemp("hd-media") / f"texture-{width}x{height}-{FPS}.y4m"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={width}x{height}:rate={FPS},noise=alls=14:allf=t+u", "-t", "4", "-pix_fmt", "yuv420p",
                    str(out)], check=True, capture_output=True, timeout=180)
    return out


def layer_rates(pub_before: dict, pub_after: dict, seconds: float) -> dict[str, dict]:
    """Per rid: width and the bitrate the publisher sent between two outbound-rtp samples."""
    out = {}
    for rid, now in (pub_after or {}).get("layers", {}).items():
        was = (pub_before or {}).get("layers", {}).get(rid, {})
        out[rid] = {"w": now.get("w", 0), "bps": (now.get("bytes", 0) - was.get("bytes", 0)) * 8 / max(seconds, 0.1)}
    return out


def fitting_widths(rates: dict[str, dict], link_kbit: int) -> set[int]:
    """Widths the constrained subscriber may end on: the highest layer that clearly fits (at most 80%
    of the link), or the next one up if it is in the band where it may or may not (80-100%)."""
    ordered = sorted(rates.values(), key=lambda r: r["w"])
    link = link_kbit * 1000
    fits = [r for r in ordered if r["bps"] <= 0.8 * link]
    ok = {fits[-1]["w"]} if fits else {ordered[0]["w"]}
    ok |= {r["w"] for r in ordered if 0.8 * link < r["bps"] <= link}
    return ok


def phase_figures(samples: list[dict], start: float, end: float, link_kbit: int | None) -> dict:
    window = [s for s in samples if start <= s["t"] < end]
    est = [s["estimate"] for s in window if s.get("estimate")]
    layers = [(s.get("server") or {}).get("spatial_layer") for s in window]
    switches = sum(1 for a, b in zip(layers, layers[1:]) if a is not None and b is not None and a != b)
    return {"samples": len(window), "mean_estimate_kbit": round(sum(est) / len(est) / 1000) if est else None,
            "link_kbit": link_kbit, "switches": switches, "layers_seen": sorted({l for l in layers if l is not None}),
            "paused": any((s.get("server") or {}).get("paused") for s in window)}


def wait_three_layers(room: Room, width: int, timeout: float = 40) -> dict:
    """The publisher's q, h and f all encoding, f at (nearly) the camera's width."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = publisher_stats(room.publisher)
        layers = (got or {}).get("layers") or {}
        if (set(layers) >= {"q", "h", "f"} and all(layers[r]["frames"] > 0 and layers[r]["fps"] for r in "qhf")
                and layers["f"]["w"] >= 0.9 * width):
            return got
        time.sleep(0.5)
    raise AssertionError(f"the publisher does not send three layers up to {width} wide after {timeout}s: "
                         f"{json.dumps(got)}\n" + describe(room.sfu, room.pages))


def test_hd_720p_publisher_constrained_and_open_subscribers(sfu_factory, chromiums, tmp_path_factory, netns):  # noqa: F811
    run_hd_scenario(sfu_factory, chromiums, tmp_path_factory, netns, "720p")


def run_hd_scenario(sfu_factory, chromiums, tmp_path_factory, netns, size: str) -> None:  # noqa: F811
    width, height = SIZES[size]
    top_width = int(0.9 * width)
    # On the top layer: the server forwards the top stream (Chromium may scale every layer down when
    # its CPU is short, as it does with a 1080p camera on a 2-core machine: the width is reported).
    is_top = lambda s: (s.get("server") or {}).get("spatial_layer") == 2 or (s.get("w") or 0) >= top_width  # noqa: E731
    clip = textured_clip(tmp_path_factory, width, height)
    key = "hd-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key, host=netns.host_ip)
    room = Room(sfu, key, chromiums, clip, f"hd-adaptation-{size}", publisher_params=f"&camera={width}x{height}")
    wait_three_layers(room, width)
    # The subscribers join a call in progress, each with the start-up watch in its page.
    weak = chromiums("constrained", netns=netns)
    open_page = chromiums("open", secure_origins=[f"http://{sfu.host}:{sfu.http_port}"])
    for b in (weak, open_page):
        watch_startup(b, top_width)
    room.subscriber("constrained", "weak", browser=weak)
    room.subscriber("open", "open", browser=open_page)
    startup = {"constrained": startup_times(weak), "open": startup_times(open_page)}
    tl_weak = Timeline("constrained subscriber", weak, room.pub_peer, room.api, room.id, "weak")
    tl_open = Timeline("open subscriber", open_page, room.pub_peer, room.api, room.id, "open")
    tl_open.t0 = tl_weak.t0
    room.camera_track(weak)
    room.camera_track(open_page)
    ok, _, took = tl_weak.wait(is_top, timeout=25)
    assert ok, f"the constrained subscriber never reached the top layer before any limit (start-up {startup})\n" + describe(sfu, room.pages, [tl_weak])

    phases = [("open", None, 10.0), ("500k", 500, 25.0), ("1.2M", 1200, 25.0), ("open again", None, 20.0)]
    spans: list[tuple[str, int | None, float, float, dict]] = []
    for name, kbit, seconds in phases:
        if kbit is None:
            netns.unlimit()
        else:
            netns.limit(kbit)
        t0 = tl_weak.mark(f"phase {name}: {'tc tbf ' + str(kbit) + 'kbit' if kbit else 'no limit'}")
        pub_before, pub_t = publisher_stats(room.publisher), time.monotonic()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tl_weak.sample()
            tl_open.sample()
            time.sleep(0.5)
        rates = layer_rates(pub_before, publisher_stats(room.publisher), time.monotonic() - pub_t)
        spans.append((name, kbit, t0, tl_weak.now(), rates))
    netns.unlimit()

    problems, figures = [], [f"{size} start-up (s after the subscriber transport connected): {startup}"]
    for who, t in startup.items():
        if t["first_frame_s"] is None or t["first_frame_s"] > 1.0:
            problems.append(f"start-up: the {who} subscriber's first frame {t['first_frame_s']} s after connecting (at most 1 s)")
        if t["top_s"] is None or t["top_s"] > 3.0:
            problems.append(f"start-up: the {who} subscriber's first top-layer frame {t['top_s']} s after connecting (at most 3 s)")
    for name, kbit, t0, t1, rates in spans:
        weak_f = phase_figures(tl_weak.samples, t0, t1, kbit)
        open_f = phase_figures(tl_open.samples, t0, t1, None)
        late = phase_figures(tl_weak.samples, t0 + 5, t1, kbit)
        layer_kbit = {r["w"]: round(r["bps"] / 1000) for r in rates.values()}
        figures.append(f"{name}: constrained {weak_f}; after 5 s {late['mean_estimate_kbit']} kbit/s, {late['switches']} switches; "
                       f"open {open_f}; publisher layers (width: kbit/s) {layer_kbit}")
        if weak_f["paused"] or open_f["paused"]:
            problems.append(f"{name}: video paused (constrained {weak_f['paused']}, open {open_f['paused']})")
        # Freezes after the first 5 s of the phase.
        settled = [s for s in tl_weak.samples if t0 + 5 <= s["t"] < t1]
        if len(settled) > 1 and settled[-1]["freeze_s"] - settled[0]["freeze_s"] > 1.0:
            problems.append(f"{name}: {settled[-1]['freeze_s'] - settled[0]['freeze_s']:.2f} s of freezes after the first 5 s")
        if kbit is not None:
            # The estimate tracks the link: its mean after the first 5 s within 15% of the rate.
            if late["mean_estimate_kbit"] is None or abs(late["mean_estimate_kbit"] - kbit) > 0.15 * kbit:
                problems.append(f"{name}: mean estimate {late['mean_estimate_kbit']} kbit/s after the first 5 s on a {kbit} kbit/s link")
            # Stability: at most 2 spatial switches a minute at a steady constraint (1 in these 20 s).
            if late["switches"] > 1:
                problems.append(f"{name}: {late['switches']} layer switches after the first 5 s (at most 2 a minute)")
        last_weak = [s for s in tl_weak.samples if t1 - 4 <= s["t"] < t1]
        last_open = [s for s in tl_open.samples if t1 - 4 <= s["t"] < t1]
        if kbit == 1200:
            ok_widths = fitting_widths(rates, kbit)
            # Chromium may scale a layer a little (CPU, alignment): within 10% of the layer's width.
            if not all(any(abs((s.get("w") or 0) - w) <= 0.1 * w for w in ok_widths) for s in last_weak):
                problems.append(f"{name}: the constrained subscriber is not on the highest layer that fits ({sorted(ok_widths)} wide; "
                                f"layers {layer_kbit}) at the end: {[s.get('w') for s in last_weak]}")
        if not all(is_top(s) for s in last_open):
            problems.append(f"{name}: the open subscriber is not on the top layer at the end: {[s.get('w') for s in last_open]}")
    scraped = metrics(sfu, key)
    switches = metric(scraped, "sfu_layer_switches_total")
    paced = metric(scraped, "sfu_paced_packets_total")
    summary = "\n".join(figures) + f"\nsfu_layer_switches_total {switches}\nsfu_paced_packets_total {paced}"
    # A 1080p publisher's middle layer fills ~80 % of the 1.2 Mbit/s link, whose estimate is then cut
    # for delay every few seconds: its frames leave through the pacer (docs/ARCHITECTURE.md,
    # "Pacing"), not as one burst each. (The pacer runs only on a path cut for congestion within
    # 10 s; a 720p publisher's layers leave enough room that a run may see no cut, and its frames
    # may fit the pacer's burst: nothing to assert there.)
    if size == "1080p" and not paced:
        problems.append(f"no video packet was paced ({paced}): every frame left as one burst")
    print(tl_weak.report() + "\n" + tl_open.report() + "\n" + summary)
    assert not problems, "\n".join(problems) + "\n" + summary + "\n" + describe(sfu, room.pages, [tl_weak, tl_open])
    assert sfu.proc.poll() is None
