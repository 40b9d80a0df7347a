#!/usr/bin/env python3
"""Writes the libFuzzer seed corpora Fixtures/fuzz/<harness>/ (docs/FUZZING.md) from the fixtures:
UDP payloads of the captures in Fixtures/pcap (RTP, RTCP, STUN, VP8 payload heads), the SDPs in
Fixtures/sdp, and hand-made signaling frames and join tokens. The webm seeds are recordings written
by the server itself and are kept as files (Fixtures/fuzz/webm/README.md). Deterministic: running it
again rewrites the same files. Small inputs only (libFuzzer's -max_len is 4096 by default anyway)."""
import base64, hashlib, hmac, json, os, struct, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FUZZ = os.path.join(ROOT, "Fixtures", "fuzz")
# The harness's JWT secret (Sources/FuzzHarnesses/Harness.swift, Harness.secret).
JWT_SECRET = b"fuzz-secret-0123456789-0123456789-abcdef"


def udp_payloads(path):
    """UDP payloads of an Ethernet (optionally 802.1Q) libpcap file, IPv4 or IPv6."""
    data = open(path, "rb").read()
    magic = data[:4]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(end + "I", data[20:24])[0] == 1, "Ethernet captures only"
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        eth = struct.unpack(">H", frame[12:14])[0]
        p = 14
        if eth == 0x8100:
            eth = struct.unpack(">H", frame[16:18])[0]
            p = 18
        if eth == 0x0800:
            ihl = (frame[p] & 0x0F) * 4
            proto, frag = frame[p + 9], struct.unpack(">H", frame[p + 6:p + 8])[0]
            if proto != 17 or frag & 0x3FFF:
                continue
            u = p + ihl
        elif eth == 0x86DD:
            if frame[p + 6] != 17:
                continue
            u = p + 40
        else:
            continue
        length = struct.unpack(">H", frame[u + 4:u + 6])[0]
        out.append(frame[u + 8:u + length])
    return out


def kind(payload):
    if not payload:
        return None
    b = payload[0]
    if b <= 3:
        return "stun"
    if 128 <= b <= 191 and len(payload) >= 2:
        return "rtcp" if 64 <= payload[1] & 0x7F <= 95 else "rtp"
    return None


def write(harness, name, data):
    d = os.path.join(FUZZ, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def main():
    pcap = os.path.join(ROOT, "Fixtures", "pcap")
    picked = {"rtp": [], "rtcp": [], "stun": [], "vp8": []}
    seen = set()
    for name in ["rtcp-synthetic.pcap", "ffmpeg-vp8-opus.pcap", "chromium-loopback.pcap"]:
        for p in udp_payloads(os.path.join(pcap, name)):
            k = kind(p)
            if k is None:
                continue
            # One of each shape: first byte, payload type, length bucket.
            key = (name, k, p[0], p[1] & 0x7F, min(len(p) // 200, 3), p[1] if k == "stun" else 0)
            if key in seen:
                continue
            seen.add(key)
            picked[k].append(p)
            if k == "rtp" and name == "ffmpeg-vp8-opus.pcap" and p[1] & 0x7F == 96:
                cc = p[0] & 0x0F
                start = 12 + 4 * cc  # ffmpeg sends no header extension
                picked["vp8"].append(p[start:start + 64])
    for k, items in picked.items():
        for i, p in enumerate(items[:40]):
            write(k, f"capture-{i:02d}", p[:1500])
    # VP8 descriptors by hand: every optional field (X, I with 7 and 15 bits, L, T, K).
    for name, hexs in {
        "minimal": "10" + "9d012a4001f000",
        "pictureid7": "9080" + "05" + "9d012a",
        "pictureid15-tl0-tid-key": "90f0" + "8123" + "07" + "e0" + "00" + "9d012a" + "40014000",
        "keyframe-header": "10" + "5001009d012a80024001",
    }.items():
        write("vp8", "hand-" + name, bytes.fromhex(hexs))

    # STUN by hand, signed with the harness's ICE passwords (Harness.localCredentials/remoteCredentials).
    def stun(mtype, tid, attrs, key=None, fingerprint=True):
        body = b"".join(struct.pack(">HH", t, len(v)) + v + b"\0" * (-len(v) % 4) for t, v in attrs)
        msg = struct.pack(">HHI", mtype, len(body), 0x2112A442) + tid + body
        if key is not None:
            msg = msg[:2] + struct.pack(">H", len(body) + 24) + msg[4:]
            msg += struct.pack(">HH", 0x0008, 20) + hmac.new(key, msg, hashlib.sha1).digest()
        if fingerprint:
            msg = msg[:2] + struct.pack(">H", len(msg) - 20 + 8) + msg[4:]
            crc = __import__("zlib").crc32(msg) ^ 0x5354554E
            msg += struct.pack(">HHI", 0x8028, 4, crc)
        return msg
    local_key, remote_key = b"fuzz-local-password-0123", b"fuzz-remote-password-012"
    tid = bytes(range(12))
    request = [(0x0006, b"fzlo:fzre"), (0x0024, struct.pack(">I", 0x6E7F1EFF)),
               (0x802A, bytes(8)), (0x0025, b"")]
    write("stun", "hand-request-nominating", stun(0x0001, tid, request, local_key))
    write("stun", "hand-request-no-integrity", stun(0x0001, tid, request[:2]))
    write("stun", "hand-request-unknown-required-attr", stun(0x0001, tid, request + [(0x0033, b"ab")], local_key))
    xor_addr = struct.pack(">BBH", 0, 1, 5000 ^ 0x2112) + struct.pack(">I", 0xC0000201 ^ 0x2112A442)
    write("stun", "hand-success-response", stun(0x0101, tid, [(0x0020, xor_addr)], remote_key))
    write("stun", "hand-error-response", stun(0x0111, tid, [(0x0009, b"\0\0\x04\x01Unauthorized")]))
    write("stun", "hand-indication", stun(0x0011, tid, []))

    for f in sorted(os.listdir(os.path.join(ROOT, "Fixtures", "sdp"))):
        if f.endswith(".sdp"):
            write("sdp", f, open(os.path.join(ROOT, "Fixtures", "sdp", f), "rb").read())

    frames = [
        {"event": "join_room", "data": {"room_id": "room"}},
        {"event": "webrtc_offer", "data": {"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n", "target": "publisher"}},
        {"event": "webrtc_answer", "data": {"sdp": "v=0\r\n", "target": "subscriber"}},
        {"event": "toggle_audio", "data": {"enabled": False}},
        {"event": "screen_share", "data": {"enabled": True}},
        {"event": "send_message", "data": {"message": "h\u00e9llo \U0001F600"}},
        {"event": "set_layer", "data": {"track_id": "t1", "max_spatial": 2, "max_temporal": None}},
        {"event": "capture_image", "data": {"user_id": "u", "source": "screen", "format": "png"}},
        {"event": "start_recording"},
        {"event": "leave_room", "data": {}},
        {"event": "ice_candidate", "data": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}},
    ]
    for i, fr in enumerate(frames):
        write("signaling", f"hand-{i:02d}-{fr['event']}", json.dumps(fr).encode())
    write("signaling", "hand-data-not-object", b'{"event":"toggle_video","data":[1,2]}')
    write("signaling", "hand-nested", b'{"event":"x","data":{"a":{"b":[1.5e308,-0,"\\ud83d\\ude00"]}}}')

    header = b'{"alg":"HS256","typ":"JWT"}'
    claims = json.dumps({"room": "room", "sub": "u1", "name": "Dr. A", "role": "doctor",
                         "perms": ["publish", "subscribe", "record"], "exp": 1900000000, "iat": 1700000000},
                        sort_keys=True).encode()
    signing_input = b64url(header) + b"." + b64url(claims)
    token = signing_input + b"." + b64url(hmac.new(JWT_SECRET, signing_input, hashlib.sha256).digest())
    write("jwt", "token-valid", b"\x00" + token)
    write("jwt", "token-alg-none", b"\x00" + b64url(b'{"alg":"none"}') + b"." + b64url(claims) + b".")
    write("jwt", "claims-signed", b"\x01" + claims)
    write("jwt", "claims-signed-room-check", b"\x05" + claims)
    write("jwt", "header-and-claims-signed", b"\x03" + header + b"\n" + claims)
    write("jwt", "claims-wrong-types", b"\x01" + b'{"room":1,"sub":"u","name":"n","role":"x","perms":"all","exp":"1e99","iat":null}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
