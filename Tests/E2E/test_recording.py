"""Server-side recording (issue 7) end to end, against docs/RECORDING.md and PROTOCOL.md only.

- `test_analysis_tools_detect_a_known_offset`: the analysis itself (media_analysis.py) on WebM files
  made by ffmpeg, in sync and with the audio 100 ms late; needs no server.
- One shared 20 s recording of two participants (module fixture `two_party`): an aiortc participant
  (VP8 test pattern + Opus sine) and a headless Chromium demo page fed with a lip-sync clip (a white
  frame and a 1 kHz beep at every whole second). From it:
  * `test_two_party_recording_files`: completed, one file per participant with the metadata fields,
    every file decodes without a single ffmpeg message;
  * `test_two_party_durations_and_frames`: the aiortc file holds the frames sent in the window (5 %),
    durations match the wall clock (0.5 s);
  * `test_two_party_lip_sync`: flashes and beeps of the Chromium file line up (40 ms) the way
    Chromium's own sender reports put them (`test_chromium_sender_reports_reference` checks that
    reference without a server);
  * `test_two_party_recording_events`: everyone got recording_started/recording_stopped with the id;
  * `test_recording_file_ranges`: 206 with the right Content-Range and bytes, 416 when unsatisfiable;
  * `test_recordings_listed_by_room_and_status`.
- `test_sigkill_mid_recording_leaves_a_playable_file`: kill -9 after 8 s; the file on disk decodes
  cleanly with several seconds; a server restarted on the same data directory finalizes it.
- `test_recording_under_5_percent_loss`: the publisher runs in a network namespace whose nftables
  drop 5 % of what it sends to the server's media port (this file, run as a script, is that
  publisher); the 15 s file decodes cleanly.
- `test_recording_permissions_and_events`: signaling start/stop by permission, the events, 409s,
  and `auto_record` rooms.

Everything is bounded; a missing tool fails the test, it never skips.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import pathlib
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# --- the publisher of the loss test, run inside the network namespace ---------------------------

async def _namespace_publisher(url: str, seconds: float) -> None:
    """Joins, publishes VP8 + Opus and prints `T <monotonic> <video frames sent> <audio frames sent>`
    every 0.2 s (CLOCK_MONOTONIC is system-wide, so the test can compare with its own clock)."""
    from room_client import RoomClient, until
    c = RoomClient(url, name="ns-publisher", subscribe=False)
    try:
        joined = await c.connect()
        print("JOINED " + json.dumps({"peer_id": joined.get("peer_id")}), flush=True)
        await c.publish()
        connected = await until(lambda: c.pub_pc.connectionState == "connected", 20)
        print("CONNECTED " + json.dumps({"ok": connected, "state": c.pub_pc.connectionState}), flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            print(f"T {time.monotonic():.3f} {c.video.frames_sent} {c.audio.frames_sent}", flush=True)
            await asyncio.sleep(0.2)
        print("DONE " + json.dumps({"events": [e for e, _ in c.events], "failures": c.failures}), flush=True)
    finally:
        await c.close()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if len(sys.argv) == 4 and sys.argv[1] == "publish":
        asyncio.run(asyncio.wait_for(_namespace_publisher(sys.argv[2], float(sys.argv[3])),
                                     float(sys.argv[3]) + 60))
        sys.exit(0)
    print(f"usage: {sys.argv[0]} publish <signaling url> <seconds>", file=sys.stderr)
    sys.exit(2)


# --- the tests -----------------------------------------------------------------------------------

import pytest  # noqa: E402

import media_analysis as ma  # noqa: E402
from conftest import SFUProcess, _sfu_bin, free_port  # noqa: E402
from room_client import ControlAPI, RoomClient, until  # noqa: E402
from test_chromium_room import page_stats, page_view, media_from, token_page  # noqa: E402
from test_echo import Browser, _chromium_binary  # noqa: E402

RECORD_S = 20.0          # the shared two-party recording
REFERENCE_LEAD_S = 8.0   # the reference connection runs this long before the recording starts (its first SRs)
KILL_AFTER_S = 8.0
LOSS_RECORD_S = 15.0
LOSS_PERCENT = 5
SYNC_TOLERANCE_MS = 40.0
FRAME_TOLERANCE = 0.05
DURATION_TOLERANCE_S = 0.5
FILE_FIELDS = ("id", "user_id", "track_kinds", "file_name", "path", "size_bytes", "format",
               "video_codec", "audio_codec", "resolution", "duration_ms")
RECORDING_FIELDS = ("id", "room_id", "mode", "status", "started_at", "ended_at", "duration_ms",
                    "storage", "files")


# --- helpers ---------------------------------------------------------------------------------------

def log_tail(sfu: SFUProcess, lines: int = 60, pattern: str | None = None) -> str:
    try:
        text = sfu.log_path.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    all_lines = text.splitlines()
    if pattern:
        rx = re.compile(pattern, re.I)
        picked = [l for l in all_lines if rx.search(l)][-lines:]
        return f"server log, lines matching {pattern!r} ({sfu.log_path}):\n" + "\n".join(picked)
    return f"server log (last {lines} of {len(all_lines)} lines, {sfu.log_path}):\n" + "\n".join(all_lines[-lines:])


def download(base_url: str, key: str, path: str, headers: dict | None = None,
             timeout: float = 30) -> tuple[int, dict, bytes]:
    """GET with the API key; (status, headers (lower-case names), body) also for 4xx."""
    req = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {key}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def error_code(body) -> str | None:
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def check_file_meta(f: dict, user_id: str, resolution: str | None = None) -> list[str]:
    problems = [f"missing {k}" for k in FILE_FIELDS if k not in f]
    if problems:
        return problems
    if not str(f["id"]).startswith("file_"):
        problems.append(f"file id {f['id']!r} is not file_...")
    if f["user_id"] != user_id:
        problems.append(f"user_id {f['user_id']!r} != {user_id!r}")
    if sorted(f["track_kinds"]) != ["audio", "video"]:
        problems.append(f"track_kinds {f['track_kinds']}")
    if f["format"] != "webm" or f["video_codec"] != "vp8" or f["audio_codec"] != "opus":
        problems.append(f"format/codecs {f['format']}/{f['video_codec']}/{f['audio_codec']}")
    if not re.fullmatch(r"\d+x\d+", str(f["resolution"])):
        problems.append(f"resolution {f['resolution']!r} is not WxH")
    elif resolution is not None and f["resolution"] != resolution:
        problems.append(f"resolution {f['resolution']!r} != {resolution!r}")
    if not (isinstance(f["size_bytes"], int) and f["size_bytes"] > 0):
        problems.append(f"size_bytes {f['size_bytes']!r}")
    if not str(f["file_name"]).endswith(".webm") or not str(f["path"]).endswith(f["file_name"]):
        problems.append(f"file_name {f['file_name']!r} / path {f['path']!r}")
    return problems


def expected_path(recordings_dir: pathlib.Path, rec_id: str, user_id: str, peer_id: str) -> pathlib.Path:
    """RECORDING.md: `SFU_RECORDINGS_DIR/<recording_id>/<user_id>-<peer_id>.webm`."""
    return recordings_dir / rec_id / f"{user_id}-{peer_id}.webm"


class FileCaptureBrowser(Browser):
    """A `Browser` (test_echo.py) whose fake camera and microphone play the given Y4M and WAV."""

    def __init__(self, workdir: pathlib.Path, y4m: pathlib.Path, wav: pathlib.Path):
        driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
        binary = _chromium_binary()
        if not driver or not binary:
            pytest.fail("chromedriver and chromium are needed for this test")
        self.profile = workdir / "chromium-profile"
        self.profile.mkdir()
        self.port = free_port()
        self.log_path = workdir / "chromedriver.log"
        self.session = None
        self.driver = subprocess.Popen(
            [driver, f"--port={self.port}", f"--log-path={self.log_path}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self._call("GET", "/status", timeout=1)["ready"]:
                    break
            except (OSError, urllib.error.URLError, ValueError, KeyError, RuntimeError):
                pass
            if time.monotonic() > deadline or self.driver.poll() is not None:
                raise RuntimeError("chromedriver did not come up")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--no-first-run", "--disable-extensions",
                "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
                "--allow-loopback-in-peer-connection", f"--user-data-dir={self.profile}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": binary, "args": args}}}}
        self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts", {"script": 30000})


# In the page: keep every recording_* message the page's socket receives.
HOOK_RECORDING_EVENTS = """
const ws = sfuDemo.client && sfuDemo.client.ws;
if (!ws) return false;
window.__recordingEvents = window.__recordingEvents || [];
ws.addEventListener('message', (m) => {
  try { const msg = JSON.parse(m.data);
        if (String(msg.event).startsWith('recording')) window.__recordingEvents.push(msg); } catch (e) {}
});
return true;
"""

# In the page: a second, direct peer connection sending the camera and microphone (the page's own
# local stream, or a fresh getUserMedia) to a SenderReportReceiver in the test: Chromium's RTCP sender
# reports give the A/V offset Chromium itself means, which a recorder following the SRs reproduces.
REFERENCE_OFFER = """
const fresh = arguments[0], done = arguments[arguments.length - 1];
(async () => {
  const s = fresh ? await navigator.mediaDevices.getUserMedia({audio: true, video: true})
                  : sfuDemo.client.localStream;
  if (!s) throw new Error('no local stream');
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  window.__referencePc = pc;
  for (const t of s.getTracks()) pc.addTransceiver(t, {direction: 'sendonly', streams: [s]});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') ok();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') ok(); };
    setTimeout(ok, 3000);
  });
  return pc.localDescription.sdp;
})().then(done, (e) => done('ERROR ' + e));
"""
REFERENCE_ANSWER = """
const sdp = arguments[0], done = arguments[arguments.length - 1];
window.__referencePc.setRemoteDescription({type: 'answer', sdp}).then(() => done('ok'), (e) => done('ERROR ' + e));
"""
REFERENCE_CLOSE = "if (window.__referencePc) { window.__referencePc.close(); window.__referencePc = null; } return true;"


async def chromium_intended_offset(browser: Browser, *, fresh: bool, seconds: float = 6.0,
                                   timeout: float = 25.0) -> dict:
    """Chromium's own A/V offset per its sender reports (see REFERENCE_OFFER), from `seconds` of
    media after both kinds had an SR (bounded by `timeout`)."""
    ref = ma.SenderReportReceiver()
    try:
        offer = await asyncio.to_thread(browser.execute_async, REFERENCE_OFFER, fresh)
        if not isinstance(offer, str) or offer.startswith("ERROR"):
            return {"error": f"reference offer: {str(offer)[:300]}"}
        answer = await ref.answer(offer)
        done = await asyncio.to_thread(browser.execute_async, REFERENCE_ANSWER, answer)
        if done != "ok":
            return {"error": f"reference answer: {done}"}
        deadline = time.monotonic() + timeout
        first_sr = None
        while time.monotonic() < deadline:
            counts = ref.sr_counts()
            if first_sr is None and counts["audio"] and counts["video"]:
                first_sr = time.monotonic()
            if first_sr is not None and time.monotonic() - first_sr >= seconds:
                break
            await asyncio.sleep(0.2)
        return ref.report()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(browser.execute, REFERENCE_CLOSE)
        await ref.close()



NTP_UNIX_OFFSET = 2208988800.0  # seconds from 1900 to 1970
SR_CHANGE_WINDOW_S = 5.5  # an audio SR interval of Chromium's (~5 s), and the flash's own second
# A step of the sender's own offset that lasts (its flashes agree within 1-2 ms otherwise): shown
# in the report only.
SENDER_STEP_MS = 10.0


def judge_sync(flashes: list[float], beeps: list[float], ref: dict, t0: float) -> dict:
    """Flash by flash, a file's A/V offset beside the sender's own around the same flash.

    `ref` is a chromium_intended_offset report taken over the same time as the file (its
    `flash_offsets` are (SR NTP time, offset ms)), `t0` the file's time 0 on the wall clock (the
    browsers' SR NTP times are this machine's wall clock). A sender's A/V offset can move mid-call
    (measured: Chromium's fake audio capture stalling 25-140 ms at times on a 2-core machine under
    load, so every later beep is that much later than its flash, and its SRs say so); a recording
    must follow its sender, not a figure measured before. A receiver learns of such a step only
    from the sender's next SR, and the call's and the reference's connections get theirs at
    different times (Chromium sends audio SRs every ~5 s): each flash of the file must be within
    SYNC_TOLERANCE_MS of an offset the sender meant within SR_CHANGE_WINDOW_S of it (in a steady
    stretch, all the same figure; across a step, the one before or the one after it).
    Returns matched (file s, file ms, reference ms at that flash) triples, the sender's lasting
    steps (file s), and the bad ones among the matched."""
    ref_flashes = sorted((ntp - NTP_UNIX_OFFSET, o) for ntp, o in ref.get("flash_offsets") or [])
    matched, bad = [], []
    for f in flashes:
        at = t0 + f
        for o in ma.sync_offsets([f], beeps):
            # The nearest reference flash on the wall clock, within half a period.
            near = min(ref_flashes, key=lambda r: abs(r[0] - at), default=None)
            if near is None or abs(near[0] - at) >= 0.5:
                continue
            m = (round(f, 2), round(o, 1), near[1])
            matched.append(m)
            meant = [r[1] for r in ref_flashes if abs(r[0] - at) <= SR_CHANGE_WINDOW_S]
            if all(abs(o - r) > SYNC_TOLERANCE_MS for r in meant):
                bad.append(m)
    # Steps that last (the next flash stays away too), for the report.
    steps = [b[0] for a, b, c in zip(ref_flashes, ref_flashes[1:], ref_flashes[2:] + [None])
             if abs(b[1] - a[1]) > SENDER_STEP_MS and (c is None or abs(c[1] - a[1]) > SENDER_STEP_MS)]
    return {"matched": matched, "changes": [round(c - t0, 1) for c in steps], "bad": bad}

# --- 1. the analysis on files with a known offset (no server) -------------------------------------

def test_analysis_tools_detect_a_known_offset(tmp_path):
    ma.require_tools("ffmpeg", "ffprobe")
    y4m, wav = ma.make_sync_clip(tmp_path, seconds=6, fps=30, size=(320, 240))
    assert y4m.stat().st_size == 6 * 30 * (len(b"FRAME\n") + 320 * 240 * 3 // 2) + len(
        b"YUV4MPEG2 W320 H240 F30:1 Ip A1:1 C420jpeg\n")
    in_sync = ma.encode_webm(y4m, wav, tmp_path / "in-sync.webm")
    late = ma.encode_webm(y4m, wav, tmp_path / "audio-late-100ms.webm", audio_delay_s=0.100)
    reports = {}
    for name, f in (("in_sync", in_sync), ("late", late)):
        assert ma.decode_check(f) == [], f"ffmpeg's own file does not decode cleanly: {ma.decode_check(f)}"
        p = ma.probe(f)
        assert p["video_frames"] == 180 and p["video_sizes"] == {(320, 240)}, p
        assert abs(p["audio_samples"] - 6 * 48000) <= 960, p
        assert abs(p["duration"] - 6.0) < 0.15, p
        r = reports[name] = ma.sync_report(f)
        assert len(r["flashes"]) == 6 and len(r["beeps"]) >= 6, r
        # The flashes are at whole seconds in the video timeline.
        assert all(abs(t - round(t)) < 0.012 for t in r["flashes"]), r
    # ffmpeg's WebM muxing of Opus shifts audio by up to its 6.5 ms pre-skip: 10 ms tolerance.
    assert all(abs(o) <= 10 for o in reports["in_sync"]["offsets_ms"]), reports
    assert all(abs(o - 100) <= 10 for o in reports["late"]["offsets_ms"]), reports
    assert abs((reports["late"]["median_ms"] - reports["in_sync"]["median_ms"]) - 100) <= 3, reports

    # A file that is cut mid-cluster is reported by decode_check (the signal the other tests use).
    data = in_sync.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert ma.decode_check(cut), "a truncated WebM decoded without a message: decode_check is blind"
    # Frames whose own timestamps repeat are reported too (decode_check keeps the file's time base
    # so that a camera's jitter is not mistaken for this; see media_analysis.decode_check).
    dup = tmp_path / "duplicate-timestamps.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(y4m), "-vf", "setpts=N/30/TB+(mod(N\\,3)-1)*0.012/TB",
                    "-fps_mode", "passthrough", "-c:v", "libvpx", str(dup)], check=True, capture_output=True, timeout=60)
    assert ma.decode_check(dup), "repeated frame timestamps decoded without a message"
    # And a file without any flash or beep yields nothing to pair (no false positives).
    silent_dark = tmp_path / "dark.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=160x120:r=30:d=3",
                    "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "3", "-c:v", "libvpx",
                    "-c:a", "libopus", str(silent_dark)], check=True, capture_output=True, timeout=60)
    assert ma.flash_times(silent_dark) == [] and ma.beep_times(silent_dark) == []


def test_chromium_sender_reports_reference(tmp_path):
    """The lip-sync reference without any server: headless Chromium with the clip as camera and
    microphone sends straight to a SenderReportReceiver; placed by Chromium's SRs, every flash has
    its beep at one constant offset (the one the recording test compares the file with)."""
    import functools
    import http.server
    import threading
    y4m, wav = ma.make_sync_clip(tmp_path / "clip", seconds=25)
    (tmp_path / "blank.html").write_text("<!doctype html><title>reference</title>")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "browser").mkdir()
    browser = FileCaptureBrowser(tmp_path / "browser", y4m, wav)
    try:
        browser.open(f"http://127.0.0.1:{server.server_address[1]}/blank.html")
        ref = asyncio.run(asyncio.wait_for(chromium_intended_offset(browser, fresh=True, seconds=6), 60))
    finally:
        browser.close()
        server.shutdown()
    print(f"Chromium's intended A/V offset: {ref}")
    offsets = ref.get("offsets_ms") or []
    assert len(offsets) >= 5 and len(ref["beeps"]) >= 5, ref
    assert max(offsets) - min(offsets) <= 15, f"the offset is not constant: {ref}"
    assert abs(ref["median_ms"]) <= 150, ref


# --- 2. the shared two-party recording --------------------------------------------------------------

class TwoParty:
    """What the shared scenario produced (the tests assert on it)."""

    def __init__(self):
        self.error: str | None = None     # the scenario itself failed: why, with context
        self.sfu: SFUProcess | None = None
        self.key = ""
        self.room: dict = {}
        self.api: ControlAPI | None = None
        self.start_status = None
        self.start_body: dict = {}
        self.stop_status = None
        self.stop_body: dict = {}
        self.recording: dict = {}
        self.wall_s = 0.0
        self.sent = {}                    # aiortc frames sent: before/after start and stop
        self.aiortc: dict = {}            # user_id, peer_id, events
        self.chrome: dict = {}            # user_id, peer_id, events
        self.reference: dict = {}         # Chromium's intended A/V offset (its SRs, direct)
        self.downloads: dict[str, dict] = {}   # file id -> {"status", "headers", "path"}
        self.context = ""
        self._probes: dict[str, dict] = {}

    def path_for(self, user_id: str) -> pathlib.Path:
        d = next((d for d in self.downloads.values() if d["user_id"] == user_id), None)
        if d is None:
            pytest.fail(f"no downloaded file for {user_id}: {self.recording}")
        return d["path"]

    def probed(self, user_id: str) -> dict:
        if user_id not in self._probes:
            self._probes[user_id] = ma.probe(self.path_for(user_id))
        return self._probes[user_id]


@pytest.fixture(scope="module")
def two_party(tmp_path_factory):
    ma.require_tools("ffmpeg", "ffprobe")
    work = tmp_path_factory.mktemp("two-party")
    out = TwoParty()
    out.key = "rec-" + secrets.token_hex(16)
    data = work / "sfu"
    data.mkdir()
    sfu = out.sfu = SFUProcess(_sfu_bin(), data, {"SFU_API_KEY": out.key})
    browser = None
    try:
        sfu.wait_ready()
        # Long enough not to loop during the reference and the recording: Chromium's fake capture
        # shifts audio against video by about a frame where the files loop, which the reference
        # (taken before) would not see. 320x240 keeps the Y4M at ~170 MB.
        y4m, wav = ma.make_sync_clip(work / "clip", seconds=50, fps=30, size=(320, 240))
        (work / "browser").mkdir()
        browser = FileCaptureBrowser(work / "browser", y4m, wav)
        asyncio.run(asyncio.wait_for(_two_party_scenario(out, browser, work), 150))
    except Exception as e:  # the tests report it with the context gathered so far
        import traceback
        out.error = f"{e!r}\n{traceback.format_exc()[-3000:]}\n{out.context}\n{log_tail(sfu)}"
    finally:
        if browser is not None:
            browser.close()
    yield out
    sfu.kill()


async def _two_party_scenario(out: TwoParty, browser: Browser, work: pathlib.Path) -> None:
    sfu, key = out.sfu, out.key
    api = out.api = ControlAPI(sfu.base_url, key)
    room = out.room = api.create_room(name="recording-two-party")
    rid = room["id"]
    tok_a = api.token(rid, "rec-aiortc", role="patient", name="aiortc")
    tok_c = api.token(rid, "rec-chrome", role="doctor", name="Chromium")
    client = RoomClient(tok_a["signaling_url"], name="rec-aiortc", subscribe=False)
    try:
        await asyncio.to_thread(browser.open, token_page(sfu, None, tok_c["token"]))
        await client.connect()
        await client.publish()

        # The page joined, its publisher is connected, and it decodes the aiortc participant (the
        # server forwards media both ways before we record).
        async def page_ready() -> tuple[bool, dict]:
            view = await asyncio.to_thread(page_view, browser)
            info = view.get("info") or {}
            pub = (info.get("publisher") or {}).get("connectionState")
            frames = 0
            if info.get("peer_id"):
                frames = media_from(await asyncio.to_thread(page_stats, browser), client.peer_id)["frames"]
            return (info.get("state") == "joined" and pub == "connected" and frames > 30
                    and client.pub_pc.connectionState == "connected"), {"info_state": info.get("state"),
                                                                        "publisher": pub, "frames": frames,
                                                                        "errors": view.get("errors")}
        deadline = time.monotonic() + 45
        ready, why = False, {}
        while time.monotonic() < deadline and not ready:
            ready, why = await page_ready()
            if not ready:
                await asyncio.sleep(0.5)
        if not ready:
            raise AssertionError(f"page/aiortc not ready with media in 45 s: {why}; aiortc {client.state()}")
        view = await asyncio.to_thread(page_view, browser)
        chrome_peer = view["info"]["peer_id"]
        out.chrome = {"user_id": "rec-chrome", "peer_id": chrome_peer}
        out.aiortc = {"user_id": "rec-aiortc", "peer_id": client.peer_id}
        hooked = await asyncio.to_thread(browser.execute, HOOK_RECORDING_EVENTS)
        if not hooked:
            raise AssertionError("could not hook the page's socket")

        # Chromium's own A/V offset for this capture session (its SRs on a direct connection), flash by
        # flash from before the recording to its end (see judge_sync).
        reference = asyncio.create_task(chromium_intended_offset(browser, fresh=False, seconds=RECORD_S + REFERENCE_LEAD_S,
                                                                 timeout=RECORD_S + REFERENCE_LEAD_S + 15))
        await asyncio.sleep(REFERENCE_LEAD_S)

        # Record RECORD_S seconds.
        video = client.video
        out.sent["before_start"] = video.frames_sent
        t0 = time.monotonic()
        out.start_status, out.start_body = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
        t1 = time.monotonic()
        out.sent["after_start"] = video.frames_sent
        if out.start_status != 201:
            raise AssertionError(f"start -> {out.start_status} {out.start_body}")
        rec_id = out.start_body["id"]
        await asyncio.sleep(RECORD_S - (time.monotonic() - t1))
        out.sent["before_stop"] = video.frames_sent
        t2 = time.monotonic()
        out.stop_status, out.stop_body = await api.acall("POST", f"/v1/recordings/{rec_id}/stop", timeout=30)
        t3 = time.monotonic()
        out.sent["after_stop"] = video.frames_sent
        out.wall_s = ((t2 + t3) - (t0 + t1)) / 2
        out.sent["request_s"] = {"start": round(t1 - t0, 3), "stop": round(t3 - t2, 3)}
        out.reference = await reference

        # The events: both participants, with the recording id (bounded wait for the stop event).
        await client.wait_event("recording_stopped", after=0, timeout=10)
        out.aiortc["events"] = [(e, d) for e, d in client.events if str(e).startswith("recording")]
        deadline = time.monotonic() + 10
        page_events = []
        while time.monotonic() < deadline:
            page_events = await asyncio.to_thread(browser.execute, "return window.__recordingEvents || [];")
            if any(m.get("event") == "recording_stopped" for m in page_events):
                break
            await asyncio.sleep(0.3)
        out.chrome["events"] = [(m.get("event"), m.get("data")) for m in page_events]
        out.chrome["page_errors"] = (await asyncio.to_thread(page_view, browser)).get("errors")

        # The metadata (completed, possibly after `processing`) and the files.
        deadline = time.monotonic() + 30
        rec = out.stop_body if isinstance(out.stop_body, dict) else {}
        while time.monotonic() < deadline and rec.get("status") not in ("completed", "failed"):
            await asyncio.sleep(0.5)
            _, rec = await api.acall("GET", f"/v1/recordings/{rec_id}")
            rec = rec if isinstance(rec, dict) else {}
        out.recording = rec
        for f in rec.get("files") or []:
            status, headers, body = await asyncio.to_thread(
                download, sfu.base_url, key, f"/v1/recordings/{rec_id}/files/{f.get('id')}")
            path = work / f"{f.get('user_id')}.webm"
            path.write_bytes(body)
            out.downloads[f.get("id")] = {"status": status, "headers": headers, "path": path,
                                          "user_id": f.get("user_id")}
        out.context = (f"recording {json.dumps(rec)[:3000]}\nsent {out.sent} wall {out.wall_s:.3f}s\n"
                       f"aiortc {client.state()}")
    finally:
        await client.close()


def _need(two_party: TwoParty) -> TwoParty:
    if two_party.error:
        pytest.fail(f"the two-party recording scenario failed:\n{two_party.error}")
    return two_party


def test_two_party_recording_files(two_party):
    """Completed, one file per participant with the metadata fields where RECORDING.md says,
    served byte-identical with the right headers, every file decodes without one ffmpeg message."""
    tp = _need(two_party)
    sfu, rec = tp.sfu, tp.recording
    ctx = f"{tp.context}\n{log_tail(sfu, 40, 'record|webm|keyframe|error')}"
    assert tp.start_status == 201, (tp.start_status, tp.start_body)
    # (ended_at/duration_ms have no value yet while recording: they may be null or absent there)
    for k in ("id", "room_id", "mode", "status", "started_at", "storage", "files"):
        assert k in tp.start_body, f"start response lacks {k}: {tp.start_body}"
    assert tp.start_body["status"] == "recording" and tp.start_body["mode"] == "tracks", tp.start_body
    assert str(tp.start_body["id"]).startswith("rec_") and tp.start_body["room_id"] == tp.room["id"], tp.start_body
    assert tp.stop_status == 200, (tp.stop_status, tp.stop_body, ctx)
    for k in RECORDING_FIELDS:
        assert k in rec, f"recording lacks {k}: {rec}"
    assert rec["status"] == "completed", f"status {rec.get('status')} ({rec.get('failure_reason')})\n{ctx}"
    assert rec["storage"] == "local" and rec["id"] == tp.start_body["id"], rec

    # One file per participant, with the metadata fields, where RECORDING.md says.
    files = {f["user_id"]: f for f in rec["files"]}
    assert len(rec["files"]) == 2 and set(files) == {"rec-aiortc", "rec-chrome"}, f"files {rec['files']}\n{ctx}"
    recordings_dir = sfu.data_dir / "recordings"
    for who, res in (("aiortc", "320x240"), ("chrome", None)):
        meta = getattr(tp, who)
        f = files[meta["user_id"]]
        problems = check_file_meta(f, meta["user_id"], res)
        assert not problems, f"{who} file metadata: {problems}\n{f}"
        want = expected_path(recordings_dir, rec["id"], meta["user_id"], meta["peer_id"])
        assert pathlib.Path(f["path"]).resolve() == want.resolve(), (f["path"], str(want))
        assert want.exists() and want.stat().st_size == f["size_bytes"], (want, f)

    # Every file: served with the right headers, byte-identical to the disk, decodes cleanly.
    for fid, d in tp.downloads.items():
        f = next(f for f in rec["files"] if f["id"] == fid)
        assert d["status"] == 200, (fid, d["status"], d["path"].read_bytes()[:300])
        assert d["headers"].get("content-type", "").startswith("video/webm"), d["headers"]
        assert d["headers"].get("accept-ranges") == "bytes", d["headers"]
        body = d["path"].read_bytes()
        assert len(body) == f["size_bytes"], (len(body), f)
        assert body == pathlib.Path(f["path"]).read_bytes(), "the files route served other bytes than the file"
        errors = ma.decode_check(d["path"])
        assert errors == [], f"{d['user_id']}: ffmpeg reported {len(errors)} lines: {errors[:20]}\n{ctx}"
        p = tp.probed(d["user_id"])
        assert sorted(s["type"] for s in p["streams"]) == ["audio", "video"], p["streams"]
        assert {s["type"]: s["codec"] for s in p["streams"]} == {"video": "vp8", "audio": "opus"}, p["streams"]
        assert p["decode_errors"] == 0, p
        if d["user_id"] == "rec-aiortc":
            assert p["video_sizes"] == {(320, 240)}, p["video_sizes"]
    assert sfu.proc.poll() is None, log_tail(sfu)


def test_two_party_durations_and_frames(two_party):
    """Durations (the recording's, each file's metadata and each file's own) within 0.5 s of the wall
    clock between the start and stop requests; the aiortc file holds the frames aiortc sent in
    that window (5 %); audio covers the window. Every problem is listed, not just the first."""
    tp = _need(two_party)
    rec = tp.recording
    problems = []
    if abs(rec["duration_ms"] / 1000 - tp.wall_s) > DURATION_TOLERANCE_S:
        problems.append(f"recording duration_ms {rec['duration_ms']} vs wall {tp.wall_s:.3f}s")
    for f in rec["files"]:
        user = f["user_id"]
        p = tp.probed(user)
        ranges = {s["type"]: (round(s["start"], 3), round(s["end"], 3)) for s in p["streams"] if s["start"] is not None}
        file_s = p["duration"] if p["duration"] else p["span"]
        if abs(file_s - tp.wall_s) > DURATION_TOLERANCE_S:
            problems.append(f"{user}: the file lasts {file_s:.3f}s vs wall {tp.wall_s:.3f}s; streams (start, end) {ranges}")
        if abs(f["duration_ms"] / 1000 - tp.wall_s) > DURATION_TOLERANCE_S:
            problems.append(f"{user}: metadata duration_ms {f['duration_ms']} vs wall {tp.wall_s:.3f}s")
        for kind in ("video", "audio"):
            if abs(p[f"{kind}_span"] - tp.wall_s) > DURATION_TOLERANCE_S:
                problems.append(f"{user}: {kind} spans {p[kind + '_span']:.3f}s vs wall {tp.wall_s:.3f}s")
        if not (p["audio_rate"] == 48000 and p["audio_samples"] >= 48000 * (tp.wall_s - 1.0)):
            problems.append(f"{user}: audio {p['audio_samples']} samples at {p['audio_rate']} Hz for {tp.wall_s:.3f}s")
    pa = tp.probed("rec-aiortc")
    window = tp.sent["before_stop"] - tp.sent["after_start"]
    widest = tp.sent["after_stop"] - tp.sent["before_start"]
    if abs(pa["video_frames"] - window) > FRAME_TOLERANCE * window:
        problems.append(f"aiortc file has {pa['video_frames']} frames; sent in the window {window} "
                        f"(between the start/stop requests: {widest}); {tp.sent}")
    assert not problems, "\n".join(problems) + f"\n{tp.context}"


def test_two_party_lip_sync(two_party):
    """Lip sync in the Chromium file: every white frame has its beep within 40 ms of where Chromium
    put it. Chromium's fake devices start audio and video a little apart (its SRs say audio is
    20-50 ms late, different every run, and it can move mid-call): the file must reproduce what the
    SRs say, measured on a direct connection from the same capture session over the same time."""
    tp = _need(two_party)
    report = ma.sync_report(tp.path_for("rec-chrome"))
    pairs = report["offsets_ms"]
    ref = tp.reference
    p = tp.probed("rec-chrome")
    ranges = {s["type"]: (s["start"], s["end"]) for s in p["streams"]}
    context = (f"chromium file sync {report}\nChromium's own offset (SRs, direct connection) {ref}\n"
               f"chromium file stream (start, end) s: {ranges} (flashes and beeps repeat every second: "
               f"an error beyond 500 ms aliases; compare the ends)")
    assert ref.get("median_ms") is not None and len(ref.get("offsets_ms", [])) >= 3, f"no reference: {context}"
    assert len(report["beeps"]) >= RECORD_S - 3, f"too few beeps found: {context}"
    assert len(pairs) >= (RECORD_S - 3) * 0.6, f"too few flash/beep pairs: {context}"
    t0 = datetime.datetime.fromisoformat(tp.start_body["started_at"].replace("Z", "+00:00")).timestamp()
    judgement = judge_sync(report["flashes"], report["beeps"], ref, t0)
    matched, bad = judgement["matched"], judgement["bad"]
    context += (f"\n(file s, file ms, reference ms): {matched}; the browser's own offset changed at "
                f"{judgement['changes']} s of the file")
    print(f"lip sync: pairs {pairs}, reference {ref.get('median_ms')}, {len(matched)} flashes beside the reference's, "
          f"the browser's offset changed at {judgement['changes']} s")
    assert len(matched) >= (RECORD_S - 3) * 0.6, f"too few flashes beside the reference's: {context}"
    assert not bad, (f"{len(bad)} of {len(matched)} flash/beep pairs off by more than {SYNC_TOLERANCE_MS} ms "
                     f"from what Chromium meant around that flash: {context}")


def test_two_party_recording_events(two_party):
    """Everyone got recording_started and recording_stopped, once each, with the recording id."""
    tp = _need(two_party)
    rec = tp.recording
    for who in ("aiortc", "chrome"):
        events = getattr(tp, who).get("events") or []
        names = [e for e, d in events if isinstance(d, dict) and d.get("recording_id") == rec["id"]]
        assert names.count("recording_started") == 1 and names.count("recording_stopped") == 1, \
            f"{who} recording events: {events}"
        assert names.index("recording_started") < names.index("recording_stopped"), events
    assert not tp.chrome.get("page_errors"), tp.chrome


def test_recording_file_ranges(two_party):
    tp = _need(two_party)
    rec = tp.recording
    assert rec.get("files"), f"no files to fetch: {rec}"
    f = next((f for f in rec["files"] if f.get("user_id") == "rec-aiortc"), rec["files"][0])
    route = f"/v1/recordings/{rec['id']}/files/{f['id']}"
    status, headers, full = download(tp.sfu.base_url, tp.key, route)
    assert status == 200 and len(full) == f["size_bytes"] and len(full) > 5000, (status, len(full), f)
    size = len(full)

    for first, last in ((0, 0), (100, 1099), (size // 2, size // 2 + 4095), (size - 10, size - 1)):
        status, headers, body = download(tp.sfu.base_url, tp.key, route, {"Range": f"bytes={first}-{last}"})
        assert status == 206, (first, last, status, body[:200])
        assert headers.get("content-range") == f"bytes {first}-{last}/{size}", (first, last, headers)
        assert body == full[first:last + 1], (first, last, len(body))
        assert int(headers.get("content-length", len(body))) == last - first + 1, headers
        assert headers.get("content-type", "").startswith("video/webm"), headers
    # Open-ended (what a <video> element sends) and a last byte past the end (clamped, RFC 9110).
    status, headers, body = download(tp.sfu.base_url, tp.key, route, {"Range": f"bytes={size - 1000}-"})
    assert status == 206 and body == full[size - 1000:], (status, headers, len(body))
    assert headers.get("content-range") == f"bytes {size - 1000}-{size - 1}/{size}", headers
    status, headers, body = download(tp.sfu.base_url, tp.key, route, {"Range": f"bytes={size - 5}-{size + 100}"})
    assert status == 206 and body == full[size - 5:], (status, headers, len(body))
    assert headers.get("content-range") == f"bytes {size - 5}-{size - 1}/{size}", headers
    # Unsatisfiable: starts past the end.
    for bad in (f"bytes={size}-{size + 10}", f"bytes={size + 1000}-"):
        status, headers, body = download(tp.sfu.base_url, tp.key, route, {"Range": bad})
        assert status == 416, (bad, status, headers, body[:200])
    # Without the API key: refused; unknown file: 404 with the error shape.
    req = urllib.request.Request(tp.sfu.base_url + route)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401, e.value.code
    status, body = tp.api.call("GET", f"/v1/recordings/{rec['id']}/files/file_doesnotexist")
    assert status == 404 and error_code(body), (status, body)
    assert tp.sfu.proc.poll() is None, log_tail(tp.sfu)


def test_recordings_listed_by_room_and_status(two_party):
    tp = _need(two_party)
    rec, rid = tp.recording, tp.room["id"]
    status, body = tp.api.call("GET", f"/v1/recordings?room_id={rid}&status=completed")
    assert status == 200 and isinstance(body, dict), (status, body)
    ids = [r["id"] for r in body.get("recordings", [])]
    assert ids == [rec["id"]], body
    listed = body["recordings"][0]
    assert listed["status"] == "completed" and listed["room_id"] == rid, listed
    assert {f["id"] for f in listed["files"]} == {f["id"] for f in rec["files"]}, listed
    status, body = tp.api.call("GET", f"/v1/recordings?room_id={rid}&status=recording")
    assert status == 200 and body.get("recordings") == [], body
    status, body = tp.api.call("GET", "/v1/recordings?room_id=room_doesnotexist")
    assert status in (200, 404), (status, body)
    if status == 200:
        assert body.get("recordings") == [], body
    status, body = tp.api.call("GET", f"/v1/recordings/{rec['id']}")
    assert status == 200 and body["id"] == rec["id"] and body["status"] == "completed", body
    status, body = tp.api.call("GET", "/v1/recordings/rec_doesnotexist")
    assert status == 404 and error_code(body), (status, body)
    # Stopping a finished recording returns it unchanged.
    status, body = tp.api.call("POST", f"/v1/recordings/{rec['id']}/stop")
    assert status == 200 and body["status"] == "completed" and body["duration_ms"] == rec["duration_ms"], body


# --- 3. SIGKILL mid-recording -------------------------------------------------------------------------

def test_sigkill_mid_recording_leaves_a_playable_file(sfu_factory, sfu_bin, tmp_path):
    ma.require_tools("ffmpeg", "ffprobe")
    key = "kill-" + secrets.token_hex(16)
    env = {"SFU_API_KEY": key}
    sfu = sfu_factory(env=env)
    api = ControlAPI(sfu.base_url, key)
    rid = api.create_room(name="killed")["id"]
    rec_dir = sfu.data_dir / "recordings"

    async def scenario() -> tuple[dict, dict, float]:
        c = RoomClient(api.token(rid, "kill-pub", role="doctor")["signaling_url"], name="kill-pub", subscribe=False)
        try:
            await c.connect()
            await c.publish()
            assert await until(lambda: c.pub_pc.connectionState == "connected", 20), c.state()
            await asyncio.sleep(1.0)
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, (status, rec)
            started = time.monotonic()
            await asyncio.sleep(KILL_AFTER_S)
            _, during = await api.acall("GET", f"/v1/recordings/{rec['id']}")
            lived = time.monotonic() - started
            sfu.proc.kill()            # SIGKILL: no chance to finalize anything
            sfu.proc.wait(10)
            return rec, during, lived
        finally:
            await c.close()

    rec, during, lived = asyncio.run(asyncio.wait_for(scenario(), 90))
    first_log = sfu.log_path.read_text(errors="replace")
    (sfu.data_dir / "sfu-killed.log").write_text(first_log)
    assert during.get("status") == "recording", during
    paths = [pathlib.Path(f["path"]) for f in during.get("files") or [] if f.get("path")]
    on_disk = sorted((rec_dir / rec["id"]).glob("*.webm"))
    assert on_disk, f"no .webm under {rec_dir / rec['id']} after {lived:.1f}s (metadata: {during})\n{first_log[-3000:]}"
    if paths:
        assert {p.resolve() for p in paths} <= {p.resolve() for p in on_disk}, (paths, on_disk)
    partial = on_disk[0]
    snapshot = tmp_path / "partial.webm"
    shutil.copyfile(partial, snapshot)   # as the crash left it (the restarted server may rewrite it)
    errors = ma.decode_check(snapshot)
    assert errors == [], f"the file left by SIGKILL does not decode cleanly ({snapshot.stat().st_size} bytes): {errors[:20]}"
    p = ma.probe(snapshot)
    assert p["video_frames"] > 0 and p["audio_samples"] > 0, p
    assert p["span"] >= KILL_AFTER_S - 4.0, f"only {p['span']:.2f}s playable after {lived:.1f}s of recording: {p}"
    assert p["video_frames"] >= 20 * (KILL_AFTER_S - 4.0), p

    # A server restarted on the same data directory finalizes the recording from the file.
    sfu.log_path.rename(sfu.data_dir / "sfu-first.log")
    again = SFUProcess(sfu_bin, sfu.data_dir, env)
    try:
        again.wait_ready()
        api2 = ControlAPI(again.base_url, key)
        status, got = api2.wait_recording_finished(rec['id'])
        ctx = f"after restart: {got}\n{log_tail(again, 40)}"
        print(f"partial file: {snapshot.stat().st_size} bytes, {p['video_frames']} frames, span {p['span']:.2f}s "
              f"after {lived:.1f}s; after restart: status {got.get('status')} duration_ms {got.get('duration_ms')}")
        assert status == 200 and got.get("status") == "completed", ctx
        assert got["duration_ms"] > 0 and got["ended_at"], ctx
        assert abs(got["duration_ms"] / 1000 - p["span"]) <= 1.5, f"duration_ms vs file span {p['span']:.2f}: {ctx}"
        assert got["files"] and all(f.get("duration_ms", 0) > 0 and f.get("size_bytes", 0) > 0 for f in got["files"]), ctx
        f = got["files"][0]
        status, headers, body = download(again.base_url, key, f"/v1/recordings/{rec['id']}/files/{f['id']}")
        assert status == 200 and len(body) == f["size_bytes"], (status, len(body), f)
        served = tmp_path / "served.webm"
        served.write_bytes(body)
        assert ma.decode_check(served) == [], ma.decode_check(served)
        status, body = api2.call("GET", f"/v1/recordings?room_id={rid}&status=recording")
        assert status == 200 and body.get("recordings") == [], body
        assert again.proc.poll() is None, log_tail(again)
    finally:
        again.kill()


# --- 4. 5 % loss on the publisher's uplink ------------------------------------------------------------

def namespace():
    """A namespace joined to the host by a veth pair (`netns_util.Namespace`: a 10.203.x.0/24 that no
    other interface on this host holds, so that a concurrent test run's namespace cannot take the
    replies); always deleted."""
    from netns_util import nft_namespace
    return nft_namespace("sfurec")


def add_uplink_loss(ns, media_port: int, percent: int) -> None:
    """Drops `percent` % of the UDP datagrams the namespace sends to the server's media port."""
    ns.exec("nft", "add", "table", "inet", "sfurec")
    ns.exec("nft", "add", "chain", "inet", "sfurec", "out", "{ type filter hook output priority 0; }")
    ns.exec("nft", "add", "rule", "inet", "sfurec", "out", "udp", "dport", str(media_port),
            "numgen", "random", "mod", "100", "<", str(percent), "counter", "drop")
    ns.exec("nft", "add", "rule", "inet", "sfurec", "out", "udp", "dport", str(media_port), "counter")


def nft_counters(ns) -> list[int]:
    out = ns.exec("nft", "list", "chain", "inet", "sfurec", "out").stdout
    return [int(n) for n in re.findall(r"counter packets (\d+)", out)]


def frames_at(samples: list[tuple[float, int]], t: float) -> float:
    """Frames sent at monotonic time `t`, interpolated from the publisher's (time, count) lines."""
    before = [s for s in samples if s[0] <= t]
    after = [s for s in samples if s[0] >= t]
    if not before or not after:
        return float(before[-1][1] if before else after[0][1])
    (ta, fa), (tb, fb) = before[-1], after[0]
    return fa if tb == ta else fa + (fb - fa) * (t - ta) / (tb - ta)


def test_recording_under_5_percent_loss(sfu_factory, tmp_path):
    ma.require_tools("ffmpeg", "ffprobe")
    key = "recloss-" + secrets.token_hex(12)
    with namespace() as ns:
        sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_HTTP_HOST": ns.host_ip, "SFU_MEDIA_HOST": ns.host_ip},
                          wait=False)
        base = f"http://{ns.host_ip}:{sfu.http_port}"
        deadline = time.monotonic() + 20
        while True:
            assert sfu.proc.poll() is None, log_tail(sfu)
            with contextlib.suppress(Exception):
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            assert time.monotonic() < deadline, f"sfu not healthy on {base}\n{log_tail(sfu)}"
            time.sleep(0.1)
        api = ControlAPI(base, key)
        rid = api.create_room(name="recording-loss")["id"]
        add_uplink_loss(ns, sfu.media_port, LOSS_PERCENT)
        url = api.token(rid, "lossy-pub", role="patient")["signaling_url"]
        run_s = LOSS_RECORD_S + 12
        proc = subprocess.Popen([*ns.prefix(), sys.executable, str(HERE / "test_recording.py"),
                                 "publish", url, str(run_s)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        lines: list[str] = []
        samples: list[tuple[float, int]] = []
        try:
            import threading

            def reader():
                for line in proc.stdout:
                    lines.append(line.rstrip())
                    if line.startswith("T "):
                        _, t, v, _a = line.split()
                        samples.append((float(t), int(v)))
            threading.Thread(target=reader, daemon=True).start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(l.startswith("CONNECTED") for l in lines):
                assert proc.poll() is None or lines, f"publisher exited: {proc.stderr.read()[-3000:]}"
                time.sleep(0.2)
            connected = next((l for l in lines if l.startswith("CONNECTED")), None)
            assert connected and json.loads(connected.split(" ", 1)[1])["ok"], (lines, log_tail(sfu))
            time.sleep(2.0)
            t0 = time.monotonic()
            status, rec = api.call("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            t1 = time.monotonic()
            assert status == 201, (status, rec)
            time.sleep(LOSS_RECORD_S - (time.monotonic() - t1))
            t2 = time.monotonic()
            status, stopped = api.call("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
            t3 = time.monotonic()
            assert status == 200, (status, stopped)
            counters = nft_counters(ns)
        finally:
            try:
                proc.wait(run_s + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read()
        deadline = time.monotonic() + 20
        while stopped.get("status") not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
            _, stopped = api.call("GET", f"/v1/recordings/{rec['id']}")
        ctx = (f"recording {json.dumps(stopped)[:2000]}\nnft counters (dropped, passed) {counters}\n"
               f"publisher: {lines[:3]} ... {lines[-2:]}\n{err[-1500:]}\n{log_tail(sfu, 40, 'record|keyframe|nack|error')}")
        assert stopped.get("status") == "completed", ctx
        # The loss really happened: ~5 % of the publisher's datagrams to the media port.
        assert len(counters) == 2 and counters[0] >= 40, ctx
        loss = counters[0] / max(1, counters[0] + counters[1])
        assert 0.02 <= loss <= 0.09, f"loss {loss:.3f}: {ctx}"
        files = [f for f in stopped["files"] if f["user_id"] == "lossy-pub"]
        assert len(files) == 1, ctx
        f = files[0]
        status, headers, body = download(base, key, f"/v1/recordings/{rec['id']}/files/{f['id']}")
        assert status == 200 and len(body) == f["size_bytes"], (status, len(body), f)
        path = tmp_path / "lossy.webm"
        path.write_bytes(body)
        errors = ma.decode_check(path)
        assert errors == [], f"the recording under {LOSS_PERCENT}% loss has decode errors: {errors[:20]}\n{ctx}"
        p = ma.probe(path)
        wall = ((t2 + t3) - (t0 + t1)) / 2
        sent = frames_at(samples, t2) - frames_at(samples, t1)
        summary = (f"file: {p['video_frames']} frames, {p['audio_samples']} samples, span {p['span']:.2f}s, "
                   f"keyframes {p['video_keyframes']}; sent {sent:.0f} frames in {wall:.2f}s")
        print(summary)
        # Not empty: losses repaired or skipped to the next keyframe, not the whole stream lost.
        assert p["video_frames"] >= 0.5 * sent, f"{summary}\n{ctx}"
        assert p["audio_samples"] >= 0.8 * 48000 * wall, f"{summary}\n{ctx}"
        assert abs(p["span"] - wall) <= 1.0, f"{summary}\n{ctx}"
        assert sfu.proc.poll() is None, log_tail(sfu)


# --- 5. permissions, events, conflicts, auto_record --------------------------------------------------

def test_recording_permissions_and_events(sfu_factory):
    key = "recperm-" + secrets.token_hex(12)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    api = ControlAPI(sfu.base_url, key)
    room = api.create_room(name="recording-permissions")
    rid = room["id"]

    def recordings(**query) -> list[dict]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        status, body = api.call("GET", f"/v1/recordings?{q}")
        assert status == 200 and isinstance(body, dict) and isinstance(body.get("recordings"), list), (status, body)
        return body["recordings"]

    # Control API edges first (no participants needed).
    status, body = api.call("POST", f"/v1/rooms/{rid}/recordings", {"mode": "composite", "layout": "mosaic"})
    assert status == 400 and error_code(body), (status, body)
    status, body = api.call("POST", "/v1/rooms/room_doesnotexist/recordings", {"mode": "tracks"})
    assert status == 404 and error_code(body), (status, body)
    status, body = api.call("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"}, key="wrong-key")
    assert status == 401, (status, body)
    status, body = api.call("POST", "/v1/recordings/rec_doesnotexist/stop")
    assert status == 404 and error_code(body), (status, body)
    assert recordings(room_id=rid) == []

    async def scenario():
        doctor = RoomClient(api.token(rid, "perm-doctor", role="doctor")["signaling_url"], name="doctor", subscribe=False)
        patient = RoomClient(api.token(rid, "perm-patient", role="patient")["signaling_url"], name="patient",
                             subscribe=False, publish_video=False)
        late = RoomClient(api.token(rid, "perm-observer", role="observer")["signaling_url"], name="observer",
                          subscribe=False, publish_audio=False, publish_video=False)
        auto_room = api.create_room(name="auto", auto_record=True)
        auto = RoomClient(api.token(auto_room["id"], "auto-doctor", role="doctor")["signaling_url"],
                          name="auto", subscribe=False, publish_video=False)
        clients = (doctor, patient, late, auto)
        try:
            await doctor.connect()
            await patient.connect()
            await doctor.publish()
            await patient.publish()
            assert await until(lambda: doctor.pub_pc.connectionState == "connected"
                               and patient.pub_pc.connectionState == "connected", 20), (doctor.state(), patient.state())

            # A patient may not start a recording.
            since = len(patient.events)
            await patient.send("start_recording", {})
            err = await patient.wait_error(after=since, timeout=5)
            assert err.get("code") == "permission_denied", err
            await asyncio.sleep(0.5)
            assert recordings(room_id=rid) == []
            assert not doctor.find_events("recording_started"), doctor.brief_events()

            # A doctor may: everyone gets recording_started with the id.
            await doctor.send("start_recording", {})
            started = await doctor.wait_event("recording_started", timeout=5, fail_on_error=True)
            rec_id = started.get("recording_id")
            assert isinstance(rec_id, str) and rec_id.startswith("rec_"), started
            got = await patient.wait_event("recording_started", timeout=5)
            assert got.get("recording_id") == rec_id, got
            active = recordings(room_id=rid, status="recording")
            assert [r["id"] for r in active] == [rec_id], active
            assert active[0]["room_id"] == rid and active[0]["mode"] == "tracks", active

            # One active recording per room: the API says 409, so does signaling (no second one).
            status, body = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 409 and error_code(body) == "recording_active", (status, body)
            since = len(doctor.events)
            await doctor.send("start_recording", {})
            await asyncio.sleep(1.0)
            assert not doctor.find_events("recording_started", after=since), doctor.brief_events(since)
            assert [r["id"] for r in recordings(room_id=rid)] == [rec_id]

            # Somebody who joins during the recording is told about it.
            await late.connect()
            got = await late.wait_event("recording_started", timeout=5)
            assert got.get("recording_id") == rec_id, got

            # A patient may not stop it either.
            since = len(patient.events)
            await patient.send("stop_recording", {})
            err = await patient.wait_error(after=since, timeout=5)
            assert err.get("code") == "permission_denied", err
            assert [r["id"] for r in recordings(room_id=rid, status="recording")] == [rec_id]

            await asyncio.sleep(3.0)      # some media in the files
            await doctor.send("stop_recording", {})
            for c in (doctor, patient, late):
                got = await c.wait_event("recording_stopped", timeout=10)
                assert got.get("recording_id") == rec_id, (c.name, got)
            deadline = time.monotonic() + 20
            rec: dict = {}
            while time.monotonic() < deadline:
                _, rec = await api.acall("GET", f"/v1/recordings/{rec_id}")
                if rec.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.5)
            assert rec.get("status") == "completed", f"{rec}\n{log_tail(sfu, 30, 'record')}"
            by_user = {f["user_id"]: f for f in rec["files"]}
            assert sorted(by_user.get("perm-doctor", {}).get("track_kinds", [])) == ["audio", "video"], rec
            # The patient published audio only: its file has only audio.
            assert by_user.get("perm-patient", {}).get("track_kinds") == ["audio"], rec
            assert by_user["perm-patient"].get("video_codec") in (None, ""), by_user["perm-patient"]
            for c in (doctor, patient, late):
                starts = [d for d in c.find_events("recording_started") if d.get("recording_id") == rec_id]
                stops = [d for d in c.find_events("recording_stopped") if d.get("recording_id") == rec_id]
                assert len(starts) == 1 and len(stops) == 1, (c.name, c.brief_events())
            # After the stop a new recording may start (and is a different one).
            status, body = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {})
            assert status == 201 and body["id"] != rec_id and body["mode"] == "tracks", (status, body)
            second = body["id"]
            got = await patient.wait_event("recording_started", lambda d: d.get("recording_id") == second, timeout=5)
            status, body = await api.acall("POST", f"/v1/recordings/{second}/stop")
            assert status == 200 and body["status"] in ("completed", "failed", "processing"), (status, body)

            # auto_record: nothing before anyone joins, a recording as soon as the first one does.
            assert recordings(room_id=auto_room["id"]) == []
            await auto.connect()
            got = await auto.wait_event("recording_started", timeout=10)
            auto_rec = got.get("recording_id")
            assert isinstance(auto_rec, str) and auto_rec.startswith("rec_"), got
            assert [r["id"] for r in recordings(room_id=auto_room["id"], status="recording")] == [auto_rec]
            await auto.publish()
            await until(lambda: auto.pub_pc.connectionState == "connected", 20)
            await asyncio.sleep(2.0)
            # Closing the room stops its recording.
            status, body = await api.acall("DELETE", f"/v1/rooms/{auto_room['id']}")
            assert status in (200, 204), (status, body)
            deadline = time.monotonic() + 20
            r: dict = {}
            while time.monotonic() < deadline:
                _, r = await api.acall("GET", f"/v1/recordings/{auto_rec}")
                if r.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.5)
            assert r.get("status") == "completed", f"{r}\n{log_tail(sfu, 30, 'record')}"
            status, body = await api.acall("POST", f"/v1/rooms/{auto_room['id']}/recordings", {"mode": "tracks"})
            assert status == 409 and error_code(body) == "room_closed", (status, body)
            for c in clients:
                assert not c.failures, (c.name, c.failures)
        finally:
            for c in clients:
                await c.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert sfu.proc.poll() is None, log_tail(sfu)
