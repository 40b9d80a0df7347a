"""Resuming a signaling connection (docs/SIGNALING.md "Resuming"), with aiortc participants.

The signaling socket of a publishing participant is cut the way a dead network cuts it (the TCP
connection aborted: no close frame, no `leave_room`) for 10 s while its peer connections stay up:
- its media keeps flowing to the others all along, and it comes back with `join_room {resume: true}`
  and the same token: `joined_room {resumed: true}`, the same peer_id, its tracks still published;
- the others saw no `user_left`/`user_joined` for it; what happened in the room meanwhile (a chat
  line) reaches it after the resume;
- the per-participant recording running through it is one file per participant;
- cut again and not resumed, it is removed when the window (SFU_RESUME_WINDOW_S) ends: the others get
  `user_left`, its session's leave reason is `connection_lost`; a late resume joins as a new peer.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import time

import pytest

from room_client import ControlAPI, RoomClient, RoomError, until

WINDOW_S = 14        # the server's resume window in this test
CUT_S = 10           # how long the socket stays cut before the client resumes


@pytest.fixture
def server(sfu_factory):
    key = "resume-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_RESUME_WINDOW_S": str(WINDOW_S)})
    sfu.api = ControlAPI(sfu.base_url, key)
    return sfu


def diag(sfu, *clients: RoomClient, lines: int = 60) -> str:
    out = [f"client {c.name}: {c.state()}\n  events: {c.brief_events()[-30:]}" for c in clients]
    log = sfu.log().splitlines()
    out.append(f"server log (last {lines} of {len(log)} lines):")
    out.extend(log[-lines:])
    return "\n".join(out)


def presence(client: RoomClient, peer_id: str, after: int = 0) -> list[str]:
    return [e for e, d in client.events[after:]
            if e in ("user_joined", "user_left") and isinstance(d, dict) and d.get("peer_id") == peer_id]


def probe_duration(path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, timeout=30)
    return float(json.loads(out.stdout)["format"]["duration"])


def test_a_cut_signaling_socket_resumes_the_same_peer_and_the_window_ends_it(server):
    sfu, api = server, server.api

    async def scenario():
        rid = api.create_room()["id"]
        tok_a = api.token(rid, "patient-a", name="A")
        tok_b = api.token(rid, "doctor-b", role="doctor", name="B")
        a = RoomClient(tok_a["signaling_url"], name="a")
        b = RoomClient(tok_b["signaling_url"], name="b")
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(a.close)
            stack.push_async_callback(b.close)
            await b.connect()
            await b.publish()
            await a.connect()
            await a.publish()
            first_peer = a.peer_id
            assert await until(lambda: a.frames_from(b.peer_id) > 20 and b.frames_from(a.peer_id) > 20, 20), \
                "media did not flow both ways before the cut"
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status in (200, 201), (status, rec)
            await asyncio.sleep(2)

            mark_b = len(b.events)
            await a.drop_signaling()
            assert a.closed.is_set(), "the aborted socket did not end on the client"
            frames_before = b.frames_from(a.peer_id)
            # (An event the server had already written to the dead socket is lost with it: this one
            # comes once the server has seen the connection end.)
            await asyncio.sleep(1)
            await b.send("send_message", {"message": "while you were away"})
            await asyncio.sleep(CUT_S)
            # Media went on over the peer connections while signaling was down.
            assert b.frames_from(a.peer_id) > frames_before + 5 * CUT_S, \
                f"A's video stalled while its signaling was cut: {frames_before} -> {b.frames_from(a.peer_id)}"
            status, parts = await api.acall("GET", f"/v1/rooms/{rid}/participants")
            assert first_peer in [p.get("peer_id") for p in parts.get("participants", [])], parts

            since = len(a.events)
            joined = await a.resume_signaling()
            assert joined.get("resumed") is True, joined
            assert joined.get("peer_id") == first_peer, (joined, first_peer)
            assert [p.get("peer_id") for p in joined.get("participants", [])] == [b.peer_id], joined
            # The chat line sent while A was away comes after its joined_room.
            chat = await a.wait_event("chat_message", lambda d: d.get("message") == "while you were away",
                                      after=since, timeout=5)
            assert chat.get("peer_id") == b.peer_id, chat
            assert presence(b, first_peer, mark_b) == [], f"B saw A leave or join: {b.brief_events(mark_b)}"
            # Signaling works on the new socket: a toggle reaches B.
            await a.send("toggle_audio", {"enabled": False})
            await b.wait_event("audio_toggled", lambda d: d.get("peer_id") == first_peer and d.get("enabled") is False,
                               after=mark_b, timeout=5)
            frames = a.frames_from(b.peer_id)
            assert await until(lambda: a.frames_from(b.peer_id) > frames + 20, 10), "A stopped receiving B after resuming"

            status, stopped = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
            assert status == 200, (status, stopped)
            _, stopped = await asyncio.to_thread(api.wait_recording_finished, rec["id"])
            assert stopped.get("status") == "completed", stopped
            files_a = [f for f in stopped.get("files", []) if f.get("user_id") == "patient-a"]
            assert len(files_a) == 1, f"A's recording is not one file: {stopped.get('files')}"
            duration = probe_duration(sfu.data_dir / "recordings" / rec["id"] / files_a[0]["file_name"])
            assert duration >= CUT_S + 2, f"A's file lasts {duration:.1f} s, less than the time it was recorded"

            # Cut again and stay away: the window ends it as a lost connection.
            mark_b = len(b.events)
            t0 = time.monotonic()
            await a.drop_signaling()
            await b.wait_event("user_left", lambda d: d.get("peer_id") == first_peer, after=mark_b, timeout=WINDOW_S + 10)
            waited = time.monotonic() - t0
            assert waited >= WINDOW_S - 1, f"A was removed after {waited:.1f} s, before the {WINDOW_S} s window"
            assert presence(b, first_peer, mark_b) == ["user_left"], b.brief_events(mark_b)
            sessions = None
            for _ in range(50):
                _, body = await api.acall("GET", f"/v1/rooms/{rid}/sessions")
                sessions = {s["peer_id"]: s for s in body.get("sessions", [])}
                if sessions.get(first_peer, {}).get("left_at"):
                    break
                await asyncio.sleep(0.2)
            assert sessions.get(first_peer, {}).get("leave_reason") == "connection_lost", sessions
            # One session for A's peer across the resume (not one per socket).
            assert [s for s in sessions.values() if s["user_id"] == "patient-a"] == [sessions[first_peer]], sessions
            # Too late: the same token joins again, as a new peer.
            late = await a.resume_signaling()
            assert late.get("resumed") is False and late.get("peer_id") != first_peer, late
            await b.wait_event("user_joined", lambda d: d.get("peer_id") == late.get("peer_id"), after=mark_b, timeout=5)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 150))
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e
