"""HTTPS and WSS in `sfu serve` itself (issue 22, `SFU_TLS_CERT`/`SFU_TLS_KEY`, docs/DEPLOY.md).

- `test_tls_config_errors_stop_the_server`: a certificate without a key, a key without a
  certificate, or a file that is not PEM stops `sfu serve` with a message naming the variable;
- `test_https_wss_and_a_secure_context_on_another_host`: with a self-signed certificate the control
  API answers over HTTPS only (plain HTTP on the port gets no HTTP answer), the token's
  `signaling_url` is `wss://`, two aiortc participants join over WSS and exchange media; a headless
  Chromium in a network namespace (another host, as far as it can tell) opens the demo page over
  HTTPS without any "treat this origin as secure" flag: the page is a secure context, captures and
  publishes, and aiortc decodes its video.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from netns_util import Namespace, chromium_pool
from room_client import ControlAPI, RoomClient, until
from test_simulcast import wait_joined


def make_certificate(tmp_path, *ips: str) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    san = ",".join(f"IP:{ip}" for ip in ips)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=sfu-test",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def test_tls_config_errors_stop_the_server(sfu_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "127.0.0.1")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    for env, variable in [({"SFU_TLS_CERT": cert}, "SFU_TLS_KEY"), ({"SFU_TLS_KEY": key}, "SFU_TLS_CERT"),
                          ({"SFU_TLS_CERT": str(not_pem), "SFU_TLS_KEY": key}, "SFU_TLS_CERT"),
                          ({"SFU_TLS_CERT": cert, "SFU_TLS_KEY": str(not_pem)}, "SFU_TLS_KEY")]:
        p = sfu_factory(env=env, wait=False)
        code = p.proc.wait(timeout=20)
        assert code != 0, f"{env} started the server"
        assert variable in p.log(), f"{env}: the error does not name {variable}:\n{p.log()[-2000:]}"


def https_get(url: str, cafile: str) -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
        return r.status, json.loads(r.read())


def test_https_wss_and_a_secure_context_on_another_host(sfu_factory, tmp_path, monkeypatch):
    key_api = "tls-" + secrets.token_hex(16)
    ns = Namespace("sfutls")
    try:
        cert, key = make_certificate(tmp_path, "127.0.0.1", ns.host_ip)
        # urllib and websockets trust our certificate through the default context.
        monkeypatch.setenv("SSL_CERT_FILE", cert)
        sfu = sfu_factory(env={"SFU_API_KEY": key_api, "SFU_HTTP_HOST": ns.host_ip, "SFU_MEDIA_HOST": ns.host_ip,
                               "SFU_TLS_CERT": cert, "SFU_TLS_KEY": key}, wait=False)
        base = f"https://{ns.host_ip}:{sfu.http_port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = https_get(base + "/healthz", cert)
                break
            except OSError:
                assert time.monotonic() < deadline and sfu.proc.poll() is None, f"no HTTPS on {base}\n{sfu.log()[-3000:]}"
                time.sleep(0.2)
        assert (status, body) == (200, {"status": "ok"})
        # Plain HTTP on the TLS port gets no HTTP answer.
        with socket.create_connection((ns.host_ip, sfu.http_port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            try:
                reply = s.recv(64)
            except (ConnectionResetError, TimeoutError, socket.timeout):
                reply = b""
        assert not reply.startswith(b"HTTP/1.1 200"), reply

        api = ControlAPI(base, key_api)
        room = api.create_room(name="tls")["id"]
        doctor_token = api.token(room, "dr-tls", role="doctor")
        assert doctor_token["signaling_url"].startswith(f"wss://{ns.host_ip}:{sfu.http_port}/v1/signal?token="), doctor_token

        with chromium_pool(tmp_path) as chromiums:
            page = chromiums("tls", netns=ns, extra_args=["--ignore-certificate-errors"])
            page.open(f"{base}/?token={urllib.parse.quote(api.token(room, 'pat-tls')['token'])}")
            page_peer = wait_joined(page)
            assert page.execute("return window.isSecureContext;") is True

            async def run():
                async with RoomClient(doctor_token["signaling_url"], name="doctor") as doctor, \
                        RoomClient(api.token(room, "pat-aiortc", role="patient")["signaling_url"], name="other") as other:
                    await doctor.connect()
                    await doctor.publish()
                    await other.connect()
                    await other.publish()
                    assert await until(lambda: other.frames_from(doctor.peer_id) >= 20 and doctor.frames_from(other.peer_id) >= 20, 30), \
                        "aiortc participants on WSS did not exchange video"
                    assert await until(lambda: doctor.frames_from(page_peer) >= 20, 40), \
                        f"aiortc decoded {doctor.frames_from(page_peer)} frames of the HTTPS page"

            asyncio.run(asyncio.wait_for(run(), 120))
    finally:
        ns.close()
