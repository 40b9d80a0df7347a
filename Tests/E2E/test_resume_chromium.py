"""Resuming a signaling connection with headless Chromium as the client that drops (docs/SIGNALING.md
"Resuming a dropped connection"; the aiortc version is test_resume.py).

The demo page runs in a network namespace (netns_util) and publishes; an aiortc "doctor" on the host
joins and publishes. The page's WebSocket is cut from inside the namespace:
- an nftables rule drops the namespace's TCP to the server's HTTP port (what is left of the old
  connection and every new connection attempt: the page's reconnects hang in SYN-SENT);
- the established connection is killed with `ss -K` (SOCK_DESTROY): Chromium's socket ends with
  ECONNABORTED (the page sees close code 1006 and starts reconnecting) and the kernel sends the
  server a RST, which the rule lets through (it drops everything but RSTs), so the server sees the
  socket end at once, as when a connection is killed. Without SOCK_DESTROY in the kernel (`ss -K`
  kills nothing) the fallback is a `reject with tcp reset` rule plus making the page write to its
  socket (sfu-client.js sends no pings of its own, it notices a dead socket only when the socket
  errors): the page then gets a local RST at once, the server notices only through its own pings.

Kept cut for 10 s (media over UDP goes on: aiortc keeps decoding the page), then unblocked: the page
resumes (`reconnecting` then `reconnected {resumed: true}` in sfuDemo.events) with the same peer_id,
listed once by the participants route; the doctor saw no user_left/user_joined for it; a chat line
sent meanwhile reaches the page; media flows both ways again. Cut again for longer than the window
(SFU_RESUME_WINDOW_S=14): the doctor gets user_left, the session's leave reason is connection_lost.
Then unblocked: what the page does (it rejoins as a new peer) is printed, not asserted.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.parse

from netns_util import Namespace, chromium_pool
from room_client import ControlAPI, RoomClient, RoomError, until
from test_network_change import _wait, page_decoded
from test_simulcast import page_events, wait_joined
from test_turn import _healthy

WINDOW_S = 14           # the server's resume window in this test
CUT_S = 10              # how long the first cut lasts
RESUME_WITHIN_S = 15    # after the unblock (the attempt hanging in SYN-SENT goes through on a retried SYN)
EXPIRY_BOUND_S = 30     # the second cut: the doctor must see user_left within this
PAGE_USER = "pat-resume"
CHAT = "while you were away"

PAGE_STATE = ("const c = window.sfuDemo && sfuDemo.client;"
              "return c ? {state: c.state, peerId: c.peerId, status: sfuDemo.state, errors: sfuDemo.errors,"
              " chat: sfuDemo.chat.map((m) => m.message)} : null;")


class SignalingCut:
    """Cuts the namespace's TCP to the server's HTTP port (see the module docstring)."""

    TABLE = "sfuresume"

    def __init__(self, ns: Namespace, port: int, path, page):
        self.ns, self.port, self.path, self.page = ns, port, path, page
        self.active = False
        self.method: str | None = None

    def _match(self) -> str:
        return f"ip daddr {self.ns.host_ip} tcp dport {self.port} tcp flags & rst == 0"

    def _established(self) -> list[str]:
        out = self.ns.exec("ss", "-tnH", "state", "established", "dst", self.ns.host_ip,
                           "dport", "=", f":{self.port}", check=False).stdout
        return [l for l in out.splitlines() if l.strip()]

    def start(self) -> dict:
        self.path.write_text("\n".join([
            f"table inet {self.TABLE} {{",
            "  chain out {",
            "    type filter hook output priority 0; policy accept;",
            f"    {self._match()} counter drop",
            "  }",
            "}"]) + "\n")
        before = self._established()
        self.ns.exec("nft", "-f", str(self.path))
        self.active = True
        killed = self.ns.exec("ss", "-tnK", "dst", self.ns.host_ip, "dport", "=", f":{self.port}", check=False)
        killed_lines = [l for l in killed.stdout.splitlines() if f"{self.ns.host_ip}:{self.port}" in l]
        left = self._established()
        if not left:
            self.method = "ss -K"
        else:
            # No SOCK_DESTROY: reset the page's own socket on its next write, and make it write.
            self.ns.exec("nft", "insert", "rule", "inet", self.TABLE, "out", *self._match().split(),
                         "counter", "reject", "with", "tcp", "reset")
            self.page.execute("const c = sfuDemo.client; c.toggleAudio(c.audioEnabled);")
            self.method = "nft reject + a page write"
        return {"method": self.method, "established_before": len(before), "killed": len(killed_lines),
                "left_after_kill": len(left), "ss_stderr": killed.stderr.strip()[:200]}

    def stop(self) -> None:
        if self.active:
            self.ns.exec("nft", "delete", "table", "inet", self.TABLE, check=False)
            self.active = False

    def counters(self) -> str:
        return self.ns.exec("nft", "list", "table", "inet", self.TABLE, check=False).stdout.strip()


def presence(client: RoomClient, after: int) -> list[tuple[str, str]]:
    return [(e, d.get("peer_id")) for e, d in client.events[after:]
            if e in ("user_joined", "user_left") and isinstance(d, dict)]


def test_chromium_resumes_after_its_signaling_socket_is_killed_for_10_s(sfu_factory, tmp_path):
    key = "resume-chromium-" + secrets.token_hex(16)
    ns = Namespace("sfuresume")
    t0 = time.monotonic()
    timeline: list[str] = []

    def mark(text: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f} s  {text}")

    page = sfu = cut = doctor_ref = None
    try:
        with chromium_pool(tmp_path) as chromiums:
            sfu = sfu_factory(env={"SFU_API_KEY": key, "SFU_HTTP_HOST": ns.host_ip, "SFU_MEDIA_HOST": ns.host_ip,
                                   "SFU_RESUME_WINDOW_S": str(WINDOW_S)}, wait=False)
            base = f"http://{ns.host_ip}:{sfu.http_port}"
            deadline = time.monotonic() + 20
            while not _healthy(base):
                assert time.monotonic() < deadline and sfu.proc.poll() is None, f"sfu not healthy on {base}\n{sfu.log()[-3000:]}"
                time.sleep(0.2)
            api = ControlAPI(base, key)
            room = api.create_room(name="resume-chromium")["id"]
            page = chromiums("resuming", netns=ns, secure_origins=[base])
            page.open(f"{base}/?token={urllib.parse.quote(api.token(room, PAGE_USER)['token'])}")
            page_peer = wait_joined(page)
            mark(f"page joined as {page_peer}")
            cut = SignalingCut(ns, sfu.http_port, tmp_path / "cut.nft", page)

            async def pe() -> list[dict]:
                return await asyncio.to_thread(page_events, page)

            async def pstate() -> dict:
                return await asyncio.to_thread(page.execute, PAGE_STATE) or {}

            async def pdecoded(peer: str) -> int:
                return await asyncio.to_thread(page_decoded, page, peer)

            async def wait_page(pred, timeout: float, interval: float = 0.25):
                deadline = time.monotonic() + timeout
                while True:
                    got = pred(await pe())
                    if got or time.monotonic() >= deadline:
                        return got
                    await asyncio.sleep(interval)

            def first(name: str, since: int):
                return lambda evs: next((e for e in evs[since:] if e.get("event") == name), None)

            async def participants() -> list[dict]:
                status, body = await api.acall("GET", f"/v1/rooms/{room}/participants")
                assert status == 200, (status, body)
                return body.get("participants", [])

            async def run():
                nonlocal doctor_ref
                async with RoomClient(api.token(room, "dr-host", role="doctor")["signaling_url"], name="doctor") as doctor:
                    doctor_ref = doctor
                    await doctor.connect()
                    await doctor.publish()
                    assert await until(lambda: doctor.frames_from(page_peer) >= 30, 40), \
                        f"aiortc decoded {doctor.frames_from(page_peer)} frames from the page"
                    assert await asyncio.to_thread(lambda: _wait(lambda: page_decoded(page, doctor.peer_id) >= 30, 40)), \
                        "the page did not decode aiortc's video"
                    mark("each decodes the other's video")

                    # --- 1. cut for CUT_S, then unblocked: the page resumes the same peer ---
                    mark_d = len(doctor.events)
                    n0 = len(await pe())
                    frames0, page0 = doctor.frames_from(page_peer), await pdecoded(doctor.peer_id)
                    how = await asyncio.to_thread(cut.start)
                    t_cut = time.monotonic()
                    mark(f"cut 1: {how}")
                    rec = await wait_page(first("reconnecting", n0), 5)
                    assert rec, f"the page did not notice its socket was cut ({how}): {(await pe())[n0:]}"
                    mark(f"page: reconnecting {rec} after {time.monotonic() - t_cut:.1f} s")
                    if cut.method == "ss -K":
                        # The server saw the RST: this line is kept for the page, not lost in the dead socket.
                        await asyncio.sleep(1)
                        await doctor.send("send_message", {"message": CHAT})
                    await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - t_cut)))
                    frames1, page1 = doctor.frames_from(page_peer), await pdecoded(doctor.peer_id)
                    attempts = [e.get("attempt") for e in (await pe())[n0:] if e.get("event") == "reconnecting"]
                    mark(f"during the cut: doctor decoded {frames1 - frames0} frames of the page, the page "
                         f"{page1 - page0} of the doctor; page reconnect attempts {attempts}")
                    assert frames1 > frames0 + 5 * CUT_S, \
                        f"the page's video stalled while its signaling was cut: {frames0} -> {frames1}"
                    assert page_peer in [p.get("peer_id") for p in await participants()], \
                        "the page's peer is not kept while its socket is cut"
                    await asyncio.to_thread(cut.stop)
                    t_unblock = time.monotonic()
                    mark("unblocked")

                    back = await wait_page(first("reconnected", n0), RESUME_WITHIN_S)
                    took = time.monotonic() - t_unblock
                    assert back, (f"the page did not resume within {RESUME_WITHIN_S} s of the unblock: "
                                  f"{[e for e in (await pe())[n0:] if e.get('event') != 'localcandidate']}, "
                                  f"state {await pstate()}")
                    mark(f"page: reconnected {back} {took:.1f} s after the unblock "
                         f"({time.monotonic() - t_cut:.1f} s after the cut)")
                    assert back.get("resumed") is True, back
                    st = await pstate()
                    assert st.get("state") == "joined" and st.get("peerId") == page_peer, (st, page_peer)
                    mine = [p for p in await participants() if p.get("user_id") == PAGE_USER]
                    assert [p.get("peer_id") for p in mine] == [page_peer], mine
                    assert presence(doctor, mark_d) == [], \
                        f"the doctor saw someone leave or join: {doctor.brief_events(mark_d)}"
                    if cut.method == "ss -K":
                        got = await asyncio.to_thread(
                            lambda: _wait(lambda: CHAT in (page.execute(PAGE_STATE) or {}).get("chat", []), 5))
                        assert got, f"the chat line sent during the cut did not reach the page: {await pstate()}"
                    frames2, page2 = doctor.frames_from(page_peer), await pdecoded(doctor.peer_id)
                    assert await until(lambda: doctor.frames_from(page_peer) >= frames2 + 20, 10), \
                        "the doctor stopped receiving the page after the resume"
                    assert await asyncio.to_thread(
                        lambda: _wait(lambda: page_decoded(page, doctor.peer_id) >= page2 + 15, 10)), \
                        "the page stopped decoding the doctor after the resume"
                    mark("media flows both ways after the resume")

                    # --- 2. cut for longer than the window: the participant is removed ---
                    mark_d = len(doctor.events)
                    n1 = len(await pe())
                    how = await asyncio.to_thread(cut.start)
                    t_cut = time.monotonic()
                    mark(f"cut 2: {how}")
                    await doctor.wait_event("user_left", lambda d: d.get("peer_id") == page_peer,
                                            after=mark_d, timeout=EXPIRY_BOUND_S)
                    waited = time.monotonic() - t_cut
                    mark(f"doctor: user_left for the page {waited:.1f} s after the cut")
                    assert waited >= WINDOW_S - 1, f"removed after {waited:.1f} s, before the {WINDOW_S} s window"
                    assert presence(doctor, mark_d) == [("user_left", page_peer)], doctor.brief_events(mark_d)
                    sessions: dict = {}
                    for _ in range(50):
                        _, body = await api.acall("GET", f"/v1/rooms/{room}/sessions")
                        sessions = {s["peer_id"]: s for s in body.get("sessions", [])}
                        if sessions.get(page_peer, {}).get("left_at"):
                            break
                        await asyncio.sleep(0.2)
                    assert sessions.get(page_peer, {}).get("leave_reason") == "connection_lost", sessions
                    # One session for the page's peer across the resume (not one per socket).
                    assert [s["peer_id"] for s in sessions.values() if s["user_id"] == PAGE_USER] == [page_peer], sessions
                    await asyncio.to_thread(cut.stop)
                    t_unblock = time.monotonic()
                    mark("unblocked after the window")

                    # What the page does now is printed, not asserted (it should rejoin as a new peer).
                    again = await wait_page(first("reconnected", n1), 20)
                    st = await pstate()
                    mark(f"page after the window: reconnected {again} "
                         f"({time.monotonic() - t_unblock:.1f} s after the unblock), state {st.get('state')}, "
                         f"peer {st.get('peerId')}, errors {st.get('errors')}")
                    if again and again.get("resumed") is False:
                        new_peer = st.get("peerId")
                        ok = await until(lambda: doctor.frames_from(new_peer) >= 10, 10) if new_peer else False
                        mark(f"doctor: presence since cut 2 {presence(doctor, mark_d)}; "
                             f"frames from the new peer {doctor.frames_from(new_peer) if new_peer else None} ({ok})")
                    assert sfu.proc.poll() is None and _healthy(base), f"the server died\n{sfu.log()[-3000:]}"
                    mark("server still healthy")

            try:
                asyncio.run(asyncio.wait_for(run(), 100))
            except (AssertionError, RoomError, asyncio.TimeoutError) as e:
                # (Inside the pool: the page is still there to ask.)
                raise AssertionError(f"{e!r}\n{_diag(sfu, page, cut, doctor_ref)}") from e
    finally:
        print("\ntimeline:\n" + "\n".join(timeline))
        ns.close()


def _diag(sfu, page, cut, doctor, lines: int = 50) -> str:
    out = []
    if cut is not None and cut.active:
        out.append("nft: " + cut.counters())
    if doctor is not None:
        out.append(f"doctor events: {doctor.brief_events()[-25:]}")
    if page is not None and page.session:
        try:
            evs = [e for e in page_events(page) if e.get("event") not in ("localcandidate",)]
            out.append(f"page events: {json.dumps(evs[-30:])}")
            out.append(f"page state: {page.execute(PAGE_STATE)}")
        except Exception as e:  # the browser may be gone
            out.append(f"page unreachable: {e!r}")
    if sfu is not None:
        log = sfu.log().splitlines()
        out.append(f"server log (last {lines} of {len(log)} lines):")
        out.extend(log[-lines:])
    return "\n".join(out)
