"""Per-participant recording of every source and snapshots (issue 18), end to end with aiortc,
against docs/RECORDING.md only.

- `test_screen_share_is_recorded_in_its_own_file`: a doctor publishes a camera (moving pattern) and
  a screen share (solid red) after `screen_share {enabled: true}`; the recording has a `source:
  "screen"` file that ffmpeg decodes without a message, whose frames are the screen's red at the
  screen's size, beside the camera file.
- `test_h264_publisher_is_recorded_in_matroska`: an aiortc publisher forced to H.264 (libx264) gives
  a `.mkv` (`format: "mkv"`, `video_codec: "h264"`) that ffmpeg decodes without a message, served as
  `video/x-matroska`.
- `test_an_h264_snapshot_decodes_to_the_publishers_colours`: a solid green aiortc camera sent as
  H.264 gives a JPEG snapshot (decoded with libavcodec) of 320x240 green.
- `test_snapshots_decode_to_the_publishers_colours`: JPEG and PNG snapshots of a solid green
  aiortc camera decode (ffmpeg) to 320x240 green images; the list/get/file routes, 400/404/409,
  the `snapshot_taken` webhook; `capture_image` over signaling works for a doctor and is denied to
  a patient.
- `test_sigkill_mid_recording_reconciles_screen_and_mkv_files`: kill -9 while recording an H.264
  camera and screen share; the restarted server finalizes both `.mkv` files with source and codec.

Everything is bounded; a missing tool fails the test, it never skips.
"""
from __future__ import annotations

import asyncio
import json
import contextlib
import fractions
import secrets
import subprocess
import time

import av
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from room_client import ControlAPI, RoomClient, until

SCENARIO_TIMEOUT = 120


class SolidVideoTrack(VideoStreamTrack):
    """A `width`x`height` frame of one YUV colour at ~30 fps."""

    def __init__(self, width: int, height: int, yuv: tuple[int, int, int]):
        super().__init__()
        self.width, self.height, self.yuv = width, height, yuv
        self.frames_sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, self.yuv):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.frames_sent += 1
        return frame


# BT.601 studio-swing red (R 255, G 0, B 0) and its RGB.
RED_YUV, RED_RGB = (81, 90, 240), (255, 0, 0)


@pytest.fixture
def server(sfu_factory):
    key = "sources-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    sfu.key = key
    sfu.api = ControlAPI(sfu.base_url, key)
    return sfu


def run(coro, timeout: float = SCENARIO_TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def diag(sfu, *clients: RoomClient, lines: int = 60) -> str:
    out = [f"client {c.name}: {c.state()} events: {c.brief_events()}" for c in clients]
    log = sfu.log().splitlines()
    out.append(f"server log (last {lines} of {len(log)} lines, {sfu.log_path}):")
    out.extend(log[-lines:])
    return "\n".join(out)


async def publish_tracks(c: RoomClient, tracks: list, video_codec: str = "video/vp8", timeout: float = 10) -> str:
    """Offers the publisher connection with `tracks` in this order (sendonly) and applies the answer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    c.pub_pc = pc
    for track in tracks:
        t = pc.addTransceiver(track, direction="sendonly")
        wanted = ("audio/opus",) if track.kind == "audio" else (video_codec, "video/rtx")
        t.setCodecPreferences([k for k in RTCRtpSender.getCapabilities(track.kind).codecs if k.mimeType.lower() in wanted])
    await pc.setLocalDescription(await pc.createOffer())
    c.publisher_offer = pc.localDescription.sdp
    since = len(c.events)
    await c.send("webrtc_offer", {"target": "publisher", "sdp": c.publisher_offer})
    data = await c.wait_event("webrtc_answer", lambda d: isinstance(d, dict) and d.get("target") == "publisher",
                              after=since, timeout=timeout, fail_on_error=True)
    c.publisher_answer = data["sdp"]
    await pc.setRemoteDescription(RTCSessionDescription(c.publisher_answer, "answer"))
    return c.publisher_answer


def decode_errors(path) -> str:
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120)
    return r.stderr.strip() + ("" if r.returncode == 0 else f" (exit {r.returncode})")


def probe_video(path) -> tuple[int, int, int]:
    """(width, height, decoded frames) of the first video stream."""
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                        "stream=width,height,nb_read_frames", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, timeout=120, check=True)
    w, h, n = r.stdout.strip().split(",")[:3]
    return int(w), int(h), int(n)


def mean_rgb(path, frames: int = 10) -> list[tuple[float, float, float]]:
    """The mean RGB of `frames` decoded frames spread over the file (scaled down to 32x18)."""
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", "scale=32:18", "-f", "rawvideo",
                        "-pix_fmt", "rgb24", "-"], capture_output=True, timeout=120, check=True)
    size = 32 * 18 * 3
    count = len(r.stdout) // size
    out = []
    for i in range(0, count, max(1, count // frames)):
        px = r.stdout[i * size:(i + 1) * size]
        out.append(tuple(sum(px[c::3]) / (32 * 18) for c in range(3)))
    return out


def close_to(rgb, want, tolerance: float = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, want))


def test_screen_share_is_recorded_in_its_own_file(server):
    sfu = server

    async def scenario():
        from echo_client import PatternVideoTrack, SineAudioTrack
        rid = sfu.api.create_room(name="screen")["id"]
        tok = sfu.api.token(rid, "dr-screen", role="doctor")
        async with RoomClient(tok["signaling_url"], name="dr-screen", subscribe=False) as c:
            await c.connect()
            screen = SolidVideoTrack(640, 360, RED_YUV)
            camera = PatternVideoTrack(320, 240)
            # The first new video section of an offer after `screen_share {enabled: true}` is the screen.
            await c.send("screen_share", {"enabled": True})
            await c.wait_event("screen_share_toggled", timeout=5)
            await publish_tracks(c, [SineAudioTrack(), screen, camera])
            assert await until(lambda: c.pub_pc.connectionState == "connected", 20), diag(sfu, c)
            status, rec = sfu.api.call("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, rec
            sent = screen.frames_sent
            assert await until(lambda: screen.frames_sent - sent >= 150, 30), "the screen track did not run"
            status, done = sfu.api.call("POST", f"/v1/recordings/{rec['id']}/stop")
            assert status == 200 and done["status"] == "completed", done
            return done

    done = run(scenario())
    files = {f["source"]: f for f in done["files"]}
    assert sorted(files) == ["camera", "screen"], done["files"]
    screen, camera = files["screen"], files["camera"]
    assert screen["user_id"] == camera["user_id"] == "dr-screen", done["files"]
    assert screen["track_kinds"] == ["video"] and screen["format"] == "webm" and screen["video_codec"] == "vp8", screen
    assert screen.get("audio_codec") is None and screen["resolution"] == "640x360", screen
    assert screen["file_name"].endswith("-screen.webm") and screen["file_name"] != camera["file_name"], done["files"]
    assert sorted(camera["track_kinds"]) == ["audio", "video"] and camera["resolution"] == "320x240", camera
    for f in (screen, camera):
        errors = decode_errors(f["path"])
        assert errors == "", f"{f['file_name']}: {errors}"
    w, h, n = probe_video(screen["path"])
    assert (w, h) == (640, 360) and n >= 100, (w, h, n)
    colours = mean_rgb(screen["path"])
    assert colours and all(close_to(c, RED_RGB) for c in colours), colours
    # The camera file is not the screen: its pattern is not red.
    assert not all(close_to(c, RED_RGB) for c in mean_rgb(camera["path"])), "the camera file shows the screen"


def test_h264_publisher_is_recorded_in_matroska(server):
    sfu = server

    async def scenario():
        rid = sfu.api.create_room(name="h264-rec")["id"]
        tok = sfu.api.token(rid, "dr-h264", role="doctor")
        async with RoomClient(tok["signaling_url"], name="dr-h264", subscribe=False, video_codec="video/h264") as c:
            await c.connect()
            answer = await c.publish()
            assert "H264/90000" in answer and "VP8" not in answer, answer
            assert await until(lambda: c.pub_pc.connectionState == "connected", 20), diag(sfu, c)
            status, rec = sfu.api.call("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, rec
            sent = c.video.frames_sent
            assert await until(lambda: c.video.frames_sent - sent >= 150, 30), "the camera did not run"
            status, done = sfu.api.call("POST", f"/v1/recordings/{rec['id']}/stop")
            assert status == 200 and done["status"] == "completed", done
            return done

    done = run(scenario())
    assert len(done["files"]) == 1, done["files"]
    f = done["files"][0]
    assert f["format"] == "mkv" and f["video_codec"] == "h264" and f["audio_codec"] == "opus", f
    assert f["source"] == "camera" and f["file_name"].endswith(".mkv") and f["resolution"] == "320x240", f
    errors = decode_errors(f["path"])
    assert errors == "", errors
    w, h, n = probe_video(f["path"])
    # 5 s at 30 fps sent; the file starts at the first keyframe the recorder saw.
    assert (w, h) == (320, 240) and n >= 100, (w, h, n)
    import urllib.request
    req = urllib.request.Request(f"{sfu.base_url}/v1/recordings/{done['id']}/files/{f['id']}",
                                 headers={"Authorization": f"Bearer {sfu.key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["Content-Type"] == "video/x-matroska"
        assert r.read()[:4] == b"\x1a\x45\xdf\xa3"


def yuv601(r: int, g: int, b: int) -> tuple[int, int, int]:
    """BT.601 limited-range YUV of an RGB colour."""
    return (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16, ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128,
            ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128)


# A green for the snapshot publisher.
GREEN_RGB = (30, 180, 60)
GREEN_YUV = yuv601(*GREEN_RGB)


def image_info(data: bytes, tmp) -> tuple[str, int, int, tuple[float, float, float], str]:
    """(codec, width, height, mean RGB, ffmpeg messages) of an image file's bytes."""
    path = tmp / f"img-{secrets.token_hex(4)}"
    path.write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, timeout=30)
    codec, w, h = probe.stdout.strip().split(",")[:3]
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, timeout=30)
    px = raw.stdout
    n = len(px) // 3
    mean = tuple(sum(px[c::3]) / max(1, n) for c in range(3))
    return codec, int(w), int(h), mean, raw.stderr.decode(errors="replace").strip()


def test_snapshots_decode_to_the_publishers_colours(sfu_factory, tmp_path):
    """A patient publishes a solid green 320x240 camera: a JPEG and a PNG snapshot decode to
    320x240 green images; list/get/file routes, the errors, the `snapshot_taken` webhook; from the
    signaling socket a doctor gets `image_captured`, a patient `permission_denied`."""
    from test_webhooks import Receiver
    from echo_client import SineAudioTrack
    hooks = Receiver()
    key = "snap-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_WEBHOOK_URLS": hooks.url, "SFU_WEBHOOK_SECRET": "snapshot-hooks-" + secrets.token_hex(16)})
    sfu.key = key
    api = ControlAPI(sfu.base_url, key)

    def get(path: str) -> tuple[int, dict, bytes]:
        import urllib.error
        import urllib.request
        req = urllib.request.Request(sfu.base_url + path, headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {}, e.read()

    async def scenario():
        rid = api.create_room(name="snap")["id"]
        pt = RoomClient(api.token(rid, "pt-snap", role="patient")["signaling_url"], name="pt-snap", subscribe=False)
        dr = RoomClient(api.token(rid, "dr-snap", role="doctor")["signaling_url"], name="dr-snap", subscribe=False,
                        publish_video=False, publish_audio=False)
        try:
            await pt.connect()
            await dr.connect()
            await publish_tracks(pt, [SineAudioTrack(), SolidVideoTrack(320, 240, GREEN_YUV)])
            assert await until(lambda: pt.pub_pc.connectionState == "connected", 20), diag(sfu, pt)
            await asyncio.sleep(1.0)
            out = {}
            for fmt in ("jpeg", "png"):
                t0 = time.monotonic()
                status, snap = await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "pt-snap", "format": fmt})
                assert status == 201, (status, snap, diag(sfu, pt))
                out[fmt] = (snap, time.monotonic() - t0)
            out["errors"] = {
                "unknown user": await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "nobody"}),
                "no screen": await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "pt-snap", "source": "screen"}),
                "bad format": await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "pt-snap", "format": "gif"}),
                "unknown room": await api.acall("POST", "/v1/rooms/rm_nope/snapshots", {"user_id": "pt-snap"}),
                "no video": await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "dr-snap"}),
            }
            # The signaling socket: a doctor may, a patient may not.
            since = len(dr.events)
            await dr.send("capture_image", {"user_id": "pt-snap"})
            out["captured"] = await dr.wait_event("image_captured", after=since, timeout=10, fail_on_error=True)
            since = len(pt.events)
            await pt.send("capture_image", {"user_id": "pt-snap"})
            out["denied"] = await pt.wait_error(after=since, timeout=5)
            out["room_id"] = rid
            return out
        finally:
            await pt.close()
            await dr.close()

    try:
        out = run(scenario())
        for fmt in ("jpeg", "png"):
            snap, seconds = out[fmt]
            assert set(snap) >= {"id", "room_id", "user_id", "source", "taken_at", "width", "height", "format", "size_bytes"}, snap
            assert snap["id"].startswith("snap_") and snap["user_id"] == "pt-snap" and snap["source"] == "camera", snap
            assert (snap["width"], snap["height"], snap["format"]) == (320, 240, fmt), snap
            assert seconds < 3.5, f"the {fmt} snapshot took {seconds:.1f} s"
            status, headers, data = get(f"/v1/snapshots/{snap['id']}/file")
            assert status == 200 and headers["content-type"] == f"image/{fmt}" and len(data) == snap["size_bytes"], (status, headers)
            codec, w, h, mean, errors = image_info(data, tmp_path)
            assert (codec, w, h, errors) == ("mjpeg" if fmt == "jpeg" else "png", 320, 240, ""), (codec, w, h, errors)
            assert close_to(mean, GREEN_RGB, 20), f"{fmt}: mean colour {mean}, want {GREEN_RGB}"
            status, _, body = get(f"/v1/snapshots/{snap['id']}")
            assert status == 200 and json.loads(body) == snap
        errors = {k: (s, b.get("error", {}).get("code")) for k, (s, b) in out["errors"].items()}
        assert errors == {"unknown user": (404, "not_found"), "no screen": (409, "no_video"), "bad format": (400, "bad_request"),
                          "unknown room": (404, "not_found"), "no video": (409, "no_video")}, errors
        captured = out["captured"]
        assert captured["user_id"] == "pt-snap" and captured["snapshot_id"].startswith("snap_"), captured
        assert out["denied"]["code"] == "permission_denied", out["denied"]
        status, _, body = get(f"/v1/snapshots?room_id={out['room_id']}")
        listed = [s["id"] for s in json.loads(body)["snapshots"]]
        assert status == 200 and sorted(listed) == sorted([out["jpeg"][0]["id"], out["png"][0]["id"], captured["snapshot_id"]]), listed
        assert get("/v1/snapshots/snap_nope")[0] == 404
        received = hooks.wait(6, timeout=10)
        taken = [json.loads(b) for _, b, _ in received if b"snapshot_taken" in b]
        assert len(taken) == 3, [b[:200] for _, b, _ in received]
    finally:
        hooks.close()


def test_an_h264_snapshot_decodes_to_the_publishers_colours(server, tmp_path):
    """H.264 is forwarded and recorded as it comes; a snapshot decodes its keyframe (libavcodec) to
    the publisher's picture: the size of its SPS, the colour of its pixels."""
    sfu = server

    async def scenario():
        rid = sfu.api.create_room(name="h264-snap")["id"]
        c = RoomClient(sfu.api.token(rid, "pt-h264", role="patient")["signaling_url"], name="pt-h264", subscribe=False)
        try:
            await c.connect()
            answer = await publish_tracks(c, [SolidVideoTrack(320, 240, GREEN_YUV)], video_codec="video/h264")
            assert "H264/90000" in answer and "VP8" not in answer, answer
            assert await until(lambda: c.pub_pc.connectionState == "connected", 20), diag(sfu, c)
            await asyncio.sleep(1.0)
            status, snap = await sfu.api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "pt-h264", "format": "jpeg"})
            assert status == 201, (status, snap, diag(sfu, c))
            return snap
        finally:
            await c.close()

    snap = run(scenario())
    assert (snap["width"], snap["height"], snap["format"], snap["source"]) == (320, 240, "jpeg", "camera"), snap
    import urllib.request
    req = urllib.request.Request(f"{sfu.base_url}/v1/snapshots/{snap['id']}/file", headers={"Authorization": f"Bearer {sfu.key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
    codec, w, h, mean, errors = image_info(data, tmp_path)
    assert (codec, w, h, errors) == ("mjpeg", 320, 240, ""), (codec, w, h, errors)
    assert close_to(mean, GREEN_RGB, 20), f"mean colour {mean}, want {GREEN_RGB}"


def test_sigkill_mid_recording_reconciles_screen_and_mkv_files(sfu_factory, sfu_bin):
    """SIGKILL while recording an H.264 camera and an H.264 screen share: a server restarted on the
    same data directory finalizes both `.mkv` files with their source, format and codec, and each
    decodes without a message."""
    from conftest import SFUProcess
    from echo_client import PatternVideoTrack, SineAudioTrack
    key = "kill-src-" + secrets.token_hex(16)
    env = {"SFU_API_KEY": key}
    sfu = sfu_factory(env=env)
    api = ControlAPI(sfu.base_url, key)
    rid = api.create_room(name="killed-sources")["id"]

    async def scenario() -> dict:
        c = RoomClient(api.token(rid, "kill-src", role="doctor")["signaling_url"], name="kill-src", subscribe=False)
        try:
            await c.connect()
            await c.send("screen_share", {"enabled": True})
            await c.wait_event("screen_share_toggled", timeout=5)
            await publish_tracks(c, [SineAudioTrack(), SolidVideoTrack(640, 360, RED_YUV), PatternVideoTrack(320, 240)],
                                 video_codec="video/h264")
            assert await until(lambda: c.pub_pc.connectionState == "connected", 20), diag(sfu, c)
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, rec
            await asyncio.sleep(5.0)
            sfu.proc.kill()
            sfu.proc.wait(10)
            return rec
        finally:
            await c.close()

    rec = run(scenario())
    on_disk = sorted(p.name for p in (sfu.data_dir / "recordings" / rec["id"]).iterdir())
    assert len(on_disk) == 2 and all(n.endswith(".mkv") for n in on_disk), on_disk
    sfu.log_path.rename(sfu.data_dir / "sfu-first.log")
    again = SFUProcess(sfu_bin, sfu.data_dir, env)
    try:
        again.wait_ready()
        api2 = ControlAPI(again.base_url, key)
        status, got = api2.wait_recording_finished(rec['id'])
        assert got.get("status") == "completed", got
        files = {f["source"]: f for f in got["files"]}
        assert sorted(files) == ["camera", "screen"], got["files"]
        for f in files.values():
            assert f["format"] == "mkv" and f["video_codec"] == "h264" and f["user_id"] == "kill-src", f
            assert decode_errors(f["path"]) == "", f
        assert files["screen"]["file_name"].endswith("-screen.mkv") and files["screen"]["resolution"] == "640x360", files["screen"]
    finally:
        again.kill()
