#!/usr/bin/env python3
"""Writes the synthetic RTP/RTCP capture files in Fixtures/pcap/ by packing every byte by hand.

    python3 scripts/make_synthetic_pcap.py [OUTDIR]      (default: Fixtures/pcap next to this repo)

Every datagram below is built with `struct` from values this script chooses, so the script also
knows what `sfu inspect pcap` must print for it: it writes that as
`rtcp-synthetic.expected.jsonl` (one JSON object per printed datagram, the docs/INSPECT.md shape).
An `error` whose text the spec does not fix is written as the placeholder "<nonempty>": the test
only requires a non-empty string there. One deliberate departure from docs/INSPECT.md: the APP
packet's 4-character name is `app_name`, because the spec's `name` is already the packet's name
("app") in the same object, and a JSON object with two `name` keys loses one of them.

The same frame sequence is written in several link types and file formats, and all of them must
give identical output (the same frames are skipped: for IPv6-only link types the IPv4-fragment
frames become ICMPv6 frames, which are skipped as well):

    rtcp-synthetic.pcap             Ethernet (1), little-endian, microseconds, IPv4 + IPv6,
                                    some frames with an 802.1Q VLAN tag
    rtcp-synthetic-sll.pcap         Linux cooked SLL (113), little-endian, microseconds, IPv4
    rtcp-synthetic-raw-be-ns.pcap   raw IP (101), big-endian, nanoseconds (a1b23c4d), IPv4 + IPv6
    rtcp-synthetic-null-ipv6.pcap   BSD loopback/Null (0), little-endian, IPv6 only
    rtcp-synthetic-sll2.pcap        Linux cooked SLL2 (276), big-endian, microseconds, IPv4 + IPv6
    rtcp-synthetic-ipv4.pcap        raw IPv4 (228), little-endian, nanoseconds
    rtcp-synthetic-ipv6.pcap        raw IPv6 (229), big-endian, microseconds

UDP ports (for `tshark -d`): RTP 40000 -> 50000, RTCP 40001 <-> 50001 (both directions),
STUN 40002 -> 3478, other junk 40003 -> 50003. Deterministic: re-running gives identical bytes.
"""
from __future__ import annotations

import json
import pathlib
import struct
import sys

RTP_PORT = 50000
RTCP_PORT = 50001
STUN_PORT = 3478
JUNK_PORT = 50003
NONEMPTY = "<nonempty>"


# ---------------------------------------------------------------------------------------------
# RTP

def one_byte_ext(elements: list[tuple[int, bytes]], gap_after: set[int] = frozenset()) -> tuple[int, bytes]:
    """RFC 8285 one-byte form. `gap_after`: indexes of elements followed by one padding byte."""
    out = b""
    for i, (eid, data) in enumerate(elements):
        assert 1 <= eid <= 14 and 1 <= len(data) <= 16
        out += bytes([(eid << 4) | (len(data) - 1)]) + data
        if i in gap_after:
            out += b"\x00"
    out += b"\x00" * (-len(out) % 4)
    return 0xBEDE, out


def two_byte_ext(elements: list[tuple[int, bytes]], appbits: int = 0) -> tuple[int, bytes]:
    out = b""
    for eid, data in elements:
        assert 1 <= eid <= 255 and len(data) <= 255
        out += bytes([eid, len(data)]) + data
    out += b"\x00" * (-len(out) % 4)
    return 0x1000 | appbits, out


def rtp(*, pt: int, seq: int, ts: int, ssrc: int, marker: bool = False, csrcs: list[int] = (),
        ext: tuple[int, bytes] | None = None, ext_expected: list[dict] | None = None,
        payload: bytes = b"", padding: int = 0) -> tuple[bytes, dict]:
    b0 = 0x80 | (0x20 if padding else 0) | (0x10 if ext is not None else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | pt
    data = struct.pack("!BBHII", b0, b1, seq, ts, ssrc)
    data += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        profile, body = ext
        assert len(body) % 4 == 0
        data += struct.pack("!HH", profile, len(body) // 4) + body
    data += payload
    if padding:
        data += b"\x00" * (padding - 1) + bytes([padding])
    expected = {
        "type": "rtp", "version": 2, "padding": bool(padding), "marker": marker,
        "payload_type": pt, "sequence_number": seq, "timestamp": ts, "ssrc": ssrc,
        "csrcs": list(csrcs), "extensions": ext_expected or [], "payload_size": len(payload),
    }
    return data, expected


def ext_el(eid: int, data: bytes) -> dict:
    return {"id": eid, "length": len(data), "value_hex": data.hex()}


# ---------------------------------------------------------------------------------------------
# RTCP

def rtcp(count: int, pt: int, body: bytes, padding: int = 0) -> bytes:
    """One RTCP packet: header + body (+ RFC 3550 padding, last byte = padding length)."""
    assert len(body) % 4 == 0 or padding
    pad = b"\x00" * (padding - 1) + bytes([padding]) if padding else b""
    total = 4 + len(body) + len(pad)
    assert total % 4 == 0
    b0 = 0x80 | (0x20 if padding else 0) | count
    return struct.pack("!BBH", b0, pt, total // 4 - 1) + body + pad


def report_block(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr) -> tuple[bytes, dict]:
    # cumulative number of packets lost: signed 24 bits (RFC 3550 6.4.1: "may be negative")
    assert -0x800000 <= cumulative < 0x800000
    data = struct.pack("!IB", ssrc, fraction) + (cumulative & 0xFFFFFF).to_bytes(3, "big") + \
        struct.pack("!IIII", highest, jitter, lsr, dlsr)
    return data, {"ssrc": ssrc, "fraction_lost": fraction, "cumulative_lost": cumulative,
                  "highest_sequence": highest, "jitter": jitter, "last_sr": lsr,
                  "delay_since_last_sr": dlsr}


def sr(ssrc, ntp, rtp_time, packets, octets, reports) -> tuple[bytes, dict]:
    body = struct.pack("!IQIII", ssrc, ntp, rtp_time, packets, octets) + b"".join(r[0] for r in reports)
    return rtcp(len(reports), 200, body), {
        "packet_type": 200, "name": "sr", "ssrc": ssrc, "ntp_time": ntp, "rtp_time": rtp_time,
        "packet_count": packets, "octet_count": octets, "reports": [r[1] for r in reports]}


def rr(ssrc, reports) -> tuple[bytes, dict]:
    body = struct.pack("!I", ssrc) + b"".join(r[0] for r in reports)
    return rtcp(len(reports), 201, body), {
        "packet_type": 201, "name": "rr", "ssrc": ssrc, "reports": [r[1] for r in reports]}


def sdes(chunks: list[tuple[int, list[tuple[int, str]]]]) -> tuple[bytes, dict]:
    body = b""
    for ssrc, items in chunks:
        chunk = struct.pack("!I", ssrc)
        for itype, text in items:
            raw = text.encode()
            chunk += bytes([itype, len(raw)]) + raw
        chunk += b"\x00"  # end of item list
        chunk += b"\x00" * (-len(chunk) % 4)
        body += chunk
    return rtcp(len(chunks), 202, body), {
        "packet_type": 202, "name": "sdes",
        "chunks": [{"ssrc": s, "items": [{"type": t, "text": x} for t, x in items]} for s, items in chunks]}


def bye(sources: list[int], reason: str | None) -> tuple[bytes, dict]:
    body = b"".join(struct.pack("!I", s) for s in sources)
    if reason is not None:
        raw = reason.encode()
        body += bytes([len(raw)]) + raw
        body += b"\x00" * (-len(body) % 4)
    return rtcp(len(sources), 203, body), {
        "packet_type": 203, "name": "bye", "sources": sources, "reason": reason}


def app(subtype, ssrc, name: str, data: bytes) -> tuple[bytes, dict]:
    assert len(name) == 4 and len(data) % 4 == 0
    # docs/INSPECT.md calls the 4-character APP name `name`, which collides with the packet's own
    # `name` ("app") in the same object; this file expects it as `app_name`.
    return rtcp(subtype, 204, struct.pack("!I", ssrc) + name.encode() + data), {
        "packet_type": 204, "name": "app", "subtype": subtype, "ssrc": ssrc, "app_name": name,
        "data_hex": data.hex()}


def nack(sender, media, pairs: list[tuple[int, int]]) -> tuple[bytes, dict]:
    body = struct.pack("!II", sender, media) + b"".join(struct.pack("!HH", p, m) for p, m in pairs)
    lost = []
    for pid, mask in pairs:
        lost.append(pid)
        lost += [(pid + i + 1) & 0xFFFF for i in range(16) if mask >> i & 1]
    return rtcp(1, 205, body), {
        "packet_type": 205, "name": "nack", "fmt": 1, "sender_ssrc": sender, "media_ssrc": media,
        "nacks": [{"packet_id": p, "lost_bitmask": m} for p, m in pairs], "lost": lost}


def twcc(sender, media, base, reference_time, fb_count, chunks: list[dict], deltas: list[int],
         padding_mode: str = "none", count: int | None = None) -> tuple[bytes, dict]:
    """transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01, section 3.1).

    `chunks` use the docs/INSPECT.md shape; the packet status count is what they cover, or
    `count` when the last chunk has symbols past the end (those are not packets: no status, no
    delta). `reference_time` is signed 24 bits.
    `deltas` are the raw receive deltas (x 250 us), one per received packet.
    `padding_mode`: "none" (content is already 32-bit aligned) or "pbit" (RTCP padding bit and
    count byte, as libwebrtc writes it).
    """
    statuses: list[int] = []
    raw_chunks = b""
    for c in chunks:
        if c["kind"] == "run_length":
            assert 0 <= c["status"] <= 3 and 0 < c["run_length"] < 1 << 13
            raw_chunks += struct.pack("!H", (c["status"] << 13) | c["run_length"])
            statuses += [c["status"]] * c["run_length"]
        else:
            size, symbols = c["symbol_size"], c["symbols"]
            assert len(symbols) == (14 if size == 1 else 7)
            word = 0x8000 | (0x4000 if size == 2 else 0)
            for i, s in enumerate(symbols):
                word |= s << (14 - size * (i + 1))
            raw_chunks += struct.pack("!H", word)
            statuses += symbols
    if count is not None:
        assert count <= len(statuses)
        statuses = statuses[:count]
    received = [s for s in statuses if s in (1, 2)]
    assert len(received) == len(deltas)
    raw_deltas = b""
    for s, d in zip(received, deltas):
        if s == 1:
            assert 0 <= d <= 255
            raw_deltas += struct.pack("!B", d)
        else:
            raw_deltas += struct.pack("!h", d)
    assert -(1 << 23) <= reference_time < 1 << 23
    body = struct.pack("!IIHH", sender, media, base, len(statuses)) + \
        struct.pack("!I", ((reference_time & 0xFFFFFF) << 8) | fb_count) + raw_chunks + raw_deltas
    if padding_mode == "pbit":
        pad = -len(body) % 4
        assert pad, "choose contents that need padding"
        packet = rtcp(15, 205, body, padding=pad)
    else:
        assert len(body) % 4 == 0
        packet = rtcp(15, 205, body)
    return packet, {
        "packet_type": 205, "name": "twcc", "fmt": 15, "sender_ssrc": sender, "media_ssrc": media,
        "base_sequence_number": base, "packet_status_count": len(statuses),
        "reference_time": reference_time, "feedback_packet_count": fb_count, "chunks": chunks,
        "statuses": statuses, "recv_deltas": deltas}


def pli(sender, media) -> tuple[bytes, dict]:
    return rtcp(1, 206, struct.pack("!II", sender, media)), {
        "packet_type": 206, "name": "pli", "fmt": 1, "sender_ssrc": sender, "media_ssrc": media}


def fir(sender, entries: list[tuple[int, int]]) -> tuple[bytes, dict]:
    body = struct.pack("!II", sender, 0) + b"".join(struct.pack("!IB3x", s, n) for s, n in entries)
    return rtcp(4, 206, body), {
        "packet_type": 206, "name": "fir", "fmt": 4, "sender_ssrc": sender, "media_ssrc": 0,
        "entries": [{"ssrc": s, "sequence_number": n} for s, n in entries]}


def remb(sender, exponent, mantissa, ssrcs: list[int]) -> tuple[bytes, dict]:
    assert exponent < 64 and mantissa < 1 << 18
    body = struct.pack("!II", sender, 0) + b"REMB" + \
        struct.pack("!I", (len(ssrcs) << 24) | (exponent << 18) | mantissa) + \
        b"".join(struct.pack("!I", s) for s in ssrcs)
    return rtcp(15, 206, body), {
        "packet_type": 206, "name": "remb", "fmt": 15, "sender_ssrc": sender, "media_ssrc": 0,
        "bitrate": mantissa << exponent, "exponent": exponent, "mantissa": mantissa, "ssrcs": ssrcs}


def xr(ssrc, blocks: list[tuple[bytes, dict]]) -> tuple[bytes, dict]:
    body = struct.pack("!I", ssrc) + b"".join(b[0] for b in blocks)
    return rtcp(0, 207, body), {
        "packet_type": 207, "name": "xr", "ssrc": ssrc, "blocks": [b[1] for b in blocks]}


def xr_block(bt, type_specific, data: bytes) -> bytes:
    assert len(data) % 4 == 0
    return struct.pack("!BBH", bt, type_specific, len(data) // 4) + data


def xr_rrtr(ntp) -> tuple[bytes, dict]:
    return xr_block(4, 0, struct.pack("!Q", ntp)), {"block_type": 4, "ntp_time": ntp}


def xr_dlrr(items: list[tuple[int, int, int]]) -> tuple[bytes, dict]:
    data = b"".join(struct.pack("!III", *i) for i in items)
    return xr_block(5, 0, data), {"block_type": 5, "items": [
        {"ssrc": s, "last_rr": l, "delay_since_last_rr": d} for s, l, d in items]}


def xr_other(bt, type_specific, data: bytes) -> tuple[bytes, dict]:
    return xr_block(bt, type_specific, data), {
        "block_type": bt, "type_specific": type_specific, "data_hex": data.hex()}


def unknown(count, pt, data: bytes) -> tuple[bytes, dict]:
    return rtcp(count, pt, data), {
        "packet_type": pt, "name": "unknown", "count": count, "data_hex": data.hex()}


def compound(*packets: tuple[bytes, dict]) -> tuple[bytes, dict]:
    return b"".join(p[0] for p in packets), {"type": "rtcp", "packets": [p[1] for p in packets]}


def other(data: bytes, error: bool = False) -> tuple[bytes, dict]:
    exp = {"type": "other", "size": len(data)}
    if error:
        exp["error"] = NONEMPTY
    return data, exp


# ---------------------------------------------------------------------------------------------
# The frame sequence. Each entry: ("udp", payload, expected, sport, dport) or a skipped frame
# ("tcp" | "icmp" | "frag-first" | "frag-rest", payload).

A, B, C, D = 0x11223344, 0x55667788, 0x9ABCDEF0, 0x0BADF00D  # SSRCs


def frames() -> list[tuple]:
    out: list[tuple] = []

    def udp(pkt, sport, dport):
        out.append(("udp", pkt[0], pkt[1], sport, dport))

    def rtcp_out(pkt):  # sender -> receiver
        udp(compound(pkt), 40001, RTCP_PORT)

    def rtcp_back(pkt):  # receiver -> sender (feedback)
        udp(compound(pkt), RTCP_PORT, 40001)

    # RTP
    udp(rtp(pt=111, seq=1000, ts=48000, ssrc=A, payload=bytes(range(40))), 40000, RTP_PORT)
    e1 = [(1, b"\x12\x34\x56"), (3, b"\x00\x2a"), (5, b"\x7f")]
    udp(rtp(pt=96, seq=2000, ts=90000, ssrc=B, marker=True, ext=one_byte_ext(e1, gap_after={0}),
            ext_expected=[ext_el(*e) for e in e1], payload=b"\x90\x80" + b"\xab" * 98),
        40000, RTP_PORT)
    e2 = [(7, b""), (20, bytes(range(0x40, 0x51))), (2, b"\x01")]
    udp(rtp(pt=96, seq=2001, ts=90000, ssrc=B, ext=two_byte_ext(e2, appbits=0),
            ext_expected=[ext_el(*e) for e in e2], payload=b"\x10" + b"\xcd" * 60), 40000, RTP_PORT)
    e3 = [(2, b"\xaa\xbb\xcc\xdd")]
    udp(rtp(pt=98, seq=7, ts=123456789, ssrc=C, csrcs=[0x01020304, 0xA0B0C0D0],
            ext=one_byte_ext(e3), ext_expected=[ext_el(*e) for e in e3],
            payload=b"\x55" * 21, padding=4), 40000, RTP_PORT)
    # a header extension that is neither RFC 8285 form: one element, id 0, the whole block
    junk_ext = bytes.fromhex("0102030405060708")
    udp(rtp(pt=0, seq=1, ts=160, ssrc=D, ext=(0xABAC, junk_ext),
            ext_expected=[{"id": 0, "length": len(junk_ext), "value_hex": junk_ext.hex()}],
            payload=b"\xff" * 160), 40000, RTP_PORT)
    # one-byte form with ID 15: RFC 8285 says stop parsing there, the rest is ignored
    stop = bytes([0x10, 0xAA, 0xF0, 0x21, 0xBB, 0xCC, 0x00, 0x00])
    udp(rtp(pt=96, seq=2002, ts=93000, ssrc=B, ext=(0xBEDE, stop),
            ext_expected=[ext_el(1, b"\xaa")], payload=b"\x99" * 10), 40000, RTP_PORT)
    # padding-only packet (what a sender uses for bandwidth probing)
    udp(rtp(pt=97, seq=65535, ts=0xFFFFFFFF, ssrc=0xFFFFFFFF, padding=224), 40000, RTP_PORT)
    udp(rtp(pt=127, seq=0, ts=0, ssrc=0, marker=True, payload=b"\x01"), 40000, RTP_PORT)

    # RTCP, one datagram per type
    rb1 = report_block(B, 25, 1234, 0x0001F00D, 77, 0xDEADBEEF, 65536)
    rb2 = report_block(C, 0, 0, 65535, 0, 0, 0)
    rtcp_out(sr(A, 0xE1234567_89ABCDEF, 3_000_000_000, 1500, 1_200_000, [rb1, rb2]))
    rtcp_back(rr(D, [report_block(A, 255, 0x7FFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0x12345678, 0x9ABC)]))
    rtcp_out(sdes([(A, [(1, "user@example.test")]), (B, [(1, "{c5b6-video}"), (6, "synthetic 1.0")])]))
    rtcp_out(bye([A, B], "shutting down"))
    rtcp_out(app(5, A, "TEST", bytes.fromhex("00010203f0f1f2f3")))
    rtcp_back(nack(D, B, [(1000, 0x0000), (1020, 0x8001), (2000, 0xFFFF)]))
    rtcp_back(twcc(D, B, base=65530, reference_time=0x123456, fb_count=7, chunks=[
        {"kind": "run_length", "status": 1, "run_length": 7},
        {"kind": "status_vector", "symbol_size": 1, "symbols": [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1]},
        {"kind": "status_vector", "symbol_size": 2, "symbols": [2, 1, 0, 2, 1, 1, 0]},
    ], deltas=[4, 0, 255, 1, 2, 3, 4] + [10, 20, 30, 40, 50, 60, 70, 80] + [-1000, 8, 32767, 9, 0]))
    rtcp_back(pli(D, B))
    rtcp_back(fir(D, [(B, 3), (C, 255)]))
    rtcp_back(remb(D, 3, 150000, [B, C]))
    rtcp_back(xr(D, [xr_rrtr(0xE1234567_00000001)]))
    rtcp_out(xr(A, [xr_dlrr([(D, 0x45670000, 0x00012000), (C, 1, 2)]),
                    xr_other(42, 7, bytes.fromhex("cafebabe"))]))
    udp(compound(sr(A, 0xE1234568_00000000, 3_000_090_000, 1600, 1_300_000, []),
                 sdes([(A, [(1, "user@example.test")])])), 40001, RTCP_PORT)
    rtcp_out(unknown(3, 210, bytes.fromhex("0011223344556677")))

    # frames that are not printed (still counted in `frame`)
    out.append(("tcp", b"GET / HTTP/1.1\r\n\r\n"))
    out.append(("frag-first", rtp(pt=96, seq=9, ts=9, ssrc=A, payload=b"\x00" * 40)[0]))
    out.append(("frag-rest", b"\x00" * 24))
    out.append(("icmp", b"\x00" * 8))

    # the remaining RTCP feedback forms
    rtcp_back(nack(D, C, [(65530, 0x0030)]))  # asks for 65530, 65535, 0 (wraps)
    rtcp_back(twcc(D, C, base=100, reference_time=0, fb_count=255, chunks=[
        {"kind": "run_length", "status": 1, "run_length": 3}], deltas=[1, 2, 3], padding_mode="pbit"))
    rtcp_back(twcc(D, C, base=200, reference_time=5, fb_count=0, chunks=[
        {"kind": "run_length", "status": 0, "run_length": 20},
        {"kind": "run_length", "status": 2, "run_length": 2}], deltas=[-32768, 300]))
    udp(compound(rr(D, []), remb(D, 0, 262143, [C]), pli(D, C)), RTCP_PORT, 40001)
    # negative cumulative loss (duplicates outnumber losses)
    rtcp_back(rr(D, [report_block(B, 0, -5, 70000, 3, 0, 0)]))
    # negative reference time; the last 2-bit vector covers 3 packets and 4 unused symbols
    rtcp_back(twcc(D, B, base=300, reference_time=-2, fb_count=1, chunks=[
        {"kind": "status_vector", "symbol_size": 2, "symbols": [1, 2, 0, 1, 0, 0, 0]},
        {"kind": "status_vector", "symbol_size": 2, "symbols": [2, 0, 2, 0, 0, 0, 0]}],
        deltas=[7, -300, 250, 1000, -9], count=10))
    # RTPFB FMT 3 (TMMBR) is not one of the named forms: unknown, with the FMT as `count`
    tmmbr_fci = struct.pack("!II", C, (10 << 26) | (5000 << 9) | 40)
    rtcp_back(unknown(3, 205, struct.pack("!II", D, 0) + tmmbr_fci))

    # other
    stun = struct.pack("!HHI12s", 0x0001, 8, 0x2112A442, bytes(range(12))) + struct.pack("!HHI", 0x0024, 4, 0x6E0001FF)
    udp(other(stun), 40002, STUN_PORT)
    udp(other(bytes.fromhex("16fefd000000000000000000010203")), 40003, JUNK_PORT)  # DTLS-like
    udp(other(b""), 40003, JUNK_PORT)  # empty datagram
    udp(other(bytes.fromhex("8060000100000002"), error=True), 40000, RTP_PORT)  # RTP shorter than 12
    udp(other(bytes.fromhex("8f600001000000020000000301020304"), error=True), 40000, RTP_PORT)  # 15 CSRCs missing
    udp(other(bytes.fromhex("a060000100000002000000030020"), error=True), 40000, RTP_PORT)  # padding past payload
    udp(other(bytes.fromhex("80c80006000000010000000200000003"), error=True), 40001, RTCP_PORT)  # SR length past end
    udp(other(rr(A, [])[0] + bytes.fromhex("81"), error=True), 40001, RTCP_PORT)  # trailing byte
    return out


# ---------------------------------------------------------------------------------------------
# Network and link layers

def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


V4_SRC, V4_DST = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2])
V6_SRC = bytes(15) + b"\x01"                      # ::1
V6_DST = bytes.fromhex("fd00000000000000000000000000beef")


def udp_header(sport, dport, payload, pseudo: bytes) -> bytes:
    length = 8 + len(payload)
    csum = checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum)


def ipv4(proto: int, payload: bytes, ident: int, flags_frag: int = 0, src=V4_SRC, dst=V4_DST) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags_frag, 64, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def ipv6(next_header: int, payload: bytes, src=V6_SRC, dst=V6_DST) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 64, src, dst) + payload


def ip_packet(frame: tuple, version: int, index: int) -> bytes:
    kind = frame[0]
    if version == 4:
        if kind == "udp":
            _, payload, _, sport, dport = frame
            pseudo = V4_SRC + V4_DST + struct.pack("!BBH", 0, 17, 8 + len(payload))
            return ipv4(17, udp_header(sport, dport, payload, pseudo) + payload, index)
        if kind == "tcp":
            tcp = struct.pack("!HHIIBBHHH", 40010, 80, 1, 0, 0x50, 0x18, 65535, 0, 0)
            return ipv4(6, tcp + frame[1], index)
        if kind == "icmp":  # echo request
            return ipv4(1, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + frame[1], index)
        if kind == "frag-first":  # first fragment (MF set) of a larger UDP datagram
            payload = frame[1]
            pseudo = V4_SRC + V4_DST + struct.pack("!BBH", 0, 17, 8 + len(payload) + 64)
            udp = udp_header(40000, RTP_PORT, payload + b"\x00" * 64, pseudo)
            udp = udp[:4] + struct.pack("!H", 8 + len(payload) + 64) + udp[6:]
            return ipv4(17, udp + payload, 0x4242, 0x2000)
        if kind == "frag-rest":  # a later fragment: offset 6 (48 bytes), no UDP header
            return ipv4(17, frame[1], 0x4242, 6)
    else:
        if kind == "udp":
            _, payload, _, sport, dport = frame
            pseudo = V6_SRC + V6_DST + struct.pack("!I3xB", 8 + len(payload), 17)
            return ipv6(17, udp_header(sport, dport, payload, pseudo) + payload)
        if kind == "tcp":
            tcp = struct.pack("!HHIIBBHHH", 40010, 80, 1, 0, 0x50, 0x18, 65535, 0, 0)
            return ipv6(6, tcp + frame[1])
        # IPv4 fragments and ICMP become ICMPv6 echo requests: skipped all the same
        return ipv6(58, struct.pack("!BBHHH", 128, 0, 0, 1, index) + frame[1])
    raise ValueError(kind)


MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def link(linktype: int, ip: bytes, index: int, endian: str) -> bytes:
    version = ip[0] >> 4
    ethertype = 0x0800 if version == 4 else 0x86DD
    if linktype == 1:
        if index % 3 == 2:  # 802.1Q tag, VLAN 100, priority 5
            return MAC_B + MAC_A + struct.pack("!HHH", 0x8100, (5 << 13) | 100, ethertype) + ip
        return MAC_B + MAC_A + struct.pack("!H", ethertype) + ip
    if linktype == 113:  # packet type, ARPHRD, address length, address (8), protocol
        return struct.pack("!HHH8sH", 0 if index % 2 else 4, 772, 6, MAC_A, ethertype) + ip
    if linktype == 276:  # protocol, reserved, ifindex, ARPHRD, packet type, address length, address
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 1, 0 if index % 2 else 4, 6, MAC_A) + ip
    if linktype == 0:  # address family in the writer's byte order; 30 = AF_INET6 on Darwin
        return struct.pack(endian + "I", 2 if version == 4 else 30) + ip
    if linktype in (101, 228, 229):
        return ip
    raise ValueError(linktype)


VARIANTS = [
    # name, linktype, byte order, nanoseconds, IP versions ("mixed": 4 and 6 alternating)
    ("rtcp-synthetic.pcap", 1, "<", False, "mixed"),
    ("rtcp-synthetic-sll.pcap", 113, "<", False, 4),
    ("rtcp-synthetic-raw-be-ns.pcap", 101, ">", True, "mixed"),
    ("rtcp-synthetic-null-ipv6.pcap", 0, "<", False, 6),
    ("rtcp-synthetic-sll2.pcap", 276, ">", False, "mixed"),
    ("rtcp-synthetic-ipv4.pcap", 228, "<", True, 4),
    ("rtcp-synthetic-ipv6.pcap", 229, ">", False, 6),
]


def write_pcap(path: pathlib.Path, linktype: int, endian: str, nanos: bool, versions, fr: list[tuple]) -> None:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = bytearray(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
    t0 = 1_700_000_000
    for i, frame in enumerate(fr, start=1):
        if versions == "mixed":
            # IPv4 fragments only exist in IPv4; everything else alternates
            version = 4 if frame[0].startswith("frag") or i % 2 else 6
        else:
            version = versions
        data = link(linktype, ip_packet(frame, version, i), i, endian)
        micros = i * 1234 + 567
        sec, frac = t0 + micros // 1_000_000, micros % 1_000_000
        if nanos:
            frac = frac * 1000 + i % 1000
        out += struct.pack(endian + "IIII", sec, frac, len(data), len(data)) + data
    path.write_bytes(bytes(out))


def main() -> None:
    outdir = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else \
        pathlib.Path(__file__).resolve().parents[1] / "Fixtures" / "pcap"
    outdir.mkdir(parents=True, exist_ok=True)
    fr = frames()
    for name, linktype, endian, nanos, versions in VARIANTS:
        write_pcap(outdir / name, linktype, endian, nanos, versions, fr)
    lines = []
    for i, frame in enumerate(fr, start=1):
        if frame[0] != "udp":
            continue
        expected = dict(frame[2])
        expected = {"type": expected.pop("type"), "frame": i, **expected}
        lines.append(json.dumps(expected, separators=(",", ":")))
    (outdir / "rtcp-synthetic.expected.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(VARIANTS)} capture files and rtcp-synthetic.expected.jsonl "
          f"({len(fr)} frames, {len(lines)} printed) to {outdir}")


if __name__ == "__main__":
    main()
