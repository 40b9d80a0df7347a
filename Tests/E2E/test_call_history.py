"""The app backend's view of a call (issue 23), on SQLite and on PostgreSQL: a scripted consultation
with an aiortc doctor, a headless Chromium patient on the demo page (sfu-client.js) and an aiortc
interpreter (join, a mute by the API, the patient's camera switched off, a screen share from the
page (a canvas stream published as source `screen`), chat both ways, the interpreter joining late
and getting the chat history in `joined_room`, a recording, the interpreter removed, leaves, the
room closed) and then what the routes say about it:
- `GET /v1/rooms/{id}/sessions`: exactly the three sessions with their leave reasons;
- `GET /v1/rooms/{id}/events`: exactly the expected audit trail (types, actors, subjects, in order);
- `GET /v1/rooms/{id}/messages`: the two messages, in order, with who sent them;
- `GET /v1/rooms?status=closed`: the room with its duration, 3 participants (3 at once), its recording;
- `GET /v1/events?format=jsonl|csv`: the same events in the export.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import urllib.parse
import urllib.request

from netns_util import chromium_pool
from room_client import ControlAPI, RoomClient, until
from test_control_api import KEY, api  # noqa: F401  (the fixture: one server per backend)
from test_network_change import _wait, page_decoded
from test_simulcast import wait_joined

STEP_S = 0.25   # between steps, so that no two audit events share a millisecond
# The page shares a canvas that changes colour ten times a second, as it would a screen.
SHARE_CANVAS = """
const c = document.createElement('canvas'); c.width = 320; c.height = 180;
const g = c.getContext('2d'); let n = 0;
setInterval(() => { g.fillStyle = n++ % 2 ? '#c00' : '#00c'; g.fillRect(0, 0, 320, 180); }, 100);
return sfuDemo.client.shareScreen(c.captureStream(10)).then(() => true);
"""


def _get_text(sfu, path: str) -> tuple[int, str, str]:
    req = urllib.request.Request(sfu.base_url + path, headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def test_a_scripted_consultation_reads_back_exactly(api, tmp_path):  # noqa: F811
    control = ControlAPI(api.base_url, KEY)
    room = control.create_room(name="consultation 42")["id"]
    tokens = {}
    for user, role, name in [("dr-1", "doctor", "Dr One"), ("pt-1", "patient", "Pat"), ("it-1", "patient", "Interpreter")]:
        time.sleep(STEP_S)
        tokens[user] = control.token(room, user, role=role, name=name)
    time.sleep(STEP_S)

    with chromium_pool(tmp_path) as chromiums:
        page = chromiums("patient")

        async def js(script: str):
            return await asyncio.to_thread(page.execute, script)

        async def run() -> dict:
            async with RoomClient(tokens["dr-1"]["signaling_url"], name="doctor") as dr:
                await dr.connect()
                await asyncio.sleep(STEP_S)
                await asyncio.to_thread(page.open, f"{api.base_url}/?token={urllib.parse.quote(tokens['pt-1']['token'])}")
                pt_peer = await asyncio.to_thread(wait_joined, page)
                await dr.publish()
                assert await until(lambda: dr.frames_from(pt_peer) >= 5, 30), "the page's video did not reach the doctor"
                assert await asyncio.to_thread(lambda: _wait(lambda: page_decoded(page, dr.peer_id) >= 5, 30)), "the page decodes nothing"
                await asyncio.sleep(STEP_S)
                status, _ = await control.acall("POST", f"/v1/rooms/{room}/participants/pt-1/mute", {"kind": "audio", "muted": True})
                assert status == 200
                await asyncio.sleep(STEP_S)
                await js("sfuDemo.client.toggleVideo(false)")
                await asyncio.sleep(STEP_S)
                await js(SHARE_CANVAS)
                await dr.wait_event("track_published", lambda d: d.get("peer_id") == pt_peer and d.get("source") == "screen", timeout=15)
                await asyncio.sleep(STEP_S)
                await js("return sfuDemo.client.stopScreenShare()")
                await dr.wait_event("track_unpublished", lambda d: d.get("peer_id") == pt_peer, timeout=15)
                await asyncio.sleep(STEP_S)
                await dr.send("send_message", {"message": "Good morning, how are you feeling?"})
                assert await asyncio.to_thread(lambda: _wait(lambda: any("Good morning" in c["message"] for c in page.execute("return sfuDemo.chat")), 10))
                await asyncio.sleep(STEP_S)
                await js("sfuDemo.client.sendMessage('Better, thank you — “much” better.')")
                await dr.wait_event("chat_message", lambda d: d.get("user_id") == "pt-1")
                await asyncio.sleep(STEP_S)
                meta = {"consultation_id": "c-42", "consent_form": {"signed": True, "version": 3}}
                status, rec = await control.acall("POST", f"/v1/rooms/{room}/recordings", {"mode": "tracks", "metadata": meta})
                assert status in (200, 201) and rec["metadata"] == meta, rec
                await asyncio.sleep(STEP_S)
                # A late joiner sees the chat so far in joined_room.
                async with RoomClient(tokens["it-1"]["signaling_url"], name="interpreter") as it:
                    joined = await it.connect()
                    history = [(m["user_id"], m["message"]) for m in joined.get("messages", [])]
                    assert history == [("dr-1", "Good morning, how are you feeling?"), ("pt-1", "Better, thank you — “much” better.")], joined
                    assert all(m["peer_id"] and m["timestamp"].endswith("Z") for m in joined["messages"])
                    await asyncio.sleep(STEP_S)
                    status, _ = await control.acall("DELETE", f"/v1/rooms/{room}/participants/it-1")
                    assert status == 204
                    await it.wait_error("removed")
                await asyncio.sleep(STEP_S)
                status, stopped = await control.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
                assert status == 200, stopped
                await asyncio.sleep(STEP_S)
                await js("sfuDemo.client.leave()")
                await dr.wait_event("user_left", lambda d: d.get("peer_id") == pt_peer)
                await asyncio.sleep(STEP_S)
                assert await dr.leave()
                return {"recording": rec["id"], "dr": dr.peer_id, "pt": pt_peer}

        ids = asyncio.run(asyncio.wait_for(run(), 120))
    status, _ = control.call("DELETE", f"/v1/rooms/{room}")
    assert status == 200

    # Background writes land within a moment.
    def events() -> list[dict]:
        return control.ok("GET", f"/v1/rooms/{room}/events")["events"]
    deadline_ok = asyncio.run(until(lambda: any(e["type"] == "room_closed" for e in events())
                                    and sum(e["type"] == "participant_left" for e in events()) == 3, 10))
    assert deadline_ok, events()
    trail = [(e["type"], e["actor"], e["subject"]) for e in events()]
    print("audit trail:", json.dumps(trail))
    rec = ids["recording"]
    expected = [
        ("room_created", "api", f"room:{room}"),
        ("token_issued", "api", "user:dr-1"), ("token_issued", "api", "user:pt-1"), ("token_issued", "api", "user:it-1"),
        ("participant_joined", "user:dr-1", "user:dr-1"),
        ("participant_joined", "user:pt-1", "user:pt-1"),
        ("participant_muted", "api", "user:pt-1"),
        ("video_toggled", "user:pt-1", "user:pt-1"),
        ("screen_share_started", "user:pt-1", "user:pt-1"),
        ("screen_share_stopped", "user:pt-1", "user:pt-1"),
        ("chat_message_sent", "user:dr-1", None), ("chat_message_sent", "user:pt-1", None),
        ("recording_started", "api", f"recording:{rec}"),
        ("participant_joined", "user:it-1", "user:it-1"),
        ("participant_removed", "api", "user:it-1"),
        ("participant_left", "api", "user:it-1"),
        ("recording_stopped", "api", f"recording:{rec}"),
        ("participant_left", "user:pt-1", "user:pt-1"),
        ("participant_left", "user:dr-1", "user:dr-1"),
        ("room_closed", "api", f"room:{room}"),
    ]
    got = [(t, a, s if not s.startswith("message:") else None) for t, a, s in trail]
    # The removal's two events come from two writers (the API, the session's end) a moment apart: either order.
    i = got.index(("participant_removed", "api", "user:it-1"))
    if got[i - 1] == ("participant_left", "api", "user:it-1"):
        got[i - 1], got[i] = got[i], got[i - 1]
    assert got == expected, f"audit trail:\n{json.dumps(got, indent=0)}"
    by_type = {e["type"]: e for e in events()}
    assert by_type["participant_muted"]["data"] == {"kind": "audio", "muted": "true"}
    assert by_type["video_toggled"]["data"]["enabled"] == "false"
    assert [e["data"]["role"] for e in events() if e["type"] == "token_issued"] == ["doctor", "patient", "patient"]

    sessions = control.ok("GET", f"/v1/rooms/{room}/sessions")["sessions"]
    assert [(s["user_id"], s["leave_reason"]) for s in sessions] == [("dr-1", "left"), ("pt-1", "left"), ("it-1", "removed")], sessions
    assert {s["peer_id"] for s in sessions} >= {ids["dr"], ids["pt"]}

    messages = control.ok("GET", f"/v1/rooms/{room}/messages")["messages"]
    assert [(m["user_id"], m["message"]) for m in messages] == [("dr-1", "Good morning, how are you feeling?"),
                                                                ("pt-1", "Better, thank you — “much” better.")]
    chat_events = [e for e in events() if e["type"] == "chat_message_sent"]
    assert [e["subject"] for e in chat_events] == [f"message:{m['id']}" for m in messages]

    got_rec = control.ok("GET", f"/v1/recordings/{rec}")
    assert got_rec["metadata"] == {"consultation_id": "c-42", "consent_form": {"signed": True, "version": 3}}, got_rec
    history = control.ok("GET", "/v1/rooms?status=closed")
    entry = next(r for r in history["rooms"] if r["id"] == room)
    assert entry["total_participants"] == 3 and entry["peak_participants"] == 3, entry
    assert entry["recording_ids"] == [rec] and entry["duration_ms"] > 0 and entry["status"] == "closed"
    assert history["next_cursor"] is None

    status, ctype, text = _get_text(api, "/v1/events?format=jsonl")
    assert status == 200 and ctype.startswith("application/x-ndjson")
    exported = [json.loads(line) for line in text.splitlines() if line]
    assert [e["id"] for e in exported if e["room_id"] == room] == [e["id"] for e in events()]
    status, ctype, text = _get_text(api, "/v1/events?format=csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["type"] for r in rows if r["room_id"] == room] == [e["type"] for e in events()]
    assert json.loads(next(r for r in rows if r["type"] == "participant_muted")["data"]) == {"kind": "audio", "muted": "true"}
