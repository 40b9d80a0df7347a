#!/usr/bin/env python3
"""The backend read side's figures (issue 23), against a real `sfu serve` on SQLite:

- join latency: `join_room` -> `joined_room` over the WebSocket, N joins one after the other (each
  writes a session row and a `participant_joined` event, in the background: the join must not wait
  for them), p50/p99;
- the audit export: 100,000 events (written into the store by this script) streamed as JSON lines
  and CSV: events/s, bytes, the server's RSS growth;
- quality over time: a one-hour call of 4 participants sampled every 10 s (1,440 rows) among 500 such
  calls (720,000 rows): `GET /v1/rooms/{id}/quality` and with `user_id`, p50/p99 over 30 requests.

    .venv/bin/python bench/read_side.py [--bin .build/release/sfu] [--joins 200]

Needs the venv (websockets); prints a JSON object and a short text summary.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Server:
    def __init__(self, binary: pathlib.Path, data: pathlib.Path):
        self.key = secrets.token_hex(20)
        self.http = free_port()
        media = free_port(socket.SOCK_DGRAM)
        self.data = data
        env = dict(os.environ, SFU_API_KEY=self.key, SFU_HTTP_PORT=str(self.http), SFU_MEDIA_PORT=str(media), SFU_MEDIA_TCP_PORT="0",
                   SFU_WORKERS="1", SFU_DATA_DIR=str(data), SFU_LOG_LEVEL="warning", SFU_RESUME_WINDOW_S="0")
        self.log = open(data / "sfu.log", "wb")
        self.proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.http}"
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode() if body is not None else None, method=method,
                                     headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


async def joins(server: Server, n: int) -> list[float]:
    room = json.loads(server.call("POST", "/v1/rooms", {"name": "joins", "max_participants": 100}))["id"]
    times = []
    for i in range(n):
        url = json.loads(server.call("POST", f"/v1/rooms/{room}/tokens", {"user_id": f"u{i}", "role": "observer"}))["signaling_url"]
        async with websockets.connect(url) as ws:
            started = time.perf_counter()
            await ws.send(json.dumps({"event": "join_room", "data": {}}))
            while True:
                msg = json.loads(await ws.recv())
                if msg["event"] == "joined_room":
                    break
            times.append((time.perf_counter() - started) * 1000)
            await ws.send(json.dumps({"event": "leave_room", "data": {}}))
    return times


def export(server: Server, events: int) -> dict:
    db = sqlite3.connect(server.data / "sfu.sqlite", timeout=30)
    base = int(time.time() * 1000) - events - 1000
    db.executemany("INSERT INTO room_events (id, room_id, at, kind, user_id, actor, subject, data) VALUES (?,?,?,?,?,?,?,?)",
                   ((f"ev_x{i:013d}", f"rm_{i % 300:014d}", base + i, "participant_joined", "u", "user:u", "user:u", '{"peer_id":"pe_x"}')
                    for i in range(events)))
    db.commit()
    db.close()
    out = {}
    for fmt in ("jsonl", "csv"):
        before = rss_kib(server.proc.pid)
        peak = before
        started = time.perf_counter()
        req = urllib.request.Request(f"{server.base}/v1/events?format={fmt}&from={base}", headers={"Authorization": f"Bearer {server.key}"})
        size = 0
        with urllib.request.urlopen(req, timeout=120) as r:
            while chunk := r.read(1 << 16):
                size += len(chunk)
                peak = max(peak, rss_kib(server.proc.pid))
        elapsed = time.perf_counter() - started
        out[fmt] = {"events_per_s": round(events / elapsed), "seconds": round(elapsed, 2), "mib": round(size / 2**20, 1),
                    "rss_growth_mib": round((peak - before) / 1024, 1)}
    return out


def quality(server: Server, calls: int) -> dict:
    db = sqlite3.connect(server.data / "sfu.sqlite", timeout=30)
    base = int(time.time() * 1000) - 3_700_000
    target = None
    for c in range(calls):
        room = f"rm_q{c:012d}"
        db.execute("INSERT INTO rooms (id, name, created_at, max_participants, empty_timeout_s, max_duration_s, auto_record) VALUES (?,?,?,6,60,7200,0)",
                   (room, room, base))
        rows = []
        for p in range(4):
            peer = f"pe_q{c:08d}{p:04d}"
            db.execute("INSERT INTO participant_sessions (id, room_id, user_id, name, role, joined_at) VALUES (?,?,?,?,?,?)",
                       (peer, room, f"user{p}", f"user{p}", "patient", base))
            subs = json.dumps([{"peer_id": "pe_other", "track_id": "tr_x", "width": 1280, "height": 720, "fps": 30.0, "bitrate_bps": 1500000,
                                "paused": False}])
            for t in range(360):
                rows.append((room, peer, base + t * 10_000, 42.0, 0.01, 5.0, 1_600_000, 0.0, 0.01, 40_000, 1_560_000, 3_000_000,
                             4_000_000, "good", subs))
        db.executemany("""INSERT INTO quality_samples (room_id, participant_session_id, at, rtt_ms, loss_fraction, jitter_ms, bitrate_bps,
                          uplink_loss, downlink_loss, audio_bitrate_bps, video_bitrate_bps, subscribe_bitrate_bps, available_bandwidth_bps,
                          grade, subscriptions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""", rows)
        target = room
    db.commit()
    db.close()
    out = {"rows": calls * 4 * 360}
    for name, path in (("whole call", f"/v1/rooms/{target}/quality"), ("one user", f"/v1/rooms/{target}/quality?user_id=user2")):
        times = []
        for _ in range(30):
            started = time.perf_counter()
            body = json.loads(server.call("GET", path))
            times.append((time.perf_counter() - started) * 1000)
        out[name] = {"samples": len(body["samples"]), "p50_ms": round(statistics.median(times), 1), "p99_ms": round(percentile(times, 99), 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "sfu"))
    ap.add_argument("--joins", type=int, default=200)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sfu-read-side-") as tmp:
        server = Server(pathlib.Path(args.bin), pathlib.Path(tmp))
        try:
            join_ms = asyncio.run(joins(server, args.joins))
            result = {"joins": {"n": len(join_ms), "p50_ms": round(statistics.median(join_ms), 2), "p99_ms": round(percentile(join_ms, 99), 2)},
                      "export": export(server, args.events), "quality": quality(server, args.calls)}
        finally:
            server.stop()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
