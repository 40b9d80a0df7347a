"""Hardening against hostile and broken clients (issue 19), against the real binary:

- development mode only on loopback, keys and secrets of at least 32 bytes, `/demo/join` mints
  patients by default;
- `/v1/echo` needs a join token outside development mode;
- stale authorization: a removed participant's token no longer joins, a join after the room closed
  (socket opened before) or after the token expired (between upgrade and join) is refused;
- a server-side mute that the muted client cannot undo;
- a chat flood is refused (`rate_limited`) and a client that keeps flooding is disconnected, while
  the other participant of the room keeps being served.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.request

import pytest
from websockets.asyncio.client import connect as ws_connect

from room_client import ControlAPI, RoomClient, RoomError, token_claims, until

TIMEOUT = 90


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def server(sfu_factory):
    key = "harden-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    sfu.key = key
    sfu.api = ControlAPI(sfu.base_url, key)
    return sfu


def exits_with_error(sfu_factory, env: dict[str, str], needle: str) -> str:
    """Starts `sfu serve` with `env`; it must exit non-zero within 10 s, saying `needle`."""
    p = sfu_factory(env=env, wait=False)
    try:
        code = p.proc.wait(timeout=10)
    except Exception:
        raise AssertionError(f"sfu did not refuse to start with {sorted(env)}:\n{p.log()}")
    log = p.log()
    assert code != 0, log
    assert needle in log, log
    return log


def test_development_mode_stays_on_loopback_and_secrets_are_long(sfu_factory):
    # No API key on a non-loopback address: refused (nothing is bound: it exits before listening).
    log = exits_with_error(sfu_factory, {"SFU_HTTP_HOST": "0.0.0.0"}, "SFU_API_KEY")
    assert "SFU_DEV=1" in log
    # Short keys and secrets are refused, and never echoed.
    short = "short-key-" + secrets.token_hex(4)
    log = exits_with_error(sfu_factory, {"SFU_API_KEY": short}, "at least 32 bytes")
    assert short not in log
    long_key = secrets.token_hex(16)
    exits_with_error(sfu_factory, {"SFU_API_KEY": long_key, "SFU_JWT_SECRET": "x" * 31}, "SFU_JWT_SECRET")
    # Webhooks need their own secret when an API key is set (the key would be handed to every receiver).
    exits_with_error(sfu_factory, {"SFU_API_KEY": long_key, "SFU_WEBHOOK_URLS": "http://127.0.0.1:9/hook"}, "SFU_WEBHOOK_SECRET")


def test_demo_join_mints_patients_unless_asked(sfu_factory):
    sfu = sfu_factory()  # development mode on loopback

    def demo(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(sfu.base_url + "/demo/join", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, got = demo({"room": "waiting-room", "name": "anyone"})
    assert status == 200, got
    assert token_claims(got["token"])["role"] == "patient"
    assert "record" not in token_claims(got["token"])["perms"]
    status, got = demo({"room": "waiting-room", "name": "dr", "role": "doctor"})
    assert status == 200 and token_claims(got["token"])["role"] == "doctor", got
    status, got = demo({"room": "waiting-room", "name": "x", "role": "admin"})
    assert status == 400 and got["error"]["code"] == "bad_request", got


async def first_messages(url: str, send: list[dict] | None = None, timeout: float = 5) -> tuple[list, int | None, str | None]:
    """Connects, sends `send`, collects messages until the server closes (or `timeout`)."""
    got = []
    async with ws_connect(url, open_timeout=5) as ws:
        for m in send or []:
            await ws.send(json.dumps(m))
        with contextlib.suppress(Exception):
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                got.append(json.loads(raw))
        return got, ws.close_code, ws.close_reason


def test_echo_needs_a_token_outside_development_mode(server):
    sfu, api = server, server.api
    base = sfu.base_url.replace("http://", "ws://") + "/v1/echo"

    async def scenario():
        got, code, reason = await first_messages(base)
        assert (code, reason) == (4401, "invalid_token"), (got, code, reason)
        assert got and got[0]["event"] == "error" and got[0]["data"]["code"] == "invalid_token", got
        forged = base + "?token=" + "e30.e30.AAAA"
        got, code, _ = await first_messages(forged)
        assert code == 4401, got
        # With a join token the endpoint answers (here: an offer it cannot use gets bad_offer, the socket stays open).
        rid = api.create_room()["id"]
        token = api.token(rid, "echo-user")["token"]
        got, code, _ = await first_messages(base + "?token=" + token,
                                            [{"event": "webrtc_offer", "data": {"target": "publisher", "sdp": "v=0\r\n"}}], timeout=2)
        assert code != 4401, (got, code)
        assert [m["data"]["code"] for m in got if m["event"] == "error"] == ["bad_offer"], got

    run(scenario())


def test_stale_authorization_is_refused(server):
    sfu, api = server, server.api

    async def scenario():
        rid = api.create_room()["id"]
        # A removed participant cannot come back with the same token; a token issued afterwards works.
        token = api.token(rid, "pt-removed")["token"]
        c = RoomClient(api.signal_url(token), name="removed", publish_audio=False, publish_video=False)
        await c.connect()
        await asyncio.sleep(1.1)  # the new token below must be issued in a later second than the removal
        status, _ = await api.acall("DELETE", f"/v1/rooms/{rid}/participants/pt-removed")
        assert status == 204
        assert await until(lambda: c.closed.is_set(), 5)
        await c.close()
        again = RoomClient(api.signal_url(token), name="again", publish_audio=False, publish_video=False)
        with pytest.raises(RoomError):
            await again.connect()
        await until(lambda: again.closed.is_set(), 5)
        assert (again.close_code, again.close_reason) == (4403, "token_revoked"), (again.close_code, again.close_reason)
        await again.close()
        await asyncio.sleep(1.1)
        fresh = RoomClient(api.signal_url(api.token(rid, "pt-removed")["token"]), name="fresh", publish_audio=False, publish_video=False)
        joined = await fresh.connect()
        assert joined["user_id"] == "pt-removed"
        await fresh.close()

        # Upgraded while the room was open, join_room after it closed: refused, the room is not made live again.
        rid2 = api.create_room()["id"]
        late = RoomClient(api.signal_url(api.token(rid2, "late")["token"]), name="late", publish_audio=False, publish_video=False)
        await late.open()
        api.ok("DELETE", f"/v1/rooms/{rid2}")
        with pytest.raises(RoomError):
            await late.connect()
        await until(lambda: late.closed.is_set(), 5)
        assert (late.close_code, late.close_reason) == (4409, "room_closed"), (late.close_code, late.close_reason)
        await late.close()
        status, participants = await api.acall("GET", f"/v1/rooms/{rid2}/participants")
        assert status == 200 and participants["participants"] == [], participants

        # A token that expires between the upgrade and join_room.
        short = RoomClient(api.signal_url(api.token(rid, "short", ttl_s=2)["token"]), name="short", publish_audio=False, publish_video=False)
        await short.open()
        await asyncio.sleep(2.5)
        with pytest.raises(RoomError):
            await short.connect()
        await until(lambda: short.closed.is_set(), 5)
        assert (short.close_code, short.close_reason) == (4401, "token_expired"), (short.close_code, short.close_reason)
        await short.close()

    run(scenario())
    assert sfu.proc.poll() is None


def test_a_server_mute_holds_against_the_client(server):
    sfu, api = server, server.api

    async def scenario():
        rid = api.create_room()["id"]
        pt = RoomClient(api.signal_url(api.token(rid, "pt")["token"]), name="pt", publish_video=False)
        dr = RoomClient(api.signal_url(api.token(rid, "dr", role="doctor")["token"]), name="dr", publish_video=False)
        try:
            await pt.connect()
            await dr.connect()
            await pt.publish()
            assert await until(lambda: dr.samples_from(pt.peer_id) > 4800, 15), "no audio from pt"
            status, _ = await api.acall("POST", f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio", "muted": True})
            assert status == 200
            since = len(pt.events)
            await pt.send("toggle_audio", {"enabled": True})
            err = await pt.wait_event("error", after=since, timeout=5)
            assert err["code"] == "muted_by_server", err
            await asyncio.sleep(1.0)
            n = dr.samples_from(pt.peer_id)
            await asyncio.sleep(1.5)
            assert dr.samples_from(pt.peer_id) == n, "audio forwarded although muted by the server"
            status, got = await api.acall("GET", f"/v1/rooms/{rid}/participants")
            tracks = [t for p in got["participants"] if p["user_id"] == "pt" for t in p["tracks"]]
            assert tracks and all(t["muted"] for t in tracks if t["kind"] == "audio"), got
            # The server lifts it: the client's own wish (on) holds again.
            status, _ = await api.acall("POST", f"/v1/rooms/{rid}/participants/pt/mute", {"kind": "audio", "muted": False})
            assert status == 200
            assert await until(lambda: dr.samples_from(pt.peer_id) > n + 4800, 10), "audio not back after the server unmute"
        finally:
            await pt.close()
            await dr.close()

    run(scenario())


def test_a_chat_flood_is_limited_and_the_room_keeps_working(server):
    sfu, api = server, server.api

    async def scenario():
        rid = api.create_room()["id"]
        flooder = RoomClient(api.signal_url(api.token(rid, "flooder")["token"]), name="flooder", publish_audio=False, publish_video=False)
        peer = RoomClient(api.signal_url(api.token(rid, "peer")["token"]), name="peer", publish_video=False)
        other = RoomClient(api.signal_url(api.token(rid, "other")["token"]), name="other", publish_video=False)
        try:
            await flooder.connect()
            await peer.connect()
            await other.connect()
            await peer.publish()
            assert await until(lambda: other.samples_from(peer.peer_id) > 4800, 15), "no audio between the others"
            since = len(peer.events)
            for i in range(600):
                with contextlib.suppress(Exception):
                    await flooder.send("send_message", {"message": f"spam {i}"})
            assert await until(lambda: flooder.closed.is_set(), 10), "the flooder was not disconnected"
            assert flooder.close_reason == "rate_limited" or any(
                e.get("code") == "rate_limited" for e in flooder.errors()), flooder.brief_events()[-5:]
            chats = peer.find_events("chat_message", after=since)
            # The burst (20) and what the rate allowed meanwhile got through, not 600.
            assert 10 <= len(chats) <= 60, len(chats)
            # The others are still served.
            n = other.samples_from(peer.peer_id)
            assert await until(lambda: other.samples_from(peer.peer_id) > n + 4800, 10), "audio stopped after the flood"
            since = len(other.events)
            await peer.send("send_message", {"message": "still here"})
            msg = await other.wait_event("chat_message", after=since, timeout=5)
            assert msg["message"] == "still here"
        finally:
            for c in (flooder, peer, other):
                await c.close()

    run(scenario())
    assert sfu.proc.poll() is None


def es256_token(private_key, claims: dict) -> str:
    """A JWT signed the way a backend with its own P-256 key pair signs (RFC 7518 3.4: R || S)."""
    import base64
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    signed = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    r, s = utils.decode_dss_signature(private_key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    return signed + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_es256_tokens_from_the_backends_own_key(sfu_factory, tmp_path):
    """SFU_JWT_PUBLIC_KEY (a PEM file here): tokens the backend signs with its private key join;
    a token signed with another key, or ES256 on a server without the key, does not; the server's
    own HS256 tokens keep working; a key that is not P-256 stops the start."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pem(k) -> bytes:
        return k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    backend, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwt.pem").write_bytes(pem(backend))
    (tmp_path / "p384.pem").write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    key = "es256-" + secrets.token_hex(16)
    exits_with_error(sfu_factory, {"SFU_API_KEY": key, "SFU_JWT_PUBLIC_KEY": str(tmp_path / "p384.pem")}, "P-256")
    exits_with_error(sfu_factory, {"SFU_API_KEY": key, "SFU_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")}, "SFU_JWT_PUBLIC_KEY")
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_JWT_PUBLIC_KEY": str(tmp_path / "jwt.pem")})
    api = ControlAPI(sfu.base_url, key)
    plain = sfu_factory(env={"SFU_API_KEY": key})
    plain_api = ControlAPI(plain.base_url, key)

    async def scenario():
        rid = api.create_room()["id"]
        now = int(time.time())
        claims = {"room": rid, "sub": "pt-es", "name": "ES", "role": "patient", "perms": ["publish", "subscribe"],
                  "iat": now, "exp": now + 600}
        c = RoomClient(api.signal_url(es256_token(backend, claims)), name="es256", publish_audio=False, publish_video=False)
        joined = await c.connect()
        assert joined["user_id"] == "pt-es" and joined["role"] == "patient", joined
        await c.close()
        hs = RoomClient(api.signal_url(api.token(rid, "pt-hs")["token"]), name="hs256", publish_audio=False, publish_video=False)
        assert (await hs.connect())["user_id"] == "pt-hs"
        await hs.close()
        for name, url in [("stranger", api.signal_url(es256_token(stranger, claims))),
                          ("no key configured", plain_api.signal_url(es256_token(backend, {**claims, "room": plain_api.create_room()["id"]})))]:
            bad = RoomClient(url, name=name, publish_audio=False, publish_video=False)
            with pytest.raises(RoomError):
                await bad.connect()
            await until(lambda: bad.closed.is_set(), 5)
            assert (bad.close_code, bad.close_reason) == (4401, "invalid_token"), (name, bad.close_code, bad.close_reason)
            await bad.close()

    run(scenario())
    assert sfu.proc.poll() is None and plain.proc.poll() is None


def test_idle_connections_are_closed(sfu_factory):
    """SFU_HTTP_IDLE_TIMEOUT_S=2: a TCP connection that sends nothing, one that stops in the middle
    of its request head, a keep-alive connection after its response, and a WebSocket that never answers the server's pings are closed within a few
    seconds; a joined client that is quiet but alive (its library answers pings) stays."""
    import base64
    import socket

    key = "idle-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_HTTP_IDLE_TIMEOUT_S": "2"})
    api = ControlAPI(sfu.base_url, key)
    host, port = sfu.base_url.split("//")[1].split(":")

    def closed_within(sock: socket.socket, seconds: float) -> float | None:
        """Seconds until the server closed `sock` (reads drained), or None."""
        start = time.monotonic()
        sock.settimeout(0.25)
        while time.monotonic() - start < seconds:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - start
            except socket.timeout:
                continue
            except ConnectionResetError:
                return time.monotonic() - start
        return None

    silent = socket.create_connection((host, int(port)))
    stalled = socket.create_connection((host, int(port)))
    stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    after = socket.create_connection((host, int(port)))
    after.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    rid = api.create_room()["id"]
    token = api.token(rid, "deaf")["token"]
    deaf = socket.create_connection((host, int(port)))
    deaf.sendall((f"GET /v1/signal?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    # The upgrade answer, then nothing from us: the pings (every 1 s) go unanswered.
    deaf.settimeout(5)
    head = deaf.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head

    async def quiet_client():
        c = RoomClient(api.signal_url(api.token(rid, "quiet")["token"]), name="quiet", publish_audio=False, publish_video=False)
        await c.connect()
        await asyncio.sleep(7)
        alive = not c.closed.is_set()
        await c.close()
        return alive

    results = {}
    import threading
    threads = [threading.Thread(target=lambda n=n, s=s: results.__setitem__(n, closed_within(s, 8)))
               for n, s in [("silent", silent), ("stalled head", stalled), ("after a response", after), ("deaf websocket", deaf)]]
    for t in threads:
        t.start()
    alive = run(quiet_client())
    for t in threads:
        t.join()
    for name, took in results.items():
        assert took is not None, f"{name}: still open after 8 s\n{sfu.log()}"
        assert took >= 1.0, f"{name}: closed after {took:.1f} s, before its idle time"
    assert alive, "a quiet client that answers pings was disconnected"
    for s in (silent, stalled, after, deaf):
        s.close()
    assert sfu.proc.poll() is None


def test_a_client_that_never_reads_is_disconnected(server):
    """A joined client that stops reading its socket while the room keeps talking to it (chat from
    eight others, its own in-limit events answered with errors) is disconnected once its outgoing queue
    is full (`slow_reader`), instead of growing the server's memory; the others stay connected and
    see it leave. It stays within every rate limit, so only the queue bound can end it."""
    import base64
    import os
    import socket

    sfu, api = server, server.api
    host, port = sfu.base_url.split("//")[1].split(":")
    rid = api.create_room(max_participants=10)["id"]

    def frame(obj: dict) -> bytes:
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    # The slow client: a tiny receive buffer, the 101 read and nothing else ever.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, int(port)))
    token = api.token(rid, "never-reads")["token"]
    slow.sendall((f"GET /v1/signal?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    slow.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += slow.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    slow.sendall(frame({"event": "join_room", "data": {}}))

    def present() -> set[str]:
        status, body = api.call("GET", f"/v1/rooms/{rid}/participants")
        assert status == 200, body
        items = body["participants"] if isinstance(body, dict) else body
        return {p["user_id"] for p in items}

    async def scenario():
        assert await until(lambda: "never-reads" in present(), 10), present()
        talkers = [RoomClient(api.signal_url(api.token(rid, f"talker-{i}")["token"]), name=f"talker-{i}",
                              publish_audio=False, publish_video=False) for i in range(8)]
        text = "x" * 4000
        sent, refused_writes, slow_open = 0, 0, True
        try:
            for t in talkers:
                await t.connect()
            since = [len(t.events) for t in talkers]
            t0 = time.monotonic()
            # Within the limits: 4 chats a second per talker (chat: 5/s), and from the slow client
            # 4 chats and 30 unknown events a second (events: 50/s), each unknown event answered.
            while time.monotonic() - t0 < 60 and "never-reads" in present():
                for t in talkers:
                    await t.send("send_message", {"message": text})
                if slow_open:
                    try:
                        slow.settimeout(0.5)
                        slow.sendall(frame({"event": "send_message", "data": {"message": text}}))
                        for _ in range(7):
                            slow.sendall(frame({"event": "no_such_event", "data": {}}))
                        sent += 8
                    except OSError:
                        refused_writes += 1
                        slow_open = False
                await asyncio.sleep(0.25)
            took = time.monotonic() - t0
            assert "never-reads" not in present(), f"still in the room after {took:.0f} s ({sent} events sent)"
            # Everyone else is still there and saw it leave.
            assert {f"talker-{i}" for i in range(8)} <= present()
            for t, s in zip(talkers, since):
                assert not t.closed.is_set()
                await t.wait_event("user_left", lambda d: d.get("user_id") == "never-reads", after=s, timeout=5)
            # And the room still carries chat.
            since0 = len(talkers[1].events)
            await talkers[0].send("send_message", {"message": "after"})
            assert (await talkers[1].wait_event("chat_message", after=since0, timeout=5))["message"] == "after"
            return took
        finally:
            for t in talkers:
                await t.close()

    took = run(scenario())
    # The server closed the slow client's connection: draining it ends in EOF or a reset.
    slow.settimeout(0.5)
    ended, t0 = False, time.monotonic()
    while time.monotonic() - t0 < 15 and not ended:
        try:
            ended = slow.recv(65536) == b""
        except socket.timeout:
            continue
        except ConnectionResetError:
            ended = True
    slow.close()
    assert ended, "the server did not close the slow client's socket"
    assert "does not read its socket" in sfu.log()
    print(f"slow reader disconnected after {took:.1f} s")
    assert sfu.proc.poll() is None
