"""The echo endpoint (`/v1/echo` + the `/echo` page): a peer gets its own audio and video back.

- aiortc echoes once per DTLS-SRTP profile (server and client both restricted to it) and with the
  defaults (GCM preferred); profiles with nothing in common yield no media; two concurrent peers
  each get their own media; echoed packets use the answer's SSRCs and RTCP (SR, PLI, FIR, NACK) is
  translated between the two SSRC spaces;
- headless Chromium with fake devices runs the `/echo?autostart=1` page and must decode echoed video;
- a flood of malformed datagrams from many loopback addresses, and junk / corrupted / replayed
  packets on the session's own path, must not disturb a running session;
- malformed signaling and offers that cannot connect get an `error` event, the server stays up;
  a data channel m-line is rejected with port 0;
- closing the WebSocket ends the session (the echo stops).
"""
from __future__ import annotations

import asyncio
import binascii
import collections
import hashlib
import hmac
import json
import os
import pathlib
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from aiortc import RTCPeerConnection, rtp
from websockets.asyncio.client import connect

from conftest import free_port
from echo_client import (EchoClient, PatternVideoTrack, SineAudioTrack, check_answer,
                         declared_ssrcs)

def ws_url(sfu) -> str:
    return f"ws://127.0.0.1:{sfu.http_port}/v1/echo"


def diag(sfu, client: EchoClient | None = None, lines: int = 60) -> str:
    """What to print when an assertion fails: the client's view and the end of the server log."""
    out = []
    if client is not None:
        out.append(f"client: {client.state()}")
        out.append(f"server events: {client.events}")
    log = sfu.log().splitlines()
    out.append(f"server log (last {lines} of {len(log)} lines, {sfu.log_path}):")
    out.extend(log[-lines:])
    return "\n".join(out)


def healthz(sfu) -> int:
    status, _ = sfu.get("/healthz")
    return status


# --- a. aiortc echo per SRTP profile ----------------------------------------------------------

@pytest.mark.parametrize("server_profiles, client_profile, expected", [
    ("aes128_cm_sha1_80", "aes128_cm_sha1_80", "aes128_cm_sha1_80"),
    ("aead_aes_128_gcm", "aead_aes_128_gcm", "aead_aes_128_gcm"),
    (None, None, "aead_aes_128_gcm"),  # defaults on both sides: GCM preferred
], ids=["aes128_cm_sha1_80", "aead_aes_128_gcm", "default"])
def test_aiortc_echo(sfu_factory, server_profiles, client_profile, expected):
    sfu = sfu_factory(env={"SFU_SRTP_PROFILES": server_profiles} if server_profiles else None)

    async def run():
        started = time.monotonic()
        async with EchoClient(ws_url(sfu), srtp_profile=client_profile,
                              send_candidates=True) as client:
            problems = check_answer(client.answer_sdp, sfu.media_port, client.offer_sdp)
            assert not problems, f"answer breaks the contract: {problems}\n{client.answer_sdp}"
            ok = await client.wait_for(video_frames=50, audio_samples=48000, timeout=30)
            r = client.received
            assert ok, f"echo too slow or absent after 30 s\n{diag(sfu, client)}"
            assert client.negotiated_srtp_profile == expected, diag(sfu, client)
            assert r.video_sizes == {(client.video.width, client.video.height)}, diag(sfu, client)
            assert r.audio_peak > 1000, f"echoed audio is silent (peak {r.audio_peak})"
            assert not [e for e in client.events if e.get("event") == "error"], client.events
            # Echoed RTP carries the SSRCs the answer declares, never the client's own.
            declared, ours = declared_ssrcs(client.answer_sdp), declared_ssrcs(client.offer_sdp)
            got = client.tap.rtp_ssrcs()
            assert got & declared["audio"] and got & declared["video"], (got, declared)
            assert got <= declared["audio"] | declared["video"], (got, declared)
            assert not got & (ours["audio"] | ours["video"]), (got, ours)
            assert time.monotonic() - started < 40
    asyncio.run(run())
    assert sfu.proc.poll() is None, diag(sfu)


def test_concurrent_sessions_get_their_own_media(sfu):
    """Two peers at once, sending different picture sizes: each gets back its own."""
    async def run():
        async with EchoClient(ws_url(sfu), width=320, height=240) as a, \
                EchoClient(ws_url(sfu), width=176, height=144) as b:
            ok = await asyncio.gather(a.wait_for(video_frames=40, audio_samples=24000, timeout=30),
                                      b.wait_for(video_frames=40, audio_samples=24000, timeout=30))
            assert all(ok), f"{diag(sfu, a)}\n{b.state()}"
            assert a.received.video_sizes == {(320, 240)}, a.received
            assert b.received.video_sizes == {(176, 144)}, b.received
            ssrcs_a, ssrcs_b = declared_ssrcs(a.answer_sdp), declared_ssrcs(b.answer_sdp)
            assert not (ssrcs_a["video"] | ssrcs_a["audio"]) & (ssrcs_b["video"] | ssrcs_b["audio"])
    asyncio.run(run())
    assert sfu.proc.poll() is None, diag(sfu)


@pytest.mark.parametrize("server_profile, client_profile", [
    ("aes128_cm_sha1_80", "aead_aes_128_gcm"), ("aead_aes_128_gcm", "aes128_cm_sha1_80")])
def test_srtp_profile_mismatch_gets_no_media(sfu_factory, server_profile, client_profile):
    """No profile in common: the handshake must not yield SRTP, and nothing is echoed."""
    sfu = sfu_factory(env={"SFU_SRTP_PROFILES": server_profile})

    async def run():
        async with EchoClient(ws_url(sfu), srtp_profile=client_profile) as client:
            await client.wait_for(video_frames=1, timeout=8)
            assert client.received.video_frames == 0, diag(sfu, client)
            assert client.received.audio_samples == 0, diag(sfu, client)
            assert client.negotiated_srtp_profile is None, diag(sfu, client)
    asyncio.run(run())
    assert sfu.proc.poll() is None and healthz(sfu) == 200, diag(sfu)


def test_rtcp_translation(sfu):
    """SRs come back under the server's SSRCs; PLI/FIR/NACK for its SSRCs reach the client's."""
    async def run():
        async with EchoClient(ws_url(sfu)) as client:
            assert await client.wait_for(video_frames=20, timeout=30), diag(sfu, client)
            declared = declared_ssrcs(client.answer_sdp)
            ours = declared_ssrcs(client.offer_sdp)
            mine = ours["audio"] | ours["video"]
            assert len(declared["video"]) == 1, declared
            srv_video = next(iter(declared["video"]))
            my_video = client.sender_ssrc("video")
            tap = client.tap

            async def wait_rtcp(pred, since: int, timeout: float = 3.0):
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    hits = [p for p in tap.rtcp[since:] if pred(p)]
                    if hits:
                        return hits
                    await asyncio.sleep(0.05)
                return []

            def fb_for(cls, fmt, ssrc):
                return lambda p: isinstance(p, cls) and p.fmt == fmt and p.media_ssrc == ssrc

            # Sender reports: relayed under a declared SSRC (aiortc sends one every ~1 s).
            srs = await wait_rtcp(lambda p: isinstance(p, rtp.RtcpSrPacket), 0, timeout=6)
            sr_ssrcs = {p.ssrc for p in srs}
            assert sr_ssrcs and sr_ssrcs <= declared["audio"] | declared["video"], (sr_ssrcs, declared)

            # PLI for the server's video SSRC -> PLI for ours.
            n = len(tap.rtcp)
            before = sum(1 for p in tap.rtcp if fb_for(rtp.RtcpPsfbPacket, rtp.RTCP_PSFB_PLI, my_video)(p))
            for _ in range(3):
                await client.send_pli(srv_video)
                await asyncio.sleep(0.2)
            plis = await wait_rtcp(fb_for(rtp.RtcpPsfbPacket, rtp.RTCP_PSFB_PLI, my_video), n)
            assert plis, f"no PLI for {my_video} after 3 PLIs for {srv_video}: {tap.rtcp[n:]}\n{diag(sfu, client)}"

            # FIR (target SSRC in the FCI) -> FIR naming ours.
            n = len(tap.rtcp)
            for seq_nr in range(3):
                await client.send_fir(srv_video, seq_nr)
                await asyncio.sleep(0.2)
            firs = await wait_rtcp(lambda p: isinstance(p, rtp.RtcpPsfbPacket) and p.fmt == rtp.RTCP_PSFB_FIR
                                   and len(p.fci) >= 8 and int.from_bytes(p.fci[:4], "big") == my_video, n)
            assert firs, f"no FIR naming {my_video}: {tap.rtcp[n:]}\n{diag(sfu, client)}"

            # NACK for recently echoed packets -> NACK for ours.
            n = len(tap.rtcp)
            last = tap.rtp_last_seq[srv_video]
            lost = [(last - 10) & 0xFFFF, (last - 7) & 0xFFFF]
            for _ in range(3):
                await client.send_nack(srv_video, lost)
                await asyncio.sleep(0.2)
            nacks = await wait_rtcp(fb_for(rtp.RtcpRtpfbPacket, rtp.RTCP_RTPFB_NACK, my_video), n)
            assert nacks and all(p.lost for p in nacks), f"no NACK for {my_video}: {tap.rtcp[n:]}\n{diag(sfu, client)}"
            print(f"NACK sent for {lost} on {srv_video}, relayed as {[p.lost for p in nacks]} on {my_video}")

            # Nothing the server sends names the client's own SSRCs as a sender.
            leaked = [p for p in tap.rtcp if getattr(p, "ssrc", None) in mine]
            assert not leaked, leaked[:5]
    asyncio.run(run())
    assert sfu.proc.poll() is None, diag(sfu)


# --- b. headless Chromium runs the /echo page -------------------------------------------------

def _chromium_binary() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_BIN"), "/usr/lib/chromium/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


class Browser:
    """Headless Chromium driven through chromedriver's W3C HTTP API (plain urllib)."""

    def __init__(self, workdir: pathlib.Path):
        driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
        binary = _chromium_binary()
        if not driver or not binary:
            pytest.fail("chromedriver and chromium are needed for this test")
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir()
        self.port = free_port()
        self.log_path = workdir / "chromedriver.log"
        self.session: str | None = None
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}", f"--log-path={self.log_path}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self._call("GET", "/status", timeout=1)["ready"]:
                    break
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or self.driver.poll() is not None:
                raise RuntimeError("chromedriver did not come up")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--no-first-run", "--disable-extensions",
                "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                "--allow-loopback-in-peer-connection", f"--user-data-dir={self.profile}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": binary, "args": args}}}}
        self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts", {"script": 10000})

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"chromedriver {method} {path}: {e.code} {e.read()[:2000]!r}")

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def execute_async(self, script: str, *args):
        """`script` gets the arguments and then a `done` callback as its last argument."""
        return self._call("POST", f"/session/{self.session}/execute/async",
                          {"script": script, "args": list(args)})

    def execute(self, script: str, *args):
        return self._call("POST", f"/session/{self.session}/execute/sync",
                          {"script": script, "args": list(args)})

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", f"/session/{self.session}", timeout=10)
            except Exception:
                pass
            self.session = None
        if self.driver.poll() is None:
            try:
                os.killpg(self.driver.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.driver.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.driver.pid, signal.SIGKILL)
                self.driver.wait()
        # Chromium processes of this profile that outlived chromedriver (found by their pids).
        for pid in self.profile_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def profile_pids(self) -> list[int]:
        needle = f"--user-data-dir={self.profile}".encode()
        pids = []
        for entry in pathlib.Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
        return pids


@pytest.fixture
def browser(tmp_path):
    b = None
    try:
        b = Browser(tmp_path)
        yield b
    finally:
        if b is not None:
            b.close()
            deadline = time.monotonic() + 5
            while b.profile_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not b.profile_pids(), "Chromium processes left running"


STATS_SCRIPT = """
const done = arguments[arguments.length - 1];
if (typeof window.echoStats !== "function") { done({missing: true}); return; }
window.echoStats().then(done, (e) => done({error: String(e)}));
"""


def test_chromium_echo_page(sfu, browser):
    status, page = sfu.get("/echo")
    assert status == 200 and "echoStats" in str(page), f"GET /echo -> {status}"
    browser.open(f"{sfu.base_url}/echo?autostart=1")
    stats, history = None, []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = browser.execute_async(STATS_SCRIPT)
        history.append(stats)
        if stats and stats.get("videoFramesDecoded", 0) > 0 and stats.get("dtlsState") == "connected":
            break
        time.sleep(0.5)
    shown = browser.execute("return document.getElementById('status').textContent;")
    context = f"last stats {stats}\npage status: {shown!r}\n{diag(sfu)}"
    assert stats and stats.get("dtlsState") == "connected", context
    assert stats.get("videoFramesDecoded", 0) > 0, context
    assert stats.get("inboundVideoBytes", 0) > 0, context
    assert sfu.proc.poll() is None, context
    # Chromium offers nack, nack pli and ccm fir for VP8: the answer must take all three.
    offer, answer = browser.execute("return [pc.localDescription.sdp, pc.remoteDescription.sdp];")
    assert "ccm fir" in offer, offer
    problems = check_answer(answer, sfu.media_port, offer)
    assert not problems, f"answer to Chromium breaks the contract: {problems}\n{answer}"
    # The echoed video Chromium decodes arrives under the SSRC the answer declares.
    inbound = browser.execute_async(
        "const done = arguments[arguments.length - 1];"
        "pc.getStats().then((s) => { const out = [];"
        " s.forEach((r) => { if (r.type === 'inbound-rtp') out.push([r.kind, r.ssrc, r.framesDecoded || 0]); });"
        " done(out); });")
    declared = declared_ssrcs(answer)
    decoding = {ssrc for kind, ssrc, frames in inbound if kind == "video" and frames > 0}
    assert decoding and decoding <= declared["video"], (inbound, declared)


# --- c. malformed datagrams from many loopback sources ----------------------------------------

STUN_MAGIC = 0x2112A442


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def stun_request(username: str | None, key: bytes | None, rng: random.Random,
                 fingerprint: bool = True, use_candidate: bool = True) -> bytes:
    """A Binding request shaped like an ICE check; MESSAGE-INTEGRITY keyed with `key` if given."""
    attrs = b""
    if username is not None:
        attrs += _attr(0x0006, username.encode())
    attrs += _attr(0x0024, struct.pack("!I", rng.getrandbits(32)))       # PRIORITY
    attrs += _attr(0x802A, rng.getrandbits(64).to_bytes(8, "big"))       # ICE-CONTROLLING
    if use_candidate:
        attrs += _attr(0x0025, b"")                                       # USE-CANDIDATE
    tid = rng.getrandbits(96).to_bytes(12, "big")
    if key is not None:
        header = struct.pack("!HHI", 0x0001, len(attrs) + 24, STUN_MAGIC) + tid
        mac = hmac.new(key, header + attrs, hashlib.sha1).digest()
        attrs += _attr(0x0008, mac)
    if fingerprint:
        header = struct.pack("!HHI", 0x0001, len(attrs) + 8, STUN_MAGIC) + tid
        crc = (binascii.crc32(header + attrs) ^ 0x5354554E) & 0xFFFFFFFF
        attrs += _attr(0x8028, struct.pack("!I", crc))
    return struct.pack("!HHI", 0x0001, len(attrs), STUN_MAGIC) + tid + attrs


def malformed_datagram(rng: random.Random, ufrags: tuple[str, str], ssrcs: list[int]) -> bytes:
    server_ufrag, client_ufrag = ufrags
    right = f"{server_ufrag}:{client_ufrag}"
    wrong = f"{rng.choice(['x', 'nope', server_ufrag[::-1] or 'y'])}:{client_ufrag}"
    junk = lambda n: rng.randbytes(n)
    kind = rng.randrange(12)
    if kind == 0:    # random bytes, any size (including empty)
        return junk(rng.choice([0, 1, 2, 3, 19, 20, 21, rng.randrange(1, 1500)]))
    if kind == 1:    # right username, MESSAGE-INTEGRITY with the wrong key, valid FINGERPRINT
        return stun_request(right, b"not-the-password", rng)
    if kind == 2:    # right username, no MESSAGE-INTEGRITY at all
        return stun_request(right, None, rng, fingerprint=rng.random() < 0.5)
    if kind == 3:    # wrong username (with integrity under a made-up key)
        return stun_request(wrong, junk(22), rng)
    if kind == 4:    # truncated request, right or wrong username
        msg = stun_request(rng.choice([right, wrong]), junk(22), rng)
        return msg[:rng.randrange(1, len(msg))]
    if kind == 5:    # request with corrupted bytes (bit flips anywhere, incl. header/length)
        msg = bytearray(stun_request(rng.choice([right, wrong]), junk(22), rng))
        for _ in range(rng.randrange(1, 6)):
            msg[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
        return bytes(msg)
    if kind == 6:    # STUN header lying about its length / attributes running past the end
        tid = junk(12)
        body = struct.pack("!HH", 0x0006, rng.choice([0xFFFF, 400, 3])) + right.encode()[:3]
        length = rng.choice([len(body), 0xFFFC, 1, 7, len(body) + 4])
        return struct.pack("!HHI", 0x0001, length, STUN_MAGIC) + tid + body
    if kind == 7:    # STUN responses / indications nobody asked for
        mtype = rng.choice([0x0101, 0x0111, 0x0011])
        body = _attr(0x0020, junk(8)) if rng.random() < 0.5 else b""
        return struct.pack("!HHI", mtype, len(body), STUN_MAGIC) + junk(12) + body
    if kind == 8:    # DTLS-looking records: content type 20..63, random rest
        first = rng.randrange(20, 64)
        return bytes([first]) + rng.choice([b"\xfe\xfd", b"\xfe\xff", junk(2)]) + junk(rng.randrange(0, 300))
    if kind == 9:    # DTLS ClientHello-looking handshake with lying lengths
        hs = bytes([1]) + junk(3) + junk(2) + junk(3) + junk(3) + junk(rng.randrange(0, 200))
        length = rng.choice([len(hs), 0xFFFF, 0, len(hs) + 50])
        return b"\x16\xfe\xfd" + b"\0\0" + junk(6) + struct.pack("!H", length) + hs
    if kind == 10:   # RTP-looking: V=2, random payload type, maybe one of the session's SSRCs
        ssrc = rng.choice(ssrcs) if ssrcs and rng.random() < 0.5 else rng.getrandbits(32)
        return (bytes([rng.randrange(128, 192), rng.randrange(256)]) + junk(6)
                + struct.pack("!I", ssrc) + junk(rng.randrange(0, 1200)))
    # RTCP-looking: V=2, PT 192..207 (SR, RR, SDES, BYE, RTPFB, PSFB...), lying length
    ssrc = rng.choice(ssrcs) if ssrcs and rng.random() < 0.5 else rng.getrandbits(32)
    return (bytes([rng.randrange(128, 192), rng.randrange(192, 208)]) + junk(2)
            + struct.pack("!I", ssrc) + junk(rng.randrange(0, 120)))


def random_loopback(rng: random.Random) -> str:
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def flood(target: tuple[str, int], ufrags: tuple[str, str], ssrcs: list[int], *, total: int,
          rounds: int, sockets_per_round: int, budget_s: float, seed: int) -> dict:
    """Sends `total` malformed datagrams from rounds of fresh sockets on random 127/8 addresses.

    Returns counts and whatever the server sent back to those sockets.
    """
    rng = random.Random(seed)
    deadline = time.monotonic() + budget_s
    sent, sources, replies = 0, set(), []
    per_round = total // rounds
    for _ in range(rounds):
        socks = []
        for _ in range(sockets_per_round):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind((random_loopback(rng), 0))
            sources.add(s.getsockname())
            socks.append(s)
        try:
            for i in range(per_round):
                if time.monotonic() > deadline:
                    break
                try:
                    rng.choice(socks).sendto(malformed_datagram(rng, ufrags, ssrcs), target)
                    sent += 1
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                if i % 100 == 99:
                    time.sleep(0.05)   # ~2000 datagrams/s: a flood, but leaves the CPU to others
                    replies += _drain(socks)
            time.sleep(0.2)
            replies += _drain(socks)
        finally:
            for s in socks:
                s.close()
    return {"sent": sent, "sources": len(sources), "replies": replies}


def _drain(socks) -> list[bytes]:
    got = []
    for s in select.select(socks, [], [], 0)[0]:
        while True:
            try:
                got.append(s.recv(65536))
            except (BlockingIOError, ConnectionRefusedError):
                break
    return got


def _sdp_value(sdp: str, attr: str) -> str:
    m = re.search(rf"^a={attr}:(\S+)", sdp, re.M)
    assert m, f"no a={attr} in SDP"
    return m.group(1)


def test_malformed_datagram_flood_leaves_session_alone(sfu):
    async def run():
        async with EchoClient(ws_url(sfu)) as client:
            assert await client.wait_for(video_frames=30, timeout=30), diag(sfu, client)
            ufrags = (_sdp_value(client.answer_sdp, "ice-ufrag"), _sdp_value(client.offer_sdp, "ice-ufrag"))
            ssrcs = [int(x) for x in re.findall(r"^a=ssrc:(\d+)", client.offer_sdp + client.answer_sdp, re.M)]
            frames_before = client.received.video_frames
            started = time.monotonic()
            result = await asyncio.to_thread(
                flood, ("127.0.0.1", sfu.media_port), ufrags, ssrcs, total=6000, rounds=4,
                sockets_per_round=150, budget_s=18, seed=random.randrange(1 << 30))
            took = time.monotonic() - started
            frames_during = client.received.video_frames - frames_before
            kinds = collections.Counter(r[:2].hex() for r in result["replies"])
            print(f"flood: {result['sent']} datagrams from {result['sources']} sources in {took:.1f} s, "
                  f"replies by first two bytes {dict(kinds)}, {frames_during} echoed frames meanwhile")
            assert result["sent"] >= 3000 and result["sources"] >= 500, result
            assert took < 20, took
            assert sfu.proc.poll() is None, f"server died during the flood\n{diag(sfu, client)}"
            assert healthz(sfu) == 200, diag(sfu, client)

            # Nothing but STUN error responses may go to addresses that never passed ICE.
            bad = [r[:24].hex() for r in result["replies"]
                   if not (len(r) >= 20 and r[0] < 2 and r[:2] != b"\x01\x01")]
            assert not bad, f"server sent {len(bad)} non-STUN-error datagrams to flood sources: {bad[:5]}"

            # The session survived: echoed video and audio keep coming.
            frames_after, samples_after = client.received.video_frames, client.received.audio_samples
            ok = await client.wait_for(video_frames=frames_after + 60,
                                       audio_samples=samples_after + 48000, timeout=15)
            assert ok, (f"echo stalled after the flood (sent {result['sent']} datagrams from "
                        f"{result['sources']} sources; {frames_during} frames during it)\n{diag(sfu, client)}")
            assert client.pc.connectionState == "connected", diag(sfu, client)
    asyncio.run(run())
    assert sfu.proc.poll() is None and healthz(sfu) == 200, diag(sfu)


def test_junk_and_replays_on_the_session_path(sfu):
    """Garbage, corrupted and replayed SRTP from the peer's own address must not end its session."""
    async def run():
        async with EchoClient(ws_url(sfu)) as client:
            assert await client.wait_for(video_frames=30, timeout=30), diag(sfu, client)
            ufrags = (_sdp_value(client.answer_sdp, "ice-ufrag"), _sdp_value(client.offer_sdp, "ice-ufrag"))
            ssrcs = [int(x) for x in re.findall(r"^a=ssrc:(\d+)", client.offer_sdp + client.answer_sdp, re.M)]
            captured = client.record_outgoing()
            await asyncio.sleep(1.5)
            assert len(captured) > 30, len(captured)
            rng = random.Random(random.randrange(1 << 30))
            kinds = collections.Counter()
            for i in range(2000):
                roll = rng.random()
                if roll < 0.2:       # an exact copy of something the client sent: a replay
                    data, kind = rng.choice(list(captured)), "replay"
                elif roll < 0.4:     # a real SRTP/SRTCP packet with a few bits flipped
                    data = bytearray(rng.choice(list(captured)))
                    for _ in range(rng.randrange(1, 4)):
                        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                    data, kind = bytes(data), "corrupted"
                else:                # the same junk as the flood test, minus DTLS alerts (type 21)
                    data = malformed_datagram(rng, ufrags, ssrcs)
                    if data[:1] == b"\x15":
                        continue
                    kind = "junk"
                kinds[kind] += 1
                await client.inject(data)
                if i % 50 == 49:
                    await asyncio.sleep(0.02)
            print(f"injected on the session path: {dict(kinds)}")
            assert sfu.proc.poll() is None, diag(sfu, client)
            assert healthz(sfu) == 200, diag(sfu, client)
            frames, samples = client.received.video_frames, client.received.audio_samples
            ok = await client.wait_for(video_frames=frames + 60, audio_samples=samples + 48000, timeout=15)
            assert ok, f"echo stalled after junk on the session path ({dict(kinds)})\n{diag(sfu, client)}"
            assert client.pc.connectionState == "connected", diag(sfu, client)
    asyncio.run(run())
    assert sfu.proc.poll() is None, diag(sfu)


# --- d. malformed signaling --------------------------------------------------------------------

BAD_MESSAGES = {
    "not_json": "this is { not json",
    "not_an_object": "[1, 2, 3]",
    "unknown_event": json.dumps({"event": "no_such_event", "data": {}}),
    "garbage_sdp": json.dumps({"event": "webrtc_offer",
                               "data": {"target": "publisher", "sdp": "garbage\r\nnot an sdp\r\n"}}),
    "offer_without_sdp": json.dumps({"event": "webrtc_offer", "data": {"target": "publisher"}}),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_malformed_signaling_gets_error(sfu, name):
    async def run():
        async with connect(ws_url(sfu), open_timeout=10) as ws:
            await ws.send(BAD_MESSAGES[name])
            reply = None
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                except (asyncio.TimeoutError, Exception) as e:
                    pytest.fail(f"no error event for {name}: {e!r}\n{diag(sfu)}")
                reply = json.loads(raw)
                if reply.get("event") == "error":
                    break
            assert reply and reply.get("event") == "error", f"{name}: got {reply}"
            data = reply.get("data") or {}
            assert isinstance(data.get("code"), str) and data["code"], reply
            assert isinstance(data.get("message"), str), reply
            print(f"{name}: {data}")
        # Still serving: health, and a real offer on a fresh socket gets an answer.
        assert sfu.proc.poll() is None, diag(sfu)
        assert healthz(sfu) == 200
        client = EchoClient(ws_url(sfu))
        try:
            answer = await client.start()
        finally:
            await client.close()
        assert "a=ice-lite" in answer
    asyncio.run(run())


async def aiortc_offer(data_channel: bool = False) -> str:
    """A complete offer from aiortc (Opus + VP8, optionally a data channel); the pc is closed."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(SineAudioTrack())
        pc.addTrack(PatternVideoTrack())
        if data_channel:
            pc.createDataChannel("echo-test")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def first_reply(sfu, sdp: str) -> dict:
    async with connect(ws_url(sfu), open_timeout=10) as ws:
        await ws.send(json.dumps({"event": "webrtc_offer", "data": {"target": "publisher", "sdp": sdp}}))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


@pytest.mark.parametrize("strip", ["fingerprint", "ice"])
def test_offer_without_dtls_or_ice_parameters_gets_error(sfu, strip):
    """An offer that cannot be connected (no fingerprint / no ICE credentials) is bad input."""
    pattern = {"fingerprint": r"a=fingerprint:.*\r\n", "ice": r"a=ice-(ufrag|pwd):.*\r\n"}[strip]

    async def run():
        sdp = re.sub(pattern, "", await aiortc_offer())
        reply = await first_reply(sfu, sdp)
        assert reply.get("event") == "error", reply
        assert isinstance(reply["data"].get("code"), str) and reply["data"]["code"], reply
    asyncio.run(run())
    assert sfu.proc.poll() is None and healthz(sfu) == 200, diag(sfu)


def test_data_channel_mline_is_rejected_with_port_0(sfu):
    async def run():
        offer = await aiortc_offer(data_channel=True)
        reply = await first_reply(sfu, offer)
        assert reply.get("event") == "webrtc_answer", reply
        answer = reply["data"]["sdp"]
        app = re.search(r"^m=application (\d+) ", answer, re.M)
        assert app and app.group(1) == "0", answer
        app_mid = re.search(r"^a=mid:(\S+)", answer.split("m=application", 1)[1], re.M)
        bundle = re.search(r"^a=group:BUNDLE (.*?)\r?$", answer, re.M).group(1).split()
        assert not app_mid or app_mid.group(1) not in bundle, (bundle, answer)
        assert not check_answer(answer, sfu.media_port, offer), check_answer(answer, sfu.media_port, offer)
    asyncio.run(run())


# --- closing the WebSocket ends the session -----------------------------------------------------

def test_closing_websocket_stops_the_echo(sfu):
    async def run():
        async with EchoClient(ws_url(sfu)) as client:
            assert await client.wait_for(video_frames=30, timeout=30), diag(sfu, client)
            await client.ws.close()          # the peer connection keeps sending media
            await asyncio.sleep(3)           # grace for the server to tear the session down
            frames = client.received.video_frames
            samples = client.received.audio_samples
            sent = client.video.frames_sent
            await asyncio.sleep(3)
            print(f"after close: pc {client.pc.connectionState}, "
                  f"{client.video.frames_sent - sent} frames sent in the last 3 s")
            assert client.received.video_frames == frames, (
                f"still echoing video 3-6 s after the WebSocket closed\n{diag(sfu, client)}")
            assert client.received.audio_samples == samples, diag(sfu, client)
    asyncio.run(run())
    assert sfu.proc.poll() is None and healthz(sfu) == 200, diag(sfu)
