"""The audit export streams (issue 23): 100,000 events in the store, `GET /v1/events` in JSON lines and
in CSV returns every one of them once, in time order, while the server's resident memory stays flat
(it reads the store a page at a time and writes each page out before reading the next).

The events are written into the server's SQLite file by the test (the server has no route that
writes arbitrary events: the trail is append-only from the server's own doings), with the schema the
server migrated at start. Memory is the server's VmRSS from /proc, sampled while the response is read
slowly (so the server cannot have the whole export in memory without it showing). The export rate is
printed for the issue note.
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import urllib.request

EVENTS = 100_000
ROOMS = 200


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def seed(db_path, base_ms: int) -> None:
    con = sqlite3.connect(db_path, timeout=30)
    try:
        con.execute("PRAGMA busy_timeout=30000")
        rows = []
        for i in range(EVENTS):
            room = f"rm_{i % ROOMS:014d}"
            kind = ("participant_joined", "chat_message_sent", "audio_toggled", "participant_left")[i % 4]
            data = json.dumps({"peer_id": f"pe_{i:014d}", "note": "a \"quoted\", comma"}, sort_keys=True)
            rows.append((f"ev_{i:014d}", room, base_ms + i, kind, f"u{i % 97}", None, f"user:u{i % 97}", f"user:u{i % 97}", data))
        con.executemany("INSERT INTO room_events (id, room_id, at, kind, user_id, detail, actor, subject, data) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        con.commit()
    finally:
        con.close()


def read_slowly(url: str, key: str, pid: int) -> tuple[bytes, int, float, str]:
    """The whole body, read 64 KiB at a time with short pauses; the server's peak RSS meanwhile."""
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    started = time.monotonic()
    chunks = []
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        ctype = r.headers.get("Content-Type", "")
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunks) % 16 == 0:
                time.sleep(0.01)
    elapsed = time.monotonic() - started
    done.set()
    t.join()
    return b"".join(chunks), peak[0], elapsed, ctype


def test_exporting_100000_events_streams_with_flat_memory(sfu_factory):
    key = "export-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    base_ms = int(time.time() * 1000) - EVENTS - 60_000
    seed(sfu.data_dir / "sfu.sqlite", base_ms)
    # Warm: the first request's allocations (TLS-less HTTP, JSON encoder) are not the export's.
    urllib.request.urlopen(urllib.request.Request(f"{sfu.base_url}/v1/events?from={base_ms + EVENTS}",
                                                  headers={"Authorization": f"Bearer {key}"}), timeout=10).read()
    before = rss_kib(sfu.proc.pid)
    figures = {}
    for fmt in ("jsonl", "csv"):
        body, peak, elapsed, ctype = read_slowly(f"{sfu.base_url}/v1/events?format={fmt}&from={base_ms}&to={base_ms + EVENTS}", key, sfu.proc.pid)
        text = body.decode()
        if fmt == "jsonl":
            assert ctype.startswith("application/x-ndjson")
            lines = text.splitlines()
            ids = [json.loads(line)["id"] for line in lines]
            first = json.loads(lines[0])
            assert first["actor"] == "user:u0" and first["data"]["note"] == 'a "quoted", comma', first
        else:
            assert ctype.startswith("text/csv")
            lines = text.split("\r\n")
            assert lines[0] == "id,at,room_id,type,actor,subject,data"
            ids = [line.split(",", 1)[0].strip('"') for line in lines[1:] if line]
        assert len(ids) == EVENTS and ids == [f"ev_{i:014d}" for i in range(EVENTS)], (fmt, len(ids))
        growth_mib = (peak - before) / 1024
        figures[fmt] = {"bytes": len(body), "seconds": round(elapsed, 2), "events_per_s": round(EVENTS / elapsed),
                        "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1), "growth_mib": round(growth_mib, 1)}
        # The body is 20-30 MB: a server that built it in memory would grow by at least that.
        assert growth_mib < min(16, len(body) / 2**20 / 2), figures
    print("audit export:", json.dumps(figures))
