"""CPU per forwarded packet of the real server on loopback: 1 publisher -> N subscribers.

Starts the release `sfu` binary, joins one aiortc publisher (VP8 + Opus) and N aiortc subscribers
to one room, lets media flow for a warm-up, then measures over a window:
  - the server process's CPU time (utime + stime from /proc/<pid>/stat),
  - RTP packets in and out (sfu_rtp_packets_in_total/out_total from /metrics),
and prints CPU microseconds per forwarded packet and the forwarding rate. The aiortc peers run in
this process (pin it and the server to different cores with taskset for a cleaner figure).

    .venv/bin/python bench/room_loopback.py [--subscribers 10] [--seconds 20] [--bin .build/release/sfu]
    .venv/bin/python bench/room_loopback.py --publishers 2 --subscribers 0 --record   # recording cost

With --record the room is recorded (tracks mode) during the window; compare the CPU with a run
without it for the recording's cost per recorded participant-second.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import re
import secrets
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "E2E"))

from conftest import SFUProcess  # noqa: E402
from room_client import ControlAPI, RoomClient  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(base: str, key: str, name: str) -> float:
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {key}"})
    text = urllib.request.urlopen(req, timeout=5).read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def main(args) -> None:
    key = secrets.token_hex(16)
    data = pathlib.Path(tempfile.mkdtemp(prefix="sfu-bench-"))
    sfu = SFUProcess(pathlib.Path(args.bin), data, {"SFU_API_KEY": key, "SFU_LOG_LEVEL": "warning"})
    sfu.wait_ready()
    try:
        api = ControlAPI(sfu.base_url, key)
        rid = api.create_room(name="bench", max_participants=args.subscribers + args.publishers)["id"]
        subs = []
        for i in range(args.subscribers):
            c = RoomClient(api.token(rid, f"s{i}", role="observer")["signaling_url"], publish_audio=False, publish_video=False)
            await c.connect()
            subs.append(c)
        pubs = []
        for i in range(args.publishers):
            pub = RoomClient(api.token(rid, f"pub{i}", role="doctor")["signaling_url"], width=args.width, height=args.height)
            await pub.connect()
            await pub.publish()
            pubs.append(pub)
        pub = pubs[0]
        await asyncio.sleep(args.warmup)
        recording = api.ok("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"}, expect=(201,)) if args.record else None
        cpu0, in0, out0, t0 = (cpu_seconds(sfu.proc.pid), metric(sfu.base_url, key, "sfu_rtp_packets_in_total"),
                               metric(sfu.base_url, key, "sfu_rtp_packets_out_total"), time.monotonic())
        await asyncio.sleep(args.seconds)
        cpu1, in1, out1, t1 = (cpu_seconds(sfu.proc.pid), metric(sfu.base_url, key, "sfu_rtp_packets_in_total"),
                               metric(sfu.base_url, key, "sfu_rtp_packets_out_total"), time.monotonic())
        if recording:
            done = api.ok("POST", f"/v1/recordings/{recording['id']}/stop", {})
            print(f"recorded files: {[(f['user_id'], f['duration_ms'], f['size_bytes']) for f in done['files']]}")
        forwarded, received, cpu, wall = out1 - out0, in1 - in0, cpu1 - cpu0, t1 - t0
        frames = [c.frames_from(pub.peer_id) for c in subs] or [0]
        print(f"subscribers: {args.subscribers}, window: {wall:.1f} s")
        print(f"publisher packets in: {received:.0f} ({received / wall:.0f}/s); forwarded: {forwarded:.0f} ({forwarded / wall:.0f}/s)")
        print(f"server CPU: {cpu:.2f} s ({100 * cpu / wall:.1f}% of a core)")
        if forwarded:
            print(f"CPU per forwarded packet: {cpu / forwarded * 1e6:.2f} us (timers and RTCP included)")
        print(f"frames decoded per subscriber: min {min(frames)}, max {max(frames)}")
        if args.record:
            print(f"CPU per recorded participant-second (recording included, forwarding too): "
                  f"{cpu / (args.publishers * wall) * 1e3:.2f} ms")
        for c in subs + pubs:
            await c.close()
    finally:
        sfu.kill()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--subscribers", type=int, default=10)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--record", action="store_true")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--bin", default=str(ROOT / ".build" / "release" / "sfu"))
    asyncio.run(main(p.parse_args()))
