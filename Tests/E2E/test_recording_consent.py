"""Recording consent (issue 24, docs/RECORDING.md "Consent", PROTOCOL.md additions) end to end.

A room created with `recording_consent: "required"` and three aiortc participants (test_composite.py's
red, green and blue: a colour and a tone each). Red and blue send `recording_consent {granted: true}`,
green never does:
- `test_consent_required_tracks_recording`: everyone is told each answer (`recording_consent` with the
  recording in progress, null before one); the `tracks` recording has a file for red and blue and none
  for green; blue withdraws mid-call and its file ends there (its duration is the time until the
  withdrawal, red's the whole recording); the recording's `consents` list each participant's answer
  with its time (green: not granted) and blue's withdrawal; a participant joining later gets the rule
  and the answers in `joined_room`; the answers are in the audit trail; a bad `recording_consent`
  option is a 400 naming it, and a room created without it is on notice (everyone recorded).
- `test_consent_required_composite`: the composite of the same three shows green's name tile (not
  its colour) and mixes red's and blue's tones, not green's.
"""
from __future__ import annotations

import asyncio
import secrets
import time

import media_analysis as ma
from room_client import ControlAPI, RoomClient, until
from test_composite import NAME_TILE_Y, PEOPLE, SolidVideoTrack, ToneTrack, check_tiles, frames_at, goertzel

WIDTH, HEIGHT, FPS = 640, 360, 15


def start(sfu_factory, name: str, **room) -> tuple[object, ControlAPI, dict]:
    key = "consent-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    api = ControlAPI(sfu.base_url, key)
    return sfu, api, api.create_room(name=name, **room)


async def join(api: ControlAPI, rid: str, person) -> RoomClient:
    name, yuv, hz = person
    c = RoomClient(api.token(rid, f"user-{name}", role="patient", name=name.title())["signaling_url"], name=name, subscribe=False)
    c.video, c.audio = SolidVideoTrack(yuv), ToneTrack(hz)
    joined = await c.connect()
    assert joined.get("recording_consent") == "required", joined
    await c.publish()
    assert await until(lambda: c.pub_pc.connectionState == "connected", 20), name
    return c


def test_consent_required_tracks_recording(sfu_factory):
    sfu, api, room = start(sfu_factory, "consent-tracks", recording_consent="required")
    rid = room["id"]
    assert room.get("recording_consent") == "required", room
    status, got = api.call("POST", "/v1/rooms", {"recording_consent": "sometimes"})
    assert status == 400 and "recording_consent" in str(got), (status, got)
    assert api.create_room(name="on-notice").get("recording_consent") == "notice"
    timeline: dict[str, float] = {}

    async def scenario():
        clients = []
        try:
            for person in PEOPLE:
                clients.append(await join(api, rid, person))
            red, green, blue = clients
            await red.send("recording_consent", {"granted": True})
            await blue.send("recording_consent", {"granted": True})
            # Everyone is told, green too; nothing records yet.
            for c in clients:
                for who in ("user-red", "user-blue"):
                    d = await c.wait_event("recording_consent", lambda d, who=who: d.get("user_id") == who, timeout=5)
                    assert d["granted"] is True and d["recording_id"] is None, d
            await asyncio.sleep(1.5)
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, (status, rec)
            started = time.monotonic()
            await asyncio.sleep(4.0)
            await blue.send("recording_consent", {"granted": False})
            timeline["withdrawn"] = time.monotonic() - started
            d = await green.wait_event("recording_consent", lambda d: d.get("user_id") == "user-blue" and d.get("granted") is False,
                                       timeout=5)
            assert d["recording_id"] == rec["id"], d
            # A repeated answer changes nothing and is not announced again.
            since = len(green.events)
            await red.send("recording_consent", {"granted": True})
            await asyncio.sleep(4.0)
            assert green.find_events("recording_consent", lambda d: d.get("user_id") == "user-red", after=since) == []
            # A participant joining now is told the rule and the answers.
            late = RoomClient(api.token(rid, "user-late", role="observer", name="Late")["signaling_url"], name="late", subscribe=False,
                              publish_audio=False, publish_video=False)
            clients.append(late)
            joined = await late.connect()
            timeline["stopped"] = time.monotonic() - started
            status, done = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
            assert status == 200, (status, done)
            return rec, done, joined
        finally:
            for c in clients:
                await c.close()

    rec, done, joined = asyncio.run(asyncio.wait_for(scenario(), 120))
    log = sfu.log_path.read_text(errors="replace")[-3000:]
    assert done["status"] == "completed", (done, log)

    # Files: red's for the whole recording, blue's until its withdrawal, none of green.
    by_user = {}
    for f in done["files"]:
        by_user.setdefault(f["user_id"], []).append(f)
    assert set(by_user) == {"user-red", "user-blue"}, done["files"]
    assert len(by_user["user-red"]) == 1 and len(by_user["user-blue"]) == 1, done["files"]
    red_ms, blue_ms = by_user["user-red"][0]["duration_ms"], by_user["user-blue"][0]["duration_ms"]
    assert abs(blue_ms / 1000 - timeline["withdrawn"]) < 1.5, (blue_ms, timeline)
    assert red_ms / 1000 > timeline["stopped"] - 1.5, (red_ms, timeline)
    for f in done["files"]:
        p = ma.probe(f["path"])
        assert abs(p["video_span"] - f["duration_ms"] / 1000) < 1.0, (f, p)
        assert ma.decode_check(f["path"]) == [], f

    # The consent list: each participant's answer when the recording started, then blue's change.
    consents = [(c["user_id"], c["granted"]) for c in done["consents"]]
    assert sorted(consents[:3]) == [("user-blue", True), ("user-green", False), ("user-red", True)], done["consents"]
    assert consents[3:] == [("user-blue", False)], done["consents"]
    assert all(c["at"].endswith("Z") for c in done["consents"]), done["consents"]
    # The same through GET.
    assert api.ok("GET", f"/v1/recordings/{rec['id']}")["consents"] == done["consents"]

    # The late joiner: the rule and the answers as they stand.
    assert joined["recording_consent"] == "required", joined
    answers = {c["user_id"]: c["granted"] for c in joined["consents"]}
    assert answers == {"user-red": True, "user-blue": False}, joined["consents"]

    # The audit trail has each answer, by its participant.
    events = api.ok("GET", f"/v1/rooms/{rid}/events?limit=200")["events"]
    kinds = [(e["type"], e["actor"]) for e in events if e["type"].startswith("recording_consent")]
    assert sorted(kinds) == sorted([("recording_consent_granted", "user:user-red"), ("recording_consent_granted", "user:user-blue"),
                                    ("recording_consent_withdrawn", "user:user-blue")]), kinds


def test_consent_required_composite(sfu_factory):
    ma.require_tools("ffmpeg", "ffprobe")
    sfu, api, room = start(sfu_factory, "consent-composite", recording_consent="required")
    rid = room["id"]

    async def scenario() -> dict:
        clients = []
        try:
            for person in PEOPLE:
                clients.append(await join(api, rid, person))
            red, _, blue = clients
            for c in (red, blue):
                await c.send("recording_consent", {"granted": True})
                await c.wait_event("recording_consent", lambda d, c=c: d.get("user_id") == c.user_id, timeout=5)
            await asyncio.sleep(1.5)
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings",
                                          {"mode": "composite", "layout": "grid", "width": WIDTH, "height": HEIGHT, "fps": FPS})
            assert status == 201, (status, rec)
            await asyncio.sleep(6.0)
            status, done = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=60)
            assert status == 200, (status, done)
            return done
        finally:
            for c in clients:
                await c.close()

    done = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert done["status"] == "completed", (done, sfu.log_path.read_text(errors="replace")[-3000:])
    assert sorted((c["user_id"], c["granted"]) for c in done["consents"]) == \
        [("user-blue", True), ("user-green", False), ("user-red", True)], done["consents"]
    path = done["files"][0]["path"]
    assert ma.decode_check(path) == []
    # Grid of three in join order: red top left, green top right, blue bottom centre.
    cw, ch = WIDTH // 2, HEIGHT // 2
    picture = frames_at(path, [4.0])[4.0]
    check_tiles(picture, [(cw // 2, ch // 2), (WIDTH // 2, ch + ch // 2)], ["red", "blue"], "the consenting participants")
    w, h, Y, _, _ = picture
    cell = [Y[y * w + x] for y in range(10, ch - 10) for x in range(cw + 10, w - 10)]
    grey = sum(1 for v in cell if abs(v - NAME_TILE_Y) <= 8)
    assert grey > 0.8 * len(cell), f"green's cell is not its name tile: {grey} of {len(cell)} grey"
    # Red's and blue's tones are mixed, green's is not.
    _, _, pcm = ma.audio_pcm(path)
    e = {hz: goertzel(pcm, 48000, 3 * 48000, hz) for hz in (400, 550, 700, 900, 1100, 1300)}
    floor = max(e[550], e[900], e[1300])
    assert e[400] > 30 * floor and e[1100] > 30 * floor, e
    assert e[700] < e[400] / 30, f"green's tone is in the mix: {e}"


def test_demo_page_asks_for_consent(sfu_factory, tmp_path):
    """The demo page in a room that requires consent: its "Allow recording" button sends the answer
    (everyone is told), the page's own recording appears only after it, and the button then offers
    to withdraw."""
    import urllib.parse
    from netns_util import chromium_pool
    from test_simulcast import wait_joined
    sfu, api, room = start(sfu_factory, "consent-page", recording_consent="required")
    rid = room["id"]
    with chromium_pool(tmp_path) as chromiums:
        page = chromiums("consent")
        page.open(f"{sfu.base_url}/?token={urllib.parse.quote(api.token(rid, 'pat-page', name='Page')['token'])}")
        wait_joined(page)
        button = "const b = document.getElementById('consent'); return {hidden: b.classList.contains('hidden'), text: b.textContent};"
        # Shown once the page knows the room's rule (joined_room), before its camera is up.
        deadline = time.monotonic() + 10
        while page.execute(button)["hidden"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.execute(button) == {"hidden": False, "text": "Allow recording"}

        async def scenario():
            async with RoomClient(api.token(rid, "obs", role="observer")["signaling_url"], name="obs", subscribe=False,
                                  publish_audio=False, publish_video=False) as obs:
                await obs.connect()
                status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
                assert status == 201, (status, rec)
                await asyncio.sleep(3.0)
                await asyncio.to_thread(page.execute, "document.getElementById('consent').click();")
                d = await obs.wait_event("recording_consent", lambda d: d.get("user_id") == "pat-page", timeout=10)
                assert d["granted"] is True and d["recording_id"] == rec["id"], d
                granted_at = time.monotonic()
                await asyncio.sleep(4.0)
                status, done = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
                assert status == 200, (status, done)
                return done, time.monotonic() - granted_at

        done, since_grant = asyncio.run(asyncio.wait_for(scenario(), 90))
        assert page.execute(button)["text"] == "Withdraw recording consent"
    assert done["status"] == "completed", done
    files = [f for f in done["files"] if f["user_id"] == "pat-page"]
    assert len(files) == 1, done["files"]
    # Recorded from the grant on, not from the recording's start 3 s before it.
    assert files[0]["duration_ms"] / 1000 < since_grant + 1.0, (files[0], since_grant)
    assert [(c["user_id"], c["granted"]) for c in done["consents"]] == [("pat-page", False), ("pat-page", True)], done["consents"]
