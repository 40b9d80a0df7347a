"""Control API against the real server: rooms, join tokens, auth, and the error shape for bad input."""
import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import pytest

KEY = "test-api-key-0123456789-abcdefghijklmn"


def call(sfu, method, path, body=None, key=KEY, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(sfu.base_url + path, data=data, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, text


def fresh_postgres_url():
    """A new schema in the throwaway PostgreSQL of `make test`, as a URL whose search_path is it."""
    import glob
    import os
    import subprocess
    import uuid
    base = os.environ.get("SFU_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("SFU_TEST_POSTGRES_URL is not set: run `make test`, which starts a throwaway PostgreSQL")
    psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    schema = "e2e_" + uuid.uuid4().hex
    subprocess.run([psql, base, "-qc", f"CREATE SCHEMA {schema}"], check=True)
    return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, sfu_factory):
    env = {"SFU_API_KEY": KEY + ",second-key-abcdef-0123456789-abcdefgh", "SFU_ICE_SERVERS": "stun:stun.example.org:3478"}
    if request.param == "postgresql":
        env["SFU_DATABASE_URL"] = fresh_postgres_url()
    return sfu_factory(env=env)


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_room_lifecycle_and_tokens(api):
    status, room = call(api, "POST", "/v1/rooms", {"name": "Consultation 12", "max_participants": 3, "auto_record": True, "unknown": 1})
    assert status == 201, room
    assert room["name"] == "Consultation 12" and room["max_participants"] == 3 and room["auto_record"] is True
    assert room["empty_timeout_s"] == 300 and room["status"] == "open" and room["id"].startswith("rm_")
    rid = room["id"]
    status, listing = call(api, "GET", "/v1/rooms", key="second-key-abcdef-0123456789-abcdefgh")
    assert status == 200 and [r["id"] for r in listing["rooms"]] == [rid]
    status, got = call(api, "GET", f"/v1/rooms/{rid}")
    assert status == 200 and got["participants"] == []

    status, tok = call(api, "POST", f"/v1/rooms/{rid}/tokens", {"user_id": "dr-1", "name": "Dr One", "role": "doctor", "ttl_s": 120})
    assert status == 200, tok
    assert tok["signaling_url"].startswith(f"ws://127.0.0.1:{api.http_port}/v1/signal?token=")
    assert tok["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    header, payload, sig = tok["token"].split(".")
    assert json.loads(b64d(header)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(b64d(payload))
    assert claims["room"] == rid and claims["sub"] == "dr-1" and claims["name"] == "Dr One" and claims["role"] == "doctor"
    assert claims["perms"] == ["publish", "subscribe", "record"]
    assert abs(claims["exp"] - (time.time() + 120)) < 5
    # HS256 with the API secret (the first key): an app backend can verify and mint the same tokens.
    expected = hmac.new(KEY.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert b64d(sig) == expected

    status, tok = call(api, "POST", f"/v1/rooms/{rid}/tokens", {"user_id": "p-1", "role": "patient", "permissions": ["subscribe"]})
    assert status == 200 and json.loads(b64d(tok["token"].split(".")[1]))["perms"] == ["subscribe"]
    status, tok = call(api, "POST", f"/v1/rooms/{rid}/tokens", {"user_id": "o-1", "role": "observer"})
    assert status == 200 and json.loads(b64d(tok["token"].split(".")[1]))["perms"] == ["subscribe"]

    status, closed = call(api, "DELETE", f"/v1/rooms/{rid}")
    assert status == 200 and closed["status"] == "closed" and "closed_at" in closed
    status, listing = call(api, "GET", "/v1/rooms")
    assert listing["rooms"] == []
    status, err = call(api, "POST", f"/v1/rooms/{rid}/tokens", {"user_id": "late", "role": "patient"})
    assert status == 409 and err["error"]["code"] == "room_closed"


def test_composite_mode_starts_and_stops(api):
    status, room = call(api, "POST", "/v1/rooms", {})
    rid = room["id"]
    # The composite mode (issue 18, test_composite.py) records an empty room too: one file of the canvas.
    status, body = call(api, "POST", f"/v1/rooms/{rid}/recordings", {"mode": "composite", "layout": "speaker", "width": 320, "height": 180})
    assert status == 201 and body["mode"] == "composite" and body["layout"] == "speaker", body
    time.sleep(1.5)
    status, done = call(api, "POST", f"/v1/recordings/{body['id']}/stop")
    assert status == 200 and done["status"] == "completed", done
    assert [f["resolution"] for f in done["files"]] == ["320x180"], done


def bad_requests(rid):
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    return [
        # (method, path, body or raw bytes, key, expected status, expected code)
        ("GET", "/v1/rooms", None, None, 401, "unauthorized"),
        ("GET", "/v1/rooms", None, "wrong-key", 401, "unauthorized"),
        ("GET", "/v1/rooms", None, KEY + "x", 401, "unauthorized"),
        ("GET", "/v1/rooms", None, KEY[:-1], 401, "unauthorized"),
        ("POST", "/v1/rooms", {"name": "x"}, None, 401, "unauthorized"),
        ("DELETE", f"/v1/rooms/{rid}", None, "", 401, "unauthorized"),
        ("POST", "/v1/rooms", b"{not json", KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", b"[1, 2, 3]", KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", b'"a string"', KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"name": 42}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"name": "x" * 201}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_participants": "six"}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_participants": 0}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_participants": 1000}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_participants": 2.5}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_participants": True}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"empty_timeout_s": -1}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"max_duration_s": 0}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"auto_record": "yes"}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", {"auto_record": 1}, KEY, 400, "bad_request"),
        ("POST", "/v1/rooms", big, KEY, 413, "body_too_large"),
        ("GET", "/v1/rooms/rm_doesnotexist", None, KEY, 404, "not_found"),
        ("GET", "/v1/rooms/" + "a" * 100, None, KEY, 404, "not_found"),
        ("GET", "/v1/rooms/%27%3B%20DROP%20TABLE%20rooms", None, KEY, 404, "not_found"),
        ("DELETE", "/v1/rooms/rm_doesnotexist", None, KEY, 404, "not_found"),
        ("POST", "/v1/rooms/rm_doesnotexist/tokens", {"user_id": "u", "role": "doctor"}, KEY, 404, "not_found"),
        ("POST", f"/v1/rooms/{rid}/tokens", None, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"role": "doctor"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "", "role": "doctor"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": 7, "role": "doctor"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "nurse"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "permissions": ["record"]}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "permissions": ["fly"]}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "permissions": "publish"}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "ttl_s": 0}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "ttl_s": 10**9}, KEY, 400, "bad_request"),
        ("POST", f"/v1/rooms/{rid}/tokens", {"user_id": "u", "role": "patient", "ttl_s": "1h"}, KEY, 400, "bad_request"),
    ]


def test_bad_requests_get_4xx_with_the_error_shape(api):
    status, room = call(api, "POST", "/v1/rooms", {"name": "target"})
    assert status == 201
    cases = bad_requests(room["id"])
    assert len(cases) >= 30
    for method, path, body, key, want_status, want_code in cases:
        raw = body if isinstance(body, bytes) else None
        status, got = call(api, method, path, None if raw is not None else body, key=key, raw=raw)
        assert status == want_status, (method, path, str(body)[:80], key, status, got)
        assert isinstance(got, dict) and set(got) == {"error"}, (method, path, got)
        assert got["error"]["code"] == want_code and isinstance(got["error"]["message"], str) and got["error"]["message"]
    # Still up, and the good room untouched.
    assert api.proc.poll() is None
    status, got = call(api, "GET", f"/v1/rooms/{room['id']}")
    assert status == 200 and got["name"] == "target"


def test_development_key_is_generated_and_printed(sfu):
    log = sfu.log()
    assert "development API key" in log
    key = log.split("api_key=")[1].split()[0]
    status, body = call(sfu, "GET", "/v1/rooms", key=key)
    assert status == 200 and body == {"rooms": [], "next_cursor": None}
    status, body = call(sfu, "GET", "/v1/rooms", key="guess")
    assert status == 401


def test_rooms_survive_a_restart_in_sqlite(sfu_factory, tmp_path):
    a = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_DATA_DIR": str(tmp_path / "shared")})
    status, room = call(a, "POST", "/v1/rooms", {"name": "persisted"})
    assert status == 201
    assert a.terminate() == 0
    b = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_DATA_DIR": str(tmp_path / "shared")})
    status, got = call(b, "GET", f"/v1/rooms/{room['id']}")
    assert status == 200 and got["name"] == "persisted"


def openapi_operations():
    """(method, path) pairs from docs/openapi.yaml (paths at 2 spaces, methods at 4)."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
    section = text.split("\npaths:\n", 1)[1]
    ops, path = [], None
    for line in section.splitlines():
        m = re.match(r"^  (/[^:]*):$", line)
        if m:
            path = m.group(1)
            continue
        m = re.match(r"^    (get|post|delete|put|patch):", line)
        if m and path:
            ops.append((m.group(1).upper(), path))
    return ops


def test_openapi_document_matches_the_routes(api):
    status, room = call(api, "POST", "/v1/rooms", {})
    ops = openapi_operations()
    assert len(ops) >= 14
    documented = set()
    for method, path in ops:
        concrete = path.replace("{id}", room["id"]).replace("{user_id}", "u").replace("{file_id}", "f")
        body = {"user_id": "u", "role": "patient"} if method == "POST" else None
        status, got = call(api, method, concrete, body)
        # A documented route exists: never the router's 404 for an unknown path, never 405. A 404 must
        # be the handler's own, naming what it did not find (the ids here are made up for recordings).
        assert status not in (404, 405) or (isinstance(got, dict) and got.get("error", {}).get("code") == "not_found"
                                             and any(w in got["error"]["message"] for w in ("room", "recording", "snapshot"))), (method, path, status, got)
        documented.add((method, path))
    # And the PROTOCOL.md routes are all documented.
    for op in [("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/v1/rooms"), ("GET", "/v1/rooms"),
               ("GET", "/v1/rooms/{id}"), ("DELETE", "/v1/rooms/{id}"), ("POST", "/v1/rooms/{id}/tokens"),
               ("GET", "/v1/rooms/{id}/participants"), ("DELETE", "/v1/rooms/{id}/participants/{user_id}"),
               ("POST", "/v1/rooms/{id}/participants/{user_id}/mute"), ("POST", "/v1/rooms/{id}/recordings"),
               ("GET", "/v1/recordings"), ("GET", "/v1/recordings/{id}"), ("POST", "/v1/recordings/{id}/stop"),
               ("GET", "/v1/recordings/{id}/files/{file_id}")]:
        assert op in documented, op


def test_sessions_tell_who_was_there_and_why_each_left(api):
    """`GET /v1/rooms/{id}/sessions` (issue 23): every session of a room, the closed room included,
    with a leave reason for each way a session ends: `leave_room` (left), a socket closed without it
    (connection_lost), the API's removal (removed), the same user joining again (replaced), the room's
    close (room_closed). SQLite and PostgreSQL."""
    import asyncio
    from room_client import ControlAPI, RoomClient

    control = ControlAPI(f"http://127.0.0.1:{api.http_port}", KEY)
    rid = control.create_room(name="history")["id"]
    url = lambda user: control.token(rid, user, role="patient", name=user.upper())["signaling_url"]  # noqa: E731

    async def sessions_until(pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            status, got = await asyncio.to_thread(call, api, "GET", f"/v1/rooms/{rid}/sessions")
            assert status == 200, (status, got)
            if pred(got["sessions"]) or time.monotonic() > deadline:
                return got["sessions"]
            await asyncio.sleep(0.2)

    async def scenario():
        peers = {}
        clients = {u: RoomClient(url(u), name=u, publish_audio=False, publish_video=False) for u in ("a", "b", "c", "d", "e")}
        for u, c in clients.items():
            peers[u] = (await c.connect())["peer_id"]
        # While everyone is in: five open sessions, no leave time or reason yet.
        open_ = await sessions_until(lambda s: len(s) == 5)
        assert [(s["user_id"], s["peer_id"], s["left_at"], s["leave_reason"]) for s in open_] == [
            (u, peers[u], None, None) for u in "abcde"], open_
        assert all(s["duration_ms"] >= 0 and s["role"] == "patient" and s["name"] == s["user_id"].upper() for s in open_), open_
        assert await clients["a"].leave()
        await clients["b"].close()                       # no leave_room: the socket just goes
        status, _ = await asyncio.to_thread(call, api, "DELETE", f"/v1/rooms/{rid}/participants/c")
        assert status == 204
        d2 = RoomClient(url("d"), name="d2", publish_audio=False, publish_video=False)
        peers["d2"] = (await d2.connect())["peer_id"]    # replaces d's first connection
        await sessions_until(lambda s: sum(x["left_at"] is not None for x in s) == 4)
        status, _ = await asyncio.to_thread(call, api, "DELETE", f"/v1/rooms/{rid}")
        assert status == 200
        final = await sessions_until(lambda s: all(x["left_at"] is not None for x in s))
        for c in [*clients.values(), d2]:
            await c.close()
        return peers, final

    peers, final = asyncio.run(asyncio.wait_for(scenario(), 60))
    got = [(s["user_id"], s["peer_id"], s["leave_reason"]) for s in final]
    assert got == [("a", peers["a"], "left"), ("b", peers["b"], "connection_lost"), ("c", peers["c"], "removed"),
                   ("d", peers["d"], "replaced"), ("e", peers["e"], "room_closed"), ("d", peers["d2"], "room_closed")], final
    for s in final:
        joined = time.mktime(time.strptime(s["joined_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        left = time.mktime(time.strptime(s["left_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        # Whole seconds from the timestamps, milliseconds in duration_ms: within a second.
        assert abs((left - joined) * 1000 - s["duration_ms"]) <= 1000 and s["duration_ms"] >= 0, s
    # The closed room keeps its history; an unknown room is a 404.
    assert call(api, "GET", f"/v1/rooms/{rid}")[1]["status"] == "closed"
    status, got = call(api, "GET", "/v1/rooms/rm_00000000000000/sessions")
    assert status == 404 and got["error"]["code"] == "not_found", got
