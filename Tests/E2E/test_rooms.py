"""Rooms end to end (`/v1/signal`), against PROTOCOL.md and docs/SIGNALING.md, with aiortc participants.

- four participants publishing VP8 + Opus each decode everyone else; one leaves (user_left,
  track_unpublished, a subscriber offer without its tracks) and rejoins, and media flows again;
- two rooms at once never leak tracks, events or media into each other;
- an observer receives media but its publisher offer gets `permission_denied`;
- bad join tokens (expired, forged, malformed, missing, unknown room, closed room) get one `error`
  and the close code of docs/SIGNALING.md, a token for room A never joins room B (4403),
  `max_participants` is enforced (4409);
- chat and the audio/video toggles (forwarding stops while disabled, resumes after);
- the Control API on live rooms: participants with their tracks, mute, remove, close;
- a second connection of the same user replaces the first;
- 200 seeded malformed messages on one connection each get an `error`, a frame over 256 KiB closes
  with 1009 (message too big), the server stays up and the room keeps working.
"""
from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import random
import re
import secrets
import string
import time

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from room_client import (DECODE_FAILURES, ControlAPI, RoomClient, RoomError, b64url, b64url_decode, mint_token,
                         sdp_msids, sdp_sections, until)

SCENARIO_TIMEOUT = 150   # seconds, per test: every scenario is bounded as a whole too
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def server(sfu_factory):
    key = "rooms-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    sfu.key = key
    sfu.api = ControlAPI(sfu.base_url, key)
    return sfu


def run(coro, timeout: float = SCENARIO_TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def diag(sfu, *clients: RoomClient, lines: int = 80) -> str:
    out = []
    for c in clients:
        out.append(f"client {c.name}: {c.state()}")
        out.append(f"  events: {c.brief_events()}")
    log = sfu.log().splitlines()
    out.append(f"server log (last {lines} of {len(log)} lines, {sfu.log_path}):")
    out.extend(log[-lines:])
    return "\n".join(out)


async def join(stack: contextlib.AsyncExitStack, sfu, room_id: str, user_id: str, *, role: str = "patient",
               name: str | None = None, publish: bool = False, **kw) -> RoomClient:
    """A participant that joined (and published, if asked); closed when the stack unwinds."""
    tok = sfu.api.token(room_id, user_id, role=role, name=name or user_id.upper())
    c = RoomClient(tok["signaling_url"], name=user_id, **kw)
    stack.push_async_callback(c.close)
    await c.connect()
    if publish:
        await c.publish()
    return c


def published_tracks(observer: RoomClient, peer_id: str, after: int = 0) -> dict[str, dict]:
    """track_id -> track_published data for `peer_id`, as `observer` saw them."""
    return {d["track_id"]: d for d in observer.find_events("track_published", lambda d: d.get("peer_id") == peer_id,
                                                             after=after)}


async def wait_published(observer: RoomClient, peer_id: str, n: int = 2, after: int = 0, timeout: float = 15) -> dict:
    ok = await until(lambda: len(published_tracks(observer, peer_id, after)) >= n, timeout)
    got = published_tracks(observer, peer_id, after)
    assert ok, f"{observer.name} saw {len(got)} track_published for {peer_id}, want {n}: {observer.brief_events()}"
    return got


def check_track_published(tracks: dict[str, dict]) -> list[str]:
    problems = []
    kinds = sorted((d.get("kind"), d.get("source")) for d in tracks.values())
    if kinds != [("audio", "microphone"), ("video", "camera")]:
        problems.append(f"published (kind, source) {kinds}, want audio/microphone + video/camera")
    for tid in tracks:
        if not (isinstance(tid, str) and tid.startswith("tr_")):
            problems.append(f"track id {tid!r} is not tr_...")
    return problems


def check_subscriber_offer(sdp: str, live: dict[tuple[str, str], str]) -> list[str]:
    """Checks a subscriber offer against docs/SIGNALING.md; `live` is (peer_id, track_id) -> kind of
    the tracks that must be offered (sendonly); every other m-line must be inactive without msid."""
    problems = []
    if "a=ice-lite" not in sdp:
        problems.append("no a=ice-lite")
    if "a=candidate:" not in sdp:
        problems.append("no candidates in the offer")
    if "a=setup:actpass" not in sdp:
        problems.append("server is not a=setup:actpass")
    seen: dict[tuple[str, str], str] = {}
    for s in sdp_sections(sdp):
        where = f"m-line {s.index} (mid {s.mid}, {s.kind})"
        if s.direction == "inactive" or s.port == 0:
            if s.msid is not None:
                problems.append(f"{where}: inactive with msid {s.msid}")
            continue
        if s.direction != "sendonly":
            problems.append(f"{where}: direction {s.direction}, want sendonly")
        if s.msid is None:
            problems.append(f"{where}: no a=msid")
            continue
        if s.msid in seen:
            problems.append(f"{where}: msid {s.msid} offered twice")
        seen[s.msid] = s.kind
        ssrcs = {l.split()[0] for l in s.attr("a=ssrc:")}
        rtpmap = {l.split()[0]: l.split()[1].lower() for l in s.attr("a=rtpmap:")}
        fb = {l.strip().lower() for l in s.attr("a=rtcp-fb:96 ")}
        if s.kind == "video":
            if rtpmap.get("96") != "vp8/90000" or rtpmap.get("97") != "rtx/90000":
                problems.append(f"{where}: rtpmap {rtpmap}, want 96 VP8/90000 + 97 rtx/90000")
            for need in ("nack", "nack pli", "ccm fir", "transport-cc"):
                if need not in fb:
                    problems.append(f"{where}: no a=rtcp-fb:96 {need} ({sorted(fb)})")
            groups = s.attr("a=ssrc-group:FID ")
            if len(groups) != 1 or len(groups[0].split()) != 2 or set(groups[0].split()) != ssrcs:
                problems.append(f"{where}: want one ssrc-group:FID over its 2 SSRCs: {groups} / {ssrcs}")
        elif s.kind == "audio":
            if rtpmap.get("111") != "opus/48000/2":
                problems.append(f"{where}: rtpmap {rtpmap}, want 111 opus/48000/2")
            if len(ssrcs) != 1:
                problems.append(f"{where}: want one SSRC, got {ssrcs}")
    if seen != live:
        problems.append(f"offered tracks {seen} != live tracks {live}")
    return problems


async def concurrently(*coros):
    return await asyncio.gather(*coros)


# --- four participants ------------------------------------------------------------------------

def test_four_participants_media_leave_and_rejoin(server):
    sfu = server
    api = sfu.api

    async def scenario():
        failures_before = DECODE_FAILURES.count
        rid = api.create_room(name="four")["id"]
        async with contextlib.AsyncExitStack() as stack:
            clients: list[RoomClient] = []
            names = {f"u{i}": f"User {i}" for i in range(4)}
            for i in range(4):
                role = "doctor" if i == 0 else "patient"
                c = await join(stack, sfu, rid, f"u{i}", role=role, name=f"User {i}")
                j = c.joined
                assert j["room_id"] == rid and j["user_id"] == f"u{i}" and j["role"] == role, j
                assert isinstance(c.peer_id, str) and c.peer_id.startswith("pe_"), j
                assert isinstance(j.get("ice_servers"), list), j
                others = {p["peer_id"]: p for p in j["participants"]}
                assert set(others) == {x.peer_id for x in clients}, (j, clients)
                for x in clients:
                    p = others[x.peer_id]
                    assert (p["user_id"], p["name"], p["role"], p["tracks"]) == (x.user_id, names[x.user_id], x.joined["role"], []), p
                clients.append(c)
            assert len({c.peer_id for c in clients}) == 4
            # Everyone already there hears about each later arrival.
            for i, c in enumerate(clients):
                for later in clients[i + 1:]:
                    d = await c.wait_event("user_joined", lambda d: d.get("peer_id") == later.peer_id)
                    assert (d["user_id"], d["name"], d["role"]) == (later.user_id, names[later.user_id], later.joined["role"]), d
                assert not c.find_events("user_joined", lambda d: d.get("peer_id") == c.peer_id)

            await concurrently(*(c.publish() for c in clients))
            tracks: dict[str, dict[str, str]] = {}    # peer_id -> track_id -> kind
            for c in clients:
                for o in clients:
                    if o is c:
                        continue
                    got = await wait_published(c, o.peer_id)
                    assert not check_track_published(got), (check_track_published(got), got)
                    kinds = {tid: d["kind"] for tid, d in got.items()}
                    assert tracks.setdefault(o.peer_id, kinds) == kinds, "observers disagree on track ids"
                assert not published_tracks(c, c.peer_id), f"{c.name} got track_published for its own tracks"

            def everyone_decodes(want_frames: int, group: list[RoomClient]) -> bool:
                return all(c.frames_from(o.peer_id) >= want_frames and c.samples_from(o.peer_id) > 0
                           and c.energy_from(o.peer_id) > 0 for c in group for o in group if o is not c)

            ok = await until(lambda: everyone_decodes(50, clients), 60, 0.25)
            assert ok, "not every participant decodes >= 50 frames and audio from each other\n" + diag(sfu, *clients)
            for c in clients:
                live = {(o.peer_id, tid): kind for o in clients if o is not c for tid, kind in tracks[o.peer_id].items()}
                stats = c.remote_stats()
                assert {k for k, s in stats.items() if s.get("frames") or s.get("samples")} == set(live), stats
                assert all(s["sizes"] == [(320, 240)] for s in stats.values() if s["kind"] == "video"), stats
                problems = check_subscriber_offer(c.last_subscriber_offer, live)
                assert not problems, f"{c.name}'s subscriber offer: {problems}\n{c.last_subscriber_offer}"
                assert not c.failures and not c.errors(), (c.failures, c.errors())

            # One leaves.
            leaver, stay = clients[3], clients[:3]
            marks = {c: len(c.events) for c in stay}
            frames_before = {(c, o): c.frames_from(o.peer_id) for c in stay for o in stay if o is not c}
            assert await leaver.leave(), "the server did not close the socket after leave_room"
            for c in stay:
                left = await c.wait_event("user_left", lambda d: d.get("peer_id") == leaver.peer_id, after=marks[c])
                assert left["user_id"] == leaver.user_id, left
                for tid in tracks[leaver.peer_id]:
                    await c.wait_event("track_unpublished", lambda d: d.get("peer_id") == leaver.peer_id
                                       and d.get("track_id") == tid, after=marks[c])
                offer = await c.wait_event(
                    "webrtc_offer", lambda d: d.get("target") == "subscriber"
                    and not any(p == leaver.peer_id for p, _ in sdp_msids(d.get("sdp") or "")), after=marks[c])
                sections = {s.mid: s for s in sdp_sections(offer["sdp"])}
                gone = [mid for mid, (p, _) in c.mid_map.items() if p == leaver.peer_id]
                assert len(gone) == 2, c.mid_map
                for mid in gone:
                    assert mid in sections, f"m-line {mid} of the leaver was dropped, not kept inactive"
                    assert sections[mid].direction == "inactive" or sections[mid].port == 0, sections[mid].lines
                live = {(o.peer_id, tid): kind for o in stay if o is not c for tid, kind in tracks[o.peer_id].items()}
                problems = check_subscriber_offer(offer["sdp"], live)
                assert not problems, f"{c.name}'s offer after the leave: {problems}\n{offer['sdp']}"
            ok = await until(lambda: all(c.frames_from(o.peer_id) >= n + 20 for (c, o), n in frames_before.items()), 20)
            assert ok, "media between the others stopped after the leave\n" + diag(sfu, *stay)

            # It comes back (new connection, same user): media flows both ways again.
            marks = {c: len(c.events) for c in stay}
            back = await join(stack, sfu, rid, "u3", name="User 3")
            assert back.peer_id != leaver.peer_id and back.user_id == "u3"
            listed = {p["peer_id"]: p for p in back.joined["participants"]}
            assert set(listed) == {c.peer_id for c in stay}, back.joined
            for c in stay:
                got = {t["track_id"]: t for t in listed[c.peer_id]["tracks"]}
                assert {tid: t["kind"] for tid, t in got.items()} == tracks[c.peer_id], listed[c.peer_id]
                for t in got.values():
                    assert t["source"] == {"audio": "microphone", "video": "camera"}[t["kind"]], t
                    assert t["muted"] is False and "simulcast" in t, t
                joined_ev = await c.wait_event("user_joined", lambda d: d.get("peer_id") == back.peer_id, after=marks[c])
                assert joined_ev["user_id"] == "u3", joined_ev
            await back.publish()
            for c in stay:
                got = await wait_published(c, back.peer_id, after=marks[c])
                assert not check_track_published(got), got
            group = stay + [back]
            ok = await until(lambda: everyone_decodes(30, group), 40, 0.25)
            assert ok, "media does not flow again after the rejoin\n" + diag(sfu, *group)
            # The rejoined tracks took over the leaver's inactive m-lines: the SDP did not grow.
            for c in stay:
                sections = sdp_sections(c.last_subscriber_offer)
                assert len(sections) == 6 and all(s.direction == "sendonly" for s in sections), c.last_subscriber_offer
            # Every frame forwarded decoded: video starts at a keyframe for each new subscriber.
            assert DECODE_FAILURES.count == failures_before, f"{DECODE_FAILURES.count - failures_before} frames failed to decode"

            assert all(not c.failures for c in group), [c.failures for c in group]

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e
    assert sfu.proc.poll() is None, diag(sfu)


# --- isolation between rooms ------------------------------------------------------------------

def test_two_rooms_do_not_leak(server):
    sfu = server
    api = sfu.api

    async def scenario():
        r1, r2 = api.create_room(name="one")["id"], api.create_room(name="two")["id"]
        async with contextlib.AsyncExitStack() as stack:
            a1 = await join(stack, sfu, r1, "a1")
            b1 = await join(stack, sfu, r2, "b1")
            a2 = await join(stack, sfu, r1, "a2")
            b2 = await join(stack, sfu, r2, "b2")
            rooms = {r1: [a1, a2], r2: [b1, b2]}
            await concurrently(*(c.publish() for c in (a1, a2, b1, b2)))
            ok = await until(lambda: all(x.frames_from(y.peer_id) >= 30 and x.samples_from(y.peer_id) > 0
                                         for x, y in [(a1, a2), (a2, a1), (b1, b2), (b2, b1)]), 40, 0.25)
            assert ok, "no media inside the rooms\n" + diag(sfu, a1, a2, b1, b2)
            await a1.send("send_message", {"message": "room one only"})
            await a2.wait_event("chat_message", lambda d: d.get("message") == "room one only")
            await b1.send("toggle_video", {"enabled": False})
            await b2.wait_event("video_toggled", lambda d: d.get("peer_id") == b1.peer_id)
            await asyncio.sleep(1.5)
            for rid, members in rooms.items():
                mine = {c.peer_id for c in members}
                for c in members:
                    assert c.joined["room_id"] == rid
                    foreign = []
                    for event, data in c.events:
                        if isinstance(data, dict) and "peer_id" in data and data["peer_id"] not in mine:
                            foreign.append((event, data))
                        if event == "joined_room":
                            foreign += [("joined_room", p) for p in data["participants"] if p["peer_id"] not in mine]
                        if event == "webrtc_offer":
                            foreign += [("msid", m) for m in sdp_msids(data.get("sdp") or "") if m[0] not in mine]
                    assert not foreign, f"{c.name} in {rid} saw the other room: {foreign}"
                    assert c.media_peers() == mine - {c.peer_id}, (c.name, c.remote_stats())
                    assert all(p in mine for p, _ in c.remote_stats()), c.remote_stats()
            assert not b1.find_events("chat_message") and not b2.find_events("chat_message")
            assert not a1.find_events("video_toggled") and not a2.find_events("video_toggled")

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


# --- observer ---------------------------------------------------------------------------------

def test_observer_receives_but_cannot_publish(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room()["id"]
        async with contextlib.AsyncExitStack() as stack:
            obs = await join(stack, sfu, rid, "obs-1", role="observer")
            assert obs.joined["role"] == "observer"
            doc = await join(stack, sfu, rid, "dr-1", role="doctor", publish=True)
            await wait_published(obs, doc.peer_id)
            ok = await until(lambda: obs.frames_from(doc.peer_id) >= 30 and obs.samples_from(doc.peer_id) > 0
                             and obs.energy_from(doc.peer_id) > 0, 30, 0.25)
            assert ok, "the observer does not receive the doctor's media\n" + diag(sfu, obs, doc)
            mark = len(obs.events)
            with pytest.raises(RoomError) as refused:
                await obs.publish(timeout=8)
            assert refused.value.code == "permission_denied", refused.value
            await asyncio.sleep(1.5)
            answers = obs.find_events("webrtc_answer", lambda d: d.get("target") == "publisher", after=mark)
            assert not answers, "the observer's offer got an answer"
            assert not published_tracks(doc, obs.peer_id), "the observer's tracks were published"
            err = obs.errors(after=mark)
            assert len(err) == 1 and isinstance(err[0].get("message"), str), err

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


# --- tokens and joins -------------------------------------------------------------------------

async def refused_connection(url: str, timeout: float = 5.0) -> tuple[list, int | None, str | None, str | None]:
    """Connects without sending anything; returns (messages received, close code, close reason,
    problem). docs/SIGNALING.md: the upgrade always succeeds, a refused token gets one `error` event
    and the server closes with a 44xx code whose reason is the error code."""
    try:
        ws = await ws_connect(url, open_timeout=5)
    except InvalidStatus as e:
        return [], None, None, f"upgrade refused with HTTP {e.response.status_code} {e.response.body[:200]!r}"
    got = []
    problem = None
    try:
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout)
            got.append(json.loads(raw) if isinstance(raw, str) else raw)
    except asyncio.TimeoutError:
        problem = f"socket still open after {timeout}s"
    except Exception:
        pass   # closed by the server
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    return got, ws.close_code, ws.close_reason, problem


def test_bad_tokens_are_refused(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room()["id"]
        closed_rid = api.create_room()["id"]
        closed_tok = api.token(closed_rid, "late")["token"]
        api.ok("DELETE", f"/v1/rooms/{closed_rid}")
        short = api.token(rid, "short", ttl_s=1)["token"]
        good = mint_token(sfu.key, rid, "u-good")
        h, p, s = good.split(".")
        tampered_claims = json.loads(b64url_decode(p))
        tampered_claims["role"] = "doctor"
        tampered = h + "." + b64url(json.dumps(tampered_claims).encode()) + "." + s
        now = int(time.time())
        await asyncio.sleep(2.1)   # `short` is now expired
        cases = [
            ("missing", None, 4401, "invalid_token"),
            ("empty", "", 4401, "invalid_token"),
            ("malformed", "not-a-jwt", 4401, "invalid_token"),
            ("malformed 3 parts", "a.b.c", 4401, "invalid_token"),
            ("malformed base64", "!!!.???.***", 4401, "invalid_token"),
            ("forged", mint_token("not-the-api-secret", rid, "u-forged"), 4401, "invalid_token"),
            ("tampered", tampered, 4401, "invalid_token"),
            ("alg none", b64url(b'{"alg":"none","typ":"JWT"}') + "." + p + ".", 4401, "invalid_token"),
            ("expired (minted)", mint_token(sfu.key, rid, "u-old", iat=now - 3600, exp=now - 60), 4401, "token_expired"),
            ("expired (API ttl_s 1)", short, 4401, "token_expired"),
            ("no such room", mint_token(sfu.key, "rm_doesnotexist00", "u"), 4404, "room_not_found"),
            ("closed room (API token)", closed_tok, 4409, "room_closed"),
            ("closed room (minted)", mint_token(sfu.key, closed_rid, "u"), 4409, "room_closed"),
        ]
        base = api.signal_url("")[: -len("?token=")]
        wrong = []
        for label, token, want_close, want_code in cases:
            url = base if token is None else base + "?token=" + token
            got, code, reason, problem = await refused_connection(url)
            ok = (problem is None and len(got) == 1 and isinstance(got[0], dict) and got[0].get("event") == "error"
                  and isinstance(got[0].get("data"), dict) and got[0]["data"].get("code") == want_code
                  and isinstance(got[0]["data"].get("message"), str) and code == want_close and reason == want_code)
            if not ok:
                wrong.append(f"{label}: got {got!r}, close {code} {reason!r} {problem or ''}; "
                             f"want one error {want_code}, close {want_close} {want_code!r}")
        assert not wrong, "refused connections that break docs/SIGNALING.md:\n" + "\n".join(wrong)
        # The same server takes a good token (minted by "the app backend" with the API secret).
        c = RoomClient(api.signal_url(good), name="good")
        try:
            j = await c.connect(room_id=rid)
            assert j["room_id"] == rid and j["user_id"] == "u-good" and j["role"] == "patient", j
        finally:
            await c.close()

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e
    assert sfu.proc.poll() is None


def test_token_for_room_a_never_joins_room_b(server):
    sfu = server
    api = sfu.api

    async def scenario():
        a, b = api.create_room(name="A")["id"], api.create_room(name="B")["id"]
        async with contextlib.AsyncExitStack() as stack:
            in_b = await join(stack, sfu, b, "b-member")
            c = RoomClient(api.token(a, "intruder")["signaling_url"], name="intruder")
            stack.push_async_callback(c.close)
            with pytest.raises(RoomError) as refused:
                await c.connect(room_id=b)
            assert refused.value.code == "token_room_mismatch", refused.value
            assert await c.wait_closed(5), "socket still open after token_room_mismatch"
            assert (c.close_code, c.close_reason) == (4403, "token_room_mismatch"), (c.close_code, c.close_reason)
            await asyncio.sleep(0.5)
            assert not in_b.find_events("user_joined"), in_b.events
            status, room_b = await api.acall("GET", f"/v1/rooms/{b}/participants")
            assert status == 200 and "intruder" not in json.dumps(room_b), room_b

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


def test_max_participants_is_enforced_at_join(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room(max_participants=2)["id"]
        async with contextlib.AsyncExitStack() as stack:
            first = await join(stack, sfu, rid, "p1")
            second = await join(stack, sfu, rid, "p2")
            third = RoomClient(api.token(rid, "p3")["signaling_url"], name="p3")
            stack.push_async_callback(third.close)
            with pytest.raises(RoomError) as refused:
                await third.connect()
            assert refused.value.code == "room_full", refused.value
            assert await third.wait_closed(5), "socket still open after room_full"
            assert (third.close_code, third.close_reason) == (4409, "room_full"), (third.close_code, third.close_reason)
            await asyncio.sleep(0.5)
            assert not first.find_events("user_joined", lambda d: d.get("user_id") == "p3"), first.events
            # A place frees up when someone leaves.
            mark = len(first.events)
            await second.leave()
            await first.wait_event("user_left", lambda d: d.get("peer_id") == second.peer_id, after=mark)
            again = await join(stack, sfu, rid, "p3")
            assert [p["user_id"] for p in again.joined["participants"]] == ["p1"], again.joined

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


def test_second_connection_of_a_user_replaces_the_first(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room()["id"]
        async with contextlib.AsyncExitStack() as stack:
            other = await join(stack, sfu, rid, "other")
            old = await join(stack, sfu, rid, "dup")
            await other.wait_event("user_joined", lambda d: d.get("peer_id") == old.peer_id)
            mark = len(other.events)
            new = await join(stack, sfu, rid, "dup")
            assert new.peer_id != old.peer_id
            await old.wait_error("replaced")
            assert await old.wait_closed(5), "replaced connection not closed"
            assert (old.close_code, old.close_reason) == (1000, "replaced"), (old.close_code, old.close_reason)
            await other.wait_event("user_joined", lambda d: d.get("peer_id") == new.peer_id, after=mark)
            seq = [(e, d.get("peer_id")) for e, d in other.events[mark:] if e in ("user_left", "user_joined")]
            assert seq == [("user_left", old.peer_id), ("user_joined", new.peer_id)], seq
            assert [p["peer_id"] for p in new.joined["participants"]] == [other.peer_id], new.joined

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


# --- chat and toggles -------------------------------------------------------------------------

def test_chat_and_toggles(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room()["id"]
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, sfu, rid, "a", publish=True)
            b = await join(stack, sfu, rid, "b", publish=True)
            c = await join(stack, sfu, rid, "c", publish=True)
            everyone = [a, b, c]
            ok = await until(lambda: all(x.frames_from(y.peer_id) >= 20 and x.samples_from(y.peer_id) > 0
                                         for x in everyone for y in everyone if x is not y), 40, 0.25)
            assert ok, "no media\n" + diag(sfu, *everyone)

            # Chat reaches everyone, the sender included.
            text = "Bonjour, docteur ☃ " + "x" * 4000
            text = text[:4096]
            before = time.time()
            await a.send("send_message", {"message": text})
            for x in everyone:
                msg = await x.wait_event("chat_message", lambda d: d.get("message") == text)
                assert (msg["peer_id"], msg["user_id"]) == (a.peer_id, "a"), msg
                assert ISO_MS.match(msg["timestamp"]), msg
                ts = calendar.timegm(time.strptime(msg["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
                assert abs(ts - before) < 10, (msg["timestamp"], before)
            for bad in ["", "y" * 4097, 42, None]:
                mark = len(b.events)
                await b.send("send_message", {"message": bad})
                await b.wait_event("error", after=mark)
            await asyncio.sleep(0.5)
            assert len(c.find_events("chat_message")) == 1, c.find_events("chat_message")

            async def check_toggle(event: str, kind: str, other_kind: str):
                count = (lambda x: x.samples_from(a.peer_id)) if kind == "audio" else (lambda x: x.frames_from(a.peer_id))
                other = (lambda x: x.samples_from(a.peer_id)) if other_kind == "audio" else (lambda x: x.frames_from(a.peer_id))
                toggled = {"toggle_audio": "audio_toggled", "toggle_video": "video_toggled"}[event]
                marks = {x: len(x.events) for x in everyone}
                await a.send(event, {"enabled": False})
                for x in everyone:
                    d = await x.wait_event(toggled, after=marks[x])
                    assert d == {"peer_id": a.peer_id, "user_id": "a", "enabled": False}, d
                await asyncio.sleep(1.0)   # what was in flight drains
                stopped = {x: (count(x), other(x), x.samples_from(c.peer_id)) for x in (b, c)}
                await asyncio.sleep(2.0)
                for x, (n, m, control) in stopped.items():
                    assert count(x) == n, f"{x.name} still receives {kind} from a while disabled: {n} -> {count(x)}"
                    assert other(x) > m, f"{x.name} lost a's {other_kind} while only {kind} was disabled"
                    if x is not c:
                        assert x.samples_from(c.peer_id) > control, "control stream (c's audio) stalled too"
                marks = {x: len(x.events) for x in everyone}
                await a.send(event, {"enabled": True})
                for x in everyone:
                    d = await x.wait_event(toggled, after=marks[x])
                    assert d == {"peer_id": a.peer_id, "user_id": "a", "enabled": True}, d
                more = 4800 if kind == "audio" else 10
                resumed = await until(lambda: all(count(x) > stopped[x][0] + more for x in (b, c)), 10)
                assert resumed, f"a's {kind} does not resume after enabling\n" + diag(sfu, b, c)

            await check_toggle("toggle_audio", "audio", "video")
            await check_toggle("toggle_video", "video", "audio")
            for x in everyone:
                assert not x.errors() or x is b, (x.name, x.errors())
                assert not x.failures, x.failures

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


# --- Control API on live rooms ----------------------------------------------------------------

def participant_list(body) -> list[dict]:
    assert isinstance(body, dict) and isinstance(body.get("participants"), list), body
    return body["participants"]


def test_control_api_with_a_live_room(server):
    sfu = server
    api = sfu.api

    async def scenario():
        rid = api.create_room(name="live")["id"]
        async with contextlib.AsyncExitStack() as stack:
            doc = await join(stack, sfu, rid, "dr", role="doctor", name="Dr Who", publish=True)
            pat = await join(stack, sfu, rid, "pt", role="patient", name="Pat", publish=True)
            obs = await join(stack, sfu, rid, "ob", role="observer", name="Obs")
            everyone = [doc, pat, obs]
            # pt joined after dr published: it learns dr's tracks from joined_room.
            listed = {p["peer_id"]: p for p in pat.joined["participants"]}
            tracks = {doc.peer_id: {t["track_id"]: t for t in listed[doc.peer_id]["tracks"]},
                      pat.peer_id: await wait_published(doc, pat.peer_id)}
            assert not check_track_published(tracks[doc.peer_id]), tracks
            ok = await until(lambda: doc.frames_from(pat.peer_id) >= 30 and pat.frames_from(doc.peer_id) >= 30
                             and obs.frames_from(doc.peer_id) >= 30 and obs.samples_from(pat.peer_id) > 0
                             and doc.samples_from(pat.peer_id) > 0, 40, 0.25)
            assert ok, "no media\n" + diag(sfu, *everyone)
            await asyncio.sleep(2)   # quality figures are computed over a window

            status, body = await api.acall("GET", f"/v1/rooms/{rid}/participants")
            assert status == 200, (status, body)
            listed = {p["user_id"]: p for p in participant_list(body)}
            assert set(listed) == {"dr", "pt", "ob"}, body
            for c, name, role in [(doc, "Dr Who", "doctor"), (pat, "Pat", "patient"), (obs, "Obs", "observer")]:
                p = listed[c.user_id]
                assert (p["peer_id"], p["name"], p["role"]) == (c.peer_id, name, role), p
                # Live quality figures (the server's shape: quality {publish_bitrate_bps,
                # subscribe_bitrate_bps, jitter_ms, uplink_loss / downlink_loss}).
                q = p.get("quality")
                assert isinstance(q, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for k, v in q.items() if k != "grade"), p
                assert q.get("grade") in ("excellent", "good", "fair", "poor"), p
                assert q.get("subscribe_bitrate_bps", 0) > 0, f"{c.name} receives media but its subscribe bitrate is {q}"
                if c is obs:
                    assert p["tracks"] == [] and q.get("publish_bitrate_bps", 0) == 0, p
                    continue
                assert q.get("publish_bitrate_bps", 0) > 50_000, f"{c.name} publishes but its publish bitrate is {q}"
                got = {t["track_id"]: t for t in p["tracks"]}
                assert set(got) == set(tracks[c.peer_id]), (p, tracks[c.peer_id])
                for tid, t in got.items():
                    assert (t["kind"], t["source"]) == (tracks[c.peer_id][tid]["kind"], tracks[c.peer_id][tid]["source"]), t
                    assert t["muted"] is False, t
            status, room = await api.acall("GET", f"/v1/rooms/{rid}")
            assert status == 200 and {p.get("user_id") for p in room.get("participants", [])} == {"dr", "pt", "ob"}, room

            # Mute through the API: everyone (the muted one included) gets the toggle event.
            marks = {x: len(x.events) for x in everyone}
            status, got = await api.acall("POST", f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio", "muted": True})
            assert status in (200, 204), (status, got)
            for x in everyone:
                d = await x.wait_event("audio_toggled", after=marks[x])
                assert d == {"peer_id": pat.peer_id, "user_id": "pt", "enabled": False}, d
            await asyncio.sleep(1.0)
            n = doc.samples_from(pat.peer_id)
            await asyncio.sleep(2.0)
            assert doc.samples_from(pat.peer_id) == n, "audio still forwarded after the API mute"
            status, body = await api.acall("GET", f"/v1/rooms/{rid}/participants")
            pt = {p["user_id"]: p for p in participant_list(body)}["pt"]
            assert {t["kind"]: t["muted"] for t in pt["tracks"]} == {"audio": True, "video": False}, pt
            marks = {x: len(x.events) for x in everyone}
            status, got = await api.acall("POST", f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio", "muted": False})
            assert status in (200, 204), (status, got)
            for x in everyone:
                d = await x.wait_event("audio_toggled", after=marks[x])
                assert d["enabled"] is True and d["peer_id"] == pat.peer_id, d
            assert await until(lambda: doc.samples_from(pat.peer_id) > n + 4800, 10), "audio not back after unmute"
            marks = {x: len(x.events) for x in everyone}
            status, got = await api.acall("POST", f"/v1/rooms/{rid}/participants/dr/mute", {"kind": "video", "muted": True})
            assert status in (200, 204), (status, got)
            for x in everyone:
                d = await x.wait_event("video_toggled", after=marks[x])
                assert d == {"peer_id": doc.peer_id, "user_id": "dr", "enabled": False}, d
            for path, body, want in [(f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "smell", "muted": True}, 400),
                                     (f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio", "muted": "yes"}, 400),
                                     (f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio"}, 400),
                                     (f"/v1/rooms/{rid}/participants/nobody/mute", {"kind": "audio", "muted": True}, 404),
                                     ("/v1/rooms/rm_doesnotexist00/participants/pt/mute", {"kind": "audio", "muted": True}, 404)]:
                status, got = await api.acall("POST", path, body)
                assert status == want and isinstance(got, dict) and "code" in got.get("error", {}), (path, body, status, got)
            status, got = await api.acall("GET", f"/v1/rooms/{rid}/participants", key="wrong-key")
            assert status == 401, (status, got)

            # Remove the patient: it gets `removed` and is disconnected, the others see it leave.
            marks = {x: len(x.events) for x in everyone}
            status, got = await api.acall("DELETE", f"/v1/rooms/{rid}/participants/pt")
            assert status in (200, 204), (status, got)
            await pat.wait_error("removed", after=marks[pat])
            assert await pat.wait_closed(5), "removed participant's socket still open"
            assert (pat.close_code, pat.close_reason) == (1000, "removed"), (pat.close_code, pat.close_reason)
            for x in (doc, obs):
                d = await x.wait_event("user_left", lambda d: d.get("peer_id") == pat.peer_id, after=marks[x])
                assert d["user_id"] == "pt", d
                for tid in tracks[pat.peer_id]:
                    await x.wait_event("track_unpublished", lambda d: d.get("track_id") == tid, after=marks[x])
            status, body = await api.acall("GET", f"/v1/rooms/{rid}/participants")
            assert status == 200 and {p["user_id"] for p in participant_list(body)} == {"dr", "ob"}, body
            status, got = await api.acall("DELETE", f"/v1/rooms/{rid}/participants/pt")
            assert status == 404 and got["error"]["code"] == "not_found", (status, got)

            # Close the room: everyone still there gets `room_closed` and is disconnected.
            marks = {x: len(x.events) for x in (doc, obs)}
            status, got = await api.acall("DELETE", f"/v1/rooms/{rid}")
            assert status == 200 and got["status"] == "closed", (status, got)
            for x in (doc, obs):
                await x.wait_error("room_closed", after=marks[x])
                assert await x.wait_closed(5), f"{x.name}'s socket still open after the room closed"
                assert (x.close_code, x.close_reason) == (1000, "room_closed"), (x.close_code, x.close_reason)
            status, body = await api.acall("GET", f"/v1/rooms/{rid}")
            assert status == 200 and body["status"] == "closed", body

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e
    assert sfu.proc.poll() is None


# --- malformed signaling ----------------------------------------------------------------------

KNOWN_EVENTS = {"join_room", "webrtc_offer", "webrtc_answer", "ice_candidate", "toggle_audio", "toggle_video",
                "screen_share", "send_message", "set_layer", "leave_room"}
FRAME_LIMIT = 256 * 1024   # docs/SIGNALING.md: a frame over 256 KiB is refused by the WebSocket layer with 1009
HUGE = 200_000             # characters in the "huge" messages: under the frame limit
OVERSIZE = FRAME_LIMIT + 1024


def fuzz_message(rng: random.Random, joined: bool) -> tuple[str, str | bytes, bool]:
    """(category, message, well_formed_event): one malformed (or, before the join, merely premature)
    message. None of them is a valid message once joined: each must get an `error`."""
    def junk(n):
        return "".join(rng.choice(string.printable) for _ in range(n))

    def bad_value(allow=()):
        choices = [1, 0, -3.5, "yes", "", None, [], {}, [True], {"x": 1}, "x" * rng.randint(1, 300)]
        return rng.choice([v for v in choices if type(v) not in allow])

    def msg(event, data):
        return json.dumps({"event": event, "data": data})

    category = rng.choice(["not_json", "not_object", "no_event", "data_not_object", "wrong_types",
                           "unknown_event", "huge", "binary"] + (["premature"] * 4 if not joined else []))
    if category == "not_json":
        return category, rng.choice(["", "{", "}", "nul", "{\"event\": ", "{'event': 'join_room'}", "\x00\x01\x02",
                                     "event=join_room", "[{]}", junk(rng.randint(1, 300))]), False
    if category == "not_object":
        return category, json.dumps(rng.choice([1, -2.5, "join_room", None, True, [], ["join_room", {}],
                                                [{"event": "join_room"}], "x" * rng.randint(1, 500)])), False
    if category == "no_event":
        return category, json.dumps(rng.choice([{}, {"data": {}}, {"event": None, "data": {}}, {"event": 5},
                                                {"event": ["send_message"], "data": {"message": "hi"}},
                                                {"event": {"name": "toggle_audio"}, "data": {"enabled": True}},
                                                {"Event": "send_message", "data": {"message": "hi"}}])), False
    if category == "data_not_object":
        event = rng.choice(["toggle_audio", "toggle_video", "screen_share", "send_message", "webrtc_offer", "webrtc_answer"])
        return category, json.dumps({"event": event, "data": rng.choice([5, "enabled", [], [True], True, None])}), False
    if category == "wrong_types":
        event = rng.choice(["toggle_audio", "toggle_video", "screen_share", "send_message", "webrtc_offer",
                            "webrtc_answer", "set_layer"])
        if event in ("toggle_audio", "toggle_video", "screen_share"):
            data = rng.choice([{}, {"enabled": bad_value()}])
        elif event == "send_message":
            data = rng.choice([{}, {"message": bad_value(allow=(str,))}, {"message": ""}, {"message": "m" * 4097}])
        elif event == "webrtc_offer":
            data = rng.choice([{"target": "publisher"}, {"target": "publisher", "sdp": bad_value(allow=(str,))},
                               {"target": "publisher", "sdp": "v=0\r\n" + junk(rng.randint(0, 200))},
                               {"target": bad_value(), "sdp": "v=0\r\n"},
                               {"target": "subscriber", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"},
                               {"target": "nobody", "sdp": "v=0\r\n"}])
        elif event == "webrtc_answer":
            data = rng.choice([{"target": "subscriber"}, {"target": "subscriber", "sdp": bad_value(allow=(str,))},
                               {"target": "subscriber", "sdp": junk(rng.randint(1, 300))},
                               {"target": "publisher", "sdp": "v=0\r\n"}, {"target": bad_value(), "sdp": "v=0\r\n"}])
        else:
            data = rng.choice([{}, {"track_id": bad_value()}, {"track_id": "tr_x", "max_spatial": "high"}])
        return category, msg(event, data), False
    if category == "unknown_event":
        while True:
            name = rng.choice(["JOIN_ROOM", "join-room", "webrtc_offer ", "leave", "kick", "mute_all", "",
                               "x" * rng.randint(1, 100), junk(rng.randint(1, 40))])
            if name not in KNOWN_EVENTS:
                return category, msg(name, {"enabled": True, "message": "hi"}), False
    if category == "huge":
        n = rng.randint(HUGE // 2, HUGE)
        return category, rng.choice([msg("send_message", {"message": "h" * n}), msg("x" * n, {}),
                                     msg("toggle_audio", {"enabled": "e" * n}),
                                     msg("webrtc_offer", {"target": "publisher", "sdp": "v=0\r\n" + "a=x\r\n" * (n // 8)}),
                                     msg("no_such_event", {"blob": "b" * n})]), False
    if category == "binary":
        if rng.random() < 0.3:
            return category, json.dumps({"event": "send_message", "data": {"message": "binary"}}).encode(), False
        return category, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))), False
    # premature: well-formed events before join_room
    event, data = rng.choice([("toggle_audio", {"enabled": False}), ("send_message", {"message": "too early"}),
                              ("webrtc_offer", {"target": "publisher", "sdp": "v=0\r\n"}),
                              ("screen_share", {"enabled": True}), ("toggle_video", {"enabled": True}),
                              ("ice_candidate", {"target": "publisher", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                                 "sdpMid": "0", "sdpMLineIndex": 0}),
                              ("set_layer", {"track_id": "tr_x"})])
    return category, msg(event, data), True


def test_malformed_signaling_messages(server):
    sfu = server
    api = sfu.api
    rng = random.Random(20240611)

    async def scenario():
        rid = api.create_room()["id"]
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, sfu, rid, "a", publish=True)
            b = await join(stack, sfu, rid, "b", publish=True)
            ok = await until(lambda: a.frames_from(b.peer_id) >= 20, 30, 0.25)
            assert ok, "no media before the fuzz\n" + diag(sfu, a, b)
            fuzz = RoomClient(api.token(rid, "fuzz")["signaling_url"], name="fuzz", publish_audio=False,
                              publish_video=False, subscribe=False)
            stack.push_async_callback(fuzz.close)
            await fuzz.open()
            sent = []
            for i in range(200):
                joined = i >= 12
                if i == 12:
                    await fuzz.connect()
                category, message, premature = fuzz_message(rng, joined)
                mark = len(fuzz.events)
                await fuzz.send_raw(message)
                try:
                    err = await fuzz.wait_event("error", after=mark, timeout=5)
                except RoomError as e:
                    raise AssertionError(f"message {i} ({category}) {str(message)[:200]!r} got no error: {e}") from e
                assert isinstance(err.get("code"), str) and err["code"] and isinstance(err.get("message"), str), err
                if premature:
                    assert err["code"] == "not_joined", (i, message, err)
                sent.append((category, err["code"]))
            await asyncio.sleep(0.5)
            assert len(fuzz.errors()) == len(sent), "more errors than messages"
            assert not fuzz.closed.is_set(), "the server closed the connection on a malformed message"
            print("fuzz categories -> error codes:", sorted(set(sent)))
            # Nothing malformed reached the room.
            for x in (a, b):
                leaked = [(e, d) for e, d in x.events if isinstance(d, dict) and d.get("peer_id") == fuzz.peer_id
                          and e not in ("user_joined",)]
                assert not leaked, f"{x.name} saw effects of malformed messages: {leaked}"
            # An oversize frame ends the connection.
            mark = len(a.events)
            with contextlib.suppress(Exception):
                await fuzz.send_raw(json.dumps({"event": "send_message", "data": {"message": "o" * OVERSIZE}}))
            assert await fuzz.wait_closed(10), "an oversize frame did not close the connection"
            # Checked at the end, so that a wrong close code does not hide the checks below.
            oversize_close = (fuzz.close_code, fuzz.close_reason)
            await a.wait_event("user_left", lambda d: d.get("peer_id") == fuzz.peer_id, after=mark)
            status, body = sfu.get("/healthz")
            assert status == 200 and sfu.proc.poll() is None, (status, body)
            n = a.frames_from(b.peer_id), b.frames_from(a.peer_id)
            ok = await until(lambda: a.frames_from(b.peer_id) >= n[0] + 30 and b.frames_from(a.peer_id) >= n[1] + 30, 20)
            assert ok, "the room stopped working after the malformed messages\n" + diag(sfu, a, b)
            # And a newcomer still joins and receives.
            late = await join(stack, sfu, rid, "late")
            ok = await until(lambda: late.frames_from(a.peer_id) >= 20 and late.samples_from(b.peer_id) > 0, 30, 0.25)
            assert ok, "a newcomer gets no media after the malformed messages\n" + diag(sfu, late)
            assert oversize_close is not None and oversize_close[0] == 1009, f"oversize frame closed with {oversize_close}, want 1009 (message too big)"

    try:
        run(scenario())
    except (AssertionError, RoomError, asyncio.TimeoutError) as e:
        raise AssertionError(f"{e}\n{diag(sfu)}") from e


# --- quality samples and the room counters ----------------------------------------------------

def test_quality_is_sampled_into_the_store_and_counters_reach_metrics(sfu_factory):
    """With SFU_QUALITY_SAMPLE_S=1, every live participant gets quality rows (rtt from its receiver
    reports on our sender reports, bitrate of what it publishes) in the SQLite store; keyframe
    requests show in /metrics."""
    import sqlite3
    key = "rooms-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_QUALITY_SAMPLE_S": "1"})
    sfu.key, sfu.api = key, ControlAPI(sfu.base_url, key)

    async def scenario():
        rid = sfu.api.create_room(name="quality")["id"]
        async with contextlib.AsyncExitStack() as stack:
            a = await join(stack, sfu, rid, "qa", publish=True)
            b = await join(stack, sfu, rid, "qb", publish=True)
            ok = await until(lambda: a.frames_from(b.peer_id) >= 60 and b.frames_from(a.peer_id) >= 60, 30, 0.25)
            assert ok, diag(sfu, a, b)
            await asyncio.sleep(3)
            # What each receives of the other: aiortc publishes no simulcast, nothing is paused on loopback.
            status, listed = await sfu.api.acall("GET", f"/v1/rooms/{rid}/participants")
            assert status == 200, listed
            for p in participant_list(listed):
                other = b.peer_id if p["peer_id"] == a.peer_id else a.peer_id
                subs = p["subscriptions"]
                assert sorted(s["kind"] for s in subs) == ["audio", "video"], p
                for s in subs:
                    assert s["peer_id"] == other and not s["paused"] and s["spatial_layer"] is None, p
                    assert s["bitrate_bps"] > (100_000 if s["kind"] == "video" else 10_000), p
            return rid, {a.peer_id, b.peer_id}

    rid, peers = run(scenario())
    db = sqlite3.connect(f"file:{sfu.data_dir / 'sfu.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT participant_session_id, rtt_ms, bitrate_bps FROM quality_samples WHERE room_id = ?", (rid,)).fetchall()
    finally:
        db.close()
    by_peer: dict[str, list] = {}
    for peer, rtt, bitrate in rows:
        by_peer.setdefault(peer, []).append((rtt, bitrate))
    assert set(by_peer) == peers, rows
    for peer, samples in by_peer.items():
        assert len(samples) >= 2, (peer, samples)
        assert any(b and b > 50_000 for _, b in samples), (peer, samples)       # a publisher sends > 50 kbit/s
        assert any(r is not None and 0 <= r < 200 for r, _ in samples), (peer, samples)   # loopback RTT
    import urllib.request
    req = urllib.request.Request(sfu.base_url + "/metrics", headers={"Authorization": f"Bearer {key}"})
    metrics = urllib.request.urlopen(req, timeout=5).read().decode()
    sent = int(re.search(r"^sfu_keyframe_requests_total (\d+)$", metrics, re.M).group(1))
    assert sent >= 2, metrics      # each subscriber's first keyframe was asked for
    assert re.search(r"^sfu_live_rooms 1$", metrics, re.M), metrics
    assert re.search(r"^sfu_tracks_paused 0$", metrics, re.M), metrics
    assert re.search(r"^sfu_layer_switches_total 0$", metrics, re.M), metrics
    assert "# TYPE sfu_subscription_layer gauge" in metrics


# --- H.264 passthrough --------------------------------------------------------------------------

def test_h264_is_passed_through(server):
    """A publisher that offers only H.264 (libx264 in aiortc) is answered with H.264, and the
    subscriber gets an H.264 m-line and decodes every frame from the first keyframe on."""
    sfu = server

    async def scenario():
        failures_before = DECODE_FAILURES.count
        rid = sfu.api.create_room(name="h264")["id"]
        async with contextlib.AsyncExitStack() as stack:
            pub = await join(stack, sfu, rid, "h264-pub", video_codec="video/h264")
            sub = await join(stack, sfu, rid, "h264-sub", publish_audio=False, publish_video=False)
            await pub.publish()
            assert re.search(r"a=rtpmap:\d+ H264/90000", pub.publisher_answer), pub.publisher_answer
            assert "VP8" not in pub.publisher_answer
            ok = await until(lambda: sub.frames_from(pub.peer_id) >= 50, 30, 0.25)
            assert ok, "no H.264 frames decoded\n" + diag(sfu, pub, sub)
            video = [s for s in sdp_sections(sub.last_subscriber_offer) if s.kind == "video"]
            assert video and all(any("H264/90000" in l for l in s.lines) for s in video), sub.last_subscriber_offer
            assert DECODE_FAILURES.count == failures_before, f"{DECODE_FAILURES.count - failures_before} frames failed to decode"

    run(scenario())
