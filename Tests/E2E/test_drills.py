"""Fault drills of issue 19 against the real binary (docs/RELIABILITY.md has the table).

Hostile peer in a live room: two 2-party aiortc calls (room A and room B) run undisturbed for a
baseline window; then `sfu-load hostile` joins room A with a valid token and, over a real DTLS-SRTP
session built on the project's ClientTransport, sends crafted RTCP (sender reports with NTP times
2^62 apart, NACK storms of 300 entries x 17 sequence numbers, transport-cc claiming 65,535 statuses,
PLI/FIR floods, RTCP whose lengths lie), RTP on hundreds of unknown SSRCs, unprotected garbage, and
over signaling offers with 100 m-lines and a chat flood; a second hostile participant floods chat
and offers on a WebSocket it never reads. During the same-length attack window both calls must keep
at least 90% of their baseline frames, the server stays up (`/healthz`), and its RSS stays bounded.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import secrets
import time
import urllib.request

import pytest

from websockets.asyncio.client import connect as ws_connect

from conftest import ROOT
import media_analysis as ma
from conftest import SFUProcess
from room_client import ControlAPI, RoomClient, until

WINDOW = 10.0          # seconds: the baseline window and the attack window
HOSTILE_SETUP = 4.0    # seconds given to the hostile client to get its session up before the attack window
# RSS bound during the attack: baseline + 64 MiB. What the attack could grow without bounds is
# per-SSRC state (hundreds of unknown SSRCs), NACK/retransmission work, signaling queues of a client
# that never reads, and renegotiated m-lines; each is capped by the server (SSRC table, history
# size, outbound queue, m-line limit) at well under a megabyte for one participant. 64 MiB leaves
# room for the allocator's arenas on a debug build and would still catch a per-packet leak (the
# attack sends ~40,000 packets: a leak of 2 KB each is 80 MiB).
RSS_SLACK_BYTES = 64 << 20


@pytest.fixture(scope="module")
def load_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("SFU_LOAD_BIN", ROOT / ".build" / "debug" / "sfu-load"))
    if not path.exists():
        pytest.fail(f"sfu-load not found at {path}; build it first (make test does)")
    return path


@pytest.fixture
def server(sfu_factory):
    key = "drills-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
    sfu.api = ControlAPI(sfu.base_url, key)
    return sfu


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A /proc/<pid>/status memory figure in bytes: VmRSS, or its parts RssAnon (heap, stacks) and
    RssFile (the binary's and libraries' pages touched so far)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def healthy(sfu) -> bool:
    try:
        with urllib.request.urlopen(sfu.base_url + "/healthz", timeout=3) as r:
            return r.status == 200
    except Exception:
        return False


def frames(pairs) -> list[int]:
    return [receiver.frames_from(sender.peer_id) for receiver, sender in pairs]


def test_hostile_peer_in_a_live_room(server, load_bin):
    sfu, api = server, server.api
    room_a = api.create_room()["id"]
    room_b = api.create_room()["id"]

    def client(room: str, user: str) -> RoomClient:
        return RoomClient(api.signal_url(api.token(room, user)["token"]), name=user, width=160, height=120)

    a1, a2, b1, b2 = client(room_a, "a1"), client(room_a, "a2"), client(room_b, "b1"), client(room_b, "b2")
    pairs = [(a1, a2), (a2, a1), (b1, b2), (b2, b1)]  # (receiver, sender)
    report: dict = {}

    async def scenario():
        try:
            for c in (a1, a2, b1, b2):
                await c.connect()
            for c in (a1, a2, b1, b2):
                await c.publish()
            assert await until(lambda: min(frames(pairs)) > 30, 30), [str(c.brief_events()[-3:]) for c in (a1, a2, b1, b2)]
            await asyncio.sleep(2)  # past the first keyframes and the estimator's start

            # Baseline: the calls alone.
            start = frames(pairs)
            rss_before = rss_bytes(sfu.proc.pid)
            await asyncio.sleep(WINDOW)
            baseline = [n - s for n, s in zip(frames(pairs), start)]

            # The attack: a hostile participant and one that never reads, both in room A.
            hostile_url = api.signal_url(api.token(room_a, "hostile")["token"])
            idle_url = api.signal_url(api.token(room_a, "never-reads")["token"])
            proc = await asyncio.create_subprocess_exec(
                str(load_bin), "hostile", "--url", hostile_url, "--idle-url", idle_url,
                "--duration", str(HOSTILE_SETUP + WINDOW + 2), "--rate", "2000",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await asyncio.sleep(HOSTILE_SETUP)
            start = frames(pairs)
            rss_peak = rss_bytes(sfu.proc.pid)
            t_end = time.monotonic() + WINDOW
            while time.monotonic() < t_end:
                await asyncio.sleep(0.5)
                assert sfu.proc.poll() is None, sfu.log()[-4000:]
                rss_peak = max(rss_peak, rss_bytes(sfu.proc.pid))
            attacked = [n - s for n, s in zip(frames(pairs), start)]
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, (proc.returncode, out.decode()[-2000:], err.decode()[-2000:])
            hostile = json.loads(out.decode())

            # Afterwards the calls still run.
            after = frames(pairs)
            assert await until(lambda: all(n > a + 30 for n, a in zip(frames(pairs), after)), 15), frames(pairs)
            report.update(baseline=baseline, attacked=attacked, rss_before=rss_before, rss_peak=rss_peak,
                          rss_after=rss_bytes(sfu.proc.pid), hostile=hostile)
        finally:
            for c in (a1, a2, b1, b2):
                await c.close()

    asyncio.run(asyncio.wait_for(scenario(), 150))
    print("hostile drill:", json.dumps(report))
    hostile = report["hostile"]
    sent = hostile["sent"]
    # The attack happened: a real SRTP session and every kind of packet went out.
    assert hostile["publisher_connected"], hostile
    for kind in ("sender_reports", "nacks", "transport_cc_65535", "plis", "firs", "rtp_unknown_ssrc",
                 "rtcp_garbage", "garbage_datagrams", "offers_100_mlines", "chat_messages", "idle_chat_messages"):
        assert sent.get(kind, 0) > 0, (kind, hostile)
    assert sent["rtp_unknown_ssrc"] > 64, hostile
    # The server survived and kept the calls going.
    assert sfu.proc.poll() is None, sfu.log()[-4000:]
    assert healthy(sfu)
    for (receiver, sender), base, hit in zip(pairs, report["baseline"], report["attacked"]):
        assert base > 0, report
        assert hit >= 0.9 * base, (f"{sender.name} -> {receiver.name}: {hit} frames under attack vs {base} in the baseline", report)
    assert report["rss_peak"] <= report["rss_before"] + RSS_SLACK_BYTES, report


# --- churn -------------------------------------------------------------------------------------------

def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def signaling_cycle(url: str) -> None:
    """One signaling-level cycle: WebSocket upgrade, `join_room`, `joined_room` back (the server adds a
    participant, with the room's state), `leave_room`, the server closes the socket."""
    async with ws_connect(url, open_timeout=10) as ws:
        await ws.send(json.dumps({"event": "join_room", "data": {}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("event") == "joined_room":
                break
            assert msg.get("event") != "error", msg
        await ws.send(json.dumps({"event": "leave_room", "data": {}}))
        with contextlib.suppress(Exception):
            while True:
                await asyncio.wait_for(ws.recv(), 5)


async def media_cycle(url: str, host: RoomClient) -> None:
    """One full-media cycle: an aiortc participant joins, publishes audio and video, receives the
    host's video, the host receives its video, and it leaves."""
    c = RoomClient(url, name="churn-media", width=160, height=120)
    try:
        await c.connect()
        await c.publish()
        assert await until(lambda: c.frames_from(host.peer_id) > 5 and host.frames_from(c.peer_id) > 5, 20), c.state()
        assert await c.leave(), "the server did not close the socket after leave_room"
    finally:
        await c.close()


def test_churn_1000_join_leave_cycles(server):
    """1,000 join/leave cycles in a room with a live publisher: 983 at the signaling level and 17 with
    full media (aiortc publishing and receiving); 340 cycles (7 of them with media) run during a
    recording, 200 in rooms created and deleted on the way. After a warm-up (100 cycles, 2 media, a
    short recording), RSS must grow by less than 5% and the fd count come back to its baseline."""
    sfu, api = server, server.api
    pid = sfu.proc.pid
    rid = api.create_room(max_participants=100)["id"]
    tokens = [api.signal_url(api.token(rid, f"churn-{i}")["token"]) for i in range(10)]
    figures: dict = {}

    async def cycles(urls: list[str], n: int, host: RoomClient, media_every: int = 0) -> int:
        media = 0
        for i in range(n):
            if media_every and i % media_every == media_every - 1:
                await media_cycle(api.signal_url(api.token(rid, f"churn-media-{time.monotonic_ns()}")["token"]), host)
                media += 1
            else:
                await signaling_cycle(urls[i % len(urls)])
        return media

    async def recording(n: int, host: RoomClient, media_every: int) -> int:
        status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
        assert status == 201, rec
        media = await cycles(tokens, n, host, media_every)
        status, body = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
        assert status in (200, 202), body
        status, body = await asyncio.to_thread(api.wait_recording_finished, rec["id"], 30)
        assert body.get("status") == "completed", body
        return media

    async def scenario():
        host = RoomClient(api.signal_url(api.token(rid, "host")["token"]), name="host", width=160, height=120)
        try:
            await host.connect()
            await host.publish()
            t0 = time.monotonic()
            done, media = 0, 0
            # Warm-up: 100 cycles, 2 with media, one inside a short recording.
            media += await cycles(tokens, 60, host, media_every=30)
            media += await recording(40, host, media_every=40)
            done += 100
            await asyncio.sleep(2)
            figures["warm_rss"], figures["warm_fds"] = rss_bytes(pid), fd_count(pid)
            figures["warm_anon"], figures["warm_file"] = rss_bytes(pid, "RssAnon"), rss_bytes(pid, "RssFile")
            # 300 cycles during a recording (6 with media).
            media += await recording(300, host, media_every=50)
            # 400 cycles in the room (8 with media).
            media += await cycles(tokens, 400, host, media_every=50)
            # 200 cycles in 10 rooms created and deleted on the way (each: 20 signaling cycles).
            for r in range(10):
                other = api.create_room()["id"]
                urls = [api.signal_url(api.token(other, f"o-{i}")["token"]) for i in range(5)]
                await cycles(urls, 20, host)
                status, _ = await api.acall("DELETE", f"/v1/rooms/{other}")
                assert status in (200, 204), status
            done += 900
            figures["cycles"], figures["media_cycles"] = done, media
            figures["seconds"] = round(time.monotonic() - t0, 1)
            # The host still gets served, and the fds come back.
            assert sfu.proc.poll() is None
            assert await until(lambda: fd_count(pid) <= figures["warm_fds"], 15), (fd_count(pid), figures)
            await asyncio.sleep(2)
            figures["end_rss"], figures["end_fds"] = rss_bytes(pid), fd_count(pid)
            figures["end_anon"], figures["end_file"] = rss_bytes(pid, "RssAnon"), rss_bytes(pid, "RssFile")
        finally:
            await host.close()

    asyncio.run(asyncio.wait_for(scenario(), 600))
    figures["rss_growth_pct"] = round(100 * (figures["end_rss"] - figures["warm_rss"]) / figures["warm_rss"], 2)
    print("churn drill:", json.dumps(figures))
    assert figures["cycles"] == 1000 and figures["media_cycles"] == 17, figures
    assert figures["end_fds"] <= figures["warm_fds"], figures
    # Issue 19: under 5%. What is left of the growth (~2.5 MB, all of it anonymous memory) is SQLite's
    # page cache filling as the database grows (bounded) and allocator slack: heaptrack finds no
    # allocation per connection still alive after the churn (docs/RELIABILITY.md). A participant or
    # room kept after it left is tens of KB each; the WebSocket context cycle fixed in
    # SFURequestContext was ~0.5 KB per connection (with it the growth measured 4.8-5.8%).
    assert figures["end_rss"] < figures["warm_rss"] * 1.05, figures


# --- kill drill ----------------------------------------------------------------------------------------

def ebml_vint(b: bytes, o: int, keep_marker: bool) -> tuple[int, int, bool]:
    """(value, length, unknown) of the EBML variable-size integer at `o`."""
    first = b[o]
    length = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> length)
    for i in range(1, length):
        value = value << 8 | b[o + i]
    return value, length, (not keep_marker) and value == (1 << (7 * length)) - 1


def top_level_clusters(path: pathlib.Path) -> list[tuple[int, int, int]]:
    """(offset, header length, body size) of each complete top-level Cluster of a WebM file."""
    b = path.read_bytes()
    _, l1, _ = ebml_vint(b, 0, True)
    size, l2, _ = ebml_vint(b, l1, False)
    o = l1 + l2 + size
    _, l1, _ = ebml_vint(b, o, True)            # Segment
    _, l2, _ = ebml_vint(b, o + l1, False)
    o += l1 + l2
    out = []
    while o + 12 < len(b):
        eid, l1, _ = ebml_vint(b, o, True)
        size, l2, unknown = ebml_vint(b, o + l1, False)
        if unknown or o + l1 + l2 + size > len(b):
            break
        if eid == 0x1F43B675:
            out.append((o, l1 + l2, size))
        o += l1 + l2 + size
    return out


def test_kill_drill_corrupted_files_are_reconciled(sfu_factory, sfu_bin, tmp_path):
    """SIGKILL during two recordings, then the files are damaged the way a crash or a bad disk can:
    one truncated in the middle of a cluster, one with a cluster's EBML size overwritten with 0xFF
    garbage (unknown size), and the only file of the second recording with its first cluster's size
    made larger than the file. The restarted server must not trap; it cuts each file back to its last
    good cluster (which then decodes cleanly with ffmpeg) and marks the first recording `completed`
    with the files' duration, the second `failed` (no file holds a frame), as docs/RECORDING.md says."""
    ma.require_tools("ffmpeg", "ffprobe")
    key = "killdrill-" + secrets.token_hex(16)
    env = {"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"}
    sfu = sfu_factory(env=env)
    api = ControlAPI(sfu.base_url, key)
    room1, room2 = api.create_room()["id"], api.create_room()["id"]
    rec_dir = sfu.data_dir / "recordings"
    clients = [RoomClient(api.token(room1, "cut")["signaling_url"], name="cut", subscribe=False, width=160, height=120),
               RoomClient(api.token(room1, "garbage")["signaling_url"], name="garbage", subscribe=False, width=160, height=120),
               RoomClient(api.token(room2, "lost")["signaling_url"], name="lost", subscribe=False, width=160, height=120)]

    async def scenario() -> tuple[dict, dict]:
        try:
            for c in clients:
                await c.connect()
                await c.publish()
            assert await until(lambda: all(c.pub_pc.connectionState == "connected" for c in clients), 20)
            await asyncio.sleep(1.0)
            s1, rec1 = await api.acall("POST", f"/v1/rooms/{room1}/recordings", {"mode": "tracks"})
            s2, rec2 = await api.acall("POST", f"/v1/rooms/{room2}/recordings", {"mode": "tracks"})
            assert (s1, s2) == (201, 201), (rec1, rec2)
            await asyncio.sleep(7.0)
            sfu.proc.kill()
            sfu.proc.wait(10)
            return rec1, rec2
        finally:
            for c in clients:
                await c.close()

    rec1, rec2 = asyncio.run(asyncio.wait_for(scenario(), 90))

    def file_of(rec: dict, user: str) -> pathlib.Path:
        found = sorted((rec_dir / rec["id"]).glob(f"{user}-*.webm"))
        assert len(found) == 1, (user, list((rec_dir / rec["id"]).iterdir()))
        return found[0]

    cut, garbage, lost = file_of(rec1, "cut"), file_of(rec1, "garbage"), file_of(rec2, "lost")
    damage = {}
    # Truncated in the middle of its 4th cluster: the first 3 are kept.
    clusters = top_level_clusters(cut)
    assert len(clusters) >= 5, clusters
    o, h, size = clusters[3]
    os.truncate(cut, o + h + size // 2)
    damage["cut"] = {"clusters": len(clusters), "kept_bytes": o}
    # The 3rd cluster's size overwritten with 0xFF bytes (an unknown size): the first 2 are kept.
    clusters = top_level_clusters(garbage)
    assert len(clusters) >= 5, clusters
    o, h, size = clusters[2]
    with open(garbage, "r+b") as f:
        f.seek(o + 4)
        f.write(b"\x01" + b"\xff" * 7)
    damage["garbage"] = {"clusters": len(clusters), "kept_bytes": o}
    # The first cluster's size made larger than the file: nothing is left.
    o, h, size = top_level_clusters(lost)[0]
    with open(lost, "r+b") as f:
        f.seek(o + 4)
        f.write(b"\x01\x00\x00\x7f\xff\xff\xff\xff")

    sfu.log_path.rename(sfu.data_dir / "sfu-killed.log")
    again = SFUProcess(sfu_bin, sfu.data_dir, env)
    try:
        again.wait_ready()
        api2 = ControlAPI(again.base_url, key)
        status, got1 = api2.wait_recording_finished(rec1["id"])
        assert status == 200 and got1.get("status") == "completed", (got1, again.log()[-3000:])
        status, got2 = api2.wait_recording_finished(rec2["id"])
        assert status == 200 and got2.get("status") == "failed" and got2.get("failure_reason"), got2
        assert again.proc.poll() is None, again.log()[-3000:]
        assert "Fatal error" not in again.log()
        # Each damaged file was cut back to its last good cluster and decodes cleanly.
        for path, name in ((cut, "cut"), (garbage, "garbage")):
            assert path.stat().st_size == damage[name]["kept_bytes"], (name, path.stat().st_size, damage)
            assert ma.decode_check(path) == [], (name, ma.decode_check(path))
            p = ma.probe(path)
            assert p["video_frames"] > 0, (name, p)
            listed = [f for f in got1["files"] if f["file_name"] == path.name]
            assert listed and listed[0]["size_bytes"] == damage[name]["kept_bytes"], (name, got1["files"])
            damage[name]["span_s"] = round(p["span"], 2)
        # The recording's duration is its longest surviving file's (the cut one: 3 clusters of <= 1 s).
        assert 0 < got1["duration_ms"] <= 3100, got1
        assert abs(got1["duration_ms"] / 1000 - max(damage["cut"]["span_s"], damage["garbage"]["span_s"])) <= 1.0, (got1, damage)
    finally:
        again.kill()
    print("kill drill:", json.dumps(damage))


# --- database outage --------------------------------------------------------------------------------

OUTAGE_S = 20.0


class ThrowawayPostgres:
    """A PostgreSQL server of its own (scripts/pg-throwaway.sh), which this test stops and starts."""

    def __init__(self):
        import glob
        import subprocess
        import tempfile
        self.sp = subprocess
        self.bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="sfu-pg-outage-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.pg = self.dir / "pg"
        done = subprocess.run([str(ROOT / "scripts" / "pg-throwaway.sh"), "start", str(self.pg)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            pytest.fail(f"cannot start a throwaway PostgreSQL: {done.stderr}")
        self.url = done.stdout.strip()
        self.port = (self.pg / "port").read_text().strip()

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def stop(self) -> None:
        self.sp.run([str(ROOT / "scripts" / "pg-throwaway.sh"), "stop", str(self.pg)], check=True, timeout=60)

    def start(self) -> None:
        self.sp.run(self._as_postgres() + [f"{self.bindir}/pg_ctl", "-D", str(self.pg / "data"), "-l", str(self.pg / "server.log"), "-w", "-t", "30",
                                           "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.pg} -c fsync=off", "start"],
                    check=True, capture_output=True, timeout=60)

    def query(self, sql: str) -> list[list[str]]:
        out = self.sp.run([f"{self.bindir}/psql", self.url, "-AtF", "\t", "-c", sql], check=True, capture_output=True, text=True, timeout=30).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def destroy(self) -> None:
        import shutil
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_database_outage_during_a_call_and_a_recording(sfu_factory, tmp_path):
    """PostgreSQL stopped for 20 s during a 2-party call and a recording. Meanwhile: the call keeps at
    least 90% of its baseline frames, a third participant joins (its room is cached), publishes, is
    received and leaves, and the recording is stopped (the request returns once the database is
    back). Afterwards every metadata write of the outage is in the database: the third participant's
    session (joined and left), its audit events, the recording completed with its files."""
    ma.require_tools("ffmpeg", "ffprobe")
    pg = ThrowawayPostgres()
    try:
        key = "outage-" + secrets.token_hex(16)
        sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_DATABASE_URL": pg.url, "SFU_LOG_LEVEL": "info"})
        api = ControlAPI(sfu.base_url, key)
        rid = api.create_room()["id"]
        a1 = RoomClient(api.signal_url(api.token(rid, "a1")["token"]), name="a1", width=160, height=120)
        a2 = RoomClient(api.signal_url(api.token(rid, "a2")["token"]), name="a2", width=160, height=120)
        late_url = api.signal_url(api.token(rid, "late")["token"])   # minted before the outage, as a backend would
        pairs = [(a1, a2), (a2, a1)]
        out: dict = {}

        async def scenario():
            late = RoomClient(late_url, name="late", width=160, height=120)
            try:
                for c in (a1, a2):
                    await c.connect()
                    await c.publish()
                assert await until(lambda: min(frames(pairs)) > 30, 30)
                status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
                assert status == 201, rec
                out["rec"] = rec["id"]
                await asyncio.sleep(2)
                start = frames(pairs)
                await asyncio.sleep(8)
                out["baseline"] = [n - s for n, s in zip(frames(pairs), start)]

                await asyncio.to_thread(pg.stop)
                t_down = time.monotonic()
                start = frames(pairs)
                # A join during the outage, with media both ways.
                joined = await late.connect()
                out["late_peer"] = joined["peer_id"]
                await late.publish()
                assert await until(lambda: late.frames_from(a1.peer_id) > 10 and a1.frames_from(late.peer_id) > 10, 10), late.state()
                assert await late.leave(), "leave_room during the outage"
                # The recording is stopped during the outage: the request waits for the database.
                stop = asyncio.create_task(api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=60))
                await asyncio.sleep(max(0.0, t_down + 10 - time.monotonic()))
                out["outage"] = [n - s for n, s in zip(frames(pairs), start)]
                out["window_s"] = round(time.monotonic() - t_down, 1)
                out["stop_returned_during_outage"] = stop.done()
                await asyncio.sleep(max(0.0, t_down + OUTAGE_S - time.monotonic()))
                assert sfu.proc.poll() is None
                await asyncio.to_thread(pg.start)
                out["down_s"] = round(time.monotonic() - t_down, 1)
                status, body = await asyncio.wait_for(stop, 60)
                out["stop_status"] = status
                assert status in (200, 202), body
                # The call goes on.
                after = frames(pairs)
                assert await until(lambda: all(n > a + 30 for n, a in zip(frames(pairs), after)), 15)
            finally:
                for c in (a1, a2, late):
                    await c.close()

        asyncio.run(asyncio.wait_for(scenario(), 150))
        status, got = api.wait_recording_finished(out["rec"], 30)
        assert got.get("status") == "completed" and got["files"], got
        for f in got["files"]:
            assert ma.decode_check(f["path"]) == [], f
        # The writes of the outage landed.
        peer = out["late_peer"]
        rows = pg.query(f"SELECT user_id, left_at IS NOT NULL FROM participant_sessions WHERE id = '{peer}'")
        assert rows == [["late", "t"]], rows
        kinds = sorted(r[0] for r in pg.query(f"SELECT kind FROM room_events WHERE room_id = '{rid}' AND user_id = 'late'"))
        # (And its token's `token_issued`, minted before the outage.)
        assert kinds == ["participant_joined", "participant_left", "token_issued"], kinds
        rows = pg.query(f"SELECT status, ended_at IS NOT NULL FROM recordings WHERE id = '{out['rec']}'")
        assert rows == [["completed", "t"]], rows
        assert int(pg.query(f"SELECT count(*) FROM recording_files WHERE recording_id = '{out['rec']}'")[0][0]) == len(got["files"])
        assert sfu.proc.poll() is None and healthy(sfu)
        print("outage drill:", json.dumps(out))
        for base, hit in zip(out["baseline"], out["outage"]):
            # The outage window is ~10 s against an 8 s baseline: compare rates.
            assert hit / out["window_s"] >= 0.9 * base / 8, out
    finally:
        pg.destroy()
