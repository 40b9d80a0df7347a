"""TURN credentials (issue 22): with `SFU_TURN_URLS` and `SFU_TURN_SECRET` the server hands every
user time-limited TURN credentials in the scheme coturn checks with `use-auth-secret` (username
`<expiry>:<user_id>`, credential base64(HMAC-SHA1(secret, username))), in the token response and in
`joined_room.ice_servers`. The server is not a TURN server; these tests run a real coturn (Debian
`coturn`, scripts/install-deps.sh) with the same secret.

- `test_coturn_accepts_the_servers_credentials_only`: coturn allocates a relay with the credentials
  from the token response (aioice's TURN client) and refuses a tampered credential, another user's
  credential under this username, and an expired one signed with the right secret;
- `test_relay_only_call_through_coturn`: a Chromium in a network namespace whose UDP and TCP to the
  server's media port are dropped (nftables), with `iceTransportPolicy: "relay"` (`&relay=1`), and an
  aiortc participant on the host: video flows both ways through coturn with the credentials of
  `joined_room`, and the page's selected candidate pairs are relayed.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse

import pytest

from conftest import free_port
from netns_util import Chromium, Namespace, chromium_pool
from room_client import ControlAPI, RoomClient, until
from test_simulcast import wait_joined, page_stats

SECRET = "coturn-shared-secret-" + secrets.token_hex(16)


def rest_credential(username: str, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def stun_binding_answered(host: str, port: int) -> bool:
    """A STUN Binding request (RFC 5389) to host:port over UDP is answered (coturn needs no auth for it)."""
    tid = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + tid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(request, (host, port))
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    return len(data) >= 20 and data[8:20] == tid and struct.unpack("!H", data[:2])[0] == 0x0101


@contextlib.contextmanager
def coturn(host: str, tmp_path):
    """coturn on host:port (UDP and TCP), `use-auth-secret` with SECRET, relays on `host`."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("coturn's turnserver is needed (scripts/install-deps.sh test installs coturn)")
    port = free_port(socket.SOCK_DGRAM)
    relay_base = 49152 + secrets.randbelow(8000) * 2
    log = tmp_path / "coturn.log"
    cmd = [binary, "-n", f"--listening-ip={host}", f"--listening-port={port}", f"--relay-ip={host}",
           "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=sfu.test",
           "--no-tls", "--no-dtls", "--no-cli", "--no-stun-backward-compatibility", "--allow-loopback-peers",
           f"--min-port={relay_base}", f"--max-port={relay_base + 200}", f"--log-file={log}", "--simple-log",
           "--pidfile=" + str(tmp_path / "coturn.pid"), "--userdb=" + str(tmp_path / "coturn.db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not stun_binding_answered(host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise AssertionError(f"coturn did not come up on {host}:{port} (exit {proc.poll()}):\n{text}")
            time.sleep(0.1)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def allocate(host: str, port: int, username: str, credential: str) -> tuple[bool, str]:
    """A TURN allocation with these long-term credentials (aioice's TURN client): (ok, what happened)."""
    from aioice.turn import create_turn_endpoint

    try:
        transport, _ = await asyncio.wait_for(create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=(host, port), username=username, password=credential,
            lifetime=600), timeout=10)
    except Exception as e:  # aioice raises TransactionFailed (401/438...) or a timeout
        return False, f"{type(e).__name__}: {e}"
    relayed = transport.get_extra_info("sockname")
    transport.close()
    return True, f"relayed {relayed}"


def test_coturn_accepts_the_servers_credentials_only(sfu_factory, tmp_path):
    key = "turn-" + secrets.token_hex(16)
    with coturn("127.0.0.1", tmp_path) as (port, log):
        urls = f"turn:127.0.0.1:{port}?transport=udp,turn:127.0.0.1:{port}?transport=tcp"
        sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_TURN_URLS": urls, "SFU_TURN_SECRET": SECRET,
                               "SFU_TURN_TTL_S": "600", "SFU_ICE_SERVERS": "stun:127.0.0.1:3478"})
        api = ControlAPI(f"http://127.0.0.1:{sfu.http_port}", key)
        room = api.create_room(name="turn")["id"]
        before = int(time.time())
        token = api.token(room, "pat-1")
        servers = token["ice_servers"]
        assert servers[0] == {"urls": ["stun:127.0.0.1:3478"]}, servers
        turn = servers[1]
        assert turn["urls"] == urls.split(","), servers
        expiry, user = turn["username"].split(":", 1)
        assert user == "pat-1" and before + 600 <= int(expiry) <= int(time.time()) + 600, turn
        assert turn["credential"] == rest_credential(turn["username"]), turn

        async def run():
            ok, what = await allocate("127.0.0.1", port, turn["username"], turn["credential"])
            assert ok, f"coturn refused the server's credentials: {what}\n{log.read_text(errors='replace')[-2000:]}"
            tampered = turn["credential"][:-2] + ("AA" if not turn["credential"].endswith("AA=") else "BB")
            ok, what = await allocate("127.0.0.1", port, turn["username"], tampered)
            assert not ok, f"a tampered credential was accepted: {what}"
            # The credential of pat-1 under another user's name.
            ok, what = await allocate("127.0.0.1", port, f"{expiry}:pat-2", turn["credential"])
            assert not ok, f"a credential for another username was accepted: {what}"
            # Correctly signed, but expired a minute ago.
            old = f"{int(time.time()) - 60}:pat-1"
            ok, what = await allocate("127.0.0.1", port, old, rest_credential(old))
            assert not ok, f"an expired credential was accepted: {what}"
            # And the same signature with a future expiry works (the secret is the only key).
            fresh = f"{int(time.time()) + 60}:pat-1"
            ok, what = await allocate("127.0.0.1", port, fresh, rest_credential(fresh))
            assert ok, what

        asyncio.run(run())

        # joined_room carries the same kind of entry, for the joining user.
        async def joined():
            async with RoomClient(token["signaling_url"], name="p", publish_audio=False, publish_video=False) as c:
                info = await c.connect()
                return info["ice_servers"]

        got = asyncio.run(joined())
        assert got[0] == {"urls": ["stun:127.0.0.1:3478"]} and got[1]["username"].endswith(":pat-1"), got
        assert got[1]["credential"] == rest_credential(got[1]["username"]), got


SELECTED_PAIRS = """
const done = arguments[arguments.length - 1];
const out = {};
const pcs = {publisher: sfuDemo.client.publisher, subscriber: sfuDemo.client.subscriber};
Promise.all(Object.entries(pcs).map(([name, pc]) => pc ? pc.getStats().then((r) => {
  const cands = {}, pairs = {}; let selected = null;
  r.forEach((s) => {
    if (s.type === 'local-candidate' || s.type === 'remote-candidate') cands[s.id] = s;
    if (s.type === 'candidate-pair') pairs[s.id] = s;
    if (s.type === 'transport' && s.selectedCandidatePairId) selected = s.selectedCandidatePairId;
  });
  const p = pairs[selected];
  out[name] = p ? {local: cands[p.localCandidateId] && cands[p.localCandidateId].candidateType,
                   relay: cands[p.localCandidateId] && cands[p.localCandidateId].relayProtocol,
                   remote: cands[p.remoteCandidateId] && (cands[p.remoteCandidateId].address || cands[p.remoteCandidateId].ip),
                   received: p.bytesReceived, sent: p.bytesSent} : null;
}) : null)).then(() => done(out), (e) => done({error: String(e)}));
"""


def test_relay_only_call_through_coturn(sfu_factory, tmp_path):
    key = "turn-" + secrets.token_hex(16)
    ns = Namespace("sfuturn")
    try:
        with coturn(ns.host_ip, tmp_path) as (port, log), chromium_pool(tmp_path) as chromiums:
            sfu_env_urls = f"turn:{ns.host_ip}:{port}?transport=udp"
            # The server on the host side of the veth, handing out credentials for coturn there.
            sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_HTTP_HOST": ns.host_ip, "SFU_MEDIA_HOST": ns.host_ip,
                                   "SFU_TURN_URLS": sfu_env_urls, "SFU_TURN_SECRET": SECRET}, wait=False)
            base = f"http://{ns.host_ip}:{sfu.http_port}"
            deadline = time.monotonic() + 20
            while not _healthy(base):
                assert time.monotonic() < deadline and sfu.proc.poll() is None, f"sfu not healthy on {base}\n{sfu.log()[-3000:]}"
                time.sleep(0.2)
            # The namespace can reach the server's HTTP port and coturn, not the media port: no
            # direct path, whatever ICE would try.
            rules = "\n".join([
                "table inet turntest {",
                "  chain out {",
                "    type filter hook output priority 0; policy accept;",
                f"    ip daddr {ns.host_ip} udp dport {sfu.media_port} counter drop",
                f"    ip daddr {ns.host_ip} tcp dport {sfu.media_port} counter drop",
                "  }",
                "}"])
            (tmp_path / "turntest.nft").write_text(rules + "\n")
            ns.exec("nft", "-f", str(tmp_path / "turntest.nft"))
            api = ControlAPI(base, key)
            room = api.create_room(name="relay")["id"]
            page = chromiums("relayed", netns=ns, secure_origins=[base])
            page_token = api.token(room, "pat-relay")["token"]
            page.open(f"{base}/?token={urllib.parse.quote(page_token)}&relay=1")
            page_peer = wait_joined(page)

            async def run():
                signal = api.token(room, "dr-host", role="doctor")["signaling_url"]
                async with RoomClient(signal, name="doctor") as doctor:
                    await doctor.connect()
                    await doctor.publish()
                    # aiortc decodes the page's video, and the page decodes aiortc's.
                    ok = await until(lambda: doctor.frames_from(page_peer) >= 30, 60)
                    assert ok, f"aiortc decoded {doctor.frames_from(page_peer)} frames from the relayed page; " \
                               f"coturn log:\n{log.read_text(errors='replace')[-2000:]}"

                    def page_decoded() -> int:
                        stats = page_stats(page)
                        return max((s.get("framesDecoded", 0) for s in stats
                                    if s.get("peer_id") == doctor.peer_id and s.get("kind") == "video"), default=0)
                    ok = await until_async(lambda: page_decoded() >= 30, 60)
                    assert ok, f"the relayed page decoded {page_decoded()} frames from aiortc"
                    pairs = page.execute_async(SELECTED_PAIRS)
                    for name in ("publisher", "subscriber"):
                        p = (pairs or {}).get(name)
                        assert p and p["local"] == "relay" and p["remote"] == ns.host_ip and p["received"] > 0, pairs
                    dropped = ns.exec("nft", "list", "table", "inet", "turntest").stdout
                    return pairs, dropped

            pairs, dropped = asyncio.run(run())
            print("relayed pairs:", pairs)
            print(dropped)
    finally:
        ns.close()


def _healthy(base: str) -> bool:
    import urllib.request
    with contextlib.suppress(Exception):
        with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
            return r.status == 200
    return False


async def until_async(cond, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cond):
            return True
        await asyncio.sleep(interval)
    return bool(await asyncio.to_thread(cond))
