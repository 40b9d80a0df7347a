"""The dashboard at /dashboard (issue 23) in headless Chromium, over a real server with aiortc participants:
- the API key entered in the page is kept in session storage; a live room appears with its
  participants within 2 s of the page having the key; its graphs gain points every second;
- a recording made through the API is listed and plays in the page (the file fetched with the key,
  played from a blob: the video element decodes and its time advances);
- the closed room shows its sessions and its audit trail;
- in development mode (no API key configured) the page is handed the run's key.
A failure saves a screenshot of the page next to the test's files (tmp_path), named in the message.
"""
from __future__ import annotations

import asyncio
import base64
import secrets
import time

from netns_util import chromium_pool
from room_client import ControlAPI, RoomClient, until


def screenshot(page, path) -> str:
    try:
        png = page._call("GET", f"/session/{page.session}/screenshot")
        path.write_bytes(base64.b64decode(png))
        return f"screenshot: {path}"
    except Exception as e:  # the screenshot is a diagnostic; its failure must not hide the real one
        return f"(no screenshot: {e})"


def wait_page(page, script: str, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.execute(script)
        if value:
            return value
        time.sleep(interval)
    return value


def test_the_dashboard_shows_live_rooms_graphs_history_and_plays_recordings(sfu_factory, tmp_path):
    key = "dashboard-" + secrets.token_hex(16)
    sfu = sfu_factory(env={"SFU_API_KEY": key})
    api = ControlAPI(sfu.base_url, key)
    room = api.create_room(name="dashboard consultation")["id"]
    with chromium_pool(tmp_path) as chromiums:
        page = chromiums("dashboard")
        try:
            async def run():
                dr_url = api.token(room, "dr-1", role="doctor", name="Dr One")["signaling_url"]
                pt_url = api.token(room, "pt-1", role="patient", name="Pat")["signaling_url"]
                async with RoomClient(dr_url, name="doctor") as dr, RoomClient(pt_url, name="patient") as pt:
                    await dr.connect()
                    await pt.connect()
                    await dr.publish()
                    await pt.publish()
                    assert await until(lambda: dr.frames_from(pt.peer_id) >= 10 and pt.frames_from(dr.peer_id) >= 10, 30)
                    status, rec = await api.acall("POST", f"/v1/rooms/{room}/recordings", {"mode": "tracks"})
                    assert status in (200, 201), rec

                    page.open(f"{sfu.base_url}/dashboard")
                    assert page.execute("return window.dashboard.key") == "", "no key before one is entered"
                    started = time.monotonic()
                    page.execute("window.dashboard.useKey(arguments[0])", key)
                    rows = await asyncio.to_thread(wait_page, page, f"""
                        const r = document.querySelector('.room[data-room="{room}"]');
                        return r && r.querySelectorAll('tr.participant').length === 2 ? r.textContent : null;""", 2.0)
                    shown_after = time.monotonic() - started
                    assert rows and "Dr One" in rows and "Pat" in rows, f"the live room with both participants not shown within 2 s: {rows!r}"
                    assert page.execute("return sessionStorage.getItem('sfu-api-key')") == key
                    # The graphs: every participant's series grows each second.
                    before = page.execute("return Object.values(window.dashboard.series).map((s) => s.bitrate.length)")
                    await asyncio.sleep(3)
                    after = page.execute("return Object.values(window.dashboard.series).map((s) => s.bitrate.length)")
                    assert len(after) >= 2 and all(a >= b + 2 for a, b in zip(after, before)), (before, after)
                    bitrates = page.execute("return Object.values(window.dashboard.series).map((s) => s.bitrate[s.bitrate.length - 1])")
                    assert all(b > 0 for b in bitrates), bitrates
                    assert page.execute("return document.querySelectorAll('.room canvas').length") >= 6
                    grades = page.execute("return [...document.querySelectorAll('td.grade')].map((t) => t.textContent)")
                    assert len(grades) == 2 and all(g in ("excellent", "good", "fair", "poor") for g in grades), grades
                    await asyncio.sleep(2)
                    status, stopped = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
                    assert status == 200 and stopped["status"] == "completed", stopped
                    await dr.send("send_message", {"message": "see you next week"})
                    await pt.wait_event("chat_message")
                    return rec["id"], shown_after

            rec_id, shown_after = asyncio.run(asyncio.wait_for(run(), 90))
            # The recording plays in the page.
            page.execute("window.dashboard.showTab('recordings')")
            assert wait_page(page, f"return document.querySelector('tr[data-recording=\"{rec_id}\"] button.play')", 5), "recording not listed"
            page.execute(f"document.querySelector('tr[data-recording=\"{rec_id}\"] button.play').click()")
            played = wait_page(page, "const v = window.dashboard.playing; return v && v.readyState >= 2 && v.currentTime > 0.5 "
                                     "? {t: v.currentTime, w: v.videoWidth, d: v.duration} : null", 15, 0.3)
            assert played and played["w"] > 0, f"the recording did not play: {played}"
            # Closed, the room is in the history with its sessions and audit trail.
            api.ok("DELETE", f"/v1/rooms/{room}")
            page.execute("window.dashboard.showTab('history')")
            assert wait_page(page, f"return document.querySelector('tr[data-room=\"{room}\"] button')", 5), "closed room not in the history"
            page.execute(f"document.querySelector('tr[data-room=\"{room}\"] button').click()")
            audit = wait_page(page, "const a = document.getElementById('audit'); return a && a.textContent.includes('room_closed') ? a.textContent : null", 5)
            assert audit and "participant_joined" in audit and "recording_started" in audit and "user:dr-1" in audit, audit
            detail = page.execute("return document.getElementById('history-detail').textContent")
            assert "see you next week" in detail and "Pat" in detail, detail
            assert page.execute("return window.dashboard.errors") == []
            print(f"dashboard: live room shown {shown_after:.2f} s after the key; recording played to {played['t']:.1f} s "
                  f"({played['w']} px wide)")
        except BaseException as e:
            raise AssertionError(f"{e}\n{screenshot(page, tmp_path / 'dashboard-failure.png')}") from e


def test_development_mode_hands_the_page_its_key(sfu_factory, tmp_path):
    sfu = sfu_factory(env={"SFU_API_KEY": ""})
    with chromium_pool(tmp_path) as chromiums:
        page = chromiums("dashboard-dev")
        page.open(f"{sfu.base_url}/dashboard")
        key = wait_page(page, "return window.dashboard.key", 5)
        assert key and key in sfu.log(), "the page did not get the development key the server printed"
        assert wait_page(page, "return window.dashboard.polls > 0 && window.dashboard.errors.length === 0", 5)
