import Testing
import TestSupport
@testable import RTP

@Suite("RTCP packets")
struct RTCPTests {
    /// SR with one report block, then SDES CNAME: the shape of every compound packet a browser sends.
    static let senderReportCompound: [UInt8] = [UInt8](hex: """
        81c8000c 902f9e2e da8bd1fc dddddddd 00015f90 00000058 00001a10
        bc5e9a40 01000005 00000bb8 00000007 11223344 00000102
        81ca0007 902f9e2e 01126d79 63616d65 72612d63 6e616d65 2d313233 00000000
        """)

    @Test func parsesSenderReportAndSDES() throws {
        let packets = try RTCPCompound.parse(Self.senderReportCompound)
        #expect(packets.count == 2)
        guard case .senderReport(let sr) = packets[0], case .sourceDescription(let sdes) = packets[1] else {
            Issue.record("wrong packet kinds: \(packets)")
            return
        }
        #expect(sr.ssrc == 0x902f_9e2e)
        #expect(sr.ntpTime == 0xda8b_d1fc_dddd_dddd)
        #expect(sr.ntpMiddle == 0xd1fc_dddd)
        #expect(sr.rtpTime == 90_000)
        #expect(sr.packetCount == 88)
        #expect(sr.octetCount == 6672)
        #expect(sr.reports == [ReceptionReport(ssrc: 0xbc5e_9a40, fractionLost: 1, cumulativeLost: 5, highestSequence: 3000,
                                               jitter: 7, lastSR: 0x1122_3344, delaySinceLastSR: 0x102)])
        #expect(sdes.chunks == [SourceDescription.Chunk(ssrc: 0x902f_9e2e, items: [SourceDescription.Item(type: 1, text: "mycamera-cname-123")])])
        #expect(RTCPCompound.serialize(packets) == Self.senderReportCompound)
    }

    @Test func negativeCumulativeLostIsSignExtended() throws {
        let rr = RTCPPacket.receiverReport(ReceiverReport(ssrc: 1, reports: [ReceptionReport(ssrc: 2, cumulativeLost: -3)]))
        let bytes = RTCPCompound.serialize([rr])
        #expect(Array(bytes[12...15]) == [0x00, 0xFF, 0xFF, 0xFD])
        #expect(try RTCPCompound.parse(bytes) == [rr])
    }

    @Test func parsesChromiumTransportCCWithPadding() throws {
        let packets = try RTCPCompound.parse(ChromiumVectors.twccPadded)
        guard case .transportCC(let cc) = packets.first, packets.count == 1 else {
            Issue.record("not transport-cc: \(packets)")
            return
        }
        #expect(cc.senderSSRC == 1)
        #expect(cc.mediaSSRC == 0xdd58_6eb6)
        #expect(cc.baseSequenceNumber == 1)
        #expect(cc.packetStatusCount == 9)
        #expect(cc.referenceTime == 6_197_520)
        #expect(cc.feedbackPacketCount == 0)
        #expect(cc.chunks == [.runLength(status: 1, length: 9)])
        #expect(cc.statuses == [UInt8](repeating: 1, count: 9))
        #expect(cc.recvDeltas == [0x1c, 0x0c, 0x2c, 0x38, 0x00, 0x04, 0x00, 0x08, 0x18])
    }

    /// The examples of draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1.3/3.1.4.
    @Test func transportCCChunkEncodings() throws {
        let cc = TransportLayerCC(
            senderSSRC: 0x1234, mediaSSRC: 0x5678, baseSequenceNumber: 65530, packetStatusCount: 14 + 7 + 221 + 1,
            referenceTime: -2, feedbackPacketCount: 9,
            chunks: [
                .statusVector(twoBit: false, statuses: [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1]),
                .statusVector(twoBit: true, statuses: [0, 2, 1, 1, 0, 0, 1]),
                .runLength(status: 0, length: 221),
                .runLength(status: 2, length: 1),
            ],
            recvDeltas: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -300, 11, 12, 13, 32767])
        var bytes: [UInt8] = []
        cc.serialize(into: &bytes)
        // Chunk words as in the draft: 0x9F1F is the one-bit vector example, 0x00DD a 221 run of "not received".
        #expect(Array(bytes[20...21]) == [0x9F, 0x1F])
        #expect(Array(bytes[22...23]) == [0xC9, 0x41])
        #expect(Array(bytes[24...25]) == [0x00, 0xDD])
        #expect(Array(bytes[26...27]) == [0x40, 0x01])
        #expect(bytes.count % 4 == 0)
        let back = try RTCPCompound.parse(bytes)
        #expect(back == [.transportCC(cc)])
        #expect(cc.statuses.count == 243)
        #expect(TransportLayerCC.Chunk(decoding: 0x9F1F) == .statusVector(twoBit: false, statuses: [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1]))
        #expect(TransportLayerCC.Chunk(decoding: 0xCD50) == .statusVector(twoBit: true, statuses: [0, 3, 1, 1, 1, 0, 0]))
        #expect(TransportLayerCC.Chunk(decoding: 0x00DD) == .runLength(status: 0, length: 221))
        #expect(TransportLayerCC.Chunk(decoding: 0x6018) == .runLength(status: 3, length: 24))
    }

    @Test func transportCCRejectsReservedAndShortDeltas() {
        // One status, "reserved" (3).
        let cc = TransportLayerCC(senderSSRC: 1, mediaSSRC: 2, baseSequenceNumber: 0, packetStatusCount: 1, referenceTime: 0,
                                  feedbackPacketCount: 0, chunks: [.runLength(status: 3, length: 1)], recvDeltas: [])
        var bytes: [UInt8] = []
        cc.serialize(into: &bytes)
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse(bytes) }
        // Claims 30 small-delta packets (one run-length chunk 0x201e), carries 2 bytes of deltas.
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse([UInt8](hex: "8fcd0005 00000001 00000002 0000001e 00000000 201e0000")) }
        // A zero-length run would never end the status list.
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse([UInt8](hex: "8fcd0005 00000001 00000002 00000001 00000000 00000000")) }
    }

    /// A REMB's 6-bit exponent shifts an 18-bit mantissa up to 2^81: every exponent reads as the
    /// exact value while it fits in 64 bits, and as UInt64.max beyond (it trapped, or wrapped to
    /// a small rate, before).
    @Test func rembBitrateSaturates() throws {
        for exponent in UInt8(0)...63 {
            for mantissa: UInt32 in [0, 1, 0x2_0000, 0x3_FFFF] {
                let bytes = [UInt8](hex: "8fce0005 00000001 00000000 52454d42") + [1, exponent << 2 | UInt8(mantissa >> 16), UInt8(mantissa >> 8 & 0xFF), UInt8(mantissa & 0xFF)]
                    + [0, 0, 0, 11]
                guard case .remb(let remb) = try RTCPCompound.parse(bytes).first else { Issue.record("not REMB"); return }
                let exact = UInt64(mantissa).multipliedFullWidth(by: UInt64(1) << exponent)
                let expected = exact.high == 0 ? exact.low : UInt64.max
                #expect(remb.bitrate == expected, "exponent \(exponent) mantissa \(mantissa)")
            }
        }
    }

    @Test func transportCCStatusCountIsBounded() throws {
        // 65,535 "not received" statuses in eight run-length chunks of 8,191 (+7): 40 bytes that
        // would make the sender walk 65,535 entries.
        let chunks = [TransportLayerCC.Chunk](repeating: .runLength(status: 0, length: 8191), count: 8) + [.runLength(status: 0, length: 7)]
        let flood = TransportLayerCC(senderSSRC: 1, mediaSSRC: 2, baseSequenceNumber: 0, packetStatusCount: 65535, referenceTime: 0,
                                     feedbackPacketCount: 0, chunks: chunks, recvDeltas: [])
        var bytes: [UInt8] = []
        flood.serialize(into: &bytes)
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse(bytes) }
        // At the bound it still parses.
        let most = TransportLayerCC(senderSSRC: 1, mediaSSRC: 2, baseSequenceNumber: 0, packetStatusCount: UInt16(TransportLayerCC.maxPacketStatusCount),
                                    referenceTime: 0, feedbackPacketCount: 0, chunks: [.runLength(status: 0, length: 8191), .runLength(status: 0, length: 1)],
                                    recvDeltas: [])
        bytes = []
        most.serialize(into: &bytes)
        guard case .transportCC(let parsed) = try RTCPCompound.parse(bytes).first else { Issue.record("not transport-cc"); return }
        #expect(parsed.statuses.count == TransportLayerCC.maxPacketStatusCount)
    }

    @Test func feedbackMessages() throws {
        // RFC 4585 generic NACK: PID 1000 and BLP 0b101 -> 1000, 1001, 1003.
        let nackBytes = [UInt8](hex: "81cd0003 00000001 00000002 03e80005")
        guard case .nack(let nack) = try RTCPCompound.parse(nackBytes).first else { Issue.record("not a NACK"); return }
        #expect(nack.senderSSRC == 1 && nack.mediaSSRC == 2)
        #expect(nack.sequenceNumbers == [1000, 1001, 1003])
        #expect(GenericNACK(senderSSRC: 1, mediaSSRC: 2, lost: [1000, 1001, 1003]) == nack)
        // Packing across wrap-around and beyond 16.
        let packed = GenericNACK(senderSSRC: 1, mediaSSRC: 2, lost: [65535, 0, 15, 16, 40])
        #expect(packed.pairs == [GenericNACK.Pair(packetID: 65535, lostBitmask: 0x8001),
                                 GenericNACK.Pair(packetID: 16, lostBitmask: 0), GenericNACK.Pair(packetID: 40, lostBitmask: 0)])
        #expect(packed.sequenceNumbers == [65535, 0, 15, 16, 40])

        let pliBytes = [UInt8](hex: "81ce0002 00000001 00000002")
        #expect(try RTCPCompound.parse(pliBytes) == [.pli(PictureLossIndication(senderSSRC: 1, mediaSSRC: 2))])

        let firBytes = [UInt8](hex: "84ce0004 00000001 00000000 0000000a 07000000")
        #expect(try RTCPCompound.parse(firBytes) == [.fir(FullIntraRequest(senderSSRC: 1, entries: [.init(ssrc: 10, sequenceNumber: 7)]))])

        // REMB: 2 SSRCs, exponent 3, mantissa 0x3FFFF -> 2097144 bit/s.
        let rembBytes = [UInt8](hex: "8fce0006 00000001 00000000 52454d42 020fffff 0000000b 0000000c")
        guard case .remb(let remb) = try RTCPCompound.parse(rembBytes).first else { Issue.record("not REMB"); return }
        #expect(remb.exponent == 3 && remb.mantissa == 0x3FFFF)
        #expect(remb.bitrate == 0x3FFFF << 3)
        #expect(remb.ssrcs == [11, 12])
        #expect(RTCPCompound.serialize([.remb(remb)]) == rembBytes)
        let big = ReceiverEstimatedMaximumBitrate(senderSSRC: 1, bitrate: 2_500_000_000, ssrcs: [1])
        #expect(big.bitrate <= 2_500_000_000 && big.bitrate > 2_499_000_000)
        // PSFB FMT 15 that is not REMB stays raw.
        let afb = [UInt8](hex: "8fce0003 00000001 00000000 41424344")
        guard case .raw = try RTCPCompound.parse(afb).first else { Issue.record("AFB should be raw"); return }
    }

    @Test func goodbyeAppAndExtendedReport() throws {
        let bye = [UInt8](hex: "82cb0004 00000001 00000002 0762797420627965")  // reason "byt bye"
        #expect(try RTCPCompound.parse(bye) == [.goodbye(Goodbye(sources: [1, 2], reason: "byt bye"))])
        let app = [UInt8](hex: "85cc0003 00000009 6e616d65 01020304")
        guard case .applicationDefined(let a) = try RTCPCompound.parse(app).first else { Issue.record("not APP"); return }
        #expect(a.subtype == 5 && a.ssrc == 9 && a.nameText == "name" && a.data == [1, 2, 3, 4])
        // XR: RRTR + DLRR with one item + an unknown block type 42.
        let xr = [UInt8](hex: """
            80cf000a 00000007
            04000002 01020304 05060708
            05000003 00000009 0000000a 0000000b
            2a050001 deadbeef
            """)
        let parsed = try RTCPCompound.parse(xr)
        #expect(parsed == [.extendedReport(ExtendedReport(senderSSRC: 7, blocks: [
            .receiverReferenceTime(ntpTime: 0x0102_0304_0506_0708),
            .dlrr([.init(ssrc: 9, lastRR: 10, delaySinceLastRR: 11)]),
            .other(blockType: 42, typeSpecific: 5, data: [0xde, 0xad, 0xbe, 0xef]),
        ]))])
        #expect(RTCPCompound.serialize(parsed) == xr)
    }

    @Test func unknownTypesAreKeptRaw() throws {
        let unknown = [UInt8](hex: "83d20002 00000001 00000002")  // PT 210
        let parsed = try RTCPCompound.parse(unknown)
        guard case .raw(let raw) = parsed.first else { Issue.record("not raw"); return }
        #expect(raw.header.packetType == 210 && raw.header.count == 3)
        #expect(RTCPCompound.serialize(parsed) == unknown)
    }

    @Test func malformedCompoundsThrow() {
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse([UInt8]()) }
        // Length field points past the datagram.
        #expect(throws: RTPParseError.truncated(needed: 16, available: 12)) { try RTCPCompound.parse([UInt8](hex: "81c90003 00000001 00000002")) }
        // RR claiming one report block with no room for it.
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse([UInt8](hex: "81c90001 00000001")) }
        // Second packet has version 0.
        #expect(throws: RTPParseError.badVersion(0)) { try RTCPCompound.parse([UInt8](hex: "80c90001 00000001 00c90001 00000001")) }
        // Padding count larger than the packet.
        #expect(throws: RTPParseError.badPadding) { try RTCPCompound.parse([UInt8](hex: "a0c90001 000000ff")) }
        // SDES item running past the packet.
        #expect(throws: RTPParseError.self) { try RTCPCompound.parse([UInt8](hex: "81ca0002 00000001 01100000")) }
    }

    static func randomPacket(_ rng: inout SeededGenerator) -> RTCPPacket {
        func u32() -> UInt32 { UInt32.random(in: 0...UInt32.max, using: &rng) }
        func report() -> ReceptionReport {
            ReceptionReport(ssrc: u32(), fractionLost: .random(in: 0...255, using: &rng), cumulativeLost: .random(in: -0x80_0000...0x7F_FFFF, using: &rng),
                            highestSequence: u32(), jitter: u32(), lastSR: u32(), delaySinceLastSR: u32())
        }
        switch Int.random(in: 0..<11, using: &rng) {
        case 0:
            return .senderReport(SenderReport(ssrc: u32(), ntpTime: .random(in: 0...UInt64.max, using: &rng), rtpTime: u32(),
                                              packetCount: u32(), octetCount: u32(), reports: (0..<Int.random(in: 0...3, using: &rng)).map { _ in report() }))
        case 1: return .receiverReport(ReceiverReport(ssrc: u32(), reports: (0..<Int.random(in: 0...31, using: &rng)).map { _ in report() }))
        case 2:
            return .sourceDescription(SourceDescription(chunks: (0..<Int.random(in: 1...3, using: &rng)).map { _ in
                SourceDescription.Chunk(ssrc: u32(), items: (0..<Int.random(in: 0...3, using: &rng)).map { _ in
                    SourceDescription.Item(type: .random(in: 1...8, using: &rng), value: randomBytes(.random(in: 0...40, using: &rng), using: &rng))
                })
            }))
        case 3: return .goodbye(Goodbye(sources: (0..<Int.random(in: 0...5, using: &rng)).map { _ in u32() }, reason: Bool.random(using: &rng) ? "leaving" : nil))
        case 4: return .applicationDefined(ApplicationDefined(subtype: .random(in: 0...31, using: &rng), ssrc: u32(), name: 0x5445_5354, data: randomBytes(4 * .random(in: 0...4, using: &rng), using: &rng)))
        case 5: return .nack(GenericNACK(senderSSRC: u32(), mediaSSRC: u32(), pairs: (0..<Int.random(in: 1...5, using: &rng)).map { _ in .init(packetID: .random(in: 0...UInt16.max, using: &rng), lostBitmask: .random(in: 0...UInt16.max, using: &rng)) }))
        case 6: return .pli(PictureLossIndication(senderSSRC: u32(), mediaSSRC: u32()))
        case 7: return .fir(FullIntraRequest(senderSSRC: u32(), entries: [.init(ssrc: u32(), sequenceNumber: .random(in: 0...255, using: &rng))]))
        case 8: return .remb(ReceiverEstimatedMaximumBitrate(senderSSRC: u32(), bitrate: .random(in: 0...10_000_000_000, using: &rng), ssrcs: [u32()]))
        case 9:
            return .extendedReport(ExtendedReport(senderSSRC: u32(), blocks: [.receiverReferenceTime(ntpTime: .random(in: 0...UInt64.max, using: &rng)),
                                                                              .dlrr([.init(ssrc: u32(), lastRR: u32(), delaySinceLastRR: u32())])]))
        default:
            var rec = TWCCRecorder(senderSSRC: u32(), mediaSSRC: u32())
            var t: Int64 = .random(in: 0...1_000_000_000, using: &rng)
            let start = UInt16.random(in: 0...UInt16.max, using: &rng)
            for i in 0..<Int.random(in: 1...60, using: &rng) where Int.random(in: 0..<10, using: &rng) > 1 {
                t += .random(in: -2000...80_000, using: &rng)
                rec.record(sequenceNumber: start &+ UInt16(i), arrivalMicros: t)
            }
            if rec.pendingCount == 0 { rec.record(sequenceNumber: start, arrivalMicros: t) }
            return .transportCC(rec.buildFeedback()[0])
        }
    }

    /// Property: every packet the builders make parses back to an equal value, alone or compounded.
    @Test func randomCompoundsRoundTrip() throws {
        var rng = SeededGenerator(seed: 0xC0FF_EE)
        for _ in 0..<1000 {
            let packets = (0..<Int.random(in: 1...4, using: &rng)).map { _ in Self.randomPacket(&rng) }
            let bytes = RTCPCompound.serialize(packets)
            #expect(bytes.count % 4 == 0)
            let back = try RTCPCompound.parse(bytes)
            #expect(back == packets)
        }
    }

    /// Malformed input never traps: truncations, bit flips and random bytes either parse or throw.
    @Test func corruptedInputNeverTraps() {
        var rng = SeededGenerator(seed: 0xBAD_5EED)
        var parsed = 0
        var rejected = 0
        for _ in 0..<20_000 {
            var bytes = RTCPCompound.serialize((0..<Int.random(in: 1...3, using: &rng)).map { _ in Self.randomPacket(&rng) })
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 1:
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    let i = Int.random(in: 0..<bytes.count, using: &rng)
                    bytes[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
                }
            case 2: bytes = [0x80 | UInt8.random(in: 0...63, using: &rng), UInt8.random(in: 192...223, using: &rng)] + randomBytes(.random(in: 0...64, using: &rng), using: &rng)
            default: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = .random(in: 0...255, using: &rng)
            }
            do {
                _ = try RTCPCompound.parse(bytes)
                parsed += 1
            } catch {
                rejected += 1
            }
            // The RTP side sees the same garbage.
            _ = try? RTPPacket(parsing: bytes)
            bytes.withUnsafeBytes { raw in _ = PacketInspector.describe(raw, frame: 1) }
        }
        #expect(parsed > 0 && rejected > 0)
    }

    @Test func demultiplexesPerRFC7983() {
        func kind(_ b: [UInt8]) -> PacketClass { b.withUnsafeBytes { PacketClass(classifying: $0) } }
        #expect(kind([0x00, 0x01]) == .stun)
        #expect(kind([22, 0xfe]) == .dtls)
        #expect(kind([0x80, 96]) == .rtp)
        #expect(kind([0x80, 0x80 | 96]) == .rtp)
        #expect(kind([0x80, 200]) == .rtcp)
        #expect(kind([0x81, 205]) == .rtcp)
        #expect(kind([0x80, 223]) == .rtcp)
        #expect(kind([0x80, 224]) == .rtp)  // PT 96 with marker set
        #expect(kind([0x80]) == .other)
        #expect(kind([]) == .other)
        #expect(kind([0x40, 0x00]) == .other)
    }

    @Test func roundTripTimeFromReportBlock() {
        let block = ReceptionReport(ssrc: 1, lastSR: 0x0001_0000, delaySinceLastSR: 0x0000_8000)
        // Arrived 1.75 s after the SR's NTP middle; the receiver held it 0.5 s -> RTT 1.25 s.
        #expect(block.roundTripTime(arrivalNTPMiddle: 0x0001_0000 + 0x0001_C000) == 0x0001_4000)
        #expect(ReceptionReport(ssrc: 1).roundTripTime(arrivalNTPMiddle: 5) == nil)
    }
}
