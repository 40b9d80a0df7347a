"""/metrics in Prometheus text format, read from live state."""
import asyncio
import re
import socket
import time

from echo_client import EchoClient
from test_control_api import KEY, call

LINE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[a-z_]+"\})? (-?[0-9.e+]+)$')


def scrape(sfu, key=KEY):
    status, text = call(sfu, "GET", "/metrics", key=key)
    if status != 200:
        return status, text
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith("# HELP ") or line.startswith("# TYPE "), line
            continue
        m = LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return status, values


def test_metrics_count_rooms_media_and_drops(sfu_factory):
    sfu = sfu_factory(env={"SFU_API_KEY": KEY})
    status, before = scrape(sfu)
    assert status == 200
    assert before["sfu_rooms"] == 0 and before["sfu_rtp_packets_in_total"] == 0 and before["sfu_transports"] == 0
    rooms = []
    for _ in range(2):
        status, room = call(sfu, "POST", "/v1/rooms", {})
        assert status == 201
        rooms.append(room)
    # With an API key the echo endpoint takes a join token.
    status, token = call(sfu, "POST", f"/v1/rooms/{rooms[0]['id']}/tokens", {"user_id": "echo", "role": "patient"})
    assert status in (200, 201), token

    async def echo():
        async with EchoClient(f"ws://127.0.0.1:{sfu.http_port}/v1/echo?token={token['token']}") as client:
            assert await client.wait_for(video_frames=30, timeout=30)
            _, during = scrape(sfu)
            return during

    during = asyncio.run(echo())
    assert during["sfu_rooms"] == 2
    assert during["sfu_transports"] == 1
    assert during["sfu_rtp_packets_in_total"] > 30 and during["sfu_rtp_packets_out_total"] > 30
    assert during["sfu_rtp_bytes_in_total"] > during["sfu_rtp_packets_in_total"] * 10
    # A datagram from nowhere is counted as dropped.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(5):
            s.sendto(b"\x80\x60junk-junk-junk", ("127.0.0.1", sfu.media_port))
    time.sleep(0.3)
    _, after = scrape(sfu)
    assert after["sfu_transports"] == 0  # the session ended with its signaling
    assert after["sfu_rtp_packets_in_total"] >= during["sfu_rtp_packets_in_total"]  # closed sessions still count
    assert after['sfu_dropped_packets_total{reason="no_transport"}'] >= 5


def test_metrics_need_the_api_key(sfu_factory):
    sfu = sfu_factory(env={"SFU_API_KEY": KEY})
    status, body = scrape(sfu, key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
