"""S3-compatible storage for recordings (issue 24, docs/RECORDING.md "S3 storage") against a real S3
server: moto's server mode from PyPI, started here on loopback (and stopped at the end); the bucket
is looked at with boto3.

- `test_a_recording_goes_to_s3_and_reads_back`: a participant's recording with
  `SFU_STORAGE_URL=s3://<bucket>/clinic-a` is `processing`, then `completed` with `storage: "s3"`
  and each file's `object_key` (`clinic-a/<recording_id>/<file_name>`); the local copy is gone;
  the API download and a signed link give the object's bytes, whole and by range (206 with
  `Content-Range`, 416 outside); an expired or tampered link is 403; deleting the recording
  deletes the object.
- `test_a_200_mb_file_goes_up_in_parts_across_a_restart`: a recording cut by SIGKILL whose file is
  200 MB (a real WebM grown by an EBML Void element) is reconciled at the next start and uploaded in
  5 MiB parts; the server is SIGKILLed again in the middle of the upload; after the second restart
  the upload goes on from the parts S3 already has (not from the first) and completes; the
  object's bytes are the file's (SHA-256), and the API and a signed link give the same bytes, also
  by range.
- `test_storage_down_ends_failed_with_the_file_kept`: with nothing listening at the endpoint, the
  recording ends `failed` after SFU_S3_UPLOAD_ATTEMPTS attempts, with the reason, and its file is
  still on disk and downloadable.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import media_analysis as ma
from conftest import ROOT, SFUProcess
from room_client import ControlAPI, RoomClient

BUCKET = "sfu-recordings"
ACCESS, SECRET = "testing-access-key", "testing-secret-key"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto in server mode on a free loopback port, with the bucket made; stopped at the end."""
    import boto3
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    binary = ROOT / ".venv" / "bin" / "moto_server"
    proc = subprocess.Popen([str(binary) if binary.exists() else "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).read()
            break
        except urllib.error.HTTPError:
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    proc.terminate()
    proc.wait(10)
    log.close()


def s3_env(endpoint: str, key: str, **extra) -> dict[str, str]:
    return {"SFU_API_KEY": key, "SFU_STORAGE_URL": f"s3://{BUCKET}/clinic-a", "SFU_S3_ENDPOINT": endpoint, "SFU_S3_REGION": "us-east-1",
            "SFU_S3_ACCESS_KEY": ACCESS, "SFU_S3_SECRET_KEY": SECRET, **extra}


def fetch(url: str, key: str | None = None, range_: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if range_:
        req.add_header("Range", range_)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_done(api: ControlAPI, rid: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    got = {}
    while time.monotonic() < deadline:
        status, got = api.call("GET", f"/v1/recordings/{rid}")
        if status == 200 and got.get("status") in ("completed", "failed"):
            return got
        time.sleep(0.3)
    raise AssertionError(f"recording not finished after {timeout} s: {got}")


def record_briefly(api: ControlAPI, seconds: float = 3.0) -> dict:
    rid = api.create_room(name="s3")["id"]

    async def scenario():
        async with RoomClient(api.token(rid, "pat-s3", role="patient")["signaling_url"], subscribe=False) as c:
            await c.connect()
            await c.publish()
            await asyncio.sleep(1.0)
            status, rec = await api.acall("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"})
            assert status == 201, (status, rec)
            await asyncio.sleep(seconds)
            status, stopped = await api.acall("POST", f"/v1/recordings/{rec['id']}/stop", timeout=30)
            assert status == 200, (status, stopped)
            return stopped

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def check_reads(api: ControlAPI, sfu, key: str, rec: dict, f: dict, want: bytes) -> None:
    """The API download and a signed link give `want`, whole and by range; bad links are 403."""
    url = f"{sfu.base_url}/v1/recordings/{rec['id']}/files/{f['id']}"
    status, headers, body = fetch(url, key)
    assert status == 200 and body == want and headers.get("accept-ranges") == "bytes", (status, len(body), len(want), headers)
    status, headers, body = fetch(url, key, "bytes=100-1099")
    assert status == 206 and body == want[100:1100] and headers["content-range"] == f"bytes 100-1099/{len(want)}", (status, headers)
    status, headers, body = fetch(url, key, f"bytes=-500")
    assert status == 206 and body == want[-500:], (status, headers)
    status, headers, _ = fetch(url, key, f"bytes={len(want) + 10}-")
    assert status == 416, (status, headers)
    link = api.ok("POST", f"/v1/recordings/{rec['id']}/files/{f['id']}/url", {"ttl_s": 60})["url"]
    status, _, body = fetch(link)
    assert status == 200 and body == want
    status, headers, body = fetch(link, range_="bytes=0-99")
    assert status == 206 and body == want[:100], (status, headers)
    tampered = link.replace("signature=", "signature=0")
    assert fetch(tampered)[0] == 403
    expired = api.ok("POST", f"/v1/recordings/{rec['id']}/files/{f['id']}/url", {"ttl_s": 1})["url"]
    time.sleep(2.1)
    assert fetch(expired)[0] == 403


def test_a_recording_goes_to_s3_and_reads_back(sfu_factory, s3):
    endpoint, client = s3
    key = "s3-" + secrets.token_hex(16)
    sfu = sfu_factory(env=s3_env(endpoint, key))
    api = ControlAPI(sfu.base_url, key)
    stopped = record_briefly(api)
    assert stopped["status"] in ("processing", "completed"), stopped
    done = wait_done(api, stopped["id"], 60)
    assert done["status"] == "completed" and done["storage"] == "s3", (done, sfu.log()[-3000:])
    assert len(done["files"]) == 1, done
    f = done["files"][0]
    assert f["object_key"] == f"clinic-a/{done['id']}/{f['file_name']}", f
    assert not os.path.exists(f["path"]), "the local copy is removed once the object is checked"
    obj = client.get_object(Bucket=BUCKET, Key=f["object_key"])["Body"].read()
    assert len(obj) == f["size_bytes"] > 10_000, (len(obj), f)
    check_reads(api, sfu, key, done, f, obj)
    # What came back decodes.
    path = sfu.data_dir / "downloaded.webm"
    path.write_bytes(obj)
    assert ma.decode_check(str(path)) == []
    # Deleting the recording deletes the object.
    assert api.ok("DELETE", f"/v1/recordings/{done['id']}")["status"] == "deleted"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"clinic-a/{done['id']}/")
    assert listed.get("KeyCount", 0) == 0, listed


def grown_webm(path, size: int) -> bytes:
    """A real WebM (ffmpeg: 3 s of VP8 and Opus) whose segment is made open-ended and then holds an
    EBML Void element up to `size` bytes: a valid file of that size (players skip Void)."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=f=440",
                    "-t", "3", "-c:v", "libvpx", "-b:v", "500k", "-c:a", "libopus", str(path)], check=True, timeout=120)
    data = bytearray(path.read_bytes())
    # The segment's size (an 8-byte vint after the Segment id 18 53 80 67) becomes "unknown".
    at = data.index(b"\x18\x53\x80\x67") + 4
    assert data[at] == 0x01, "ffmpeg wrote a segment size that is not 8 bytes long"
    data[at:at + 8] = b"\x01\xff\xff\xff\xff\xff\xff\xff"
    void = size - len(data) - 9
    data += b"\xec\x01" + void.to_bytes(7, "big") + os.urandom(1 << 20) * (void >> 20) + os.urandom(void & ((1 << 20) - 1))
    assert len(data) == size
    path.write_bytes(data)
    return bytes(data)


def wait_log(sfu, needle: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sfu.log().count(needle) >= count:
            return True
        time.sleep(0.02)
    return False


def test_a_200_mb_file_goes_up_in_parts_across_a_restart(sfu_factory, sfu_bin, s3, tmp_path):
    endpoint, client = s3
    key = "s3big-" + secrets.token_hex(16)
    env = s3_env(endpoint, key, SFU_S3_PART_SIZE_MB="5")
    sfu = sfu_factory(env=env)
    api = ControlAPI(sfu.base_url, key)
    rid = api.create_room(name="s3-big")["id"]
    rec = api.ok("POST", f"/v1/rooms/{rid}/recordings", {"mode": "tracks"}, expect=(201,))
    # The server dies while recording; the file it leaves is 200 MB.
    sfu.proc.kill()
    sfu.proc.wait(10)
    folder = sfu.data_dir / "recordings" / rec["id"]
    folder.mkdir(parents=True, exist_ok=True)
    size = 200 * 1024 * 1024
    want = grown_webm(folder / "pat-big-pe_0123456789abcd.webm", size)
    digest = hashlib.sha256(want).hexdigest()
    parts = (size + 5 * 1024 * 1024 - 1) // (5 * 1024 * 1024)

    second = SFUProcess(sfu_bin, sfu.data_dir, env)
    third = None
    try:
        second.wait_ready()
        # Killed in the middle of the multipart upload (after a few parts).
        assert wait_log(second, "recording part uploaded", 6, 120), second.log()[-3000:]
        second.proc.kill()
        second.proc.wait(10)
        uploaded_before = second.log().count("recording part uploaded")
        assert uploaded_before < parts, f"the upload finished before the kill ({uploaded_before} of {parts} parts)"
        (sfu.data_dir / "sfu.log").rename(sfu.data_dir / "sfu-second.log")
        third = SFUProcess(sfu_bin, sfu.data_dir, env)
        third.wait_ready()
        restarted = time.monotonic()
        api3 = ControlAPI(third.base_url, key)
        done = wait_done(api3, rec["id"], 300)
        print(f"200 MB: {uploaded_before} of {parts} parts before the kill; the rest up {time.monotonic() - restarted:.1f} s after the restart")
        log = third.log()
        assert done["status"] == "completed" and done["storage"] == "s3", (done, log[-3000:])
        assert "resuming a multipart upload" in log, log[-3000:]
        # Only the parts S3 did not have went up again (the one in flight at the kill may repeat).
        again = log.count("recording part uploaded")
        assert again <= parts - uploaded_before + 1, (again, uploaded_before, parts)
        f = next(f for f in done["files"] if f["file_name"].startswith("pat-big"))
        assert f["size_bytes"] == size, f
        head = client.head_object(Bucket=BUCKET, Key=f["object_key"])
        assert head["ContentLength"] == size
        assert "-" in head["ETag"], f"not a multipart object: {head['ETag']}"
        obj = client.get_object(Bucket=BUCKET, Key=f["object_key"])["Body"].read()
        assert hashlib.sha256(obj).hexdigest() == digest, "the object's bytes are not the file's"
        check_reads(api3, third, key, done, f, want)
        assert not (folder / "pat-big-pe_0123456789abcd.webm").exists()
    finally:
        for p in (second, third):
            if p is not None:
                p.kill()


def test_storage_down_ends_failed_with_the_file_kept(sfu_factory):
    key = "s3down-" + secrets.token_hex(16)
    dead = f"http://127.0.0.1:{free_port()}"
    sfu = sfu_factory(env=s3_env(dead, key, SFU_S3_UPLOAD_ATTEMPTS="3"))
    api = ControlAPI(sfu.base_url, key)
    stopped = record_briefly(api)
    assert stopped["status"] == "processing", stopped
    done = wait_done(api, stopped["id"], 30)
    assert done["status"] == "failed" and done["storage"] == "local", done
    assert "after 3 attempts" in done["failure_reason"] and "kept" in done["failure_reason"], done
    f = done["files"][0]
    assert "object_key" not in f and os.path.getsize(f["path"]) == f["size_bytes"] > 10_000, f
    status, _, body = fetch(f"{sfu.base_url}/v1/recordings/{done['id']}/files/{f['id']}", key)
    assert status == 200 and len(body) == f["size_bytes"]
    assert sfu.log().count("recording upload failed; retrying") == 2
