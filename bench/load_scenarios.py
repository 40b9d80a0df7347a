#!/usr/bin/env python3
"""The forwarding benchmark of `make bench`: fixed scenarios against the release SFU and the floor.

Each scenario runs twice, against `sfu serve` and against `sfu-load floor` (the floor forwarder:
same ICE/DTLS/SRTP and batched UDP, no SFU logic), with the server (or floor) pinned to one core
and `sfu-load` to the other (taskset). Every run writes its JSON report next to the table; the
table goes to bench/results.md with a description of the machine.

    python3 bench/load_scenarios.py [--duration 30] [--only a,b,c] [--out bench/results.md]

"sfu-tcp" is the SFU again with every peer connection over ICE-TCP (`sfu-load --tcp`: RFC 4571 frames on
a TCP connection to the server's passive candidate); its row gives CPU per forwarded packet over TCP
beside UDP (the floor has no TCP side).

"b-composite" is (b) against the SFU with a composite recording (1280x720, 30 fps, grid) of one of
its rooms running: started once that room has its four participants publishing (before the
window opens), finalized when sfu-load closes the rooms at the end; the composite's own figures
(frames decoded and undecodable, CPU per stage) come from the server's "composite recording
written" log line, so that run logs at info level.

Standard library only (no venv needed). Needs the release binaries `.build/release/sfu` and
`.build/release/sfu-load` (scripts/bench.sh builds them).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCENARIOS = {
    # Subscribers send transport-cc feedback as browsers do, except in (b): there each subscriber
    # receives three 1.5 Mbit/s tracks, and they report a fixed 50 Mbit/s downlink with REMB so that
    # every track is forwarded whole, as by the floor ("b-tcc" shows (b) with transport-cc).
    "a": {"title": "(a) 1 room, 1 publisher -> 50 subscribers, video 1.5 Mbit/s + audio",
          "args": ["--rooms", "1", "--publishers", "1", "--subscribers", "50", "--bitrate", "1.5M"]},
    # (b) and b-composite send real VP8 (`--encoded-video`: libvpx at start-up, looped), so that the
    # composite of b-composite decodes pictures as from browsers, and the two compare like for like.
    "b": {"title": "(b) 10 rooms x 4 participants, all publishing (VP8 video 1.5 Mbit/s + audio) and subscribing, REMB subscribers",
          "args": ["--rooms", "10", "--publishers", "4", "--subscribers", "0", "--bitrate", "1.5M", "--remb", "50M", "--encoded-video"]},
    # The control API takes at most 100 participants per room (max_participants 1...100), so the
    # 200 audio subscriptions are two rooms of one publisher and 99 subscribers.
    "c": {"title": "(c) audio only, 1 publisher -> 200 subscribers, run as 2 rooms x (1 -> 99) (the API caps a room at 100 participants)",
          "args": ["--rooms", "2", "--publishers", "1", "--subscribers", "99", "--audio-only"]},
    "b-tcc": {"title": "(b) with transport-cc subscribers: the server's downlink estimator and layer allocator in the loop",
              "args": ["--rooms", "10", "--publishers", "4", "--subscribers", "0", "--bitrate", "1.5M", "--setup-timeout", "20"],
              "targets": ["sfu"]},
    # (b) again with a composite recording of its first room running through the window: does
    # forwarding (latency, loss, CPU) stay where it was while the composite decodes four 1280x720
    # VP8 streams, composes and encodes?
    "b-composite": {"title": "(b) with a composite recording (1280x720, 30 fps, grid) of one of its rooms running",
                    "args": ["--rooms", "10", "--publishers", "4", "--subscribers", "0", "--bitrate", "1.5M", "--remb", "50M",
                             "--encoded-video"],
                    "targets": ["sfu"], "composite": True},
}


def free_media_port() -> int:
    """A port free on UDP and TCP (the SFU's worker listens for ICE-TCP on its UDP port number)."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both UDP and TCP")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> list[str]:
    cpu = re.search(r"Model name:\s*(.+)", run(["lscpu"]))
    hyper = re.search(r"Hypervisor vendor:\s*(.+)", run(["lscpu"]))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    srtp = run(["dpkg-query", "-W", "-f", "${Version}", "libsrtp2-1"]) or "?"
    swift = os.environ.get("SWIFT_VERSION") or "Swift (version not given: scripts/bench.sh sets SWIFT_VERSION)"
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    # The run's own output (bench/results*) is not a change to what was measured.
    dirty = " (with uncommitted changes)" if run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                                                   ".", ":!bench/results", ":!bench/results.md"]) else ""
    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, commit {commit}{dirty}",
        f"- CPU: {cpu.group(1) if cpu else platform.processor()}, {os.cpu_count()} cores"
        + (f" ({hyper.group(1)} guest)" if hyper else "") + f", {mem:.0f} GiB RAM, Linux {platform.release()}",
        f"- {swift}; release build; libsrtp2 {srtp} (Debian's, built on NSS) "
        + ("on its own NSS crypto (SFU_SRTP_CRYPTO=libsrtp)" if os.environ.get("SFU_SRTP_CRYPTO") == "libsrtp"
           else "with AES-GCM, AES-ICM and HMAC-SHA1 on OpenSSL (the server's crypto types, docs/ARCHITECTURE.md)"),
    ]


def load_average() -> float:
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


class Target:
    """A server (SFU or floor) pinned to a core, started for one run."""

    def __init__(self, kind: str, core: int, bindir: pathlib.Path, workdir: pathlib.Path, log_level: str | None = None):
        self.kind = kind
        self.key = secrets.token_hex(16)
        self.log_path = workdir / f"{kind}.log"
        self.log = open(self.log_path, "wb")
        if kind in ("sfu", "sfu-tcp"):
            self.http = free_port()
            media = free_media_port()
            env = dict(os.environ, SFU_API_KEY=self.key, SFU_HTTP_HOST="127.0.0.1", SFU_HTTP_PORT=str(self.http),
                       SFU_MEDIA_HOST="127.0.0.1", SFU_MEDIA_PORT=str(media), SFU_WORKERS="1",
                       SFU_DATA_DIR=str(workdir / "data"), SFU_RECORDINGS_DIR=str(workdir / "data" / "recordings"),
                       SFU_LOG_LEVEL=log_level or os.environ.get("SFU_LOG_LEVEL", "warning"),
                       # Every peer of the load tool connects from 127.0.0.1 at once: over ICE-TCP
                       # that is far above the per-address limits meant for one NAT's clients.
                       SFU_ICE_TCP_MAX_PER_IP="1000", SFU_ICE_TCP_MAX_PENDING_PER_IP="1000", SFU_ICE_TCP_MAX_PENDING="1000")
            self.proc = subprocess.Popen(["taskset", "-c", str(core), str(bindir / "sfu"), "serve"], env=env,
                                         stdout=self.log, stderr=subprocess.STDOUT)
            self.wait_http()
            self.target_args = ["--url", f"http://127.0.0.1:{self.http}", "--api-key", self.key]
            if kind == "sfu-tcp":
                self.target_args.append("--tcp")
        else:
            self.control = free_port()
            self.proc = subprocess.Popen(["taskset", "-c", str(core), str(bindir / "sfu-load"), "floor",
                                          "--control-port", str(self.control)], stdout=self.log, stderr=subprocess.STDOUT)
            self.wait_tcp(self.control)
            self.target_args = ["--floor", f"127.0.0.1:{self.control}"]

    def wait_http(self) -> None:
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"sfu exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sfu did not become ready")

    def wait_tcp(self, port: int) -> None:
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"floor exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("floor did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class CompositeDuringLoad:
    """Starts a composite recording of the first room sfu-load fills, and reports on it after."""

    def __init__(self, target: Target, publishers: int):
        self.target, self.publishers = target, publishers
        self.started_at: float | None = None
        self.recording: dict | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.target.http}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.target.key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {"error": e.read().decode(errors="replace")[:500]}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, rooms = self.call("GET", "/v1/rooms")
                for room in (rooms.get("rooms") or [])[:1]:
                    _, got = self.call("GET", f"/v1/rooms/{room['id']}/participants")
                    people = got.get("participants") or []
                    videos = [t for p in people for t in p.get("tracks") or [] if t.get("kind") == "video"]
                    if len(people) >= self.publishers and len(videos) >= self.publishers:
                        status, rec = self.call("POST", f"/v1/rooms/{room['id']}/recordings",
                                                {"mode": "composite", "layout": "grid", "width": 1280, "height": 720, "fps": 30})
                        if status != 201:
                            self.error = f"POST recordings -> {status} {rec}"
                            return
                        self.recording, self.started_at = rec, time.monotonic() - self._t0
                        return
            except (OSError, ValueError) as e:
                self.error = str(e)
            self._stop.wait(0.2)

    def finish(self) -> dict:
        """Stops the recording (sfu-load's closing the rooms may have already), waits until it is
        finalized, and reads the composite's own figures from the server's log."""
        self._stop.set()
        self._thread.join()
        out: dict = {"started_after_s": self.started_at, "error": self.error}
        if self.recording is None:
            out["error"] = out["error"] or "no room reached its participants"
            return out
        rid = self.recording["id"]
        self.call("POST", f"/v1/recordings/{rid}/stop", timeout=90)
        rec: dict = {}
        for _ in range(180):
            _, rec = self.call("GET", f"/v1/recordings/{rid}")
            if rec.get("status") in ("completed", "failed"):
                break
            time.sleep(0.5)
        out["recording"] = rec
        self.target.log.flush()
        for line in reversed(self.target.log_path.read_text(errors="replace").splitlines()):
            if "composite recording written" in line and rid in line:
                out["engine"] = dict(re.findall(r"(\w+)=(\S+)", line))
                break
        return out


def composite_note(name: str, r: dict) -> list[str]:
    c = r.get("composite") or {}
    if c.get("error") and not c.get("recording"):
        return [f"{name}: the composite recording did not run: {c['error']}", ""]
    rec, e = c.get("recording") or {}, c.get("engine") or {}
    files = rec.get("files") or []
    secs = (files[0].get("duration_ms") or 0) / 1000 if files else 0
    ms = {k: int(e.get(f"{k}_ms", 0)) for k in ("decode", "compose", "encode", "mix")}
    split = (", ".join(f"{k} {v / 1000 / secs:.3f}" for k, v in ms.items()) + f" (total {sum(ms.values()) / 1000 / secs:.3f})") if secs else "-"
    return [f"{name}: composite recording {rec.get('id')} of one room started {c.get('started_after_s') or 0:.1f} s after sfu-load "
            f"(before the window), status {rec.get('status')}, {secs:.1f} s written; its thread's CPU per second of recording: {split}; "
            f"{e.get('video_frames', '?')} video frames out, {e.get('decoded', '?')} pictures decoded, {e.get('undecodable', '?')} undecodable "
            f"({'real VP8 from sfu-load --encoded-video' if '--encoded-video' in SCENARIOS[name]['args'] else 'synthetic filler: name tiles'}), "
            f"{e.get('dropped', '?')} dropped.", ""]


def load_report(target: Target, bindir: pathlib.Path, load_core: int, load_args: list[str], timeout: float) -> dict:
    """`sfu-load` pinned to `load_core` against a started target with `load_args` (plus the target's
    CPU and memory through --server-pid): its JSON report."""
    cmd = ["taskset", "-c", str(load_core), str(bindir / "sfu-load"), *target.target_args, *load_args,
           "--server-pid", str(target.proc.pid), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not done.stdout.strip().startswith("{"):
        raise RuntimeError(f"sfu-load failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run_one(name: str, kind: str, args, bindir: pathlib.Path, workdir: pathlib.Path) -> dict:
    composite = SCENARIOS[name].get("composite", False)
    target = Target(kind, args.server_core, bindir, workdir, log_level="info" if composite else None)
    watcher = None
    try:
        load_before = load_average()
        if composite:
            watcher = CompositeDuringLoad(target, publishers=4)
        report = load_report(target, bindir, args.load_core,
                             [*SCENARIOS[name]["args"], "--duration", str(args.duration), "--warmup", str(args.warmup),
                              *args.load_args.split()], timeout=args.duration + 180)
        report["load_average_before"] = load_before
        if watcher is not None:
            report["composite"] = watcher.finish()
        return report
    finally:
        target.stop()


def run_ramp(kind: str, args, bindir: pathlib.Path, workdir: pathlib.Path) -> dict:
    """`sfu-load --ramp-step` against a fresh pinned target: scenario (a)'s shape, more subscribers
    each step until loss or p99 latency passes its limit; the JSON ramp report."""
    target = Target(kind, args.server_core, bindir, workdir)
    try:
        return load_report(target, bindir, args.load_core,
                           ["--publishers", "1", "--bitrate", "1.5M", "--remb", "50M", "--ramp-step", str(args.ramp_step),
                            "--ramp-max", str(args.ramp_max), "--duration", str(args.ramp_duration), "--warmup", "2",
                            *args.load_args.split()], timeout=3600)
    finally:
        target.stop()


def ramp_table(ramps: dict[str, dict]) -> list[str]:
    lines = ["| target | capacity: forwarded packets/s | at subscribers | server CPU | CPU us per forwarded packet | load tool CPU | "
             "capacity vs floor | first step over the limits |", "|---|---|---|---|---|---|---|---|"]
    floor_cap = ((ramps.get("floor") or {}).get("capacity") or {}).get("forwarded_per_s")
    for kind, r in ramps.items():
        c = r.get("capacity") or {}
        over = next((st for st in r.get("steps", []) if not st.get("passed")), None)
        over_text = (f"{over['subscribers']} subscribers: {', '.join(over['failed'])} ({fmt(over['forwarded_per_s'], 0)} packets/s, "
                     f"load tool {fmt(over.get('load_tool_cpu_percent'), 0)} %)") if over else "none (the ramp's maximum passed)"
        ratio = f"{c['forwarded_per_s'] / floor_cap:.2f}x" if (c.get("forwarded_per_s") and floor_cap and kind != "floor") else "-"
        lines.append(f"| {kind} | {fmt(c.get('forwarded_per_s'), 0)} | {c.get('subscribers', '-')} | {fmt(c.get('server_cpu_percent'), 0)} % "
                     f"| {fmt(c.get('server_us_per_packet'), 2)} | {fmt(c.get('load_tool_cpu_percent'), 0)} % | {ratio} | {over_text} |")
    return lines


def fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(results: dict[str, dict[str, dict]], scenario_names: list[str]) -> list[str]:
    lines = ["| scenario | target | forwarded packets/s | loss | latency p50 / p99 / max (ms) | server CPU | CPU us per forwarded packet | forwarded packets/s per core | CPU per packet vs floor | peak RSS | load tool CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in scenario_names:
        floor_us = results.get(name, {}).get("floor", {}).get("server", {}).get("cpu_us_per_packet")
        udp_us = results.get(name, {}).get("sfu", {}).get("server", {}).get("cpu_us_per_packet")
        for kind in ("sfu", "sfu-tcp", "floor"):
            r = results.get(name, {}).get(kind)
            if r is None:
                continue
            s, lat, rec = r.get("server", {}), r.get("latency_ms", {}), r["received"]
            us = s.get("cpu_us_per_packet")
            ratio = f"{us / floor_us:.2f}x" if (us and floor_us and kind != "floor") else ("1x" if kind == "floor" and us else "-")
            if kind == "sfu-tcp" and us and udp_us:
                ratio += f" ({us / udp_us:.2f}x the SFU over UDP)"
            loss = f"{rec['lost']} / {rec['expected']:,} ({rec['loss_percent']:.3f} %)"
            if rec.get("paused_by_server"):
                loss += f"; {rec['paused_by_server']} video subscriptions (of {len(r['subscribers'])} subscribers) paused by the server, not counted"
            lines.append(f"| {name} | {kind} | {fmt(r['forwarded_per_s'], 0)} | {loss} | {fmt(lat.get('p50'), 2)} / {fmt(lat.get('p99'), 2)} / {fmt(lat.get('max'), 2)} "
                         f"| {fmt(s.get('cpu_percent'), 1)} % | {fmt(us, 2)} | {fmt(s.get('packets_per_s_per_core'), 0)} | {ratio} "
                         f"| {fmt(s.get('peak_rss_mb'), 0)} MiB | {fmt(r.get('load_tool', {}).get('cpu_percent'), 1)} % |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--only", default="a,b,b-composite,c,b-tcc", help="comma list of scenarios (a, b, b-composite, c, b-tcc)")
    ap.add_argument("--targets", default="sfu,sfu-tcp,floor", help="sfu, sfu-tcp (the SFU with media over ICE-TCP), floor")
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--logs", help="keep each run's server log (and data) under this folder instead of a temporary one; "
                    "SFU_LOG_LEVEL=debug in the environment makes the SFU's log verbose")
    ap.add_argument("--load-args", default="", help="more sfu-load options for every run, e.g. --load-args=--busy-poll")
    ap.add_argument("--ramp-step", type=int, default=100, help="capacity at saturation: subscribers added per ramp step (0: no ramp)")
    ap.add_argument("--ramp-max", type=int, default=1000)
    ap.add_argument("--ramp-duration", type=float, default=5, help="each ramp step's window, seconds")
    ap.add_argument("--ramp-targets", default="sfu,floor")
    ap.add_argument("--server-core", type=int, default=1)
    ap.add_argument("--load-core", type=int, default=0)
    args = ap.parse_args()
    bindir = pathlib.Path(args.bin)
    for b in ("sfu", "sfu-load"):
        if not (bindir / b).exists():
            print(f"{bindir / b} is missing: build it first (scripts/bench.sh does)", file=sys.stderr)
            return 1
    if not shutil.which("taskset"):
        print("taskset is needed (util-linux)", file=sys.stderr)
        return 1
    names = [n for n in args.only.split(",") if n in SCENARIOS]
    kinds = [k for k in args.targets.split(",") if k in ("sfu", "sfu-tcp", "floor")]
    out = pathlib.Path(args.out)
    raw_dir = out.parent / "results"
    raw_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    started = time.monotonic()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="sfu-bench-") as tmp:
        for name in names:
            for kind in [k for k in kinds if k in SCENARIOS[name].get("targets", ["sfu", "sfu-tcp", "floor"])]:
                print(f"== {SCENARIOS[name]['title']}: {kind} ({args.duration:.0f} s)", flush=True)
                workdir = pathlib.Path(args.logs or tmp) / f"{name}-{kind}"
                workdir.mkdir(parents=True, exist_ok=bool(args.logs))
                try:
                    r = run_one(name, kind, args, bindir, workdir)
                except (RuntimeError, subprocess.SubprocessError, json.JSONDecodeError) as e:
                    print(f"   failed: {e}", file=sys.stderr)
                    failures += 1
                    continue
                results.setdefault(name, {})[kind] = r
                (raw_dir / f"{name}-{kind}.json").write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
                s, lat = r.get("server", {}), r.get("latency_ms", {})
                print(f"   {r['forwarded_per_s']:,.0f} forwarded/s, lost {r['received']['lost']}, paused {r['received'].get('paused_by_server', 0)}, p99 {lat.get('p99')} ms, "
                      f"{s.get('cpu_us_per_packet')} us/packet, {s.get('packets_per_s_per_core')} packets/s/core", flush=True)
        ramps: dict[str, dict] = {}
        for kind in [k for k in args.ramp_targets.split(",") if k in ("sfu", "floor")] if args.ramp_step > 0 else []:
            print(f"== capacity at saturation: {kind} (ramp of {args.ramp_step} subscribers a step)", flush=True)
            workdir = pathlib.Path(args.logs or tmp) / f"ramp-{kind}"
            workdir.mkdir(parents=True, exist_ok=bool(args.logs))
            try:
                r = run_ramp(kind, args, bindir, workdir)
            except (RuntimeError, subprocess.SubprocessError, json.JSONDecodeError) as e:
                print(f"   failed: {e}", file=sys.stderr)
                failures += 1
                continue
            ramps[kind] = r
            (raw_dir / f"ramp-{kind}.json").write_text(json.dumps(r, indent=1, sort_keys=True) + "\n")
            for st in r.get("steps", []):
                print(f"   {st['subscribers']} subscribers: {st['forwarded_per_s']:,.0f} forwarded/s, loss {st['loss_percent']} %, p99 {st.get('p99_ms')} ms, "
                      f"server {st.get('server_cpu_percent')} %, load tool {st.get('load_tool_cpu_percent')} %" + ("" if st["passed"] else " -> over"), flush=True)
    elapsed = time.monotonic() - started
    doc = ["# Forwarding benchmark results", "",
           "Written by `make bench` (scripts/bench.sh -> bench/load_scenarios.py); how to read it: docs/BENCHMARKS.md.", ""]
    doc += machine()
    doc += [f"- Server (or floor) pinned to core {args.server_core}, `sfu-load` to core {args.load_core} (taskset); "
            f"one media worker; {args.duration:.0f} s window per run after {args.warmup:.0f} s of warm-up; scenarios took {elapsed:.0f} s.",
            "- forwarded packets = RTP packets the subscribers received inside the window (first arrivals); server CPU = "
            "the process's CPU clock (user + system, all threads) over the window; latency = kernel receive time at the "
            "subscriber minus the publisher's send stamp (one host, one clock).", ""]
    for name in names:
        doc.append(f"- {SCENARIOS[name]['title']}: `sfu-load {' '.join(SCENARIOS[name]['args'])}`")
    if names:
        doc += [""] + table(results, names) + [""]
    busy = [f"{n}/{k} ({r['load_average_before']:.1f})" for n, d in results.items() for k, r in d.items() if r.get("load_average_before", 0) > 1.5]
    if busy:
        doc += [f"Other work was running on the machine (1-minute load average before the run): {', '.join(busy)}; "
                "latency and CPU figures of those runs are less reliable.", ""]
    for n, d in results.items():
        for k, r in d.items():
            if r.get("setup_incomplete"):
                why = r["setup_incomplete"]
                doc += [f"{n}/{k}: {len(why)} subscriptions were not flowing when the window opened, e.g. " + "; ".join(why[:3]) + ".", ""]
    for n, d in results.items():
        for k, r in d.items():
            if SCENARIOS[n].get("composite"):
                doc += composite_note(n, r)
    if ramps:
        doc += ["## Capacity at saturation", "",
                f"`sfu-load --ramp-step {args.ramp_step}`: scenario (a)'s shape (one 1.5 Mbit/s video + audio publisher per room, up to 99 "
                f"subscribers each, REMB subscribers), {args.ramp_step} more subscribers a step ({args.ramp_duration:g} s window each), on the same "
                "pinned cores; a step passes with loss under 0.5 % and p99 latency under 50 ms. Capacity = the forwarded packets/s of the "
                "last step that passed. A load tool near 100 % of its core means the load tool, not the target, set the limit.", ""]
        doc += ramp_table(ramps) + [""]
    doc += ["Raw reports: bench/results/<scenario>-<target>.json (ramp-<target>.json for the ramps).", ""]
    out.write_text("\n".join(doc))
    print(f"wrote {out} ({elapsed:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
