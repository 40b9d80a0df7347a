"""Webhooks against a real local HTTP receiver: signed bodies, retried after a 500."""
import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from test_control_api import KEY, call

# Webhooks are signed with a secret of their own, never the API key (a receiver would learn it).
HOOK_SECRET = "webhook-secret-0123456789-abcdefghijklmnop"


class Receiver:
    """An HTTP server on loopback that answers the first `fail_first` POSTs with 500."""

    def __init__(self, fail_first=0, fail_status=500):
        self.received = []  # (headers, body bytes, status answered)
        self.fail_first = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = fail_status if len(outer.received) < outer.fail_first else 200
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)
        return self.received

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver(fail_first=2)
    yield r
    r.close()


def test_signed_events_and_retry_after_500(sfu_factory, receiver):
    sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": receiver.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET})
    status, room = call(sfu, "POST", "/v1/rooms", {"name": "hooked"})
    assert status == 201
    got = receiver.wait(3)
    # Two 500s, then the same delivery again, accepted.
    assert [s for _, _, s in got[:3]] == [500, 500, 200]
    bodies = [b for _, b, _ in got[:3]]
    assert bodies[0] == bodies[1] == bodies[2]
    headers, body, _ = got[2]
    event = json.loads(body)
    assert event["event"] == "room_started" and event["data"]["room_id"] == room["id"] and event["data"]["name"] == "hooked"
    assert headers["x-sfu-event"] == "room_started"
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-sfu-signature"], expected)
    assert headers["x-sfu-signature"] != "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-sfu-signature"] != "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()

    status, _ = call(sfu, "DELETE", f"/v1/rooms/{room['id']}")
    assert status == 200
    got = receiver.wait(4)
    finished = json.loads(got[3][1])
    assert got[3][2] == 200 and finished["event"] == "room_finished" and finished["data"]["room_id"] == room["id"]


def test_a_refused_delivery_is_given_up_at_once(sfu_factory):
    """A 4xx other than 408/429 is the receiver saying it will never take that delivery: it is not
    retried (it would hold back every later event to that URL for a day); the next event arrives."""
    r = Receiver(fail_first=1, fail_status=400)
    try:
        sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": r.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET})
        status, room = call(sfu, "POST", "/v1/rooms", {"name": "refused"})
        assert status == 201
        assert [s for _, _, s in r.wait(1)] == [400]
        status, _ = call(sfu, "DELETE", f"/v1/rooms/{room['id']}")
        got = r.wait(2)
        assert [(json.loads(b)["event"], s) for _, b, s in got] == [("room_started", 400), ("room_finished", 200)]
        time.sleep(1.5)
        assert len(r.received) == 2, "the refused delivery was tried again"
        _, metrics = call(sfu, "GET", "/metrics")
        assert "sfu_webhooks_failed_total 1\n" in str(metrics) and "sfu_webhooks_pending 0\n" in str(metrics), metrics
    finally:
        r.close()


def test_dead_receiver_does_not_block_the_api(sfu_factory):
    # Nothing listens on this port: deliveries fail and are retried in the background.
    sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": "http://127.0.0.1:9/hook", "SFU_WEBHOOK_SECRET": HOOK_SECRET})
    started = time.monotonic()
    for i in range(5):
        status, _ = call(sfu, "POST", "/v1/rooms", {"name": f"r{i}"})
        assert status == 201
    assert time.monotonic() - started < 3


def test_bad_webhook_url_is_a_config_error(sfu_factory):
    p = sfu_factory(env={"SFU_WEBHOOK_URLS": "ftp://x"}, wait=False)
    assert p.proc.wait(timeout=10) != 0
    assert "SFU_WEBHOOK_URLS" in p.log()


def test_empty_room_closes_after_its_timeout(sfu_factory):
    r = Receiver(fail_first=0)
    try:
        sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": r.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET})
        status, room = call(sfu, "POST", "/v1/rooms", {"empty_timeout_s": 1})
        assert status == 201
        got = r.wait(2, timeout=10)
        events = [json.loads(b) for _, b, _ in got]
        assert [e["event"] for e in events] == ["room_started", "room_finished"]
        assert events[1]["data"]["reason"] == "empty timeout"
        status, closed = call(sfu, "GET", f"/v1/rooms/{room['id']}")
        assert closed["status"] == "closed" and closed["close_reason"] == "empty timeout"
    finally:
        r.close()


def test_participant_events_and_session_rows(sfu_factory):
    """A participant joining and leaving: participant_joined/left webhooks (signed), the live
    participant in GET /v1/rooms/{id}, and the session row with its leave reason afterwards; an
    empty room then closes on its timeout and its last participant is disconnected when it closes."""
    import asyncio
    from room_client import ControlAPI, RoomClient

    r = Receiver(fail_first=0)
    try:
        sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": r.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET})
        api = ControlAPI(sfu.base_url, KEY)
        room = api.create_room(name="consult", empty_timeout_s=2)
        token = api.token(room["id"], "dr-1", role="doctor", name="Dr One")

        async def scenario():
            async with RoomClient(token["signaling_url"], publish_audio=False, publish_video=False) as c:
                joined = await c.connect()
                status, live = call(sfu, "GET", f"/v1/rooms/{room['id']}")
                assert status == 200 and [(p["user_id"], p["peer_id"], p["role"]) for p in live["participants"]] == [
                    ("dr-1", joined["peer_id"], "doctor")], live
                assert await c.leave()
                return joined["peer_id"]

        peer_id = asyncio.run(asyncio.wait_for(scenario(), 30))
        got = r.wait(4, timeout=15)
        events = [(json.loads(b), h) for h, b, _ in got]
        names = [e["event"] for e, _ in events]
        assert names[:3] == ["room_started", "participant_joined", "participant_left"], names
        joined_ev, headers = events[1]
        assert joined_ev["data"] == {**joined_ev["data"], "room_id": room["id"], "user_id": "dr-1", "peer_id": peer_id,
                                     "name": "Dr One", "role": "doctor"}
        body = got[1][1]
        assert headers["x-sfu-signature"] == "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        left_ev = events[2][0]
        assert left_ev["data"]["peer_id"] == peer_id and left_ev["data"]["reason"] == "left"
        # The room is empty again: it closes after its 2 s timeout, counted from the leave.
        assert names[3:4] == ["room_finished"] or json.loads(r.wait(4, timeout=10)[3][1])["event"] == "room_finished"
        status, closed = call(sfu, "GET", f"/v1/rooms/{room['id']}")
        assert closed["status"] == "closed" and closed["close_reason"] == "empty timeout", closed
    finally:
        r.close()


def test_recording_events(sfu_factory):
    """recording_started and recording_finished (with the PROTOCOL.md metadata) for a recording
    started and stopped through the API while a participant publishes."""
    import asyncio
    from room_client import ControlAPI, RoomClient

    r = Receiver(fail_first=0)
    try:
        sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": r.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET})
        api = ControlAPI(sfu.base_url, KEY)
        room = api.create_room(name="recorded")

        async def scenario():
            async with RoomClient(api.token(room["id"], "dr-rec", role="doctor")["signaling_url"]) as c:
                await c.connect()
                await c.publish()
                await asyncio.sleep(1)
                rec = await asyncio.to_thread(api.ok, "POST", f"/v1/rooms/{room['id']}/recordings", {"mode": "tracks"}, expect=(201,))
                await asyncio.sleep(3)
                done = await asyncio.to_thread(api.ok, "POST", f"/v1/recordings/{rec['id']}/stop", {})
                return rec, done

        rec, done = asyncio.run(asyncio.wait_for(scenario(), 40))
        assert done["status"] == "completed" and len(done["files"]) == 1, done
        deadline = time.monotonic() + 15
        events = []
        while time.monotonic() < deadline:
            events = [json.loads(b) for _, b, _ in r.received]
            if any(e["event"] == "recording_finished" for e in events):
                break
            time.sleep(0.1)
        started = next(e for e in events if e["event"] == "recording_started")
        assert started["data"]["recording_id"] == rec["id"] and started["data"]["room_id"] == room["id"]
        finished = next(e for e in events if e["event"] == "recording_finished")
        data = finished["data"]
        assert data["id"] == rec["id"] and data["status"] == "completed" and data["storage"] == "local"
        assert data["duration_ms"] > 2500
        f = data["files"][0]
        assert f["user_id"] == "dr-rec" and f["format"] == "webm" and f["video_codec"] == "vp8" and f["audio_codec"] == "opus"
        assert f["size_bytes"] > 10_000 and f["track_kinds"] == ["video", "audio"] and f["resolution"] == "320x240"
        headers, body, _ = next((h, b, s) for h, b, s in r.received if json.loads(b)["event"] == "recording_finished")
        assert headers["x-sfu-signature"] == "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    finally:
        r.close()


DOWN_S = 60   # how long the receiver is down (issue 24's acceptance)


class FlakyReceiver:
    """A receiver on a fixed loopback port that can be taken down (connection refused) and back up."""

    def __init__(self):
        self.received = []  # (headers, body bytes, monotonic time)
        self.server = None
        probe = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        self.port = probe.server_address[1]
        probe.server_close()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.up()

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)
        return self.received

    def up(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def verify(headers: dict, body: bytes) -> int:
    """Checks both signatures; returns the delivery's signed time."""
    parts = dict(p.split("=", 1) for p in headers["sfu-signature"].split(","))
    t = parts["t"]
    expected = hmac.new(HOOK_SECRET.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), headers
    assert headers["x-sfu-signature"] == "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return int(t)


def test_outbox_survives_a_dead_receiver_and_a_killed_server(sfu_factory, sfu_bin):
    """The receiver is down for 60 s; meanwhile events happen (rooms opened and closed, a participant
    joins and leaves) and the server is SIGKILLed. Once both are back every event arrives, exactly
    once after de-duplication by id (a repeat has the same body), with valid signatures (over the
    attempt's time and the body, the time within the documented 5-minute window), and each room's
    events in the order they happened."""
    import asyncio
    from conftest import SFUProcess
    from room_client import ControlAPI, RoomClient

    r = FlakyReceiver()
    env = {"SFU_API_KEY": KEY, "SFU_WEBHOOK_URLS": r.url, "SFU_WEBHOOK_SECRET": HOOK_SECRET}
    again = None
    try:
        sfu = sfu_factory(env=env)
        api = ControlAPI(sfu.base_url, KEY)
        first = api.create_room(name="before")["id"]
        assert [json.loads(b)["event"] for _, b, _ in r.wait_for(1, 10)] == ["room_started"]
        r.down()
        went_down = time.monotonic()
        expected = [(first, "room_finished")]
        api.ok("DELETE", f"/v1/rooms/{first}")
        rooms = [api.create_room(name=f"during-{i}")["id"] for i in range(3)]
        expected += [(rid, "room_started") for rid in rooms]

        async def visit(rid):
            async with RoomClient(api.token(rid, "pat-1", role="patient")["signaling_url"], publish_audio=False, publish_video=False) as c:
                await c.connect()
                await c.send("send_message", {"message": "hello"})
                await c.wait_event("chat_message", timeout=5)
                assert await c.leave()

        asyncio.run(asyncio.wait_for(visit(rooms[1]), 30))
        expected += [(rooms[1], "participant_joined"), (rooms[1], "chat_message"), (rooms[1], "participant_left")]
        api.ok("DELETE", f"/v1/rooms/{rooms[1]}")
        api.ok("DELETE", f"/v1/rooms/{rooms[0]}")
        expected += [(rooms[1], "room_finished"), (rooms[0], "room_finished")]
        # Everything above is written (the API answered) but not delivered: the receiver is down.
        time.sleep(2)
        assert len(r.received) == 1
        sfu.proc.kill()
        sfu.proc.wait(10)
        sfu.log_path.rename(sfu.data_dir / "sfu-first.log")
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - went_down) - 10))
        again = SFUProcess(sfu_bin, sfu.data_dir, env)
        again.wait_ready()
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - went_down)))
        r.up()
        came_back = time.monotonic()

        def complete():
            seen = {(json.loads(b)["data"].get("room_id"), json.loads(b)["event"]) for _, b, _ in r.received}
            return all(e in seen for e in expected)

        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not complete():
            time.sleep(0.2)
        assert complete(), [json.loads(b)["event"] for _, b, _ in r.received]
        took = time.monotonic() - came_back

        by_id: dict[str, bytes] = {}
        order: list[tuple[str, str]] = []
        for headers, body, _ in r.received:
            t = verify(headers, body)
            assert abs(time.time() - t) < 300, t
            event = json.loads(body)
            assert headers["x-sfu-delivery"] == event["id"] and headers["x-sfu-event"] == event["event"]
            if event["id"] in by_id:
                assert by_id[event["id"]] == body, "a repeat delivery carries the same body"
                continue
            by_id[event["id"]] = body
            order.append((event["data"].get("room_id"), event["event"]))
        # Exactly once: one id per event that happened.
        for e in expected + [(first, "room_started")]:
            assert order.count(e) == 1, (e, order)
        # Each room's events in the order they happened.
        for rid in [first] + rooms:
            mine = [kind for room_id, kind in order if room_id == rid]
            want = [kind for room_id, kind in [(first, "room_started")] + expected if room_id == rid]
            assert [k for k in mine if k in want] == want, (rid, mine, want)
        print(f"{len(by_id)} events ({len(r.received)} deliveries) arrived {took:.1f} s after the receiver came back")
        # Nothing is left in the outbox.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "sfu_webhooks_pending 0\n" not in str(call(again, "GET", "/metrics")[1]):
            time.sleep(0.2)
        assert "sfu_webhooks_pending 0\n" in str(call(again, "GET", "/metrics")[1])
    finally:
        r.down()
        if again is not None:
            again.kill()
