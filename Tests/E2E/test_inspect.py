"""`sfu inspect pcap` (docs/INSPECT.md) checked against Wireshark's dissectors and hand-packed data.

Fixtures/pcap/ holds real captures (ffmpeg VP8/Opus RTP, Chromium SRTP over loopback) and a
synthetic file with every RTCP type (scripts/capture-fixtures.sh regenerates them all). For the
captures, every frame is decoded by both `sfu inspect pcap` and `tshark -T pdml` and compared
field by field. PDML rather than `-T json`: it keeps tshark's field order and nesting, and a
compound RTCP datagram comes out as one <proto name="rtcp"> per packet, where JSON merges the
packets' duplicate keys. For the synthetic file our output must also equal
rtcp-synthetic.expected.jsonl, which scripts/make_synthetic_pcap.py wrote from the values it packed,
in every link type / byte order / timestamp precision variant.
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from conftest import FIXTURES

PCAP = FIXTURES / "pcap"
FFMPEG = PCAP / "ffmpeg-vp8-opus.pcap"
CHROMIUM = PCAP / "chromium-loopback.pcap"
SYNTHETIC = PCAP / "rtcp-synthetic.pcap"
SYNTHETIC_VARIANTS = [
    "rtcp-synthetic.pcap",
    "rtcp-synthetic-sll.pcap",
    "rtcp-synthetic-raw-be-ns.pcap",
    "rtcp-synthetic-null-ipv6.pcap",
    "rtcp-synthetic-sll2.pcap",
    "rtcp-synthetic-ipv4.pcap",
    "rtcp-synthetic-ipv6.pcap",
]
EXPECTED = PCAP / "rtcp-synthetic.expected.jsonl"
NONEMPTY = "<nonempty>"  # placeholder in the expected file: any non-empty error text

# Ports, as scripts/capture-fixtures.sh and scripts/make_synthetic_pcap.py set them.
FFMPEG_DECODE = {5004: "rtp", 5006: "rtp", 5005: "rtcp", 5007: "rtcp"}
SYNTHETIC_DECODE = {50000: "rtp", 50001: "rtcp"}


# ---------------------------------------------------------------------------------------------
# Running the two decoders

DUPLICATE_KEYS: list[tuple[str, str]] = []  # (file, key) for every JSON object that repeats a key


def _object(pairs: list[tuple[str, object]], source: str = "") -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            DUPLICATE_KEYS.append((source, key))
            # docs/INSPECT.md gives APP packets two `name` keys ("app" and the 4-character
            # name); keep both so the rest of the comparison can go on (expected: `app_name`).
            if key == "name" and out.get("packet_type") == 204:
                key = "app_name"
        out[key] = value
    return out


def run_inspect(sfu_bin: pathlib.Path, path: pathlib.Path, *ports: int) -> list[dict]:
    args = [str(sfu_bin), "inspect", "pcap", str(path)]
    for p in ports:
        args += ["--udp-port", str(p)]
    r = subprocess.run(args, capture_output=True, timeout=120)
    assert r.returncode == 0, f"{args} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    lines = [line for line in r.stdout.decode().splitlines() if line.strip()]
    out = [json.loads(line, object_pairs_hook=lambda pairs: _object(pairs, path.name)) for line in lines]
    frames = [o["frame"] for o in out]
    assert frames == sorted(set(frames)), "frames must be printed once each, in file order"
    return out


def tshark_bin() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed (scripts/install-deps.sh test installs it)")
    return path


@dataclass
class Frame:
    number: int
    protos: list[ET.Element]
    udp_ports: tuple[int, int] | None = None
    udp_payload: int | None = None
    fragment: bool = False
    malformed: bool = False
    rtp: ET.Element | None = None
    rtcp: list[ET.Element] = field(default_factory=list)


def tshark_frames(path: pathlib.Path, decode: dict[int, str]) -> dict[int, Frame]:
    args = [tshark_bin(), "-n", "-r", str(path), "-T", "pdml",
            "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]
    for port, proto in sorted(decode.items()):
        args += ["-d", f"udp.port=={port},{proto}"]
    r = subprocess.run(args, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    frames: dict[int, Frame] = {}
    for pkt in ET.fromstring(r.stdout).iter("packet"):
        protos = pkt.findall("proto")
        num = int(next(f.get("show") for f in pkt.iter("field") if f.get("name") == "num"))
        fr = Frame(num, protos)
        for p in protos:
            name = p.get("name")
            if name == "ip":
                mf = field_show(p, "ip.flags.mf")
                off = field_show(p, "ip.frag_offset")
                fr.fragment = mf in ("1", "True") or (off not in (None, "0"))
            elif name == "udp" and fr.udp_ports is None:
                fr.udp_ports = (int(field_show(p, "udp.srcport")), int(field_show(p, "udp.dstport")))
                fr.udp_payload = int(field_show(p, "udp.length")) - 8
            elif name == "rtp" and fr.rtp is None:
                fr.rtp = p
            elif name == "rtcp":
                fr.rtcp.append(p)
            elif name == "_ws.malformed":
                fr.malformed = True
        frames[num] = fr
    return frames


# ---------------------------------------------------------------------------------------------
# PDML helpers

def fields(el: ET.Element, name: str) -> list[ET.Element]:
    return [f for f in el.iter("field") if f.get("name") == name]


def field_show(el: ET.Element, name: str) -> str | None:
    fs = fields(el, name)
    return fs[0].get("show") if fs else None


def show_int(el: ET.Element, name: str) -> int:
    s = field_show(el, name)
    assert s is not None, f"tshark gave no {name}"
    return int(s, 0)


def value_int(f: ET.Element) -> int:
    return int(f.get("value"), 16)


def first_value_int(el: ET.Element, name: str) -> int:
    fs = fields(el, name)
    assert fs, f"tshark gave no {name}"
    return value_int(fs[0])


# ---------------------------------------------------------------------------------------------
# tshark's view in our JSON shape

def tshark_rtp(frame: Frame) -> dict | None:
    """The RTP header as tshark decoded it, or None when it does not add up (malformed)."""
    p = frame.rtp
    if frame.malformed:
        return None
    version = show_int(p, "rtp.version")
    padding = field_show(p, "rtp.padding") == "1"
    cc = show_int(p, "rtp.cc")
    out = {
        "type": "rtp", "frame": frame.number, "version": version, "padding": padding,
        "marker": field_show(p, "rtp.marker") == "1", "payload_type": show_int(p, "rtp.p_type"),
        "sequence_number": show_int(p, "rtp.seq"), "timestamp": show_int(p, "rtp.timestamp"),
        "ssrc": first_value_int(p, "rtp.ssrc"),
        "csrcs": [value_int(f) for f in fields(p, "rtp.csrc.item")],
        "extensions": [],
    }
    assert len(out["csrcs"]) == cc
    header = 12 + 4 * cc
    if field_show(p, "rtp.ext") == "1":
        profile = first_value_int(p, "rtp.ext.profile")
        words = show_int(p, "rtp.ext.len")
        header += 4 + 4 * words
        if profile == 0xBEDE or profile >> 4 == 0x100:
            for f in p.iter("field"):
                name = f.get("name")
                if name == "rtp.ext.rfc5285.id":
                    out["extensions"].append({"id": int(f.get("show")), "length": None, "value_hex": ""})
                elif name == "rtp.ext.rfc5285.len":
                    out["extensions"][-1]["length"] = int(f.get("show"))
                elif name == "rtp.ext.rfc5285.data":
                    out["extensions"][-1]["value_hex"] = f.get("value")
            for e in out["extensions"]:
                assert e["length"] == len(e["value_hex"]) // 2, e
        else:
            block = "".join(f.get("value") for f in fields(p, "rtp.hdr_ext"))
            assert len(block) == 8 * words
            out["extensions"] = [{"id": 0, "length": 4 * words, "value_hex": block}]
    pad = show_int(p, "rtp.padding.count") if padding else 0
    size = frame.udp_payload - header - pad
    if size < 0 or (padding and pad == 0):
        return None
    payload = fields(p, "rtp.payload")
    if payload:
        assert int(payload[0].get("size")) == size, f"frame {frame.number}: tshark's own sizes disagree"
    out["payload_size"] = size
    return out


REPORT_KEYS = {
    "rtcp.ssrc.fraction": "fraction_lost", "rtcp.ssrc.cum_nr": "cumulative_lost",
    "rtcp.ssrc.ext_high": "highest_sequence", "rtcp.ssrc.jitter": "jitter",
    "rtcp.ssrc.lsr": "last_sr", "rtcp.ssrc.dlsr": "delay_since_last_sr",
}
TWCC_STATUS = {"Packet not received": 0, "Small Delta": 1, "Large or Negative Delta": 2}


class _Any:
    """tshark does not show this value (a status vector symbol past the packet status count)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()
TWCC_SYMBOL = {"N": 0, "R": 1, "NR": 0, "SD": 1, "LD": 2, "__": ANY}


def report_blocks(p: ET.Element) -> list[dict]:
    blocks = []
    for f in p.iter("field"):
        name = f.get("name")
        if name == "rtcp.ssrc.identifier":
            blocks.append({"ssrc": value_int(f)})
        elif name in REPORT_KEYS:
            blocks[-1][REPORT_KEYS[name]] = int(f.get("show"), 0)
    return blocks


def twcc_chunk(f: ET.Element) -> dict:
    text = f.get("showname")
    m = re.search(r"\[Run Length Chunk\] (.+?)\. Length : (\d+)", text)
    if m:
        return {"kind": "run_length", "status": TWCC_STATUS[m.group(1)], "run_length": int(m.group(2))}
    m = re.search(r"\[(1 bit|2 bits) Status Vector Chunk\]: \|(.*)\|", text)
    assert m, f"unexpected tshark chunk text: {text}"
    symbols = [TWCC_SYMBOL[s.strip()] for s in m.group(2).split("|")]
    return {"kind": "status_vector", "symbol_size": 1 if m.group(1) == "1 bit" else 2, "symbols": symbols}


def tshark_rtcp_packet(p: ET.Element) -> dict:
    """What tshark decodes of one RTCP packet, keyed like our output (a subset of our keys)."""
    pt = show_int(p, "rtcp.pt")
    out: dict = {"packet_type": pt}
    fmt_name = {205: "rtcp.rtpfb.fmt", 206: "rtcp.psfb.fmt"}.get(pt)
    fmt = show_int(p, fmt_name) if fmt_name else None
    top = p.findall("field")
    if pt == 200:
        out.update(name="sr", ssrc=first_value_int(p, "rtcp.senderssrc"),
                   ntp_time=(show_int(p, "rtcp.timestamp.ntp.msw") << 32) | show_int(p, "rtcp.timestamp.ntp.lsw"),
                   rtp_time=show_int(p, "rtcp.timestamp.rtp"),
                   packet_count=show_int(p, "rtcp.sender.packetcount"),
                   octet_count=show_int(p, "rtcp.sender.octetcount"), reports=report_blocks(p))
        assert len(out["reports"]) == show_int(p, "rtcp.rc")
    elif pt == 201:
        out.update(name="rr", ssrc=first_value_int(p, "rtcp.senderssrc"), reports=report_blocks(p))
        assert len(out["reports"]) == show_int(p, "rtcp.rc")
    elif pt == 202:
        chunks = []
        for f in p.iter("field"):
            name = f.get("name")
            if name == "rtcp.ssrc.identifier":
                chunks.append({"ssrc": value_int(f), "items": []})
            elif name == "rtcp.sdes.type" and f.get("show") != "0":
                chunks[-1]["items"].append({"type": int(f.get("show"))})
            elif name == "rtcp.sdes.text":
                chunks[-1]["items"][-1]["text"] = f.get("show")
        assert len(chunks) == show_int(p, "rtcp.sc")
        out.update(name="sdes", chunks=chunks)
    elif pt == 203:
        sources = [value_int(f) for f in fields(p, "rtcp.ssrc.identifier")]
        assert len(sources) == show_int(p, "rtcp.sc")
        out.update(name="bye", sources=sources, reason=field_show(p, "rtcp.sdes.text"))
    elif pt == 204:
        data = fields(p, "rtcp.app.data")
        out.update(name="app", subtype=show_int(p, "rtcp.app.subtype"),
                   ssrc=first_value_int(p, "rtcp.ssrc.identifier"), app_name=field_show(p, "rtcp.app.name"),
                   data_hex=data[0].get("value") if data else "")
    elif pt == 205 and fmt == 1:
        nacks, lost = [], []
        for f in top:
            if f.get("name") == "rtcp.rtpfb.nack_pid":
                nacks.append({"packet_id": int(f.get("show"))})
                lost.append(int(f.get("show")))
            elif f.get("name") == "rtcp.rtpfb.nack_blp":
                nacks[-1]["lost_bitmask"] = int(f.get("show"), 16)
                lost += [int(g.get("show")) & 0xFFFF for g in fields(f, "rtcp.rtpfb.nack_pid")]
        out.update(name="nack", fmt=1, sender_ssrc=first_value_int(p, "rtcp.senderssrc"),
                   media_ssrc=first_value_int(p, "rtcp.mediassrc"), nacks=nacks, lost=lost)
    elif pt == 205 and fmt == 15:
        count = show_int(p, "rtcp.rtpfb.transportcc.statuscount")
        chunks = [twcc_chunk(f) for f in fields(p, "rtcp.rtpfb.transportcc.pktchunk")]
        statuses = []
        for c in chunks:
            statuses += [c["status"]] * c["run_length"] if c["kind"] == "run_length" else c["symbols"]
        deltas = []
        for f in fields(p, "rtcp.rtpfb.transportcc.recv_delta"):
            raw = bytes.fromhex(f.get("value"))
            deltas.append(raw[0] if len(raw) == 1 else struct.unpack("!h", raw)[0])
        out.update(name="twcc", fmt=15, sender_ssrc=first_value_int(p, "rtcp.senderssrc"),
                   media_ssrc=first_value_int(p, "rtcp.mediassrc"),
                   base_sequence_number=show_int(p, "rtcp.rtpfb.transportcc.baseseq"),
                   packet_status_count=count,
                   reference_time=show_int(p, "rtcp.rtpfb.transportcc.reftime"),
                   feedback_packet_count=show_int(p, "rtcp.rtpfb.transportcc.pktcount"),
                   chunks=chunks, statuses=statuses[:count], recv_deltas=deltas)
    elif pt == 206 and fmt == 1:
        out.update(name="pli", fmt=1, sender_ssrc=first_value_int(p, "rtcp.senderssrc"),
                   media_ssrc=first_value_int(p, "rtcp.mediassrc"))
    elif pt == 206 and fmt == 4:
        entries = [{"ssrc": value_int(s), "sequence_number": int(n.get("show"))} for s, n in
                   zip(fields(p, "rtcp.psfb.fir.fci.ssrc"), fields(p, "rtcp.psfb.fir.fci.csn"))]
        out.update(name="fir", fmt=4, sender_ssrc=first_value_int(p, "rtcp.senderssrc"),
                   media_ssrc=first_value_int(p, "rtcp.mediassrc"), entries=entries)
    elif pt == 206 and fmt == 15 and field_show(p, "rtcp.psfb.remb.identifier") == "REMB":
        bitrate = re.search(r"Maximum bit rate: (\d+)", fields(p, "rtcp.psfb.remb.fci.bitrate")[0].get("showname"))
        ssrcs = [value_int(f) for f in fields(p, "rtcp.psfb.remb.fci.ssrc")]
        assert len(ssrcs) == show_int(p, "rtcp.psfb.remb.fci.number_ssrcs")
        out.update(name="remb", fmt=15, sender_ssrc=first_value_int(p, "rtcp.senderssrc"),
                   media_ssrc=first_value_int(p, "rtcp.mediassrc"), bitrate=int(bitrate.group(1)),
                   exponent=show_int(p, "rtcp.psfb.remb.fci.br_exp"),
                   mantissa=show_int(p, "rtcp.psfb.remb.fci.br_mantissa"), ssrcs=ssrcs)
    elif pt == 207:
        blocks = []
        for b in top:
            if not (b.get("show") or "").startswith("Block "):
                continue
            bt = show_int(b, "rtcp.xr.bt")
            if bt == 4:
                blocks.append({"block_type": 4, "ntp_time": first_value_int(b, "rtcp.xr.timestamp")})
            elif bt == 5:
                items = [{"ssrc": value_int(s), "last_rr": int(l.get("show")), "delay_since_last_rr": int(d.get("show"))}
                         for s, l, d in zip(fields(b, "rtcp.ssrc.identifier"), fields(b, "rtcp.xr.lrr"),
                                            fields(b, "rtcp.xr.dlrr"))]
                blocks.append({"block_type": 5, "items": items})
            else:
                contents = [f for f in b.findall("field") if f.get("show") == "Contents"]
                blocks.append({"block_type": bt, "type_specific": show_int(b, "rtcp.xr.bs"),
                               "data_hex": contents[0].get("value") if contents else ""})
        out.update(name="xr", ssrc=first_value_int(p, "rtcp.senderssrc"), blocks=blocks)
    else:
        # Not one of the named forms (tshark may still know it, e.g. PT 210 port mapping or
        # RTPFB TMMBR): we print it as `unknown` with the count/FMT field and the raw body.
        count_field = next((f for f in top if f.get("name") in
                            ("rtcp.rc", "rtcp.sc", "rtcp.app.subtype", "rtcp.rtpfb.fmt", "rtcp.psfb.fmt")), None)
        out["name"] = "unknown"
        if count_field is not None:
            out["count"] = int(count_field.get("show"))
        first_ssrc = next((f for f in top if f.get("name") in
                           ("rtcp.ssrc.identifier", "rtcp.senderssrc")), None)
        if first_ssrc is not None:
            out["data_hex_prefix"] = first_ssrc.get("value")
    return out


# ---------------------------------------------------------------------------------------------
# Comparing

class Tally:
    def __init__(self) -> None:
        self.rtp = self.rtcp_packets = self.other = self.fields = 0
        self.kinds: set[str] = set()


def compare_rtcp_packet(ours: dict, theirs: dict, where: str, tally: Tally) -> None:
    theirs = dict(theirs)
    prefix = theirs.pop("data_hex_prefix", None)
    if prefix is not None:
        assert ours.get("data_hex", "").startswith(prefix), f"{where}: ours {ours}, tshark {prefix}"
        tally.fields += 1
    for key, value in theirs.items():
        assert key in ours, f"{where}: ours has no {key!r}: {ours}"
        assert value == ours[key], f"{where}: {key}: ours {ours[key]!r}, tshark {value!r}\nours {ours}\ntshark {theirs}"
        tally.fields += 1
    tally.rtcp_packets += 1
    tally.kinds.add(ours["name"])


def compare_capture(ours: list[dict], frames: dict[int, Frame], *, srtcp: bool = False) -> Tally:
    """Every UDP frame tshark sees is printed by us with the same number and agrees field by field."""
    by_frame = {o["frame"]: o for o in ours}
    udp_frames = {n for n, f in frames.items() if f.udp_ports is not None and not f.fragment}
    assert set(by_frame) == udp_frames, (
        f"frames only in ours: {sorted(set(by_frame) - udp_frames)[:20]}, "
        f"only in tshark: {sorted(udp_frames - set(by_frame))[:20]}")
    tally = Tally()
    for n in sorted(udp_frames):
        fr, o = frames[n], by_frame[n]
        where = f"frame {n}"
        if fr.rtcp:
            # tshark stopped early, or left bytes over: not a whole compound
            whole = sum(int(p.get("size")) for p in fr.rtcp) == fr.udp_payload
            if srtcp or fr.malformed or not whole:
                assert o["type"] == "other" and o.get("error"), f"{where}: expected other+error, ours {o}"
                assert o["size"] == fr.udp_payload
                tally.other += 1
                continue
            assert o["type"] == "rtcp", f"{where}: tshark says RTCP, ours {o}"
            assert len(o["packets"]) == len(fr.rtcp), f"{where}: packet count, ours {o}"
            for i, (ours_p, p) in enumerate(zip(o["packets"], fr.rtcp)):
                compare_rtcp_packet(ours_p, tshark_rtcp_packet(p), f"{where} packet {i}", tally)
        elif fr.rtp is not None and field_show(fr.rtp, "rtp.version") == "2":
            theirs = tshark_rtp(fr)
            if theirs is None:
                assert o["type"] == "other" and o.get("error"), f"{where}: expected other+error, ours {o}"
                assert o["size"] == fr.udp_payload
                tally.other += 1
                continue
            assert o == theirs, f"{where}:\nours   {o}\ntshark {theirs}"
            tally.rtp += 1
            tally.fields += len(theirs)
        elif fr.malformed:
            # tshark's RTP dissector gave up before the end of the fixed header
            assert o["type"] == "other" and o.get("error"), f"{where}: expected other+error, ours {o}"
            assert o["size"] == fr.udp_payload
            tally.other += 1
        else:
            assert o["type"] == "other", f"{where}: tshark does not see RTP/RTCP, ours {o}"
            assert o["size"] == fr.udp_payload and "error" not in o, f"{where}: ours {o}"
            tally.other += 1
    return tally


# ---------------------------------------------------------------------------------------------
# Real captures

def test_ffmpeg_capture_matches_tshark(sfu_bin):
    ours = run_inspect(sfu_bin, FFMPEG)
    frames = tshark_frames(FFMPEG, FFMPEG_DECODE)
    tally = compare_capture(ours, frames)
    assert tally.rtp > 200, vars(tally)
    assert tally.rtcp_packets >= 8 and {"sr", "sdes", "bye"} <= tally.kinds, vars(tally)
    assert tally.other == 0, "ffmpeg sends nothing but RTP and RTCP"
    rtp = [o for o in ours if o["type"] == "rtp"]
    assert {o["payload_type"] for o in rtp} == {96, 111}
    assert {o["ssrc"] for o in rtp} == {287454020, 1432778632}
    assert any(o["marker"] for o in rtp if o["payload_type"] == 96)
    # the RTCP the muxer wrote: SR + SDES CNAME, and SR + SDES + BYE at the end
    rtcp = [o for o in ours if o["type"] == "rtcp"]
    cnames = {i["text"] for o in rtcp for p in o["packets"] if p["name"] == "sdes"
              for c in p["chunks"] for i in c["items"] if i["type"] == 1}
    assert cnames == {"video@ffmpeg.fixture", "audio@ffmpeg.fixture"}
    byes = [p for o in rtcp for p in o["packets"] if p["name"] == "bye"]
    assert sorted(s for b in byes for s in b["sources"]) == [287454020, 1432778632]


def chromium_ports() -> set[int]:
    r = subprocess.run([tshark_bin(), "-n", "-r", str(CHROMIUM), "-T", "fields", "-e", "udp.srcport",
                        "-e", "udp.dstport"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ports = {int(p) for line in r.stdout.split() for p in line.split(",") if p}
    assert len(ports) == 2, f"expected one port pair (bundle + rtcp-mux), got {ports}"
    return ports


def test_chromium_capture_matches_tshark(sfu_bin):
    ours = run_inspect(sfu_bin, CHROMIUM)
    frames = tshark_frames(CHROMIUM, {p: "rtp" for p in chromium_ports()})
    tally = compare_capture(ours, frames, srtcp=True)
    assert tally.rtp > 300, vars(tally)
    rtp = [o for o in ours if o["type"] == "rtp"]
    # SRTP leaves the header (and its extensions) in the clear: Chromium's one-byte extensions
    assert sum(1 for o in rtp if o["extensions"]) > 300
    assert {e["id"] for o in rtp for e in o["extensions"]} >= {1, 2, 3}
    # SRTCP: the first packet's header is plain, the rest is ciphertext plus the SRTCP index and
    # tag, so none of it parses as a compound
    srtcp = [n for n, f in frames.items() if f.rtcp]
    assert len(srtcp) > 20
    assert all(o["type"] == "other" and o.get("error") for o in ours if o["frame"] in srtcp)
    assert not [o for o in ours if o["type"] == "rtcp"]
    # STUN (0-3) and DTLS (20-63) are other without error
    stun_dtls = [o for o in ours if o["type"] == "other" and "error" not in o]
    assert len(stun_dtls) >= 10


# ---------------------------------------------------------------------------------------------
# Synthetic file

def load_expected() -> list[dict]:
    return [json.loads(line) for line in EXPECTED.read_text().splitlines() if line.strip()]


def match_expected(ours: list[dict], expected: list[dict]) -> None:
    """Every difference at once, not just the first."""
    diffs = []
    ours_by_frame = {o["frame"]: o for o in ours}
    for e in expected:
        o = ours_by_frame.pop(e["frame"], None)
        if o is None:
            diffs.append(f"frame {e['frame']}: not printed; expected {json.dumps(e)}")
            continue
        if e.get("error") == NONEMPTY and isinstance(o.get("error"), str) and o["error"]:
            o = {**o, "error": NONEMPTY}
        if o != e:
            diffs.append(f"frame {e['frame']}:\n  ours     {json.dumps(o)}\n  expected {json.dumps(e)}")
    for o in ours_by_frame.values():
        diffs.append(f"frame {o['frame']}: printed but not expected: {json.dumps(o)}")
    assert not diffs, f"{len(diffs)} frame(s) differ:\n" + "\n".join(diffs)


@pytest.mark.parametrize("name", SYNTHETIC_VARIANTS)
def test_synthetic_matches_expected(sfu_bin, name):
    expected = load_expected()
    assert len(expected) > 30
    match_expected(run_inspect(sfu_bin, PCAP / name), expected)


def test_synthetic_covers_every_form():
    expected = load_expected()
    names = [p["name"] for e in expected if e["type"] == "rtcp" for p in e["packets"]]
    assert set(names) == {"sr", "rr", "sdes", "bye", "app", "nack", "twcc", "pli", "fir", "remb", "xr", "unknown"}
    chunks = {(c["kind"], c.get("symbol_size")) for e in expected if e["type"] == "rtcp"
              for p in e["packets"] if p["name"] == "twcc" for c in p["chunks"]}
    assert chunks == {("run_length", None), ("status_vector", 1), ("status_vector", 2)}


def test_synthetic_matches_tshark(sfu_bin):
    ours = run_inspect(sfu_bin, SYNTHETIC)
    frames = tshark_frames(SYNTHETIC, SYNTHETIC_DECODE)
    tally = compare_capture(ours, frames)
    assert tally.kinds == {"sr", "rr", "sdes", "bye", "app", "nack", "twcc", "pli", "fir", "remb", "xr", "unknown"}
    expected = load_expected()
    assert tally.rtp == sum(1 for e in expected if e["type"] == "rtp"), vars(tally)
    assert tally.rtcp_packets == sum(len(e["packets"]) for e in expected if e["type"] == "rtcp"), vars(tally)
    assert tally.fields > 200, vars(tally)


# ---------------------------------------------------------------------------------------------
# --udp-port and failures

def test_udp_port_filter_keeps_frame_numbers(sfu_bin):
    everything = run_inspect(sfu_bin, SYNTHETIC)
    frames = tshark_frames(SYNTHETIC, {})
    for ports in [(50001,), (3478, 50000), (40003,)]:
        kept = run_inspect(sfu_bin, SYNTHETIC, *ports)
        want = [o for o in everything if set(frames[o["frame"]].udp_ports) & set(ports)]
        assert kept == want, ports
        assert want and len(want) < len(everything)
    # RTCP both ways: 40001 -> 50001 and 50001 -> 40001
    assert len({frames[o["frame"]].udp_ports for o in run_inspect(sfu_bin, SYNTHETIC, 50001)}) == 2
    assert run_inspect(sfu_bin, SYNTHETIC, 9) == []

    audio = run_inspect(sfu_bin, FFMPEG, 5006)
    assert len(audio) > 100
    assert {o["payload_type"] for o in audio} == {111}
    ff = tshark_frames(FFMPEG, {})
    assert [o["frame"] for o in audio] == sorted(n for n, f in ff.items() if 5006 in f.udp_ports)


def run_failing(sfu_bin, path: pathlib.Path) -> subprocess.CompletedProcess:
    r = subprocess.run([str(sfu_bin), "inspect", "pcap", str(path)], capture_output=True, timeout=60)
    assert r.returncode > 0, f"{path.name}: exit {r.returncode} (negative = killed by a signal)"
    assert r.stderr.strip(), f"{path.name}: no message on stderr"
    return r


def test_bad_inputs_fail_with_message(sfu_bin, tmp_path):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all\n" * 4)
    run_failing(sfu_bin, junk)

    run_failing(sfu_bin, tmp_path / "missing.pcap")

    short = tmp_path / "short.pcap"
    short.write_bytes(SYNTHETIC.read_bytes()[:10])
    run_failing(sfu_bin, short)

    pcapng = tmp_path / "synthetic.pcapng"
    r = subprocess.run([tshark_bin(), "-r", str(SYNTHETIC), "-F", "pcapng", "-w", str(pcapng)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and pcapng.exists()
    run_failing(sfu_bin, pcapng)

    # the same file with link type 147 (DLT_USER0) in its header
    data = bytearray(SYNTHETIC.read_bytes())
    assert struct.unpack_from("<I", data, 20)[0] == 1
    struct.pack_into("<I", data, 20, 147)
    user0 = tmp_path / "user0.pcap"
    user0.write_bytes(bytes(data))
    r = run_failing(sfu_bin, user0)
    assert b"147" in r.stderr or b"link" in r.stderr.lower(), r.stderr


def test_output_objects_have_unique_keys(sfu_bin):
    """A JSON object with a repeated key loses one value in most parsers (Python keeps the last)."""
    DUPLICATE_KEYS.clear()
    for path in [SYNTHETIC, FFMPEG, CHROMIUM]:
        run_inspect(sfu_bin, path)
    assert not DUPLICATE_KEYS, f"repeated keys (file, key): {sorted(set(DUPLICATE_KEYS))}"
