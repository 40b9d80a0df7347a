"""Media helpers for the recording tests: a lip-sync test clip and the analysis of recorded files.

- `make_sync_clip(dir)` writes a Y4M video that is dark except one full-white frame at every whole
  second (frame n*fps) and a 48 kHz mono WAV that is silent except a 50 ms 1 kHz beep starting
  exactly at every whole second: the inputs of Chromium's `--use-file-for-fake-video-capture` /
  `--use-file-for-fake-audio-capture`. Pure Python (the files are plain YUV and PCM).
- `decode_check(path)`: a full decode with `ffmpeg -v error`; the stderr lines (empty = clean).
  ffprobe/ffmpeg exit 0 even on truncated files, so stderr is the signal, not the exit code.
- `probe(path)`: duration, streams, decoded video frames and audio samples (PyAV + ffprobe).
- `flash_times(path)` / `beep_times(path)`: when the white frames show and the beeps start, in the
  file's own timeline (seconds); `sync_offsets(flashes, beeps)`: beep minus flash, in ms, per flash
  (positive = audio late).

No numpy here (the test venv has none): planes are read as bytes, PCM through `array`.
"""
from __future__ import annotations

import array
import bisect
import json
import math
import pathlib
import shutil
import statistics
import subprocess
import wave
from typing import Iterable

import av

DARK_Y, WHITE_Y = 16, 235
BEEP_HZ, BEEP_S, BEEP_AMPLITUDE = 1000, 0.050, 16000
RATE = 48000


def require_tools(*names: str) -> None:
    """Fails (never skips) when a needed command-line tool is missing."""
    import pytest
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"missing tools for the recording tests: {missing}")


# --- the clip ------------------------------------------------------------------------------------

def make_sync_clip(dir: str | pathlib.Path, seconds: int = 25, fps: int = 30,
                   size: tuple[int, int] = (640, 480)) -> tuple[pathlib.Path, pathlib.Path]:
    """(y4m_path, wav_path): flashes at frames n*fps, beeps starting at samples n*48000."""
    dir = pathlib.Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError("size must be even (4:2:0)")
    y4m = dir / f"sync-{w}x{h}-{fps}fps-{seconds}s.y4m"
    wav = dir / f"sync-{seconds}s-48k.wav"
    chroma = bytes([128]) * (2 * (w // 2) * (h // 2))
    dark = b"FRAME\n" + bytes([DARK_Y]) * (w * h) + chroma
    white = b"FRAME\n" + bytes([WHITE_Y]) * (w * h) + chroma
    with open(y4m, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(seconds * fps):
            f.write(white if n % fps == 0 else dark)

    beep_len = int(BEEP_S * RATE)
    beep = array.array("h", (int(BEEP_AMPLITUDE * math.sin(2 * math.pi * BEEP_HZ * i / RATE))
                             for i in range(beep_len)))
    second = beep + array.array("h", bytes(2 * (RATE - beep_len)))
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(second.tobytes() * seconds)
    return y4m, wav


def encode_webm(y4m: pathlib.Path, wav: pathlib.Path, out: pathlib.Path, *,
                audio_delay_s: float = 0.0, seconds: float | None = None) -> pathlib.Path:
    """The clip as VP8 + Opus WebM with ffmpeg (audio shifted later by `audio_delay_s`): a file
    whose A/V offset is known, to check the analysis."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(y4m)]
    if audio_delay_s:
        cmd += ["-itsoffset", f"{audio_delay_s:.3f}"]
    cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "libvpx", "-b:v", "800k",
            "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", "-b:a", "64k"]
    if seconds is not None:
        cmd += ["-t", f"{seconds:.3f}"]
    cmd += [str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({r.returncode}): {r.stderr[-2000:]}")
    return out


# --- checks --------------------------------------------------------------------------------------

def decode_check(path: str | pathlib.Path, timeout: float = 120, keep_time_base: bool = True) -> list[str]:
    """Decodes every stream fully (`ffmpeg -v error -i path -f null -`); returns ffmpeg's stderr
    lines (empty = decoded cleanly).

    `keep_time_base` adds `-enc_time_base -1`: the null output keeps the file's own (1 ms) time base.
    Without it ffmpeg 5.1 gives the null output's video a 1/r_frame_rate time base (1/30 s), and a
    real camera's frames (33 +- 6 ms apart, as Chromium captures them) that round into the same 1/30 s
    slot make the *null muxer* print "non monotonically increasing dts" although every frame decoded
    and the file's timestamps increase strictly. Frames whose own timestamps repeat or go back are
    still reported with it, as are truncated and corrupt data."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path)]
    if keep_time_base:
        cmd += ["-enc_time_base", "-1"]
    r = subprocess.run(cmd + ["-f", "null", "-"], capture_output=True, text=True, timeout=timeout)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode != 0 and not lines:
        lines = [f"ffmpeg exited with {r.returncode}"]
    return lines


def ffprobe(path: str | pathlib.Path, timeout: float = 120) -> dict:
    """`ffprobe -show_format -show_streams -count_frames -count_packets` as JSON."""
    r = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams",
                        "-count_frames", "-count_packets", str(path)],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"ffprobe {path}: {r.returncode} {r.stderr[-1000:]}")
    return json.loads(r.stdout)


def probe(path: str | pathlib.Path) -> dict:
    """What a recorded file holds:

    {"duration": container duration in s (None if the file has no Duration element),
     "span": end of the last packet minus start of the first, over all streams (s),
     "streams": [{"index", "type", "codec", "width", "height", "packets", "frames",
                  "start", "end"}],
     "video_frames": decoded video frames, "video_sizes": {(w, h)}, "video_keyframes": packets,
     "audio_packets": ..., "audio_samples": decoded samples (per channel), "audio_rate": Hz,
     "video_span"/"audio_span": first-to-last-packet-end seconds of each kind}
    Decoding goes through PyAV; errors while decoding are counted in "decode_errors"."""
    out: dict = {"streams": [], "video_frames": 0, "video_sizes": set(), "video_keyframes": 0,
                 "audio_packets": 0, "audio_samples": 0, "audio_rate": None, "decode_errors": 0,
                 "video_span": 0.0, "audio_span": 0.0}
    with av.open(str(path)) as c:
        out["duration"] = (c.duration / 1_000_000) if c.duration else None
        streams = {}
        for s in c.streams:
            streams[s.index] = {"index": s.index, "type": s.type, "codec": s.codec_context.name,
                                "width": getattr(s.codec_context, "width", None) if s.type == "video" else None,
                                "height": getattr(s.codec_context, "height", None) if s.type == "video" else None,
                                "packets": 0, "frames": 0, "start": None, "end": None}
        for packet in c.demux():
            st = streams.get(packet.stream.index)
            if st is None or packet.size == 0:
                continue
            st["packets"] += 1
            tb = packet.time_base
            if packet.pts is not None:
                t0 = float(packet.pts * tb)
                t1 = t0 + float((packet.duration or 0) * tb)
                st["start"] = t0 if st["start"] is None else min(st["start"], t0)
                st["end"] = t1 if st["end"] is None else max(st["end"], t1)
            if st["type"] == "video" and packet.is_keyframe:
                out["video_keyframes"] += 1
            try:
                for frame in packet.decode():
                    st["frames"] += 1
                    if st["type"] == "video":
                        out["video_frames"] += 1
                        out["video_sizes"].add((frame.width, frame.height))
                    elif st["type"] == "audio":
                        out["audio_samples"] += frame.samples
                        out["audio_rate"] = frame.sample_rate
            except av.error.FFmpegError:
                out["decode_errors"] += 1
            if st["type"] == "audio":
                out["audio_packets"] += 1
    out["streams"] = list(streams.values())
    starts = [s["start"] for s in out["streams"] if s["start"] is not None]
    ends = [s["end"] for s in out["streams"] if s["end"] is not None]
    out["span"] = (max(ends) - min(starts)) if starts and ends else 0.0
    for kind in ("video", "audio"):
        ss = [s for s in out["streams"] if s["type"] == kind and s["start"] is not None]
        if ss:
            out[f"{kind}_span"] = max(s["end"] for s in ss) - min(s["start"] for s in ss)
    return out


# --- flashes and beeps ---------------------------------------------------------------------------

def luma_means(path: str | pathlib.Path, step: int = 7) -> list[tuple[float, float]]:
    """(time s, mean luma) of every decoded video frame (the Y plane sampled every `step` bytes)."""
    out = []
    with av.open(str(path)) as c:
        if not c.streams.video:
            return out
        stream = c.streams.video[0]
        for frame in c.decode(stream):
            if frame.pts is None:
                continue
            out.append((float(frame.pts * frame.time_base), luma_mean(frame, step)))
    return out


def flash_times(path: str | pathlib.Path, means: list[tuple[float, float]] | None = None) -> list[float]:
    """Times (s) of the frames where the mean luma jumps from dark to bright: the start of each
    white flash (a flash lasting several frames, e.g. a repeated frame, counts once)."""
    means = luma_means(path) if means is None else means
    if not means:
        return []
    values = [m for _, m in means]
    low = statistics.median(values)
    high = max(values)
    if high - low < 60:            # no flash in the whole file
        return []
    threshold = (low + high) / 2
    out, bright = [], False
    for t, m in means:
        if m >= threshold and not bright:
            out.append(t)
        bright = m >= threshold
    return out


def audio_pcm(path: str | pathlib.Path) -> tuple[float, int, array.array]:
    """(start time s, sample rate, mono s16 PCM) of the first audio stream, decoded from its start
    (gaps in the timestamps are filled with silence so that sample index = time)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0, RATE, array.array("h")
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pcm = array.array("h")
        start = None
        for frame in c.decode(stream):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else None
            if start is None:
                start = t if t is not None else 0.0
            if t is not None:
                expected = int(round((t - start) * RATE))
                if expected > len(pcm) + RATE // 100:       # a gap of > 10 ms: pad with silence
                    pcm.extend(array.array("h", bytes(2 * (expected - len(pcm)))))
            for out in resampler.resample(frame):
                pcm.frombytes(bytes(out.planes[0])[: out.samples * 2])
        for out in resampler.resample(None):
            pcm.frombytes(bytes(out.planes[0])[: out.samples * 2])
        return (start or 0.0), RATE, pcm


def rms_windows(pcm: array.array, window: int) -> list[float]:
    out = []
    for i in range(0, len(pcm) - window + 1, window):
        chunk = pcm[i:i + window]
        out.append(math.sqrt(sum(v * v for v in chunk) / window))
    return out


def beep_times(path: str | pathlib.Path, window_ms: float = 1.0, min_gap_s: float = 0.3) -> list[float]:
    """Onset times (s) of the beeps in a file's first audio stream (see `beep_onsets`)."""
    start, rate, pcm = audio_pcm(path)
    return beep_onsets(start, rate, pcm, window_ms, min_gap_s)


def beep_onsets(start: float, rate: int, pcm: array.array, window_ms: float = 1.0,
                min_gap_s: float = 0.3) -> list[float]:
    """Onset times (s) of the beeps in mono PCM whose first sample is at `start`: the first
    `window_ms` window whose RMS crosses a quarter of the way from the median to the loudest
    window's RMS, after at least `min_gap_s` below it, refined to the first sample that loud."""
    window = max(1, int(rate * window_ms / 1000))
    rms = rms_windows(pcm, window)
    if not rms:
        return []
    peak = max(rms)
    floor = statistics.median(rms)
    if peak < 300 or peak < 4 * floor + 1:     # nothing that stands out of the background
        return []
    threshold = floor + (peak - floor) / 4
    out: list[float] = []
    last_loud = -1e9
    for i, r in enumerate(rms):
        t = start + i * window / rate
        if r >= threshold:
            if t - last_loud >= min_gap_s:
                base = i * window
                onset = base
                for j in range(max(0, base - window), base + window):
                    if abs(pcm[j]) >= threshold:
                        onset = j
                        break
                out.append(start + onset / rate)
            last_loud = t
    return out


def luma_mean(frame, step: int = 7) -> float:
    """Mean of the Y plane of a decoded video frame (sampled every `step` bytes)."""
    y = frame.planes[0]
    data = bytes(y)
    w, ls = frame.width, y.line_size
    if ls == w:
        sample = data[::step]
    else:
        sample = b"".join(data[r * ls: r * ls + w] for r in range(0, frame.height, 2))[::step]
    return sum(sample) / max(1, len(sample))


def sync_offsets(flashes: Iterable[float], beeps: Iterable[float], max_ms: float | None = 500.0) -> list[float]:
    """For each flash, (nearest beep - flash) in ms; positive = the audio comes late. A flash with
    no beep within `max_ms` (e.g. the last flash of a file that ends before its beep) has no pair."""
    beeps = sorted(beeps)
    out = []
    if not beeps:
        return out
    for f in flashes:
        nearest = min(beeps, key=lambda b: abs(b - f))
        offset = (nearest - f) * 1000.0
        if max_ms is None or abs(offset) <= max_ms:
            out.append(offset)
    return out


def sync_report(path: str | pathlib.Path) -> dict:
    """Flashes, beeps and their offsets (ms) in one file, for assertions and failure messages."""
    flashes, beeps = flash_times(path), beep_times(path)
    offsets = sync_offsets(flashes, beeps)
    return {"flashes": [round(f, 3) for f in flashes], "beeps": [round(b, 3) for b in beeps],
            "offsets_ms": [round(o, 1) for o in offsets], "unpaired_flashes": len(flashes) - len(offsets),
            "median_ms": round(statistics.median(offsets), 1) if offsets else None}


# --- a sender's intended A/V offset, from its RTCP sender reports ------------------------------------

class SenderReportReceiver:
    """An aiortc receiving peer connection that places what it decodes on the sender's NTP clock
    through the sender's RTCP SRs, and finds the flashes and beeps there: the A/V offset the sender
    itself means (what a recorder following the SRs should reproduce), independent of any server.

        ref = SenderReportReceiver()
        answer = await ref.answer(offer_sdp)      # the sender's offer (a=ssrc lines needed)
        ...  # media flows
        report = ref.report()                     # {"offsets_ms", "median_ms", ...}
        await ref.close()

    aiortc rebases RTP timestamps (pts = RTP - first RTP) before decoding; the origin is read back
    from the receiver to get the RTP timestamps the SRs refer to."""

    _srs: dict[int, list[tuple[float, int]]] = {}     # ssrc -> [(ntp seconds, rtp timestamp)]
    _patched = False

    def __init__(self):
        import asyncio
        from aiortc import RTCPeerConnection
        self._install()
        self.pc = RTCPeerConnection()
        self.video: list[tuple[int, float]] = []         # (pts, luma mean)
        self.audio: list[tuple[int, array.array]] = []   # (pts, mono pcm)
        # Per frame, how many SRs of its stream had arrived when it was received: the SR a live
        # recorder following the SRs places it with (the sender's RTP-to-NTP relation can move
        # mid-call, and a new SR only says so once it arrives; Chromium sends audio SRs every ~5 s).
        self.video_srs: list[int] = []
        self.audio_srs: list[int] = []
        self.offer: str | None = None
        self._tasks: list = []
        self.pc.on("track", lambda t: self._tasks.append(asyncio.ensure_future(self._consume(t))))

    @classmethod
    def _install(cls) -> None:
        if cls._patched:
            return
        from aiortc.rtcrtpreceiver import RTCRtpReceiver
        from aiortc.rtp import RtcpSrPacket
        original = RTCRtpReceiver._handle_rtcp_packet

        async def handle(self, packet):
            if isinstance(packet, RtcpSrPacket):
                cls._srs.setdefault(packet.ssrc, []).append(
                    (packet.sender_info.ntp_timestamp / 2 ** 32, packet.sender_info.rtp_timestamp))
            await original(self, packet)
        RTCRtpReceiver._handle_rtcp_packet = handle
        cls._patched = True

    async def answer(self, offer: str) -> str:
        from aiortc import RTCSessionDescription
        self.offer = offer
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError
        try:
            while True:
                f = await track.recv()
                srs = len(self._srs.get(self.media_ssrc(track.kind) or -1, []))
                if track.kind == "video":
                    self.video.append((f.pts, luma_mean(f)))
                    self.video_srs.append(srs)
                else:
                    ch = len(f.layout.channels)
                    pcm = array.array("h")
                    pcm.frombytes(bytes(f.planes[0])[: f.samples * 2 * ch])
                    self.audio.append((f.pts, pcm[::ch]))
                    self.audio_srs.append(srs)
        except MediaStreamError:
            pass

    def media_ssrc(self, kind: str) -> int | None:
        import re
        for section in (self.offer or "").split("\nm=")[1:]:
            if not section.startswith(kind):
                continue
            m = re.search(r"a=ssrc-group:FID (\d+)", section) or re.search(r"a=ssrc:(\d+)", section)
            return int(m.group(1)) if m else None
        return None

    def sr_counts(self) -> dict[str, int]:
        return {k: len(self._srs.get(self.media_ssrc(k) or -1, [])) for k in ("audio", "video")}

    def _origins(self) -> dict[str, int]:
        return {r.track.kind: r._RTCRtpReceiver__timestamp_mapper._origin for r in self.pc.getReceivers()
                if r.track is not None}

    def report(self) -> dict:
        origins = self._origins()
        out: dict = {"srs": self.sr_counts(), "video_frames": len(self.video), "audio_frames": len(self.audio)}
        vs, as_ = self.media_ssrc("video"), self.media_ssrc("audio")
        if not self._srs.get(vs) or not self._srs.get(as_) or not self.video or not self.audio \
                or origins.get("video") is None or origins.get("audio") is None:
            out["error"] = "no SR or no media for one of the kinds"
            return out

        def to_ntp(ssrc: int, rate: int, rtp: int, received: int | None = None) -> float:
            # With `received`, the last SR that had arrived when the frame did (the first before
            # any): what a recorder following the SRs live can know. Without, the last SR.
            srs = self._srs[ssrc]
            ntp, sr_rtp = srs[-1] if received is None else srs[max(0, min(received, len(srs)) - 1)]
            diff = (rtp - sr_rtp) % 2 ** 32
            if diff >= 2 ** 31:
                diff -= 2 ** 32
            return ntp + diff / rate

        means = [(to_ntp(vs, 90000, (p + origins["video"]) % 2 ** 32, n), m) for (p, m), n in zip(self.video, self.video_srs)]
        flashes = flash_times(None, means=means)
        first = self.audio[0][0]
        pcm = array.array("h")
        for p, chunk in sorted(self.audio, key=lambda x: x[0]):
            idx = p - first
            if idx > len(pcm):
                pcm.extend(array.array("h", bytes(2 * (idx - len(pcm)))))
            pcm[idx:idx + len(chunk)] = chunk
        # Onsets found on the RTP timeline (the PCM is laid out by timestamp), each then placed with
        # the SR its frame was received under.
        received = sorted(zip((p for p, _ in self.audio), self.audio_srs))
        starts = [p for p, _ in received]

        def beep_ntp(onset: float) -> float:
            rtp = first + round(onset * RATE)
            n = received[max(0, bisect.bisect_right(starts, rtp) - 1)][1]
            return to_ntp(as_, 48000, (rtp + origins["audio"]) % 2 ** 32, n)
        beeps = [beep_ntp(o) for o in beep_onsets(0.0, RATE, pcm)]
        offsets = sync_offsets(flashes, beeps)
        t0 = min(flashes + beeps) if flashes or beeps else 0.0
        out.update(flashes=[round(f - t0, 3) for f in flashes], beeps=[round(b - t0, 3) for b in beeps],
                   offsets_ms=[round(o, 1) for o in offsets],
                   median_ms=round(statistics.median(offsets), 1) if offsets else None,
                   # Per flash its time (the sender's NTP clock, s) and offset, to compare flash by flash.
                   flash_offsets=[(f, round(o, 1)) for f in flashes for o in sync_offsets([f], beeps)])
        return out

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()
