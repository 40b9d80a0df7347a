import Testing
import TestSupport
@testable import RTP

/// Builds classic pcap files in memory, the way libpcap writes them.
struct PcapBuilder {
    var bigEndian = false
    var nanoseconds = false
    var linkType: UInt32 = 1
    var records: [[UInt8]] = []

    func u32(_ v: UInt32) -> [UInt8] {
        let be = [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
        return bigEndian ? be : be.reversed()
    }
    func u16(_ v: UInt16) -> [UInt8] { bigEndian ? [UInt8(v >> 8), UInt8(v & 0xff)] : [UInt8(v & 0xff), UInt8(v >> 8)] }

    static func udp(_ payload: [UInt8], sport: UInt16, dport: UInt16) -> [UInt8] {
        let len = UInt16(8 + payload.count)
        return [UInt8(sport >> 8), UInt8(sport & 0xff), UInt8(dport >> 8), UInt8(dport & 0xff), UInt8(len >> 8), UInt8(len & 0xff), 0, 0] + payload
    }

    static func ipv4(_ udp: [UInt8], protocol proto: UInt8 = 17, fragment: UInt16 = 0x4000) -> [UInt8] {
        let total = UInt16(20 + udp.count)
        return [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, UInt8(fragment >> 8), UInt8(fragment & 0xff), 64, proto, 0, 0,
                127, 0, 0, 1, 127, 0, 0, 1] + udp
    }

    static func ipv6(_ udp: [UInt8]) -> [UInt8] {
        let len = UInt16(udp.count)
        return [0x60, 0, 0, 0, UInt8(len >> 8), UInt8(len & 0xff), 17, 64] + [UInt8](repeating: 0, count: 15) + [1] + [UInt8](repeating: 0, count: 15) + [1] + udp
    }

    mutating func add(frame: [UInt8]) { records.append(frame) }

    var bytes: [UInt8] {
        let magic: UInt32 = nanoseconds ? 0xA1B2_3C4D : 0xA1B2_C3D4
        var out = u32(magic) + u16(2) + u16(4) + u32(0) + u32(0) + u32(65535) + u32(linkType)
        for (i, r) in records.enumerated() {
            out += u32(UInt32(1_700_000_000 + i)) + u32(nanoseconds ? 500_000_000 : 500_000) + u32(UInt32(r.count)) + u32(UInt32(r.count)) + r
        }
        return out
    }
}

@Suite("pcap reader and sfu inspect output")
struct CaptureTests {
    static let rtp: [UInt8] = RTPPacket(payloadType: 96, sequenceNumber: 7, timestamp: 9, ssrc: 11, marker: true, payload: [1, 2, 3]).serialized()

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func ethernetInBothByteOrdersAndResolutions(bigEndian: Bool, nanoseconds: Bool) throws {
        var b = PcapBuilder(bigEndian: bigEndian, nanoseconds: nanoseconds, linkType: 1)
        let ethernet = [UInt8](repeating: 0, count: 12) + [0x08, 0x00]
        b.add(frame: ethernet + PcapBuilder.ipv4(PcapBuilder.udp(Self.rtp, sport: 5004, dport: 6000)))
        b.add(frame: ethernet + PcapBuilder.ipv4([0, 0, 0, 0], protocol: 6))  // TCP: skipped
        b.add(frame: [UInt8](repeating: 0, count: 12) + [0x81, 0x00, 0x00, 0x05, 0x08, 0x00] + PcapBuilder.ipv4(PcapBuilder.udp([0x16], sport: 1, dport: 2)))  // VLAN
        let file = try PcapFile(bytes: b.bytes)
        #expect(file.linkType == .ethernet && file.bigEndian == bigEndian && file.nanosecondResolution == nanoseconds)
        let frames = Array(file.frames)
        #expect(frames.map(\.index) == [1, 2, 3])
        #expect(frames[0].seconds == 1_700_000_000 && frames[0].nanoseconds == 500_000_000)
        let datagrams = frames.compactMap(file.udpDatagram(in:))
        #expect(datagrams.map(\.frame) == [1, 3])
        #expect(datagrams[0].sourcePort == 5004 && datagrams[0].destinationPort == 6000)
        #expect(Array(datagrams[0].payload) == Self.rtp)
        #expect(Array(datagrams[1].payload) == [0x16])
    }

    @Test func otherLinkTypes() throws {
        let udp = PcapBuilder.udp(Self.rtp, sport: 1, dport: 2)
        let cases: [(UInt32, [UInt8])] = [
            (0, [2, 0, 0, 0] + PcapBuilder.ipv4(udp)),  // Null, IPv4, little-endian family
            (0, [0, 0, 0, 30] + PcapBuilder.ipv6(udp)),  // Null, IPv6 (AF_INET6 = 30 on macOS), big-endian family
            (101, PcapBuilder.ipv4(udp)),
            (101, PcapBuilder.ipv6(udp)),
            (228, PcapBuilder.ipv4(udp)),
            (229, PcapBuilder.ipv6(udp)),
            (113, [0, 0, 3, 4, 0, 6] + [UInt8](repeating: 0, count: 8) + [0x08, 0x00] + PcapBuilder.ipv4(udp)),
            (276, [0x86, 0xDD, 0, 0] + [UInt8](repeating: 0, count: 16) + PcapBuilder.ipv6(udp)),
        ]
        for (link, frame) in cases {
            var b = PcapBuilder(linkType: link)
            b.add(frame: frame)
            let file = try PcapFile(bytes: b.bytes)
            let datagrams = Array(file.frames).compactMap(file.udpDatagram(in:))
            #expect(datagrams.count == 1, "link type \(link)")
            #expect(datagrams.first.map { Array($0.payload) } == Self.rtp, "link type \(link)")
        }
    }

    @Test func rejectsWhatItCannotRead() {
        #expect(throws: PcapFile.Error.notPcap) { try PcapFile(bytes: Array("not a pcap at all, just some text".utf8)) }
        #expect(throws: PcapFile.Error.notPcap) { try PcapFile(bytes: [0x0A, 0x0D, 0x0D, 0x0A] + [UInt8](repeating: 0, count: 40)) }  // pcapng
        #expect(throws: PcapFile.Error.truncatedHeader) { try PcapFile(bytes: [0xD4, 0xC3, 0xB2, 0xA1, 2, 0]) }
        var b = PcapBuilder(linkType: 147)
        b.add(frame: [1, 2, 3])
        #expect(throws: PcapFile.Error.unsupportedLinkType(147)) { try PcapFile(bytes: b.bytes) }
    }

    @Test func skipsFragmentsAndStopsAtATruncatedRecord() throws {
        var b = PcapBuilder(linkType: 101)
        b.add(frame: PcapBuilder.ipv4(PcapBuilder.udp(Self.rtp, sport: 1, dport: 2), fragment: 0x2000))  // more fragments
        b.add(frame: PcapBuilder.ipv4(PcapBuilder.udp(Self.rtp, sport: 1, dport: 2)))
        b.add(frame: PcapBuilder.ipv4(PcapBuilder.udp(Self.rtp, sport: 1, dport: 2)))
        let bytes = Array(b.bytes.dropLast(5))
        let file = try PcapFile(bytes: bytes)
        var iterator = file.frames
        var frames: [PcapFile.Frame] = []
        while let f = iterator.next() { frames.append(f) }
        #expect(frames.count == 2 && iterator.truncated && iterator.count == 2)
        #expect(!{ var all = try! PcapFile(bytes: b.bytes).frames; while all.next() != nil {}; return all.truncated }())
        #expect(frames.compactMap(file.udpDatagram(in:)).map(\.frame) == [2])
    }

    /// Random bytes after a valid header never trap the reader.
    @Test func randomCapturesNeverTrap() throws {
        var rng = SeededGenerator(seed: 7)
        for link: UInt32 in [0, 1, 101, 113, 228, 229, 276] {
            for _ in 0..<300 {
                var b = PcapBuilder(linkType: link)
                for _ in 0..<5 {
                    var frame = PcapBuilder.ipv4(PcapBuilder.udp(randomBytes(.random(in: 0...40, using: &rng), using: &rng), sport: 1, dport: 2))
                    frame = randomBytes(.random(in: 0...24, using: &rng), using: &rng) + frame
                    if Bool.random(using: &rng) { frame[Int.random(in: 0..<frame.count, using: &rng)] = .random(in: 0...255, using: &rng) }
                    b.add(frame: Array(frame.prefix(.random(in: 0...frame.count, using: &rng))))
                }
                let file = try PcapFile(bytes: b.bytes)
                for frame in file.frames {
                    if let d = file.udpDatagram(in: frame) { _ = PacketInspector.describe(d.payload, frame: d.frame) }
                }
            }
        }
    }

    @Test func describesRTPAsSpecified() throws {
        #expect(PacketInspector.describe(ChromiumVectors.rtpOneByte, frame: 4) == """
            {"type":"rtp","frame":4,"version":2,"padding":false,"marker":false,"payload_type":45,"sequence_number":6751,\
            "timestamp":3557360969,"ssrc":4155600515,"csrcs":[],"extensions":[{"id":2,"length":3,"value_hex":"f34350"},\
            {"id":4,"length":2,"value_hex":"009b"},{"id":13,"length":3,"value_hex":"810045"}],"payload_size":0}
            """)
        var p = RTPPacket(payloadType: 111, sequenceNumber: 1, timestamp: 2, ssrc: 3, csrcs: [4, 5], payload: [0, 0, 0])
        p.setPadding(count: 4)
        #expect(PacketInspector.describe(p.serialized(), frame: 1) == """
            {"type":"rtp","frame":1,"version":2,"padding":true,"marker":false,"payload_type":111,"sequence_number":1,\
            "timestamp":2,"ssrc":3,"csrcs":[4,5],"extensions":[],"payload_size":3}
            """)
    }

    @Test func describesRTCPAsSpecified() {
        #expect(PacketInspector.describe(RTCPTests.senderReportCompound, frame: 2) == """
            {"type":"rtcp","frame":2,"packets":[{"packet_type":200,"name":"sr","ssrc":2419039790,"ntp_time":15747911406015339997,\
            "rtp_time":90000,"packet_count":88,"octet_count":6672,"reports":[{"ssrc":3160316480,"fraction_lost":1,\
            "cumulative_lost":5,"highest_sequence":3000,"jitter":7,"last_sr":287454020,"delay_since_last_sr":258}]},\
            {"packet_type":202,"name":"sdes","chunks":[{"ssrc":2419039790,"items":[{"type":1,"text":"mycamera-cname-123"}]}]}]}
            """)
        #expect(PacketInspector.describe(ChromiumVectors.twccPadded, frame: 9) == """
            {"type":"rtcp","frame":9,"packets":[{"packet_type":205,"name":"twcc","fmt":15,"sender_ssrc":1,"media_ssrc":3713560246,\
            "base_sequence_number":1,"packet_status_count":9,"reference_time":6197520,"feedback_packet_count":0,\
            "chunks":[{"kind":"run_length","status":1,"run_length":9}],"statuses":[1,1,1,1,1,1,1,1,1],\
            "recv_deltas":[28,12,44,56,0,4,0,8,24]}]}
            """)
        #expect(PacketInspector.describe([UInt8](hex: "81cd0003 00000001 00000002 03e80005"), frame: 3) == """
            {"type":"rtcp","frame":3,"packets":[{"packet_type":205,"name":"nack","fmt":1,"sender_ssrc":1,"media_ssrc":2,\
            "nacks":[{"packet_id":1000,"lost_bitmask":5}],"lost":[1000,1001,1003]}]}
            """)
        #expect(PacketInspector.describe([UInt8](hex: "81cb0001 00000001"), frame: 1) == """
            {"type":"rtcp","frame":1,"packets":[{"packet_type":203,"name":"bye","sources":[1],"reason":null}]}
            """)
        #expect(PacketInspector.describe([UInt8](hex: "83d20002 00000001 00000002"), frame: 1) == """
            {"type":"rtcp","frame":1,"packets":[{"packet_type":210,"name":"unknown","count":3,"data_hex":"0000000100000002"}]}
            """)
    }

    @Test func describesEverythingElseAsOther() {
        #expect(PacketInspector.describe([0x00, 0x01, 0x00, 0x00], frame: 5) == #"{"type":"other","frame":5,"size":4}"#)
        #expect(PacketInspector.describe([UInt8](), frame: 6) == #"{"type":"other","frame":6,"size":0}"#)
        #expect(PacketInspector.describe([0x80, 0x60, 0x00], frame: 7) ==
            #"{"type":"other","frame":7,"size":3,"error":"RTP: truncated (needs 12 bytes, has 3)"}"#)
        #expect(PacketInspector.describe([UInt8](hex: "81c90003 00000001"), frame: 8) ==
            #"{"type":"other","frame":8,"size":8,"error":"RTCP: truncated (needs 16 bytes, has 8)"}"#)
        // Strings are escaped.
        let sdes = RTCPCompound.serialize([.sourceDescription(SourceDescription(ssrc: 1, cname: "a\"b\\c\u{1}"))])
        #expect(PacketInspector.describe(sdes, frame: 1).contains(#""text":"a\"b\\c\u0001""#))
    }
}
