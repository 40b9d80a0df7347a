"""A room subscriber behind 5 % random packet loss still decodes (almost) every frame.

The kernel here has no tc netem, so the loss is made with a network namespace and nftables: a veth
pair joins the host (its side holds a free 10.203.x.1, where the server listens for HTTP and media)
and a namespace (10.203.x.2) in which a subscriber RoomClient runs as a subprocess (this file run as a script,
printing its counts as JSON). The publisher runs on the host. The subscriber is run twice over the
same window: without loss, then with an nftables rule in the namespace dropping 5 % of the UDP
datagrams coming from the server's media port. With NACK/RTX working end to end the frames decoded
in the lossy run stay within 20 % of the loss-free run.

Needs root (CI runs the suite as root); without `ip netns` or `nft` the test fails, it never skips.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import re
import secrets
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WARMUP_S = 3.0
WINDOW_S = 10.0
LOSS_PERCENT = 5


# --- the subscriber, run inside the namespace ---------------------------------------------------

def count_receiver_activity() -> dict:
    """Counts, in aiortc's receivers, RTP packets by payload type and the NACKs/PLIs sent (for the
    failure message: tells "nothing retransmitted" from "retransmitted but not recovered")."""
    import collections
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    counts = {"rtp_by_pt": collections.Counter(), "nacks": 0, "nacked_seqs": 0, "plis": 0}
    handle, nack, pli = RTCRtpReceiver._handle_rtp_packet, RTCRtpReceiver._send_rtcp_nack, RTCRtpReceiver._send_rtcp_pli

    async def on_rtp(self, packet, arrival_time_ms):
        counts["rtp_by_pt"][packet.payload_type] += 1
        await handle(self, packet, arrival_time_ms)

    async def on_nack(self, media_ssrc, lost):
        counts["nacks"] += 1
        counts["nacked_seqs"] += len(lost)
        await nack(self, media_ssrc, lost)

    async def on_pli(self, media_ssrc):
        counts["plis"] += 1
        await pli(self, media_ssrc)

    RTCRtpReceiver._handle_rtp_packet, RTCRtpReceiver._send_rtcp_nack, RTCRtpReceiver._send_rtcp_pli = on_rtp, on_nack, on_pli
    return counts


async def subscribe(url: str, publisher: str, warmup: float, window: float) -> dict:
    from room_client import RoomClient, until
    activity = count_receiver_activity()
    c = RoomClient(url, name="lossy-subscriber", publish_audio=False, publish_video=False)
    try:
        await c.connect()
        got_first = await until(lambda: c.frames_from(publisher) > 0, 20)
        if not got_first:
            return {"error": "no video from the publisher within 20 s", "state": repr(c.state())}
        await asyncio.sleep(warmup)
        f0, s0, t0 = c.frames_from(publisher), c.samples_from(publisher), time.monotonic()
        await asyncio.sleep(window)
        f1, s1, t1 = c.frames_from(publisher), c.samples_from(publisher), time.monotonic()
        return {"frames": f1 - f0, "samples": s1 - s0, "seconds": t1 - t0, "total_frames": f1,
                "failures": c.failures, "errors": c.errors(),
                "receiver": {k: (dict(v) if isinstance(v, dict) else v) for k, v in activity.items()}}
    finally:
        await c.close()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    url, publisher = sys.argv[1], sys.argv[2]
    result = asyncio.run(asyncio.wait_for(subscribe(url, publisher, float(sys.argv[3]), float(sys.argv[4])), 90))
    print("RESULT " + json.dumps(result, default=str), flush=True)
    sys.exit(0)


# --- the test ------------------------------------------------------------------------------------

from room_client import ControlAPI, RoomClient, until  # noqa: E402


def namespace():
    """A namespace joined to the host by a veth pair (`netns_util.Namespace`: a 10.203.x.0/24 that no
    other interface on this host holds, so that a concurrent test run's namespace cannot take the
    replies); always deleted afterwards."""
    from netns_util import nft_namespace
    return nft_namespace("sfuloss")


def add_loss(ns, media_port: int, percent: int) -> None:
    ns.exec("nft", "add", "table", "inet", "sfuloss")
    ns.exec("nft", "add", "chain", "inet", "sfuloss", "in", "{ type filter hook input priority 0; }")
    ns.exec("nft", "add", "rule", "inet", "sfuloss", "in", "udp", "sport", str(media_port),
            "numgen", "random", "mod", "100", "<", str(percent), "counter", "drop")


def dropped(ns) -> int:
    out = ns.exec("nft", "list", "chain", "inet", "sfuloss", "in").stdout
    m = re.search(r"counter packets (\d+)", out)
    return int(m.group(1)) if m else -1


def wait_healthy(base_url: str, proc, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sfu exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            with urllib.request.urlopen(base_url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"sfu not healthy on {base_url} after {timeout}s")


async def run_subscriber(ns, url: str, publisher: str) -> dict:
    proc = await asyncio.create_subprocess_exec(
        *ns.prefix(), sys.executable, str(HERE / "test_room_loss.py"), url, publisher,
        str(WARMUP_S), str(WINDOW_S), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    line = next((l for l in out.decode().splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, f"subscriber printed no result (exit {proc.returncode}):\n{out.decode()}\n{err.decode()[-3000:]}"
    result = json.loads(line[len("RESULT "):])
    assert "error" not in result, result
    return result


def test_subscriber_under_5_percent_loss(sfu_factory):
    key = "loss-" + secrets.token_hex(16)
    with namespace() as ns:
        sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_HTTP_HOST": ns.host_ip, "SFU_MEDIA_HOST": ns.host_ip}, wait=False)
        base = f"http://{ns.host_ip}:{sfu.http_port}"
        wait_healthy(base, sfu.proc)
        api = ControlAPI(base, key)
        rid = api.create_room(name="loss")["id"]

        async def scenario():
            pub = RoomClient(api.token(rid, "publisher", role="doctor")["signaling_url"], name="publisher")
            try:
                await pub.connect()
                await pub.publish()
                clean = await run_subscriber(ns, api.token(rid, "clean")["signaling_url"], pub.peer_id)
                add_loss(ns, sfu.media_port, LOSS_PERCENT)
                lossy = await run_subscriber(ns, api.token(rid, "lossy")["signaling_url"], pub.peer_id)
                return clean, lossy, dropped(ns)
            finally:
                await pub.close()

        started = time.monotonic()
        clean, lossy, drops = asyncio.run(asyncio.wait_for(scenario(), 240))
        elapsed = time.monotonic() - started
        log = "\n".join(sfu.log().splitlines()[-40:])
        metrics = urllib.request.urlopen(urllib.request.Request(
            base + "/metrics", headers={"Authorization": f"Bearer {key}"}), timeout=5).read().decode()
        counters = {name: int(value) for name, value in re.findall(
            r"^(sfu_keyframe_requests_total|sfu_retransmissions_total) (\d+)$", metrics, re.M)}
        print(f"loss-free: {clean}\nlossy ({LOSS_PERCENT}%): {lossy}\ndropped by nftables: {drops}")
        assert clean["frames"] >= 10 * WINDOW_S, f"too few frames even without loss: {clean}\n{log}"
        assert clean["samples"] > 0 and lossy["samples"] > 0, (clean, lossy)
        # The rule really dropped packets: about 5 % of the ~1 000+ datagrams of the window.
        assert drops >= 20, f"nftables dropped only {drops} packets: the loss was not applied"
        assert lossy["frames"] >= 0.8 * clean["frames"], (
            f"under {LOSS_PERCENT}% loss the subscriber decoded {lossy['frames']} frames in {WINDOW_S}s, "
            f"vs {clean['frames']} without loss (want within 20%)\n{log}")
        # The losses were repaired by retransmission, and keyframe requests to the publisher stayed
        # paced (at most one per second whatever the subscribers asked).
        assert counters.get("sfu_retransmissions_total", 0) >= 10, (counters, lossy)
        assert counters.get("sfu_keyframe_requests_total", 0) <= elapsed + 1, (counters, elapsed)
        assert sfu.proc.poll() is None
