"""sfu-load against the real server, and against the floor: a small scenario, its JSON report checked.

`make test` builds `sfu-load` next to `sfu` (scripts/test.sh exports SFU_LOAD_BIN). The scenario is
small so that the debug build carries it in a few seconds: one room, one publisher (150 kbit/s
video + audio) and three subscribers for 3 seconds. The subscribers report a fixed downlink with REMB
(`--remb`) rather than transport-cc: on a busy machine the server's delay-based estimator can take
scheduling delays for congestion and pause the video, which is the estimator's business, not this test's. On loopback nothing may be lost, every
subscriber gets every packet the publisher sent inside the window, and the report carries the
server's CPU and latency figures.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import subprocess
import time
import urllib.request

import pytest

from conftest import ROOT

DURATION = 3.0
SUBSCRIBERS = 3


@pytest.fixture(scope="module")
def load_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SFU_LOAD_BIN", ROOT / ".build" / "debug" / "sfu-load"))
    if not path.exists():
        pytest.fail(f"sfu-load not found at {path}; build it first (make test does)")
    return path


def run_load(load_bin: pathlib.Path, target: list[str], server_pid: int, *extra: str) -> dict:
    cmd = [str(load_bin), *target, "--rooms", "1", "--publishers", "1", "--subscribers", str(SUBSCRIBERS),
           "--bitrate", "150k", "--duration", str(DURATION), "--warmup", "1", "--server-pid", str(server_pid), "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"sfu-load exited with {done.returncode}:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


def check_report(r: dict, target: str) -> None:
    assert r["target"] == target
    assert not r["setup_incomplete"], r["setup_incomplete"]
    assert not r["errors"], r["errors"]
    assert abs(r["window_s"] - DURATION) < 0.5
    sent = r["sent"]
    # 50 audio packets/s and 30 frames/s of video (one packet each, more for keyframes).
    assert sent["audio_packets"] == pytest.approx(50 * DURATION, rel=0.15)
    assert sent["video_packets"] >= 30 * DURATION * 0.85
    received = r["received"]
    # Every subscriber expects every packet the publisher sent in the window: nothing lost on loopback.
    assert received["expected"] == SUBSCRIBERS * sent["packets"]
    assert received["lost"] == 0
    assert received["packets"] == received["expected"]
    assert received["duplicates"] == 0
    assert received["unstamped"] == 0
    assert received["paused_by_server"] == 0
    assert len(r["subscribers"]) == SUBSCRIBERS
    for s in r["subscribers"]:
        assert s["lost"] == 0 and s["received"] == sent["packets"], s
    lat = r["latency_ms"]
    assert lat["samples"] == received["packets"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] < 1000
    # Video leaves through a pacer at 2.5 x its bitrate with a 5 ms budget, as in libwebrtc: at 150 kbit/s
    # a keyframe (~3 KB, 3 packets) takes ~45 ms to leave, where a burst would take well under 1 ms
    # (and its last packets would wait behind the first ones' fan-out at the server).
    kf = sent["keyframe_send_ms"]
    assert kf["count"] >= 1, sent
    assert kf["min"] > 20, kf
    server = r["server"]
    assert server["cpu_s"] > 0
    assert server["cpu_us_per_packet"] == pytest.approx(server["cpu_s"] * 1e6 / received["packets"], rel=0.01)
    assert server["peak_rss_mb"] > 1


def test_load_tool_against_the_sfu(sfu_factory, load_bin):
    key = secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    r = run_load(load_bin, ["--url", sfu.base_url, "--api-key", key], sfu.proc.pid, "--remb", "10M")
    check_report(r, "sfu")
    # The server asked for keyframes for the subscribers that joined and got transport-cc feedback
    # from them; the publisher got the server's transport-cc feedback.
    assert r["sent"]["keyframes"] >= 1
    assert r["feedback"]["transport_cc_received"] > 0
    # The server's own view: the room had four participants, and it left no error in its log.
    assert not re.search(r"\b(error|critical)\b", sfu.log(), re.I), sfu.log()[-3000:]


def test_load_tool_over_ice_tcp(sfu_factory, load_bin):
    """`--tcp`: every peer connection reaches the server's passive TCP candidate; the same report
    holds (nothing lost: TCP retransmits what loopback would drop), and the server counts the
    connections (one per publisher and subscriber connection) and nothing dropped on them."""
    key = secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    r = run_load(load_bin, ["--url", sfu.base_url, "--api-key", key], sfu.proc.pid, "--remb", "10M", "--tcp")
    assert r["scenario"]["media_transport"] == "tcp", r["scenario"]
    check_report(r, "sfu")
    req = urllib.request.Request(f"{sfu.base_url}/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    def metric(name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert m, f"{name} not in /metrics"
        return float(m.group(1))
    # The publisher (one connection: it receives nobody) and each subscriber's subscribe connection.
    assert metric("sfu_ice_tcp_connections_accepted_total") == 1 + SUBSCRIBERS
    for reason in ("tcp_send_queue_full", "tcp_oversize_frame", "tcp_no_connection"):
        assert metric(f'sfu_dropped_packets_total{{reason="{reason}"}}') == 0, reason
    assert metric('sfu_ice_tcp_connections_closed_total{reason="limit"}') == 0


def test_load_tool_against_the_floor(load_bin, tmp_path):
    log = open(tmp_path / "floor.log", "w+")
    floor = subprocess.Popen([str(load_bin), "floor"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = floor.stdout.readline()
        m = re.search(r"control (\S+) pid", line)
        assert m, f"floor did not announce itself: {line!r}"
        r = run_load(load_bin, ["--floor", m.group(1)], floor.pid)
        check_report(r, "floor")
    finally:
        floor.kill()
        floor.wait()
        log.close()


def run_ramp(load_bin: pathlib.Path, target: list[str], server_pid: int, *extra: str) -> dict:
    cmd = [str(load_bin), *target, "--publishers", "1", "--bitrate", "150k", "--ramp-step", "2", "--ramp-max", "4",
           "--duration", "1", "--warmup", "1", "--server-pid", str(server_pid), "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"sfu-load --ramp-step exited with {done.returncode}:\n{done.stderr}\n{done.stdout}"
    return json.loads(done.stdout)


def check_ramp(r: dict, target: str) -> None:
    """Two steps (2 then 4 subscribers), both within the limits, each forwarding to its subscribers
    what one publisher sends (audio and video: ~2 x and ~4 x its packet rate), the capacity the last."""
    assert r["target"] == target
    assert r["limits"] == {"loss_percent": 0.5, "p99_ms": 50.0}, r["limits"]
    steps = r["steps"]
    assert [s["subscribers"] for s in steps] == [2, 4], steps
    assert all(s["passed"] and not s["failed"] for s in steps), steps
    assert r["capacity"] == steps[-1], r["capacity"]
    per_subscriber = [s["forwarded_per_s"] / s["subscribers"] for s in steps]
    assert all(p > 50 for p in per_subscriber), steps  # 50 audio packets/s alone
    assert abs(per_subscriber[1] - per_subscriber[0]) < 0.3 * per_subscriber[0], steps
    assert all(s["server_cpu_percent"] is not None and s["load_tool_cpu_percent"] is not None for s in steps), steps


def test_load_tool_ramp_against_the_sfu(sfu_factory, load_bin):
    """`--ramp-step`: each step is a whole run whose rooms are deleted after it."""
    key = secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    r = run_ramp(load_bin, ["--url", sfu.base_url, "--api-key", key], sfu.proc.pid, "--remb", "10M")
    check_ramp(r, "sfu")
    status, body = api(sfu, key, "GET", "/v1/rooms?status=open")
    assert status == 200 and body["rooms"] == [], body


def test_load_tool_ramp_against_the_floor(load_bin, tmp_path):
    log = open(tmp_path / "floor.log", "w+")
    floor = subprocess.Popen([str(load_bin), "floor"], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        m = re.search(r"control (\S+) pid", floor.stdout.readline())
        assert m, "floor did not announce itself"
        check_ramp(run_ramp(load_bin, ["--floor", m.group(1)], floor.pid), "floor")
    finally:
        floor.kill()
        floor.wait()
        log.close()


def test_load_tool_refuses_a_wrong_api_key(sfu_factory, load_bin):
    sfu = sfu_factory(env={"SFU_API_KEY": secrets.token_hex(16)})
    done = subprocess.run([str(load_bin), "--url", sfu.base_url, "--api-key", "wrong", "--duration", "1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "401" in done.stderr + done.stdout


def api(sfu, key: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(sfu.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")}


def test_encoded_video_is_counted_whole_and_decodes_in_a_composite(sfu_factory, load_bin):
    """`--encoded-video` sends real VP8 (libvpx at start-up): a composite recording of the room
    decodes the publishers' pictures (with the synthetic filler it decodes none), and the report
    still accounts for every packet although only a frame's last packet carries a stamp."""
    key = secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    duration = 6.0
    cmd = [str(load_bin), "--url", sfu.base_url, "--api-key", key, "--rooms", "1", "--publishers", "2", "--subscribers", "1",
           "--bitrate", "1.5M", "--duration", str(duration), "--warmup", "1", "--remb", "20M", "--server-pid", str(sfu.proc.pid),
           "--json", "--encoded-video"]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    recording = None
    try:
        deadline = time.monotonic() + 60
        while recording is None and time.monotonic() < deadline and load.poll() is None:
            _, rooms = api(sfu, key, "GET", "/v1/rooms")
            for room in rooms.get("rooms") or []:
                _, got = api(sfu, key, "GET", f"/v1/rooms/{room['id']}/participants")
                videos = [t for p in got.get("participants") or [] for t in p.get("tracks") or [] if t.get("kind") == "video"]
                if len(videos) >= 2:
                    status, recording = api(sfu, key, "POST", f"/v1/rooms/{room['id']}/recordings",
                                            {"mode": "composite", "layout": "grid", "width": 640, "height": 360, "fps": 15})
                    assert status == 201, recording
            time.sleep(0.2)
        assert recording is not None, "the room never had both publishers' video"
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, f"sfu-load exited with {load.returncode}:\n{err}\n{out}"
    r = json.loads(out)
    assert r["scenario"]["encoded_video"] is True
    # One clip: a keyframe interval (3 s at 30 fps) at 1280x720, its rate within 15% of what was asked.
    [clip] = r["sent"]["encoded_video"]
    assert (clip["width"], clip["height"], clip["frames"]) == (1280, 720, 90), clip
    assert clip["bitrate"] == pytest.approx(1_500_000, rel=0.15), clip
    received = r["received"]
    assert received["lost"] == 0 and received["packets"] == received["expected"] > 0, received
    assert received["unstamped"] == 0 and received["duplicates"] == 0, received
    # Video frames of 1.5 Mbit/s (~6 KB) take several packets: all but the last are placed by sequence number.
    assert received["placed_by_sequence"] > 0, received
    assert r["latency_ms"]["samples"] == received["packets"]

    rid = recording["id"]
    api(sfu, key, "POST", f"/v1/recordings/{rid}/stop")
    rec: dict = {}
    for _ in range(120):
        _, rec = api(sfu, key, "GET", f"/v1/recordings/{rid}")
        if rec.get("status") in ("completed", "failed"):
            break
        time.sleep(0.5)
    assert rec.get("status") == "completed", rec
    line = next((l for l in reversed(sfu.log().splitlines()) if "composite recording written" in l and rid in l), None)
    assert line, sfu.log()[-3000:]
    figures = dict(re.findall(r"(\w+)=(\S+)", line))
    # Both publishers' pictures decoded by libvpx in the server, none refused.
    assert int(figures["decoded"]) >= 2 * 15 * 3, line
    assert int(figures["undecodable"]) == 0, line
    files = list((sfu.data_dir / "recordings").rglob("composite.webm"))
    assert len(files) == 1, files
    probe = subprocess.run(["ffmpeg", "-v", "error", "-i", str(files[0]), "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr[-2000:]
