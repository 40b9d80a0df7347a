"""An aiortc room participant for `/v1/signal`, written against PROTOCOL.md and docs/SIGNALING.md only.

A participant has two peer connections: the publisher (it offers a VP8 test pattern and an Opus sine,
the server answers) and the subscriber (the server offers whenever the set of remote tracks changes,
the participant answers). Every incoming track is mapped to `(peer_id, track_id)` through the
`a=msid:<peer_id> <track_id>` line of its m-line, and consumed: decoded video frames are counted, and
decoded audio samples are counted with their energy (sum of squares of a subsample of the PCM).

    api = ControlAPI(sfu.base_url, KEY)
    room = api.create_room()
    async with RoomClient(api.token(room["id"], "dr-1", role="doctor")["signaling_url"]) as c:
        joined = await c.connect()
        await c.publish()
        await c.wait_event("track_published")
        ...

Also here: the Control API calls the room tests need (`ControlAPI`), and `mint_token` to make HS256
join tokens the way an app backend would (or to forge and expire them).
"""
from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import operator
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from aiortc import (RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender,
                    RTCSessionDescription, MediaStreamTrack)
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from echo_client import PatternVideoTrack, SineAudioTrack

# --- SDP helpers --------------------------------------------------------------------------------

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class _DecodeFailures(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (every receiver in this process): a frame the
    decoder refused, e.g. an interframe before any keyframe."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1


DECODE_FAILURES = _DecodeFailures()
logging.getLogger("aiortc.rtcrtpreceiver").addHandler(DECODE_FAILURES)


@dataclass
class Section:
    """One m-section of an SDP, with what the room tests look at."""
    index: int
    kind: str
    port: int
    mid: str | None
    direction: str | None
    msid: tuple[str, str] | None      # (peer_id, track_id) from a=msid
    lines: list[str]

    def attr(self, prefix: str) -> list[str]:
        return [l[len(prefix):] for l in self.lines if l.startswith(prefix)]


def sdp_sections(sdp: str) -> list[Section]:
    lines = [l.rstrip("\r") for l in sdp.split("\n") if l.strip()]
    out: list[Section] = []
    current: list[str] | None = None
    chunks: list[list[str]] = []
    for l in lines:
        if l.startswith("m="):
            current = [l]
            chunks.append(current)
        elif current is not None:
            current.append(l)
    for i, chunk in enumerate(chunks):
        m = chunk[0][2:].split()
        mid = next((l[6:].strip() for l in chunk if l.startswith("a=mid:")), None)
        direction = next((l[2:] for l in chunk if l[2:] in DIRECTIONS and l.startswith("a=")), None)
        msid = None
        for l in chunk:
            if l.startswith("a=msid:"):
                bits = l[7:].split()
                msid = (bits[0], bits[1] if len(bits) > 1 else "")
                break
        out.append(Section(i, m[0], int(m[1]), mid, direction, msid, chunk))
    return out


def sdp_msids(sdp: str) -> set[tuple[str, str]]:
    """(peer_id, track_id) of every `a=msid` line (m-line level) of the SDP."""
    return {s.msid for s in sdp_sections(sdp) if s.msid}


# --- join tokens --------------------------------------------------------------------------------

ROLE_PERMS = {"doctor": ["publish", "subscribe", "record"], "patient": ["publish", "subscribe"],
              "observer": ["subscribe"]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: str, room: str, sub: str, *, name: str = "", role: str = "patient",
               perms: list[str] | None = None, ttl_s: int = 3600, exp: int | None = None,
               iat: int | None = None, header: dict | None = None, claims: dict | None = None) -> str:
    """An HS256 JWT with the contract's claims, as an app backend would mint it with the API secret
    (the first API key). `exp`/`header`/`claims` let a test expire or forge one."""
    now = int(time.time())
    body = {"room": room, "sub": sub, "name": name, "role": role,
            "perms": ROLE_PERMS[role] if perms is None else perms,
            "iat": now if iat is None else iat, "exp": now + ttl_s if exp is None else exp}
    body.update(claims or {})
    head = header or {"alg": "HS256", "typ": "JWT"}
    signing_input = (b64url(json.dumps(head, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(body, separators=(",", ":")).encode()))
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def token_claims(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


# --- Control API --------------------------------------------------------------------------------

class ControlAPI:
    """The server-to-server API with an API key (blocking calls, plus `a*` versions for async code)."""

    def __init__(self, base_url: str, key: str):
        self.base_url, self.key = base_url.rstrip("/"), key

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = "",
             raw: bytes | None = None, timeout: float = 10) -> tuple[int, Any]:
        key = self.key if key == "" else key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        try:
            return status, (json.loads(text) if text else None)
        except json.JSONDecodeError:
            return status, text

    async def acall(self, method: str, path: str, body: Any = None, **kw) -> tuple[int, Any]:
        # In a thread: the event loop keeps running the clients' media while the server works.
        return await asyncio.to_thread(self.call, method, path, body, **kw)

    def ok(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201, 204)) -> Any:
        status, got = self.call(method, path, body)
        if status not in expect:
            raise AssertionError(f"{method} {path} -> {status} {got}")
        return got

    def wait_recording_finished(self, recording_id: str, timeout: float = 20) -> tuple[int | None, dict]:
        """Polls the recording until it is `completed` or `failed` (or `timeout`); returns the last status and body."""
        deadline = time.monotonic() + timeout
        status: int | None = None
        got: dict = {}
        while time.monotonic() < deadline:
            status, got = self.call("GET", f"/v1/recordings/{recording_id}")
            if status == 200 and got.get("status") in ("completed", "failed"):
                break
            time.sleep(0.5)
        return status, got

    def create_room(self, **fields) -> dict:
        return self.ok("POST", "/v1/rooms", fields, expect=(201,))

    def token(self, room_id: str, user_id: str, *, role: str = "patient", name: str | None = None,
              permissions: list[str] | None = None, ttl_s: int | None = None) -> dict:
        """`{token, signaling_url, ice_servers, ...}` for `user_id`."""
        body: dict[str, Any] = {"user_id": user_id, "role": role}
        if name is not None:
            body["name"] = name
        if permissions is not None:
            body["permissions"] = permissions
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        return self.ok("POST", f"/v1/rooms/{room_id}/tokens", body, expect=(200, 201))

    def signal_url(self, token: str) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/v1/signal?token=" + token


# --- the participant ----------------------------------------------------------------------------

class RoomError(Exception):
    """The server sent `error`, closed the socket, or something did not come in time."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class TrackStat:
    kind: str
    mid: str | None
    peer_id: str | None
    track_id: str | None
    frames: int = 0          # video: decoded frames
    sizes: set = field(default_factory=set)
    samples: int = 0         # audio: decoded samples (per channel)
    energy: float = 0.0      # audio: sum of squares of every 4th PCM value
    peak: int = 0
    first_at: float | None = None
    last_at: float | None = None
    ended: bool = False

    def as_dict(self) -> dict:
        d = {"kind": self.kind, "mid": self.mid, "first_at": self.first_at, "last_at": self.last_at}
        if self.kind == "video":
            d.update(frames=self.frames, sizes=sorted(self.sizes))
        else:
            d.update(samples=self.samples, energy=self.energy, peak=self.peak)
        return d


class RoomClient:
    def __init__(self, signaling_url: str, *, name: str = "", publish_audio: bool = True,
                 publish_video: bool = True, subscribe: bool = True, width: int = 320,
                 height: int = 240, open_timeout: float = 10.0, video_codec: str = "video/vp8"):
        self.url = signaling_url
        self.name = name or "client"
        self.publish_audio, self.publish_video = publish_audio, publish_video
        self.subscribe = subscribe            # answer subscriber offers (else only record them)
        self.open_timeout = open_timeout
        self.video = PatternVideoTrack(width, height) if publish_video else None
        self.video_codec = video_codec.lower()      # what the publisher offers for video (and RTX)
        self.audio = SineAudioTrack() if publish_audio else None
        self.ws = None
        self.events: list[tuple[str, Any]] = []   # (event, data) of every message received
        self.raw_messages = 0
        self.joined: dict | None = None
        self.peer_id: str | None = None
        self.user_id: str | None = None
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.publisher_offer: str | None = None
        self.publisher_answer: str | None = None
        self.subscriber_offers: list[str] = []
        self.subscriber_answers: list[str] = []
        self.last_subscriber_offer: str | None = None
        self.failures: list[str] = []             # client-side problems (e.g. aiortc refused an SDP)
        self.mid_map: dict[str, tuple[str, str]] = {}   # subscriber mid -> (peer_id, track_id)
        self.tracks: dict[str, TrackStat] = {}          # subscriber mid -> stats
        self.retired_tracks: list[TrackStat] = []       # stats of tracks whose m-line a later track took over
        self.closed = asyncio.Event()                   # the socket is closed (by either side)
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._new_event = asyncio.Event()
        self._offers: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._progress = asyncio.Event()

    def __repr__(self) -> str:
        return f"<RoomClient {self.name} peer={self.peer_id} user={self.user_id}>"

    async def __aenter__(self) -> "RoomClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- signaling ---

    async def open(self) -> None:
        """Opens the WebSocket only (refused upgrades raise websockets' InvalidStatus)."""
        self.ws = await ws_connect(self.url, open_timeout=self.open_timeout, max_size=8 * 1024 * 1024)
        self._signaling_tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._offer_loop())]
        self._tasks.extend(self._signaling_tasks)

    async def connect(self, room_id: str | None = None, timeout: float = 10.0) -> dict:
        """Opens the socket, sends `join_room` and returns the `joined_room` data (RoomError on `error`)."""
        if self.ws is None:
            await self.open()
        since = len(self.events)
        try:
            await self.send("join_room", {} if room_id is None else {"room_id": room_id})
        except ConnectionClosed:
            # Refused at the upgrade (the server sends `error` and closes at once): the socket may
            # be closed before join_room goes out. wait_event below raises RoomError either way.
            await self.wait_closed(5)
        data = await self.wait_event("joined_room", after=since, timeout=timeout, fail_on_error=True)
        self.joined = data
        self.peer_id, self.user_id = data.get("peer_id"), data.get("user_id")
        return data

    async def drop_signaling(self) -> None:
        """Cuts the signaling socket the way a dead network does: no close frame, no leave_room
        (the TCP connection is aborted). The peer connections are left alone."""
        ws = self.ws
        ws.transport.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), 5)

    async def resume_signaling(self, timeout: float = 10.0) -> dict:
        """A new socket with the same token: `join_room {resume: true}`; returns `joined_room`.
        The peer connections are kept, whatever the answer."""
        for t in self._signaling_tasks:       # the media consumers go on
            t.cancel()
            self._tasks.remove(t)
        self.closed = asyncio.Event()
        self.close_code = self.close_reason = None
        await self.open()
        since = len(self.events)
        await self.send("join_room", {"resume": True})
        data = await self.wait_event("joined_room", after=since, timeout=timeout, fail_on_error=True)
        self.joined = data
        self.peer_id, self.user_id = data.get("peer_id"), data.get("user_id")
        return data

    async def send(self, event: str, data: Any) -> None:
        await self.send_raw(json.dumps({"event": event, "data": data}))

    async def send_raw(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.raw_messages += 1
                if isinstance(raw, bytes):
                    self.events.append(("<binary>", raw))
                else:
                    try:
                        msg = json.loads(raw)
                        event, data = msg.get("event"), msg.get("data")
                    except (ValueError, AttributeError):
                        event, data = "<not json>", raw
                    self.events.append((event, data))
                    if (event == "webrtc_offer" and isinstance(data, dict)
                            and data.get("target") == "subscriber"):
                        self._offers.put_nowait(data.get("sdp"))
                self._new_event.set()
        except Exception as e:  # connection errors end the reader; the close is recorded below
            self.failures.append(f"reader: {e!r}")
        finally:
            self.close_code = getattr(self.ws, "close_code", None)
            self.close_reason = getattr(self.ws, "close_reason", None)
            self.closed.set()
            self._new_event.set()

    def find_events(self, name: str, pred: Callable[[Any], bool] | None = None, after: int = 0) -> list:
        return [d for e, d in self.events[after:] if e == name and (pred is None or pred(d))]

    def errors(self, after: int = 0) -> list[dict]:
        return self.find_events("error", after=after)

    async def wait_event(self, name: str, pred: Callable[[Any], bool] | None = None, *,
                         after: int = 0, timeout: float = 10.0, fail_on_error: bool = False) -> Any:
        """The first `name` event at index >= `after` matching `pred` (already received or not).

        Raises RoomError on timeout, when the socket closed without one, or (with `fail_on_error`)
        when an `error` event comes first."""
        deadline = time.monotonic() + timeout
        scanned = after
        while True:
            while scanned < len(self.events):
                event, data = self.events[scanned]
                scanned += 1
                if event == name and (pred is None or pred(data)):
                    return data
                if fail_on_error and event == "error":
                    code = data.get("code") if isinstance(data, dict) else None
                    raise RoomError(f"{self.name}: error while waiting for {name}: {data}", code)
            if self.closed.is_set():
                raise RoomError(f"{self.name}: socket closed (code {self.close_code}) before {name}; "
                                f"events: {self.brief_events(after)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RoomError(f"{self.name}: no {name} within {timeout}s; events: {self.brief_events(after)}")
            self._new_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), min(left, 0.5))

    async def wait_error(self, code: str | None = None, *, after: int = 0, timeout: float = 5.0) -> dict:
        return await self.wait_event("error", (lambda d: d.get("code") == code) if code else None,
                                     after=after, timeout=timeout)

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.closed.is_set()

    def brief_events(self, after: int = 0) -> list:
        """Events with SDPs shortened, for failure messages."""
        out = []
        for e, d in self.events[after:]:
            if isinstance(d, dict) and isinstance(d.get("sdp"), str):
                d = dict(d, sdp=f"<{len(d['sdp'])} chars>")
            elif isinstance(d, (str, bytes)) and len(d) > 200:
                d = d[:200]
            out.append((e, d))
        return out

    # --- publishing ---

    async def publish(self, timeout: float = 10.0) -> str:
        """Offers the publisher connection (sendonly VP8, or `video_codec`, + Opus) and applies the answer; returns it.
        RoomError (with `.code`) if the server answers with `error`."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pub_pc = pc
        if self.audio is not None:
            t = pc.addTransceiver(self.audio, direction="sendonly")
            t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                   if c.mimeType.lower() == "audio/opus"])
        if self.video is not None:
            t = pc.addTransceiver(self.video, direction="sendonly")
            t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() in (self.video_codec, "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())   # gathers all candidates
        self.publisher_offer = pc.localDescription.sdp
        since = len(self.events)
        await self.send("webrtc_offer", {"target": "publisher", "sdp": self.publisher_offer})
        data = await self.wait_event("webrtc_answer", lambda d: isinstance(d, dict) and d.get("target") == "publisher",
                                     after=since, timeout=timeout, fail_on_error=True)
        if not isinstance(data.get("sdp"), str):
            raise RoomError(f"{self.name}: webrtc_answer without sdp: {data}")
        self.publisher_answer = data["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(self.publisher_answer, "answer"))
        return self.publisher_answer

    # --- subscribing ---

    async def _offer_loop(self) -> None:
        while True:
            sdp = await self._offers.get()
            try:
                await self._answer(sdp)
            except Exception as e:
                self.failures.append(f"subscriber offer #{len(self.subscriber_offers)}: {e!r}")

    async def _answer(self, sdp: Any) -> None:
        if not isinstance(sdp, str):
            raise RoomError(f"subscriber offer without sdp: {sdp!r}")
        self.last_subscriber_offer = sdp
        self.subscriber_offers.append(sdp)
        reused: list = []
        for s in sdp_sections(sdp):
            if s.mid is not None and s.msid is not None:
                old = self.tracks.get(s.mid)
                if old is not None and old.peer_id is not None and (old.peer_id, old.track_id) != s.msid:
                    reused.append(s)
                    # The server reused an inactive m-line for another track: same receiver, new
                    # track (no new track event in aiortc); count its media apart from the old one.
                    self.retired_tracks.append(old)
                    self.tracks[s.mid] = TrackStat(old.kind, s.mid, s.msid[0], s.msid[1])
                self.mid_map[s.mid] = s.msid
        if not self.subscribe:
            return
        if self.sub_pc is None:
            self.sub_pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                             bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
            self.sub_pc.on("track", self._on_track)
        elif self.sub_pc.connectionState not in ("connected", "failed", "closed"):
            # aiortc starts the receivers of new m-lines only once DTLS is up: apply a re-offer
            # after the first negotiation connected (bounded).
            deadline = time.monotonic() + 10
            while self.sub_pc.connectionState not in ("connected", "failed", "closed") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        pc = self.sub_pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        for section in reused:
            self._route_reused_mline(section)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        self.subscriber_answers.append(answer)
        await self.send("webrtc_answer", {"target": "subscriber", "sdp": answer})

    def _route_reused_mline(self, section) -> None:
        """aiortc registers a receiver's SSRCs once, when it starts: a re-offer that gives an m-line
        another track (new SSRC, new RTX SSRC) is routed by payload type only, which fails with two
        video m-lines. Register the new SSRCs the way a browser's receiver takes them from the SDP."""
        t = next((t for t in self.sub_pc.getTransceivers() if t.mid == section.mid), None)
        if t is None:
            return
        ssrc = rtx = None
        for line in section.lines:
            if line.startswith("a=ssrc-group:FID "):
                bits = line.split()[1:]
                if len(bits) == 2:
                    ssrc, rtx = int(bits[0]), int(bits[1])
            elif line.startswith("a=ssrc:") and ssrc is None:
                ssrc = int(line[7:].split()[0])
        router = t.receiver.transport._rtp_router
        if ssrc is not None:
            router.ssrc_table[ssrc] = t.receiver
        if rtx is not None and ssrc is not None:
            router.ssrc_table[rtx] = t.receiver
            t.receiver._RTCRtpReceiver__rtx_ssrc[rtx] = ssrc

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next((t.mid for t in self.sub_pc.getTransceivers() if t.receiver.track is track), None)
        peer_id, track_id = self.mid_map.get(mid, (None, None))
        stat = TrackStat(track.kind, mid, peer_id, track_id)
        key = mid if mid is not None else f"?{len(self.tracks)}"
        self.tracks[key] = stat
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        self._tasks.append(asyncio.create_task(consume(track, key)))

    async def _consume_video(self, track: MediaStreamTrack, key: str) -> None:
        stat = self.tracks[key]
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                stat = self.tracks.get(key, stat)   # the m-line may carry another track by now
                stat.frames += 1
                stat.sizes.add((frame.width, frame.height))
                stat.first_at = stat.first_at or now
                stat.last_at = now
                self._progress.set()
        stat.ended = True

    async def _consume_audio(self, track: MediaStreamTrack, key: str) -> None:
        stat = self.tracks[key]
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                stat = self.tracks.get(key, stat)   # the m-line may carry another track by now
                channels = len(frame.layout.channels)
                pcm = array.array("h")
                if frame.format.name in ("s16", "s16p"):
                    pcm.frombytes(bytes(frame.planes[0])[: frame.samples * 2 * (channels if frame.format.name == "s16" else 1)])
                else:
                    self.failures.append(f"unexpected audio format {frame.format.name}")
                sub = pcm[::4]
                stat.samples += frame.samples
                stat.energy += float(sum(map(operator.mul, sub, sub)))
                stat.peak = max(stat.peak, max(map(abs, sub), default=0))
                stat.first_at = stat.first_at or now
                stat.last_at = now
                self._progress.set()
        stat.ended = True

    def remote_stats(self) -> dict[tuple[str | None, str | None], dict]:
        """{(peer_id, track_id): {"kind", "frames" | "samples", "energy", ...}} of every remote track."""
        out = {(s.peer_id, s.track_id): s.as_dict() for s in self.retired_tracks}
        for mid, s in self.tracks.items():
            # The msid of an m-line is known before its track event; fill in late mappings.
            if s.peer_id is None and mid in self.mid_map:
                s.peer_id, s.track_id = self.mid_map[mid]
            out[(s.peer_id, s.track_id)] = s.as_dict()
        return out

    def frames_from(self, peer_id: str) -> int:
        return sum(s["frames"] for (p, _), s in self.remote_stats().items() if p == peer_id and s["kind"] == "video")

    def samples_from(self, peer_id: str) -> int:
        return sum(s["samples"] for (p, _), s in self.remote_stats().items() if p == peer_id and s["kind"] == "audio")

    def energy_from(self, peer_id: str) -> float:
        return sum(s["energy"] for (p, _), s in self.remote_stats().items() if p == peer_id and s["kind"] == "audio")

    def media_peers(self) -> set:
        """peer_ids this client decoded anything from."""
        return {p for (p, _), s in self.remote_stats().items() if s.get("frames") or s.get("samples")}

    # --- leaving ---

    async def leave(self, timeout: float = 5.0) -> bool:
        """Sends `leave_room`, waits (bounded) for the server to close the socket, then closes.
        Returns whether the server closed the socket in time."""
        closed_by_server = False
        if self.ws is not None and not self.closed.is_set():
            with contextlib.suppress(Exception):
                await self.send("leave_room", {})
            closed_by_server = await self.wait_closed(timeout)
        await self.close()
        return closed_by_server

    async def close(self) -> None:
        """Closes both peer connections and the socket (without `leave_room`)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()

    def state(self) -> dict:
        return {
            "name": self.name, "peer_id": self.peer_id, "user_id": self.user_id,
            "pub": self.pub_pc.connectionState if self.pub_pc else None,
            "sub": self.sub_pc.connectionState if self.sub_pc else None,
            "sent": {"video": self.video.frames_sent if self.video else None,
                     "audio": self.audio.frames_sent if self.audio else None},
            "offers": len(self.subscriber_offers), "answers": len(self.subscriber_answers),
            "remote": self.remote_stats(), "failures": self.failures,
            "closed": self.closed.is_set(), "close_code": self.close_code,
        }


async def until(cond: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Polls `cond` until true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return bool(cond())
        await asyncio.sleep(interval)
