"""An aiortc client for the echo endpoint (`/v1/echo`), written against the contract only.

It opens the WebSocket, sends a generated VP8 video track (a moving test pattern) and an Opus audio
track (a 400 Hz sine) in one complete offer, applies the server's answer and counts what comes back:
video frames decoded from the echoed video track and audio samples decoded from the echoed audio.

    async with EchoClient(f"ws://127.0.0.1:{port}/v1/echo") as client:
        await client.wait_for(video_frames=50, audio_samples=48000, timeout=30)

`restrict_srtp_profiles("aes128_cm_sha1_80")` limits aiortc to one DTLS-SRTP profile (EchoClient
does this itself when given `srtp_profile=`).
"""
from __future__ import annotations

import array
import asyncio
import collections
import struct
import contextlib
import fractions
import json
import math
import re
import time
from dataclasses import dataclass, field

import av
from aiortc import (RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription,
                    MediaStreamTrack, VideoStreamTrack)
from aiortc import rtcdtlstransport, rtp
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

# The contract's profile names -> aiortc's profile objects.
SRTP_PROFILES = {
    "aes128_cm_sha1_80": rtcdtlstransport.SRTP_AES128_CM_SHA1_80,
    "aead_aes_128_gcm": rtcdtlstransport.SRTP_AEAD_AES_128_GCM,
}


@contextlib.contextmanager
def restrict_srtp_profiles(*names: str):
    """Within the block, new aiortc DTLS transports offer only the named SRTP profiles.

    aiortc copies the module-level `SRTP_PROFILES` list into each RTCDtlsTransport when it is
    constructed (in addTrack/addTransceiver), so the tracks must be added inside the block.
    """
    profiles = [SRTP_PROFILES[n] for n in names]
    saved = rtcdtlstransport.SRTP_PROFILES
    rtcdtlstransport.SRTP_PROFILES = profiles
    try:
        yield profiles
    finally:
        rtcdtlstransport.SRTP_PROFILES = saved


class PatternVideoTrack(VideoStreamTrack):
    """A moving luma ramp with a bright bar, `width`x`height` at ~30 fps (pure Python, no numpy)."""

    def __init__(self, width: int = 320, height: int = 240):
        super().__init__()
        self.width, self.height = width, height
        self.frames_sent = 0
        ramp = bytes((x * 255 // (2 * width)) & 0xFF for x in range(2 * width))
        self._ramp = ramp + ramp

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        y, u, v = frame.planes
        shift = (self.frames_sent * 8) % (2 * self.width)
        row = bytearray(self._ramp[shift:shift + self.width])
        bar = (self.frames_sent * 4) % self.width
        row[bar:bar + 16] = b"\xeb" * len(row[bar:bar + 16])
        pad = bytes(y.line_size - self.width)
        y.update((bytes(row) + pad) * self.height)
        chroma = 64 + (self.frames_sent % 128)
        u.update(bytes([chroma]) * u.buffer_size)
        v.update(bytes([255 - chroma]) * v.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.frames_sent += 1
        return frame


class SineAudioTrack(MediaStreamTrack):
    """A 400 Hz sine, mono s16 at 48 kHz, in 20 ms frames (960 samples = exactly 8 periods)."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self, amplitude: int = 8000):
        super().__init__()
        period = [int(amplitude * math.sin(2 * math.pi * 400 * i / self.RATE))
                  for i in range(self.SAMPLES)]
        self._pcm = array.array("h", period).tobytes()
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._pts += self.SAMPLES
            await asyncio.sleep(self._start + self._pts / self.RATE - time.time())
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.pts = self._pts
        frame.sample_rate = self.RATE
        frame.time_base = fractions.Fraction(1, self.RATE)
        self.frames_sent += 1
        return frame


@dataclass
class Tap:
    """Decrypted packets as the client's DTLS transport hands them to aiortc's RTP router."""
    rtp: collections.Counter = field(default_factory=collections.Counter)  # (ssrc, pt) -> count
    rtp_last_seq: dict = field(default_factory=dict)                       # ssrc -> last seq
    rtcp: list = field(default_factory=list)                               # parsed RTCP packets

    def rtp_ssrcs(self) -> set[int]:
        return {ssrc for ssrc, _ in self.rtp}


@dataclass
class Received:
    video_frames: int = 0
    video_sizes: set = field(default_factory=set)
    audio_samples: int = 0
    audio_peak: int = 0           # largest |sample| seen in the echoed audio
    audio_loud_samples: int = 0   # samples in frames whose peak is above 1000 (not silence)
    first_video_at: float | None = None
    last_video_at: float | None = None


class EchoError(Exception):
    """The server sent an `error` event, closed the socket, or did not answer in time."""


class EchoClient:
    def __init__(self, url: str, *, srtp_profile: str | None = None, width: int = 320,
                 height: int = 240, answer_timeout: float = 10.0, send_candidates: bool = False):
        self.url = url
        self.send_candidates = send_candidates  # also trickle the offer's candidates (ignored by contract)
        self.srtp_profile = srtp_profile
        self.answer_timeout = answer_timeout
        self.video = PatternVideoTrack(width, height)
        self.audio = SineAudioTrack()
        self.received = Received()
        self.tap = Tap()
        self.offer_sdp: str | None = None
        self.answer_sdp: str | None = None
        self.events: list[dict] = []   # every message the server sent, in order
        self.pc: RTCPeerConnection | None = None
        self.ws = None
        self._tasks: list[asyncio.Task] = []
        self._progress = asyncio.Event()

    async def __aenter__(self) -> "EchoClient":
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> str:
        """Connects, offers, applies the answer; returns the answer SDP."""
        # aiortc creates the DTLS transports in addTrack, copying the profile list there.
        restrict = (restrict_srtp_profiles(self.srtp_profile) if self.srtp_profile
                    else contextlib.nullcontext())
        with restrict:
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                         bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
            self.pc.on("track", self._on_track)
            self.pc.addTrack(self.audio)
            self.pc.addTrack(self.video)
        if self.srtp_profile:
            wanted = [SRTP_PROFILES[self.srtp_profile]]
            assert all(t.sender.transport._srtp_profiles == wanted for t in self.pc.getTransceivers())
        self.ws = await connect(self.url, open_timeout=self.answer_timeout)
        await self.pc.setLocalDescription(await self.pc.createOffer())  # waits for gathering
        self.offer_sdp = self.pc.localDescription.sdp
        await self.send("webrtc_offer", {"target": "publisher", "sdp": self.offer_sdp})
        if self.send_candidates:
            mid = re.search(r"^a=mid:(\S+)", self.offer_sdp, re.M).group(1)
            for line in re.findall(r"^a=(candidate:.+?)\r?$", self.offer_sdp, re.M):
                await self.send("ice_candidate", {"target": "publisher", "candidate": line,
                                                  "sdpMid": mid, "sdpMLineIndex": 0})
        answer = await self._wait_answer()
        self.answer_sdp = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer_sdp, "answer"))
        self._install_tap()
        self._tasks.append(asyncio.create_task(self._read_events()))
        return self.answer_sdp

    async def send(self, event: str, data: dict) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def _wait_answer(self) -> dict:
        deadline = time.monotonic() + self.answer_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EchoError(f"no webrtc_answer within {self.answer_timeout}s; got {self.events}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            except Exception as e:
                raise EchoError(f"socket closed before the answer ({e!r}); got {self.events}")
            msg = json.loads(raw)
            self.events.append(msg)
            if msg.get("event") == "error":
                raise EchoError(f"server error: {msg}")
            if msg.get("event") == "webrtc_answer":
                data = msg.get("data") or {}
                if data.get("target") != "publisher" or not isinstance(data.get("sdp"), str):
                    raise EchoError(f"malformed webrtc_answer: {msg}")
                return data

    # --- packet level (aiortc internals of the pinned version; tests only) -------------------

    @property
    def transport(self):
        """The (bundled) DTLS transport."""
        return self.pc.getTransceivers()[0].receiver.transport

    def sender_ssrc(self, kind: str) -> int:
        return next(t.sender._ssrc for t in self.pc.getTransceivers() if t.kind == kind)

    def _install_tap(self) -> None:
        transport, tap = self.transport, self.tap
        handle_rtp, handle_rtcp = transport._handle_rtp_data, transport._handle_rtcp_data

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            if len(data) >= 12:
                ssrc, = struct.unpack("!I", data[8:12])
                tap.rtp[(ssrc, data[1] & 0x7F)] += 1
                tap.rtp_last_seq[ssrc] = struct.unpack("!H", data[2:4])[0]
            await handle_rtp(data, arrival_time_ms)

        async def on_rtcp(data: bytes) -> None:
            with contextlib.suppress(ValueError):
                tap.rtcp.extend(rtp.RtcpPacket.parse(data))
            await handle_rtcp(data)

        transport._handle_rtp_data, transport._handle_rtcp_data = on_rtp, on_rtcp

    def record_outgoing(self, limit: int = 1000) -> collections.deque:
        """From now on, keeps the last `limit` SRTP/SRTCP datagrams the client sends (as sent)."""
        ice = self.transport.transport
        send, kept = ice._send, collections.deque(maxlen=limit)

        async def recording_send(data: bytes) -> None:
            if data and 127 < data[0] < 192:
                kept.append(bytes(data))
            await send(data)

        ice._send = recording_send
        return kept

    async def inject(self, data: bytes) -> None:
        """Sends a raw datagram on the session's own path (the selected ICE pair), unprotected."""
        await self.transport.transport._send(data)

    async def send_rtcp(self, packet) -> None:
        """Sends one RTCP packet (SRTCP-protected) to the server."""
        await self.transport._send_rtp(bytes(packet))

    async def send_pli(self, media_ssrc: int) -> None:
        await self.send_rtcp(rtp.RtcpPsfbPacket(fmt=rtp.RTCP_PSFB_PLI, ssrc=self.sender_ssrc("video"),
                                                media_ssrc=media_ssrc))

    async def send_fir(self, target_ssrc: int, seq_nr: int) -> None:
        # RFC 5104 4.3.1: media source SSRC 0, FCI = target SSRC + sequence number + 3 reserved.
        await self.send_rtcp(rtp.RtcpPsfbPacket(fmt=rtp.RTCP_PSFB_FIR, ssrc=self.sender_ssrc("video"),
                                                media_ssrc=0, fci=struct.pack("!IB3x", target_ssrc, seq_nr)))

    async def send_nack(self, media_ssrc: int, lost: list[int]) -> None:
        packet = rtp.RtcpRtpfbPacket(fmt=rtp.RTCP_RTPFB_NACK, ssrc=self.sender_ssrc("video"),
                                     media_ssrc=media_ssrc)
        packet.lost = lost
        await self.send_rtcp(packet)

    async def _read_events(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(raw))

    def _on_track(self, track: MediaStreamTrack) -> None:
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        self._tasks.append(asyncio.create_task(consume(track)))

    async def _consume_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                r = self.received
                r.video_frames += 1
                r.video_sizes.add((frame.width, frame.height))
                r.first_video_at = r.first_video_at or now
                r.last_video_at = now
                self._progress.set()

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
                peak = max((abs(s) for s in pcm), default=0)
                r = self.received
                r.audio_samples += frame.samples
                r.audio_peak = max(r.audio_peak, peak)
                if peak > 1000:
                    r.audio_loud_samples += frame.samples
                self._progress.set()

    async def wait_for(self, video_frames: int = 0, audio_samples: int = 0,
                       timeout: float = 30.0) -> bool:
        """Waits until at least that many echoed frames/samples were decoded; False on timeout."""
        deadline = time.monotonic() + timeout
        while not (self.received.video_frames >= video_frames
                   and self.received.audio_samples >= audio_samples):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))
        return True

    @property
    def negotiated_srtp_profile(self) -> str | None:
        """The profile the DTLS handshake selected, in the contract's spelling (None before)."""
        for t in self.pc.getTransceivers() if self.pc else []:
            ssl = getattr(t.receiver.transport, "_ssl", None)
            if ssl is not None and t.receiver.transport.state == "connected":
                name = ssl.get_selected_srtp_profile()
                for key, p in SRTP_PROFILES.items():
                    if p.openssl_profile == name:
                        return key
                return name.decode() if name else None
        return None

    def state(self) -> dict:
        pc = self.pc
        return {
            "connectionState": pc.connectionState if pc else None,
            "iceConnectionState": pc.iceConnectionState if pc else None,
            "srtp": self.negotiated_srtp_profile,
            "video_frames_sent": self.video.frames_sent,
            "audio_frames_sent": self.audio.frames_sent,
            "received": self.received,
        }

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 5)
        self.video.stop()
        self.audio.stop()


def declared_ssrcs(sdp: str) -> dict[str, set[int]]:
    """kind -> SSRCs from the `a=ssrc:` lines of each (accepted) m-section."""
    out: dict[str, set[int]] = {}
    for section in re.split(r"\r?\nm=", sdp)[1:]:
        kind = section.split(None, 1)[0]
        out.setdefault(kind, set()).update(int(x) for x in re.findall(r"^a=ssrc:(\d+) ", section, re.M))
    return out


def _video_feedback(sdp: str) -> set[str]:
    """The rtcp-fb values (e.g. "nack pli") of the first VP8 payload type in the video section."""
    video = sdp.split("m=video", 1)[1].split("\nm=", 1)[0] if "m=video" in sdp else ""
    m = re.search(r"^a=rtpmap:(\d+) VP8/90000", video, re.M | re.I)
    if not m:
        return set()
    return {v.strip().lower() for v in re.findall(rf"^a=rtcp-fb:{m.group(1)} (.+?)\r?$", video, re.M)}


def check_answer(sdp: str, media_port: int | None = None, offer: str | None = None) -> list[str]:
    """Checks an echo answer against the contract; returns the list of problems (empty if none).

    Video feedback: the answer must carry each of nack / nack pli / ccm fir that the offer has for
    VP8 (all three if no offer is given), and nothing the offer did not have.
    """
    problems = []
    lines = [l.strip() for l in sdp.splitlines() if l.strip()]
    sections: list[list[str]] = [[]]
    for l in lines:
        if l.startswith("m="):
            sections.append([])
        sections[-1].append(l)
    session, media = sections[0], sections[1:]
    everywhere = lines

    def has(prefix, where=everywhere):
        return any(l.startswith(prefix) for l in where)

    if not has("a=ice-lite"):
        problems.append("no a=ice-lite")
    if not has("a=group:BUNDLE", session):
        problems.append("no a=group:BUNDLE")
    if not has("a=fingerprint:"):
        problems.append("no a=fingerprint")
    if "a=setup:passive" not in everywhere:
        problems.append("no a=setup:passive")
    cands = [l for l in everywhere if l.startswith("a=candidate:")]
    want = f" 127.0.0.1 {media_port} " if media_port else " 127.0.0.1 "
    if not any(want in c + " " and " udp " in c.lower() + " " for c in cands):
        problems.append(f"no UDP host candidate on{want}: {cands}")
    kinds = {}
    for m in media:
        kind = m[0].split()[0][2:]
        port = m[0].split()[1]
        if port == "0":
            continue
        kinds[kind] = m
        if "a=rtcp-mux" not in m:
            problems.append(f"{kind}: no a=rtcp-mux")
        if not has("a=mid:", m):
            problems.append(f"{kind}: no a=mid")
        if not any("urn:ietf:params:rtp-hdrext:sdes:mid" in l for l in m if l.startswith("a=extmap:")):
            problems.append(f"{kind}: no mid header extension")
        ssrcs = [l for l in m if l.startswith("a=ssrc:")]
        if not any(" cname:" in l for l in ssrcs) or not any(" msid:" in l for l in ssrcs):
            problems.append(f"{kind}: no a=ssrc lines with cname and msid: {ssrcs}")
        rtpmaps = [l.split(None, 1)[1].lower() for l in m if l.startswith("a=rtpmap:")]
        if any(r.startswith("rtx/") for r in rtpmaps):
            problems.append(f"{kind}: RTX accepted: {rtpmaps}")
    audio, video = kinds.get("audio"), kinds.get("video")
    if audio is None:
        problems.append("audio m-line rejected")
    elif not all(r.split(None, 1)[1].lower().startswith("opus/48000")
                 for r in audio if r.startswith("a=rtpmap:")) or not has("a=rtpmap:", audio):
        problems.append(f"audio codecs are not Opus only: {[l for l in audio if l.startswith('a=rtpmap:')]}")
    if video is None:
        problems.append("video m-line rejected")
    else:
        maps = [l for l in video if l.startswith("a=rtpmap:")]
        if not maps or not all(l.split(None, 1)[1].lower().startswith("vp8/90000") for l in maps):
            problems.append(f"video codecs are not VP8 only: {maps}")
        fb = {l.split(None, 1)[1].lower() for l in video if l.startswith("a=rtcp-fb:")}
        offered = _video_feedback(offer) if offer else None
        for need in ("nack", "nack pli", "ccm fir"):
            if need not in fb and (offered is None or need in offered):
                problems.append(f"video: no a=rtcp-fb ... {need} ({sorted(fb)})")
        if offered is not None and fb - offered:
            problems.append(f"video: rtcp-fb not in the offer: {sorted(fb - offered)}")
    return problems
