"""Issue 20: adaptation with an HD publisher, through real Chromium peers and a real `tc tbf` link.

A Chromium publisher plays a 1280x720 30 fps clip with real texture (ffmpeg testsrc2 with temporal
noise, so the top layer needs its full ~2.5 Mbit/s, not the few hundred kbit/s of a flat test
pattern) with simulcast (320/640/1280). One subscriber on the host (an open path), one in a network
namespace whose downlink goes through `tc tbf`: no limit, then 500 kbit/s, then 1.2 Mbit/s, then no
limit again. What the issue asks, checked together and reported with the timelines:
- no `track_paused` for either subscriber (the server's `paused` never true): pausing is the last
  resort and the lowest layer (~150-200 kbit/s) fits every phase;
- under each limit, after its first 5 s, no freeze over 1 s;
- at 1.2 Mbit/s the constrained subscriber ends on the 640-wide layer (the highest that fits), the
  open one on the 1280-wide layer throughout the end of each phase;
- under each limit, after its first 5 s: the mean downlink estimate within 15% of the link's rate, and
  at most one layer switch in the remaining 20 s (2 a minute);
- figures per phase (printed): mean downlink estimate against the link rate, layer switches.
Not yet here: the issue's 1920x1080 publisher case. Run by `make bench-adaptation` (RUNS times), not by
`make test`: it does not pass yet (docs/BENCHMARKS.md has the figures).

The test clip and fixtures come from test_simulcast.py (same Room/Timeline helpers).
"""
from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from test_simulcast import (Room, Timeline, chromiums, describe, is_top, metric, metrics, netns,  # noqa: F401 (fixtures)
                            start_server)

WIDTH, HEIGHT, FPS = 1280, 720, 30
MID_MIN_WIDTH, MID_MAX_WIDTH = 480, 704


@pytest.fixture(scope="module")
def textured_clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("hd-media") / f"texture-{WIDTH}x{HEIGHT}-{FPS}.y4m"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},noise=alls=14:allf=t+u", "-t", "4", "-pix_fmt", "yuv420p",
                    str(out)], check=True, capture_output=True, timeout=120)
    return out


def phase_figures(samples: list[dict], start: float, end: float, link_kbit: int | None) -> dict:
    window = [s for s in samples if start <= s["t"] < end]
    est = [s["estimate"] for s in window if s.get("estimate")]
    layers = [(s.get("server") or {}).get("spatial_layer") for s in window]
    switches = sum(1 for a, b in zip(layers, layers[1:]) if a is not None and b is not None and a != b)
    return {"samples": len(window), "mean_estimate_kbit": round(sum(est) / len(est) / 1000) if est else None,
            "link_kbit": link_kbit, "switches": switches, "layers_seen": sorted({l for l in layers if l is not None}),
            "paused": any((s.get("server") or {}).get("paused") for s in window)}


def test_hd_publisher_constrained_and_open_subscribers(sfu_factory, chromiums, textured_clip, netns):  # noqa: F811
    key = "hd-" + secrets.token_hex(16)
    sfu = start_server(sfu_factory, key, host=netns.host_ip)
    room = Room(sfu, key, chromiums, textured_clip, "hd-adaptation")
    weak = chromiums("constrained", netns=netns)
    room.subscriber("constrained", "weak", browser=weak)
    open_page = chromiums("open", secure_origins=[f"http://{sfu.host}:{sfu.http_port}"])
    room.subscriber("open", "open", browser=open_page)
    tl_weak = Timeline("constrained subscriber", weak, room.pub_peer, room.api, room.id, "weak")
    tl_open = Timeline("open subscriber", open_page, room.pub_peer, room.api, room.id, "open")
    tl_open.t0 = tl_weak.t0
    room.camera_track(weak)
    room.camera_track(open_page)
    room.wait_three_layers()
    ok, _, took = tl_weak.wait(is_top, timeout=25)
    assert ok, "the constrained subscriber never reached the top layer before any limit\n" + describe(sfu, room.pages, [tl_weak])

    phases = [("open", None, 10.0), ("500k", 500, 25.0), ("1.2M", 1200, 25.0), ("open again", None, 20.0)]
    spans: list[tuple[str, int | None, float, float]] = []
    for name, kbit, seconds in phases:
        if kbit is None:
            netns.unlimit()
        else:
            netns.limit(kbit)
        t0 = tl_weak.mark(f"phase {name}: {'tc tbf ' + str(kbit) + 'kbit' if kbit else 'no limit'}")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tl_weak.sample()
            tl_open.sample()
            time.sleep(0.5)
        spans.append((name, kbit, t0, tl_weak.now()))
    netns.unlimit()

    problems, figures = [], []
    for name, kbit, t0, t1 in spans:
        weak_f = phase_figures(tl_weak.samples, t0, t1, kbit)
        open_f = phase_figures(tl_open.samples, t0, t1, None)
        figures.append(f"{name}: constrained {weak_f}; open {open_f}")
        if weak_f["paused"] or open_f["paused"]:
            problems.append(f"{name}: video paused (constrained {weak_f['paused']}, open {open_f['paused']})")
        # Freezes after the first 5 s of the phase.
        settled = [s for s in tl_weak.samples if t0 + 5 <= s["t"] < t1]
        if len(settled) > 1 and settled[-1]["freeze_s"] - settled[0]["freeze_s"] > 1.0:
            problems.append(f"{name}: {settled[-1]['freeze_s'] - settled[0]['freeze_s']:.2f} s of freezes after the first 5 s")
        if kbit is not None:
            # The estimate tracks the link: its mean after the first 5 s within 15% of the rate.
            late = phase_figures(tl_weak.samples, t0 + 5, t1, kbit)
            if late["mean_estimate_kbit"] is None or abs(late["mean_estimate_kbit"] - kbit) > 0.15 * kbit:
                problems.append(f"{name}: mean estimate {late['mean_estimate_kbit']} kbit/s after the first 5 s on a {kbit} kbit/s link")
            # Stability: at most 2 spatial switches a minute at a steady constraint (1 in these 20 s).
            if late["switches"] > 1:
                problems.append(f"{name}: {late['switches']} layer switches after the first 5 s (at most 2 a minute)")
        last_weak = [s for s in tl_weak.samples if t1 - 4 <= s["t"] < t1]
        last_open = [s for s in tl_open.samples if t1 - 4 <= s["t"] < t1]
        if kbit == 1200 and not all(MID_MIN_WIDTH <= (s.get("w") or 0) <= MID_MAX_WIDTH for s in last_weak):
            problems.append(f"{name}: the constrained subscriber is not on the 640 layer at the end: {[s.get('w') for s in last_weak]}")
        if not all(is_top(s) for s in last_open):
            problems.append(f"{name}: the open subscriber is not on the top layer at the end: {[s.get('w') for s in last_open]}")
    switches = metric(metrics(sfu, key), "sfu_layer_switches_total")
    summary = "\n".join(figures) + f"\nsfu_layer_switches_total {switches}"
    print(tl_weak.report() + "\n" + tl_open.report() + "\n" + summary)
    assert not problems, "\n".join(problems) + "\n" + summary + "\n" + describe(sfu, room.pages, [tl_weak, tl_open])
    assert sfu.proc.poll() is None
