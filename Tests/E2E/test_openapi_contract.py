"""docs/openapi.yaml is the contract of the control API (issue 21): the real server against it,
judged by schemathesis (PyPI, pinned in requirements.txt) with the checks `not_a_server_error`,
`status_code_conformance`, `content_type_conformance`, `response_headers_conformance` and
`response_schema_conformance`: no 5xx, every status documented for its operation, every body and
documented header matching its schema (the schemas forbid undocumented fields).

- `test_every_documented_status_of_real_resources`: a room with two aiortc participants (one
  publishing VP8 and Opus, one subscribing to it), a tracks and a composite recording with their
  files, a snapshot; then every operation is called for each status the spec documents (auth
  missing, bad bodies, oversize bodies, unknown ids, closed rooms, byte ranges...) and each answer is
  validated against the spec. The test fails if a documented status was not reached, except the
  ones listed in UNREACHABLE (server failures that need a broken store or publisher).
- `test_schemathesis_finds_no_violation`: `st run` over every operation: examples, coverage
  (boundary and negative values), fuzzing (positive and negative data) and stateful (the spec's
  links: create a room, then mint tokens, record, close...), with the checks above and
  `negative_data_rejection` (what the spec calls invalid is refused), `ignored_auth`,
  `unsupported_method` and `allow_header_conformance` (405 with `Allow`). The spec is given with the ids of a
  room, a finished recording and its file and a snapshot of a seeded server as its parameters'
  examples, so generated bodies and ranges also meet real resources. Fixed seed (reproducible; set
  SFU_SCHEMATHESIS_SEED to explore others), bounded: SCHEMATHESIS_EXAMPLES cases per operation and
  phase, and a hard timeout.

A failure names the request (a curl command), the response and the rule it broke.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time

import pytest
import schemathesis
import schemathesis.checks
import yaml

from conftest import ROOT
from room_client import ControlAPI, RoomClient, until

SPEC = ROOT / "docs" / "openapi.yaml"
KEY = "openapi-contract-" + secrets.token_hex(16)
# What every response must satisfy.
CHECK_NAMES = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_headers_conformance", "response_schema_conformance"]
# And what the generated requests must get: a request the spec calls invalid is refused (4xx), one
# without the API key is 401, a documented path asked with another method is 405 with `Allow`.
# Not `positive_data_acceptance`: a valid token request may still be refused (an observer asking
# to publish), and a well-formed id may name nothing (404).
RUN_CHECK_NAMES = CHECK_NAMES + ["negative_data_rejection", "ignored_auth", "unsupported_method", "allow_header_conformance",
                                 "missing_required_header"]
SCENARIO_TIMEOUT = 90
SCHEMATHESIS_EXAMPLES = 30
SCHEMATHESIS_TIMEOUT = 150
# Documented statuses no call here can cause: the store failing (every 500) and a publisher that never
# sends the keyframe a snapshot waits for (504). Both shapes are still checked by the schema.
UNREACHABLE = {("POST", "/v1/rooms/{id}/snapshots", "504")}
OVERSIZE = {"name": "x" * (65 * 1024)}


def documented_statuses(spec: dict) -> set[tuple[str, str, str]]:
    out = set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "delete", "put", "patch"):
                out.update((method.upper(), path, status) for status in op["responses"])
    return out


@pytest.fixture
def server(sfu_factory):
    # With TURN credentials, so token responses carry every field the spec allows.
    sfu = sfu_factory(env={"SFU_API_KEY": KEY, "SFU_ICE_SERVERS": "stun:stun.example.org:3478",
                           "SFU_TURN_URLS": "turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349",
                           "SFU_TURN_SECRET": "contract-turn-secret-0123456789-abcdef"})
    sfu.api = ControlAPI(sfu.base_url, KEY)
    return sfu


class Contract:
    """Calls one operation of the spec with the given data, checks the status it expected and
    validates the response with schemathesis's checks; remembers which statuses were reached."""

    def __init__(self, sfu):
        self.sfu = sfu
        self.schema = schemathesis.openapi.from_path(str(SPEC))
        self.checks = [getattr(schemathesis.checks, name) for name in CHECK_NAMES]
        self.reached: set[tuple[str, str, str]] = set()

    def __call__(self, method: str, path: str, expect: int, *, params: dict | None = None, body=None,
                 query: dict | None = None, headers: dict | None = None, auth: bool = True):
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {KEY}"
        kwargs = {}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        case = self.schema[path][method].Case(path_parameters=params or {}, query=query or {}, headers=all_headers, **kwargs)
        response = case.call(base_url=self.sfu.base_url, timeout=20)
        text = response.content[:400] if not response.headers.get("content-type", [""])[0].startswith(("video/", "image/")) else b"<bytes>"
        assert response.status_code == expect, f"{method} {path} {params} {query} {body!r:.200}: {response.status_code} {text!r}"
        case.validate_response(response, checks=self.checks)
        self.reached.add((method, path, str(expect)))
        return response


async def seed(sfu, contract: Contract | None = None) -> dict:
    """A room with a publisher (pt-1: VP8 camera and Opus) and a subscriber (dr-1, a doctor who
    publishes nothing), a tracks recording with files, a snapshot. With `contract`, each step is
    also a contract call, and the live routes are exercised while both are connected."""
    api = sfu.api
    c = contract or (lambda *a, **k: None)

    async def call(*args, **kwargs):
        # In a thread: the clients' media keeps flowing while the server answers (a snapshot waits
        # for the publisher's keyframe).
        return await asyncio.to_thread(c, *args, **kwargs)

    room = api.create_room(name="contract")
    rid = room["id"]
    pt = RoomClient(api.token(rid, "pt-1", role="patient", name="Patient One")["signaling_url"], name="pt-1", subscribe=False)
    dr = RoomClient(api.token(rid, "dr-1", role="doctor")["signaling_url"], name="dr-1", publish_audio=False, publish_video=False)
    try:
        await pt.connect()
        await dr.connect()
        await pt.publish()
        ok = await until(lambda: dr.frames_from(pt.peer_id) >= 15 and dr.samples_from(pt.peer_id) > 0, 30, 0.2)
        assert ok, f"no media from the publisher: {pt.state()} {dr.state()}"
        status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
        assert status == 201, (status, rec)
        status, snap = await api.acall("POST", f"/v1/rooms/{rid}/snapshots", {"user_id": "pt-1"})
        assert status == 201, (status, snap)
        if contract:
            # The live views: participants with tracks, quality and subscriptions (the participants
            # route first: a mismatch there names the field, the room's oneOf only the participant).
            got = (await call("GET", "/v1/rooms/{id}/participants", 200, params={"id": rid})).json()
            by_user = {p["user_id"]: p for p in got["participants"]}
            assert len(by_user["pt-1"]["tracks"]) == 2 and by_user["dr-1"]["subscriptions"], got
            got = (await call("GET", "/v1/rooms/{id}", 200, params={"id": rid})).json()
            assert {p["user_id"] for p in got["participants"]} == {"pt-1", "dr-1"}, got
            await call("GET", "/v1/rooms/{id}/participants", 404, params={"id": "rm_nope"})
            got = (await call("GET", "/v1/rooms/{id}/sessions", 200, params={"id": rid})).json()
            assert {(x["user_id"], x["left_at"], x["leave_reason"]) for x in got["sessions"]} == {
                ("pt-1", None, None), ("dr-1", None, None)}, got
            await call("GET", "/v1/rooms/{id}/sessions", 404, params={"id": "rm_nope"})
            mute = "/v1/rooms/{id}/participants/{user_id}/mute"
            got = (await call("POST", mute, 200, params={"id": rid, "user_id": "pt-1"}, body={"kind": "audio", "muted": True})).json()
            assert [t["muted"] for t in got["tracks"] if t["kind"] == "audio"] == [True], got
            await call("POST", mute, 200, params={"id": rid, "user_id": "pt-1"}, body={"kind": "audio", "muted": False})
            await call("POST", mute, 400, params={"id": rid, "user_id": "pt-1"}, body={"kind": "smell", "muted": True})
            await call("POST", mute, 404, params={"id": rid, "user_id": "nobody"}, body={"kind": "video", "muted": True})
            await call("POST", mute, 413, params={"id": rid, "user_id": "pt-1"}, body=OVERSIZE)
            # One recording at a time; the options are checked.
            recordings = "/v1/rooms/{id}/recordings"
            await call("POST", recordings, 409, params={"id": rid}, body={"mode": "tracks"})
            await call("POST", recordings, 400, params={"id": rid}, body={"mode": "everything"})
            await call("POST", recordings, 400, params={"id": rid}, body={"mode": "composite", "width": 161})
            await call("POST", recordings, 404, params={"id": "rm_nope"}, body={})
            await call("POST", recordings, 413, params={"id": rid}, body=OVERSIZE)
            # Snapshots: 201 above (through the plain client, so it is not counted); the refusals.
            snapshots = "/v1/rooms/{id}/snapshots"
            got = (await call("POST", snapshots, 201, params={"id": rid}, body={"user_id": "pt-1", "format": "png"})).json()
            assert got["format"] == "png" and got["width"] > 0, got
            await call("POST", snapshots, 409, params={"id": rid}, body={"user_id": "dr-1"})
            await call("POST", snapshots, 404, params={"id": rid}, body={"user_id": "nobody"})
            await call("POST", snapshots, 400, params={"id": rid}, body={"user_id": "pt-1", "format": "gif"})
            await call("POST", snapshots, 413, params={"id": rid}, body=OVERSIZE)
        await asyncio.sleep(1.5)
        status, stopped = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop")
        assert status == 200 and stopped["status"] == "completed" and stopped["files"], (status, stopped)
        if contract:
            remove = "/v1/rooms/{id}/participants/{user_id}"
            await call("DELETE", remove, 204, params={"id": rid, "user_id": "dr-1"})
            await call("DELETE", remove, 404, params={"id": rid, "user_id": "dr-1"})
        return {"room": rid, "recording": stopped, "snapshot": snap}
    finally:
        await pt.close()
        await dr.close()


def test_every_documented_status_of_real_resources(server):
    sfu = server
    call = Contract(sfu)
    spec = yaml.safe_load(SPEC.read_text())
    documented = documented_statuses(spec)

    # Without the API key, every operation but /healthz is 401 (before its ids or body are read).
    for method, path, _ in sorted(documented):
        # (A signed link needs no key: its signature is the credential; without one it is 403, below.)
        if path != "/healthz" and not path.startswith("/v1/links/"):
            params = {name: "x" for name in re.findall(r"{(\w+)}", path)}
            call(method, path, 401, params=params, auth=False)
    call("GET", "/healthz", 200, auth=False)
    body = call("GET", "/metrics", 200).text
    assert "sfu_rooms " in body, body[:300]

    # Rooms and tokens.
    call("POST", "/v1/rooms", 400, body={"max_participants": "six"})
    call("POST", "/v1/rooms", 413, body=OVERSIZE)
    other = call("POST", "/v1/rooms", 201, body={"name": "other", "max_participants": 2, "auto_record": False}).json()
    assert other["participants"] == [] and other["status"] == "open", other
    call("GET", "/v1/rooms", 200)
    call("GET", "/v1/rooms/{id}", 404, params={"id": "rm_nope"})
    call("GET", "/v1/rooms/{id}", 404, params={"id": "not an id!"})
    tokens = "/v1/rooms/{id}/tokens"
    got = call("POST", tokens, 200, params={"id": other["id"]}, body={"user_id": "u-1", "role": "observer", "permissions": ["subscribe"]}).json()
    # The fixture's SFU_ICE_SERVERS entry, then its TURN URLs with u-1's credentials.
    stun, turn = got["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"]}, got
    assert turn["urls"] == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"], got
    assert turn["username"].endswith(":u-1") and set(turn) == {"urls", "username", "credential"}, got
    call("POST", tokens, 400, params={"id": other["id"]}, body={"user_id": "u-1"})
    call("POST", tokens, 400, params={"id": other["id"]}, body={"user_id": "u-1", "role": "observer", "permissions": ["publish"]})
    call("POST", tokens, 404, params={"id": "rm_nope"}, body={"user_id": "u-1", "role": "patient"})
    call("POST", tokens, 413, params={"id": other["id"]}, body=OVERSIZE)

    # A composite recording (small and slow: cheap) of the room nobody is in.
    recordings = "/v1/rooms/{id}/recordings"
    composite = call("POST", recordings, 201, params={"id": other["id"]},
                     body={"mode": "composite", "layout": "speaker", "width": 160, "height": 120, "fps": 5, "video_bitrate_bps": 100000}).json()
    assert composite["mode"] == "composite" and composite["layout"] == "speaker", composite

    # The live room (participants, mute, snapshots, a tracks recording).
    seeded = asyncio.run(asyncio.wait_for(seed(sfu, call), SCENARIO_TIMEOUT))
    rid, rec, snap = seeded["room"], seeded["recording"], seeded["snapshot"]

    # Recordings and their files.
    call("DELETE", "/v1/recordings/{id}", 409, params={"id": composite["id"]})
    stopped = call("POST", "/v1/recordings/{id}/stop", 200, params={"id": composite["id"]}).json()
    assert stopped["status"] in ("completed", "failed"), stopped
    call("POST", "/v1/recordings/{id}/stop", 200, params={"id": rec["id"]})
    call("POST", "/v1/recordings/{id}/stop", 404, params={"id": "rec_nope"})
    call("GET", "/v1/recordings/{id}", 200, params={"id": rec["id"]})
    call("GET", "/v1/recordings/{id}", 404, params={"id": "rec_nope"})
    listed = call("GET", "/v1/recordings", 200, query={"room_id": rid, "status": "completed"}).json()
    assert [r["id"] for r in listed["recordings"]] == [rec["id"]], listed
    call("GET", "/v1/recordings", 200)
    call("GET", "/v1/recordings", 400, query={"status": "done"})
    call("GET", "/v1/recordings", 400, query={"room_id": "not an id!"})
    file_route = "/v1/recordings/{id}/files/{file_id}"
    f = rec["files"][0]
    ids = {"id": rec["id"], "file_id": f["id"]}
    whole = call("GET", file_route, 200, params=ids)
    assert len(whole.content) == f["size_bytes"], (len(whole.content), f)
    part = call("GET", file_route, 206, params=ids, headers={"Range": "bytes=0-99"})
    assert part.content == whole.content[:100] and part.headers["content-range"] == [f"bytes 0-99/{f['size_bytes']}"], part.headers
    call("GET", file_route, 416, params=ids, headers={"Range": f"bytes={f['size_bytes']}-"})
    # A range of a unit the server does not know, or several ranges: ignored, the whole file (RFC 9110 14.2).
    assert call("GET", file_route, 200, params=ids, headers={"Range": "items=0-5"}).content == whole.content
    assert call("GET", file_route, 200, params=ids, headers={"Range": "bytes=0-1,5-6"}).content == whole.content
    call("GET", file_route, 404, params={"id": rec["id"], "file_id": "file_nope"})

    # Signed links: without the key, whole and a range; tampered or expired 403.
    sign = "/v1/recordings/{id}/files/{file_id}/url"
    link = call("POST", sign, 200, params=ids, body={"ttl_s": 120}).json()
    path, query = link["url"].split("/v1/links/", 1)[1].split("?", 1)
    q = dict(kv.split("=", 1) for kv in query.split("&"))
    link_ids = {"id": path.split("/")[0], "file_id": path.split("/")[1]}
    assert link_ids == ids, link
    linked = "/v1/links/{id}/{file_id}"
    assert call("GET", linked, 200, params=link_ids, query=q, auth=False).content == whole.content
    assert call("GET", linked, 206, params=link_ids, query=q, auth=False, headers={"Range": "bytes=0-9"}).content == whole.content[:10]
    call("GET", linked, 403, params=link_ids, query={**q, "expires": str(int(q["expires"]) + 1)}, auth=False)
    call("GET", linked, 403, params=link_ids, query={"expires": "1000", "signature": q["signature"]}, auth=False)
    call("POST", sign, 400, params=ids, body={"ttl_s": 0})
    call("POST", sign, 404, params={"id": rec["id"], "file_id": "file_nope"}, body={})
    call("POST", sign, 413, params=ids, body=OVERSIZE)
    # A valid link to a file gone from disk (removed by hand): 404.
    os.remove(f["path"])
    call("GET", linked, 404, params=link_ids, query=q, auth=False)
    # Deleted: the metadata stays, the file and its links are gone (410).
    deleted = call("DELETE", "/v1/recordings/{id}", 200, params={"id": rec["id"]}).json()
    assert deleted["status"] == "deleted" and deleted["deleted_at"], deleted
    call("DELETE", "/v1/recordings/{id}", 404, params={"id": "rec_nope"})
    call("GET", file_route, 410, params=ids)
    call("GET", linked, 410, params=link_ids, query=q, auth=False)

    # Snapshots.
    listed = call("GET", "/v1/snapshots", 200, query={"room_id": rid}).json()
    assert snap["id"] in [s["id"] for s in listed["snapshots"]], listed
    call("GET", "/v1/snapshots", 400, query={"room_id": "not an id!"})
    call("GET", "/v1/snapshots/{id}", 200, params={"id": snap["id"]})
    call("GET", "/v1/snapshots/{id}", 404, params={"id": "snap_nope"})
    image = call("GET", "/v1/snapshots/{id}/file", 200, params={"id": snap["id"]})
    assert image.content[:2] == b"\xff\xd8", image.content[:8]
    call("GET", "/v1/snapshots/{id}/file", 404, params={"id": "snap_nope"})

    # Closing: idempotent; a closed room has no participants and takes no tokens or recordings.
    closed = call("DELETE", "/v1/rooms/{id}", 200, params={"id": rid}).json()
    assert closed["status"] == "closed" and closed["close_reason"] == "closed by API", closed
    call("DELETE", "/v1/rooms/{id}", 200, params={"id": rid})
    call("DELETE", "/v1/rooms/{id}", 404, params={"id": "rm_nope"})
    assert call("GET", "/v1/rooms/{id}", 200, params={"id": rid}).json()["status"] == "closed"
    assert call("GET", "/v1/rooms/{id}/participants", 200, params={"id": rid}).json() == {"participants": []}
    call("POST", tokens, 409, params={"id": rid}, body={"user_id": "u-2", "role": "patient"})
    call("POST", recordings, 409, params={"id": rid}, body={})
    call("DELETE", "/v1/rooms/{id}/participants/{user_id}", 404, params={"id": rid, "user_id": "pt-1"})

    # The read side: call history, chat, audit trail and its export.
    history = call("GET", "/v1/rooms", 200, query={"status": "closed", "limit": "1"}).json()
    assert history["rooms"][0]["id"] == rid and history["next_cursor"], history
    call("GET", "/v1/rooms", 200, query={"status": "all", "cursor": history["next_cursor"]})
    call("GET", "/v1/rooms", 400, query={"status": "gone"})
    call("GET", "/v1/rooms", 400, query={"cursor": "not-a-cursor"})
    call("GET", "/v1/rooms/{id}/messages", 200, params={"id": rid})
    call("GET", "/v1/rooms/{id}/messages", 400, params={"id": rid}, query={"limit": "0"})
    call("GET", "/v1/rooms/{id}/messages", 404, params={"id": "rm_nope"})
    trail = call("GET", "/v1/rooms/{id}/events", 200, params={"id": rid}).json()["events"]
    assert trail[0]["type"] == "room_created" and trail[-1]["type"] == "room_closed", trail
    call("GET", "/v1/rooms/{id}/events", 200, params={"id": rid}, query={"type": "participant_joined", "limit": "1"})
    call("GET", "/v1/rooms/{id}/events", 400, params={"id": rid}, query={"type": "Not A Type"})
    call("GET", "/v1/rooms/{id}/events", 404, params={"id": "rm_nope"})
    exported = call("GET", "/v1/events", 200).text.splitlines()
    assert len(exported) >= len(trail), (len(exported), len(trail))
    assert call("GET", "/v1/events", 200, query={"format": "csv"}).text.startswith("id,at,room_id,type,actor,subject,data")
    call("GET", "/v1/events", 400, query={"format": "xml"})
    call("GET", "/v1/rooms/{id}/quality", 200, params={"id": rid}, query={"user_id": "pt-1"})
    call("GET", "/v1/rooms/{id}/quality", 400, params={"id": rid}, query={"limit": "0"})
    call("GET", "/v1/rooms/{id}/quality", 404, params={"id": "rm_nope"})

    missing = sorted(s for s in documented - call.reached if s[2] != "500" and s not in UNREACHABLE)
    assert not missing, f"documented statuses no call reached (add a call, or list them in UNREACHABLE): {missing}"
    print(f"contract calls reached {len(call.reached)} of the {len(documented)} documented (operation, status) pairs; not reached: "
          + ", ".join(" ".join(s) for s in sorted(documented - call.reached) if s[2] != "500") + " and every 500")


def test_schemathesis_finds_no_violation(server, tmp_path):
    sfu = server
    seeded = asyncio.run(asyncio.wait_for(seed(sfu), SCENARIO_TIMEOUT))
    rec = seeded["recording"]
    # The spec as it is, with real ids as its parameters' examples.
    spec = yaml.safe_load(SPEC.read_text())
    params = spec["components"]["parameters"]
    for name, value in {"RoomID": seeded["room"], "RoomFilter": seeded["room"], "UserID": "pt-1", "RecordingID": rec["id"],
                        "FileID": rec["files"][0]["id"], "SnapshotID": seeded["snapshot"]["id"]}.items():
        params[name]["schema"]["example"] = value
    seeded_spec = tmp_path / "openapi-seeded.yaml"
    seeded_spec.write_text(yaml.safe_dump(spec, sort_keys=False))

    seed_value = os.environ.get("SFU_SCHEMATHESIS_SEED", "20261206")
    report = tmp_path / "report"
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(seeded_spec), "--url", sfu.base_url,
               "--header", f"Authorization: Bearer {KEY}", "--checks", ",".join(RUN_CHECK_NAMES), "--mode", "all",
               "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(SCHEMATHESIS_EXAMPLES),
               "--seed", seed_value, "--workers", "2", "--request-timeout", "20", "--generation-database", "none",
               "--no-color", "--output-truncate", "false", "--output-sanitize", "false", "--report", "json", "--report-dir", str(report)]
    t0 = time.monotonic()
    try:
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SCHEMATHESIS_TIMEOUT,
                             env=dict(os.environ))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"schemathesis did not finish within {SCHEMATHESIS_TIMEOUT} s:\n{(e.stdout or b'')[-6000:]!s}")
    seconds = time.monotonic() - t0
    output = run.stdout + run.stderr
    reports = sorted(report.glob("*.json"))
    assert reports, f"schemathesis wrote no report (exit {run.returncode}):\n{output[-8000:]}"
    result = json.loads(reports[-1].read_text())
    cases, ops = result["test_cases"], result["operations"]
    print(f"schemathesis {schemathesis.__version__}: {cases['generated']} cases over {ops['tested']} operations in {seconds:.1f} s, "
          f"seed {seed_value}, exit {run.returncode}")
    log = "\n".join(sfu.log().splitlines()[-40:])
    if run.returncode != 0 or result["failures"] or result["errors"]:
        pytest.fail(f"schemathesis found violations of docs/openapi.yaml (seed {seed_value}, exit {run.returncode}):\n"
                    f"{output[-20000:]}\n-- server log (last lines):\n{log}", pytrace=False)
    assert ops["tested"] == ops["total"] == len(spec_operations(spec)) and ops["errored"] == 0, ops
    assert cases["generated"] >= 10 * ops["total"], cases


def spec_operations(spec: dict) -> list[tuple[str, str]]:
    return [(m, p) for p, item in spec["paths"].items() for m in item if m in ("get", "post", "delete", "put", "patch")]
