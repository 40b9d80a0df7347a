#!/usr/bin/env python3
"""What a recording costs the server, end to end, with real Chromium publishers (issue 18, Performance).

`scripts/bench.sh composite` (`make bench-composite`) runs it against the release `sfu`:

- one room, N (4) headless Chromium publishers through the demo page (sfu-client.js, simulcast
  q/h/f), each with Chromium's fake camera playing a 1280x720 30 fps clip (ffmpeg testsrc2, Y4M,
  `--use-file-for-fake-video-capture`) and its fake microphone (a beep);
- three phases, each a fixed window after a short lead-in: no recording, a `mode: "tracks"`
  recording, a `mode: "composite"` recording (1280x720, 30 fps, grid by default);
- per phase the sfu process's CPU (utime + stime of /proc/<pid>/stat over the window, all
  threads, in cores) and its largest RSS (VmRSS sampled twice a second), what the publishers
  actually sent (each Chromium's outbound-rtp per rid: size, fps, quality limitation; the server's
  `publish_bitrate_bps` per participant from GET /v1/rooms/{id}/participants);
- for the composite, the engine's own split (decode, compose, encode, mix: CPU time of the
  composite's thread per stage, from the server's "composite recording written" log line, with the
  widths it decoded per source, i.e. the simulcast layer each tile took) and the output file's
  frame rate and duration (ffprobe) and a full decode (ffmpeg -v error).

The Chromiums share the 2 cores with the server. Linux's autogroups give every session an equal
share of the CPUs whatever the nice values inside, and each chromedriver is a session of its own:
left equal (`--sfu-nice 0`), the server's composite thread waits for a CPU most of the time, falls
behind and drops video (as designed when it is behind), which measures the machine, not the
composite. By default the server's threads and autogroup run at nice -10, so it gets what it asks
for first, as on a machine of its own; the table also shows, per phase, the server's busiest
threads with their time on a CPU and their time waiting runnable (/proc/<pid>/task/*/schedstat).

By default the publishers only publish (token permission `publish`): on a 2-core machine every
Chromium decoding three others' video would take CPU from the encoders; `--subscribe` makes it a
real call (each page also receives the others). The Chromiums share the machine with the server,
so their encoders are CPU-starved: the table says what they sent, not what was asked.

    python3 bench/composite_cost.py [--window 40] [--publishers 4] [--subscribe] [--layout grid] [--sfu-nice -10]

Needs the test venv (the E2E helpers in Tests/E2E are reused), chromium, chromedriver, ffmpeg.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "E2E"))

import media_analysis as ma  # noqa: E402
from conftest import SFUProcess  # noqa: E402
from netns_util import chromium_pool  # noqa: E402
from room_client import ControlAPI  # noqa: E402
from test_simulcast import page_url, publisher_stats, wait_joined  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK      # utime, stime (fields 14, 15)


def status_kib(pid: int, key: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def schedstats(pid: int) -> dict[int, tuple[str, int, int]]:
    """Per thread: (name, ns on a CPU, ns waiting runnable for one) from /proc/<pid>/task/*/schedstat."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            run, wait, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = ((task / "comm").read_text().strip(), int(run), int(wait))
    return out


def busiest_threads(before: dict, after: dict, seconds: float, n: int = 4) -> list[dict]:
    """The threads that ran most in the window, with how long they waited for a CPU while runnable
    (a thread behind its work that waits long is starved by the rest of the machine; one that
    neither runs nor waits is blocked or idle)."""
    rows = []
    for tid, (name, run, wait) in after.items():
        name0, run0, wait0 = before.get(tid, (name, 0, 0))
        rows.append({"tid": tid, "name": name, "cpu": (run - run0) / 1e9 / seconds, "runnable_wait": (wait - wait0) / 1e9 / seconds})
    return sorted(rows, key=lambda r: -r["cpu"])[:n]


class Sampler:
    """VmRSS of the server twice a second while a window runs."""

    def __init__(self, pid: int):
        self.pid, self.max_kib, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.max_kib = max(self.max_kib, status_kib(self.pid, "VmRSS"))
            self._stop.wait(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.max_kib / 1024


def sent_by_publishers(browsers: list) -> list[dict]:
    """Per publisher, per rid: (w, h, fps, quality limitation) from its own getStats."""
    out = []
    for b in browsers:
        try:
            got = publisher_stats(b) or {}
        except Exception as e:          # a starved page may miss the script timeout
            got = {"error": str(e)[:200]}
        out.append(got)
    return out


def describe_sent(stats: list[dict]) -> list[str]:
    lines = []
    for i, s in enumerate(stats):
        layers = s.get("layers") or {}
        parts = []
        for rid in sorted(layers, key=lambda r: "qhf-".find(r)):
            l = layers[rid]
            state = "" if l.get("active", True) else " inactive"
            parts.append(f"{rid} {l['w']}x{l['h']} {l['fps'] or 0:.0f} fps{state}" + (f" ({l['limit']})" if l.get("limit") not in (None, "none") else ""))
        lines.append(f"publisher {i}: " + (", ".join(parts) if parts else json.dumps(s)[:200]))
    return lines


def participants(api: ControlAPI, room_id: str) -> list[dict]:
    status, body = api.call("GET", f"/v1/rooms/{room_id}/participants")
    return body.get("participants", []) if status == 200 else []


def wait_recording(api: ControlAPI, rid: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        rec = api.ok("GET", f"/v1/recordings/{rid}")
        if rec["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return rec
        time.sleep(0.5)


def composite_log(log: str, recording_id: str) -> dict:
    """The key=value fields of the server's "composite recording written" line for the recording."""
    for line in reversed(log.splitlines()):
        if "composite recording written" in line and recording_id in line:
            return dict(re.findall(r"(\w+)=(\S+)", line))
    return {}


def renice(pid: int, nice: int | None) -> None:
    """Every thread of the server at `nice` (Linux nice values are per thread; threads made later
    inherit their creator's), and its scheduler autogroup too: with autogroups (the default) every
    session shares the CPUs equally whatever its threads' nice values, and each chromedriver runs in
    a session of its own, so the server (in this script's session) would get a fifth of them."""
    if nice is None:
        return
    with contextlib.suppress(OSError):
        pathlib.Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def phase(name: str, sfu, api: ControlAPI, room_id: str, browsers: list, args, body: dict | None) -> dict:
    renice(sfu.proc.pid, args.sfu_nice)
    rec = None
    if body is not None:
        rec = api.ok("POST", f"/v1/rooms/{room_id}/recordings", body, expect=(201,))
    time.sleep(args.lead)
    pid = sfu.proc.pid
    renice(pid, args.sfu_nice)
    sampler = Sampler(pid)
    t0, c0, s0 = time.monotonic(), cpu_seconds(pid), schedstats(pid)
    time.sleep(args.window / 2)
    sent = sent_by_publishers(browsers)
    time.sleep(max(0.0, t0 + args.window - time.monotonic()))
    t1, c1, s1 = time.monotonic(), cpu_seconds(pid), schedstats(pid)
    rss = sampler.stop()
    out = {"phase": name, "window_s": t1 - t0, "cpu_cores": (c1 - c0) / (t1 - t0), "max_rss_mib": rss,
           "threads": busiest_threads(s0, s1, t1 - t0), "sent": sent, "publish_bitrate_bps": [(p.get("quality") or {}).get("publish_bitrate_bps") for p in participants(api, room_id)]}
    if rec is not None:
        status, stopped = api.call("POST", f"/v1/recordings/{rec['id']}/stop", timeout=90)
        done = wait_recording(api, rec["id"]) if status == 200 else {"status": f"stop answered {status}: {stopped}"}
        out["recording"] = done
        out["hwm_after_stop_mib"] = status_kib(pid, "VmHWM") / 1024
    print(f"   {name}: {out['cpu_cores']:.3f} cores over {out['window_s']:.1f} s, max RSS {rss:.0f} MiB", flush=True)
    for line in describe_sent(sent):
        print(f"     {line}", flush=True)
    print("     busiest server threads (cores on a CPU / cores waiting runnable): "
          + ", ".join(f"{t['name']}:{t['tid']} {t['cpu']:.3f}/{t['runnable_wait']:.3f}" for t in out["threads"]), flush=True)
    return out


def analyse_composite(result: dict, log: str) -> None:
    rec = result.get("recording") or {}
    fields = composite_log(log, rec.get("id", "?"))
    result["engine"] = fields
    files = rec.get("files") or []
    if not files:
        return
    path = files[0]["path"]
    p = ma.ffprobe(path)
    video = next((s for s in p["streams"] if s["codec_type"] == "video"), {})
    frames = int(video.get("nb_read_frames") or 0)
    duration = float(p["format"].get("duration") or 0)
    result["file"] = {"path": path, "size": int(p["format"].get("size") or 0), "duration_s": duration,
                      "video_frames": frames, "fps": frames / duration if duration else None,
                      "width": video.get("width"), "height": video.get("height"),
                      "decode_errors": ma.decode_check(path, timeout=300)[:10],
                      "name_tiles": name_tile_seconds(path, video.get("width") or 0, video.get("height") or 0)}


def name_tile_seconds(path: str, width: int, height: int) -> list[str] | None:
    """One sample a second of a 2x2 grid composite (4 publishers): per tile `p` (a picture) or `N`
    (its name tile: at least 80% of a grid of points in the tile on the name tile's background,
    Y 48 U 128 V 128). A camera whose last picture is older than 1.5 s shows its name, so `N` under
    load means that source's pictures stopped reaching the canvas."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        return None
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-vf", "fps=1", "-f", "rawvideo",
                          "-pix_fmt", "yuv420p", "-"], capture_output=True, timeout=300).stdout
    size = width * height * 3 // 2
    tw, th = width // 2, height // 2
    out = []
    for i in range(len(raw) // size):
        f = raw[i * size:(i + 1) * size]
        y, u, v = f[:width * height], f[width * height:width * height * 5 // 4], f[width * height * 5 // 4:]
        sample = ""
        for ty in range(2):
            for tx in range(2):
                n = hit = 0
                for yy in range(ty * th + th // 9, (ty + 1) * th - th // 9, 16):
                    for xx in range(tx * tw + tw // 16, (tx + 1) * tw - tw // 16, 16):
                        c = (yy // 2) * (width // 2) + xx // 2
                        n += 1
                        hit += abs(y[yy * width + xx] - 48) <= 6 and abs(u[c] - 128) <= 6 and abs(v[c] - 128) <= 6
                sample += "N" if n and hit > 0.8 * n else "p"
        out.append(sample)
    return out


def report(results: list[dict], args, started: str, commit: str) -> list[str]:
    by = {r["phase"]: r for r in results}
    base = by.get("none", {}).get("cpu_cores")
    lines = [f"- Date: {started}, commit {commit}; `{' '.join(['python3', 'bench/composite_cost.py', *sys.argv[1:]])}`",
             f"- {os.cpu_count()} cores ({platform.processor() or platform.machine()}), Linux {platform.release()}; release `sfu`, "
             f"{args.publishers} Chromium publishers ({'publishing and subscribing' if args.subscribe else 'publish only'}"
             f"{', no simulcast' if args.no_simulcast else ', simulcast'}) on the same machine"
             f" (server threads and autogroup at nice {args.sfu_nice}); "
             f"{args.window:.0f} s window per phase after {args.lead:.0f} s of lead-in",
             "",
             "| phase | sfu CPU (cores) | increment over no recording | max RSS (MiB) |",
             "|---|---|---|---|"]
    for r in results:
        inc = "-" if base is None or r["phase"] == "none" else f"{r['cpu_cores'] - base:+.3f}"
        lines.append(f"| {r['phase']} | {r['cpu_cores']:.3f} | {inc} | {r['max_rss_mib']:.0f} |")
    comp = by.get("composite")
    if comp and comp.get("engine"):
        e = comp["engine"]
        rec = comp.get("recording") or {}
        f = comp.get("file") or {}
        secs = f.get("duration_s") or 1
        ms = {k: int(e.get(f"{k}_ms", 0)) for k in ("decode", "compose", "encode", "mix")}
        total = sum(ms.values())
        lines += ["", f"Composite engine, CPU time of its thread per second of recording ({secs:.1f} s written, "
                  f"{e.get('video_frames')} video / {e.get('audio_frames')} audio frames out, {e.get('decoded')} decoded, "
                  f"{e.get('undecodable')} undecodable, {e.get('dropped')} dropped):", "",
                  "| total | decode (VP8 + Opus) | compose | encode (VP8 + Opus) | mix |", "|---|---|---|---|---|",
                  f"| {total / 1000 / secs:.3f} | {ms['decode'] / 1000 / secs:.3f} | {ms['compose'] / 1000 / secs:.3f} | "
                  f"{ms['encode'] / 1000 / secs:.3f} | {ms['mix'] / 1000 / secs:.3f} |", "",
                  f"Widths decoded per source, in order (the simulcast layer each tile took): `{e.get('decoded_widths')}`",
                  f"Output file: {f.get('width')}x{f.get('height')}, {f.get('video_frames')} frames over {f.get('duration_s', 0):.2f} s "
                  f"= {f.get('fps') or 0:.2f} fps (ffprobe), {f.get('size', 0) / 1e6:.1f} MB; "
                  f"ffmpeg full decode: {'clean' if not f.get('decode_errors') else f.get('decode_errors')}; status {rec.get('status')}"]
        if args.publishers == 4 and args.layout == "grid" and f.get("name_tiles") is not None:
            samples = f["name_tiles"]
            named = sum(s.count("N") for s in samples[2:])
            lines += [f"Tiles showing a name instead of a picture, one sample a second from 2 s on: {named} of "
                      f"{4 * max(0, len(samples) - 2)} (`{' '.join(samples)}`); skipped while catching up: "
                      f"{e.get('skipped_output', '?')} output frames, {e.get('skipped_input', '?')} source frames"]
    lines += ["", "What the publishers sent (their own outbound-rtp at mid-window; server's publish_bitrate_bps):"]
    for r in results:
        kbps = ", ".join(f"{(b or 0) / 1000:.0f}" for b in r.get("publish_bitrate_bps") or [])
        lines.append(f"- {r['phase']}: server sees {kbps} kbit/s")
        lines += [f"  - {l}" for l in describe_sent(r["sent"])]
    lines += ["", "Busiest server threads per phase (cores on a CPU / cores waiting runnable for one, from /proc/<pid>/task/*/schedstat):"]
    for r in results:
        lines.append(f"- {r['phase']}: " + ", ".join(f"{t['name']} {t['cpu']:.3f}/{t['runnable_wait']:.3f}" for t in r.get("threads") or []))
    tracks = by.get("tracks", {}).get("recording")
    if tracks:
        lines.append(f"- tracks recording: {len(tracks.get('files') or [])} files, status {tracks.get('status')}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "sfu"))
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--window", type=float, default=40, help="seconds measured per phase")
    ap.add_argument("--lead", type=float, default=4, help="seconds between starting a recording and the window")
    ap.add_argument("--settle", type=float, default=20, help="seconds for the publishers' bandwidth estimates to ramp up")
    ap.add_argument("--phases", default="none,tracks,composite")
    ap.add_argument("--layout", default="grid")
    ap.add_argument("--subscribe", action="store_true", help="the pages also receive each other (a real call)")
    ap.add_argument("--sfu-nice", type=int, default=-10,
                    help="the server's threads and autogroup at this nice value (default -10: the server gets the CPU it asks "
                    "for before the Chromiums, as on a machine of its own; 0 shares the CPUs equally with each Chromium)")
    ap.add_argument("--no-simulcast", action="store_true", help="the pages publish one 1280x720 stream (no simulcast)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "composite-results.md"))
    ap.add_argument("--keep", help="keep the server's data and log under this folder")
    args = ap.parse_args()
    binary = pathlib.Path(args.bin)
    if not binary.exists():
        print(f"{binary} is missing: scripts/bench.sh composite builds it", file=sys.stderr)
        return 1
    ma.require_tools("ffmpeg", "ffprobe")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    bodies = {"none": None, "tracks": {"mode": "tracks"},
              "composite": {"mode": "composite", "layout": args.layout, "width": 1280, "height": 720, "fps": 30}}
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sfu-composite-bench-") as tmp:
        work = pathlib.Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        clip = work / "testsrc2-1280x720-30.y4m"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "4",
                        "-pix_fmt", "yuv420p", str(clip)], check=True, capture_output=True, timeout=120)
        key = "bench-" + secrets.token_hex(16)
        data = work / "sfu"
        data.mkdir(exist_ok=True)
        sfu = SFUProcess(binary, data, {"SFU_API_KEY": key, "SFU_LOG_LEVEL": "info"})
        sfu.host = "127.0.0.1"
        # The server is in this script's session, so its autogroup is the caller's: put it back after.
        autogroup = pathlib.Path(f"/proc/{os.getpid()}/autogroup")
        autogroup_nice = re.search(r"nice (-?\d+)", autogroup.read_text()) if autogroup.exists() else None
        try:
            sfu.wait_ready()
            api = ControlAPI(sfu.base_url, key)
            room_id = api.create_room(name="composite-bench")["id"]
            (work / "browsers").mkdir(exist_ok=True)
            with chromium_pool(work / "browsers") as start:
                browsers = []
                perms = ["publish", "subscribe"] if args.subscribe else ["publish"]
                for i in range(args.publishers):
                    b = start(f"publisher{i}", video_file=clip, log=False, script_timeout_ms=30000)
                    tok = api.token(room_id, f"pub{i}", role="doctor", name=f"Publisher {i}", permissions=perms)["token"]
                    b.open(page_url(sfu, tok, True) + ("&simulcast=0" if args.no_simulcast else ""))
                    wait_joined(b, timeout=45)
                    browsers.append(b)
                print(f"== {args.publishers} publishers joined; {args.settle:.0f} s for their estimates to ramp up", flush=True)
                time.sleep(args.settle)
                for name in args.phases.split(","):
                    print(f"== phase {name}", flush=True)
                    results.append(phase(name, sfu, api, room_id, browsers, args, bodies[name]))
                    time.sleep(2)
        finally:
            sfu.terminate()
            sfu.kill()
            if autogroup_nice:
                with contextlib.suppress(OSError):
                    autogroup.write_text(autogroup_nice.group(1))
        log = sfu.log_path.read_text(errors="replace")
        for r in results:
            if r["phase"] == "composite":
                analyse_composite(r, log)
        lines = report(results, args, started, commit)
        raw = ROOT / "bench" / "results" / (pathlib.Path(args.out).stem + ".json")
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out = pathlib.Path(args.out)
    out.write_text("# Recording cost with Chromium publishers\n\nWritten by `scripts/bench.sh composite` "
                   f"(bench/composite_cost.py); raw figures in bench/results/{pathlib.Path(args.out).stem}.json.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
