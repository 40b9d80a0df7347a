import Testing
import TestSupport
@testable import RTP

/// Real Chromium packets (headers as captured, decoded by Wireshark; from the webrtc-analysis
/// test data): one-byte and two-byte extension blocks with transport-cc, abs-send-time, mid,
/// video-timing and dependency-descriptor elements.
enum ChromiumVectors {
    static let rtpOneByte: [UInt8] = [
        0x90, 0x2d, 0x1a, 0x5f, 0xd4, 0x09, 0x05, 0x49, 0xf7, 0xb1, 0x6e, 0x83, 0xbe, 0xde, 0x00, 0x03,
        0x22, 0xf3, 0x43, 0x50, 0x41, 0x00, 0x9b, 0xd2, 0x81, 0x00, 0x45, 0x00,
    ]
    static let rtpOneByteMany: [UInt8] = [
        0x90, 0xad, 0x19, 0xd4, 0xd4, 0x05, 0xe7, 0x97, 0xf7, 0xb1, 0x6e, 0x83, 0xbe, 0xde, 0x00, 0x08,
        0x22, 0xea, 0x43, 0x2b, 0x41, 0x00, 0x04, 0x90, 0x30, 0x30, 0x00, 0x60, 0x02,
        0x7c, 0x01, 0x00, 0x03, 0x00, 0x09, 0x00, 0x0a, 0x00, 0x23, 0x00, 0x00, 0x00, 0x00,
        0xd2, 0x40, 0x00, 0x01, 0x00,
    ]
    static let rtpTwoByte: [UInt8] = [
        0x90, 0x2d, 0x61, 0xc5, 0x95, 0x0a, 0x0f, 0xee, 0x8d, 0x38, 0x14, 0xe5, 0x10, 0x00, 0x00, 0x11,
        0x02, 0x03, 0x03, 0xf7, 0xae, 0x04, 0x02, 0x00, 0x02, 0x09, 0x01, 0x30, 0x03, 0x01, 0x00,
        0x06, 0x01, 0x02, 0x07, 0x0d, 0x01, 0x00, 0x01, 0x00, 0x07, 0x00, 0x07, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00,
        0x0d, 0x21, 0xc0, 0x00, 0x01, 0x80, 0x03, 0x18, 0x7a, 0xaa, 0xf1, 0x30, 0xa0, 0xa0, 0x14, 0xd1,
        0x41, 0x38, 0x23, 0x04, 0x60, 0x08, 0x64, 0x22, 0x22, 0x26, 0x50, 0x09, 0xf0, 0x07, 0x70, 0x13,
        0xf0, 0x0e, 0xf0,
    ]
    /// transport-cc feedback with the padding bit set (1 byte of padding).
    static let twccPadded: [UInt8] = [
        0xaf, 0xcd, 0x00, 0x07, 0x00, 0x00, 0x00, 0x01, 0xdd, 0x58, 0x6e, 0xb6, 0x00, 0x01, 0x00, 0x09,
        0x5e, 0x91, 0x10, 0x00, 0x20, 0x09, 0x1c, 0x0c, 0x2c, 0x38, 0x00, 0x04, 0x00, 0x08, 0x18, 0x01,
    ]
}

@Suite("RTP packets")
struct RTPPacketTests {
    @Test func parsesChromiumOneByteExtensions() throws {
        let bytes = ChromiumVectors.rtpOneByte
        let h = try RTPHeader(parsing: bytes)
        #expect(h.version == 2)
        #expect(!h.padding && h.hasExtension && !h.marker)
        #expect(h.payloadType == 45)
        #expect(h.sequenceNumber == 6751)
        #expect(h.timestamp == 3_557_360_969)
        #expect(h.ssrc == 0xf7b1_6e83)
        #expect(h.extensionProfile == 0xBEDE)
        #expect(h.extensionLength == 12)
        #expect(h.payloadOffset == 28)
        #expect(h.payloadLength == 0)
        let p = try RTPPacket(parsing: bytes)
        #expect(p.extensions == [
            RTPHeaderExtension(id: 2, value: [0xf3, 0x43, 0x50]),
            RTPHeaderExtension(id: 4, value: [0x00, 0x9b]),
            RTPHeaderExtension(id: 13, value: [0x81, 0x00, 0x45]),
        ])
        bytes.withUnsafeBytes { raw in
            #expect(AbsSendTime.decode(h.extensionValue(id: 2, in: raw)!) == 0xf34350)
            #expect(TransportWideSequence.decode(h.extensionValue(id: 4, in: raw)!) == 0x009b)
            #expect(h.extensionValue(id: 5, in: raw) == nil)
        }
        #expect(p.serialized() == bytes)
    }

    @Test func parsesSevenOneByteElementsIncludingA13ByteValue() throws {
        let p = try RTPPacket(parsing: ChromiumVectors.rtpOneByteMany)
        #expect(p.marker)
        #expect(p.sequenceNumber == 6612)
        #expect(p.extensions.map(\.id) == [2, 4, 9, 3, 6, 7, 13])
        #expect(p.extensionValue(id: 7) == [UInt8](hex: "0100030009000a002300000000"))
        #expect(p.extensionValue(id: 13) == [0x40, 0x00, 0x01])
        #expect(p.serialized() == ChromiumVectors.rtpOneByteMany)
    }

    @Test func parsesChromiumTwoByteExtensions() throws {
        let p = try RTPPacket(parsing: ChromiumVectors.rtpTwoByte)
        #expect(p.extensionProfile == 0x1000)
        #expect(p.sequenceNumber == 25029)
        #expect(p.timestamp == 2_500_464_622)
        #expect(p.extensions.map(\.id) == [2, 4, 9, 3, 6, 7, 13])
        #expect(p.extensionValue(id: 13) == [UInt8](hex: "c000018003187aaaf130a0a014d1413823046008642222265009f0077013f00ef0"))
        #expect(p.extensionValue(id: 2) == [0x03, 0xf7, 0xae])
        #expect(p.serialized() == ChromiumVectors.rtpTwoByte)
    }

    @Test func csrcsPaddingAndPayload() throws {
        var p = RTPPacket(payloadType: 111, sequenceNumber: 65535, timestamp: 0xFFFF_FFFF, ssrc: 1, marker: true,
                          csrcs: [0xAABB_CCDD, 7], payload: [1, 2, 3, 4, 5])
        p.setPadding(count: 3)
        let bytes = p.serialized()
        #expect(bytes[0] == 0xA2)  // V=2, P, CC=2
        #expect(bytes[1] == 0x80 | 111)
        #expect(bytes.count == 12 + 8 + 5 + 3)
        #expect(bytes.last == 3)
        let h = try RTPHeader(parsing: bytes)
        #expect(h.padding && h.paddingLength == 3)
        #expect(h.payloadRange == 20..<25)
        bytes.withUnsafeBytes { raw in
            #expect(h.csrc(0, in: raw) == 0xAABB_CCDD)
            #expect(h.csrc(1, in: raw) == 7)
        }
        let back = try RTPPacket(parsing: bytes)
        #expect(back == p)
    }

    @Test func malformedHeadersThrowTypedErrors() {
        #expect(throws: RTPParseError.truncated(needed: 12, available: 11)) { try RTPHeader(parsing: [UInt8](repeating: 0x80, count: 11)) }
        #expect(throws: RTPParseError.badVersion(1)) { try RTPHeader(parsing: [UInt8](repeating: 0x40, count: 12)) }
        // CC=15 but only 12 bytes.
        #expect(throws: RTPParseError.truncated(needed: 72, available: 12)) { try RTPHeader(parsing: [0x8F] + [UInt8](repeating: 0, count: 11)) }
        // Extension length says 2 words, none present.
        var ext: [UInt8] = [0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0x00, 0x02]
        #expect(throws: RTPParseError.truncated(needed: 24, available: 16)) { try RTPHeader(parsing: ext) }
        // Padding count 0, and padding larger than the packet.
        ext = [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        #expect(throws: RTPParseError.badPadding) { try RTPHeader(parsing: ext) }
        ext[13] = 3
        #expect(throws: RTPParseError.badPadding) { try RTPHeader(parsing: ext) }
    }

    @Test func oneByteBlockStopsAtId15AndIgnoresOverrun() throws {
        // Elements: id 1 (1 byte), padding 0, id 15 (stop), then bytes that would look like an element.
        let block: [UInt8] = [0x10, 0xAA, 0x00, 0xF0, 0x20, 0xBB, 0x00, 0x00]
        let packet: [UInt8] = [0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 2] + block
        #expect(try RTPPacket(parsing: packet).extensions == [RTPHeaderExtension(id: 1, value: [0xAA])])
        // An element whose length runs past the block ends the list (nothing read out of bounds).
        let overrun: [UInt8] = [0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0x2F, 0x01]
        #expect(try RTPPacket(parsing: overrun).extensions == [RTPHeaderExtension(id: 1, value: [0xAA])])
        // Two-byte form with a zero-length element (allowed there).
        let two: [UInt8] = [0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0x10, 0x00, 0, 1, 0x05, 0x00, 0x06, 0x00]
        #expect(try RTPPacket(parsing: two).extensions == [RTPHeaderExtension(id: 5, value: []), RTPHeaderExtension(id: 6, value: [])])
    }

    @Test func setExtensionsPicksFormAndValidates() throws {
        var p = RTPPacket(payloadType: 96, sequenceNumber: 1, timestamp: 2, ssrc: 3, payload: [9])
        try p.setExtension(id: 3, value: TransportWideSequence.encode(0x1234))
        #expect(p.extensionProfile == 0xBEDE)
        #expect(p.extensionData == [0x31, 0x12, 0x34, 0x00])
        try p.setExtension(id: 20, value: Array("mid0".utf8))  // id > 14 needs the two-byte form
        #expect(p.extensionProfile == 0x1000)
        #expect(p.extensions == [RTPHeaderExtension(id: 3, value: [0x12, 0x34]), RTPHeaderExtension(id: 20, value: Array("mid0".utf8))])
        #expect(throws: RTPParseError.self) { try p.setExtensions([RTPHeaderExtension(id: 15, value: [1])], form: .oneByte) }
        #expect(throws: RTPParseError.self) { try p.setExtensions([RTPHeaderExtension(id: 1, value: [UInt8](repeating: 0, count: 17))], form: .oneByte) }
        try p.setExtensions([])
        #expect(p.extensionProfile == nil)
        #expect(try RTPPacket(parsing: p.serialized()) == p)
    }

    @Test func typedExtensionValues() {
        let enc = AbsSendTime.encode(nanoseconds: 1_500_000_000)  // 1.5 s = 0x060000 in 6.18
        #expect(enc == [0x06, 0x00, 0x00])
        enc.withUnsafeBytes { raw in
            #expect(AbsSendTime.decode(raw) == 0x060000)
            #expect(AbsSendTime.nanoseconds(0x060000) == 1_500_000_000)
        }
        #expect(AbsSendTime.encode(nanoseconds: 64_000_000_000 + 250_000_000) == AbsSendTime.encode(nanoseconds: 250_000_000))
        [UInt8]([0x80 | 42]).withUnsafeBytes { raw in
            #expect(AudioLevel(decoding: raw) == AudioLevel(voiceActivity: true, level: 42))
        }
        #expect(AudioLevel(voiceActivity: false, level: 200).encoded == [127])
        [UInt8]([0x0B]).withUnsafeBytes { raw in  // back camera, no flip, 270 degrees
            #expect(VideoOrientation(decoding: raw) == VideoOrientation(backCamera: true, horizontalFlip: false, rotationDegrees: 270))
        }
        #expect(VideoOrientation(rotationDegrees: -90).encoded == [0x03])
        Array("q".utf8).withUnsafeBytes { raw in #expect(SDESItemExtension.decode(raw) == "q") }
        [UInt8]([0x00, 0x01]).withUnsafeBytes { raw in #expect(SDESItemExtension.decode(raw) == nil) }
        [UInt8]([0xAB]).withUnsafeBytes { raw in #expect(TransportWideSequence.decode(raw) == nil) }
    }

    @Test func rtxWrapAndUnwrap() throws {
        var original = RTPPacket(payloadType: 96, sequenceNumber: 4242, timestamp: 90_000, ssrc: 0x1111, marker: true, payload: [1, 2, 3])
        try original.setExtension(id: 1, value: [7])
        let rtx = original.rtxWrapped(ssrc: 0x2222, payloadType: 97, sequenceNumber: 10)
        #expect(rtx.ssrc == 0x2222 && rtx.payloadType == 97 && rtx.sequenceNumber == 10)
        #expect(rtx.payload == [0x10, 0x92, 1, 2, 3])
        #expect(rtx.timestamp == original.timestamp && rtx.marker)
        let bytes = rtx.serialized()
        let header = try RTPHeader(parsing: bytes)
        bytes.withUnsafeBytes { raw in #expect(header.rtxOriginalSequenceNumber(in: raw) == 4242) }
        let back = try RTPPacket(parsing: bytes).rtxUnwrapped(originalSSRC: 0x1111, originalPayloadType: 96)
        #expect(back == original)
        let empty = RTPPacket(payloadType: 97, sequenceNumber: 1, timestamp: 1, ssrc: 1, payload: [0x01])
        #expect(throws: RTPParseError.truncated(needed: 2, available: 1)) { try empty.rtxUnwrapped(originalSSRC: 1, originalPayloadType: 96) }
    }

    @Test func inPlaceRewriteChangesOnlyTheField() throws {
        var p = RTPPacket(payloadType: 96, sequenceNumber: 1, timestamp: 2, ssrc: 3, payload: [0xEE, 0xFF])
        try p.setExtension(id: 5, value: [0, 0])
        var bytes = p.serialized()
        let header = try RTPHeader(parsing: bytes)
        bytes.withUnsafeMutableBytes { raw in
            RTPRewrite.setSequenceNumber(0xBEEF, in: raw)
            RTPRewrite.setTimestamp(0xDEAD_BEEF, in: raw)
            RTPRewrite.setSSRC(0xCAFE_F00D, in: raw)
            RTPRewrite.setPayloadType(111, in: raw)
            RTPRewrite.setMarker(true, in: raw)
            let ok = TransportWideSequence.encode(777).withUnsafeBytes { v in
                RTPRewrite.setExtensionValue(id: 5, to: v, header: header, in: raw)
            }
            #expect(ok)
            let wrongLength = [UInt8]([1]).withUnsafeBytes { v in RTPRewrite.setExtensionValue(id: 5, to: v, header: header, in: raw) }
            #expect(!wrongLength)
            let missing = [UInt8]([1, 2]).withUnsafeBytes { v in RTPRewrite.setExtensionValue(id: 6, to: v, header: header, in: raw) }
            #expect(!missing)
        }
        var expected = p
        expected.sequenceNumber = 0xBEEF
        expected.timestamp = 0xDEAD_BEEF
        expected.ssrc = 0xCAFE_F00D
        expected.payloadType = 111
        expected.marker = true
        try expected.setExtension(id: 5, value: TransportWideSequence.encode(777))
        #expect(try RTPPacket(parsing: bytes) == expected)
    }

    /// Property: any packet the builder makes parses back to itself, byte for byte.
    @Test func randomPacketsRoundTrip() throws {
        var rng = SeededGenerator(seed: 0x5EED_0001)
        for _ in 0..<2000 {
            var p = RTPPacket(
                payloadType: UInt8.random(in: 0...127, using: &rng), sequenceNumber: .random(in: 0...UInt16.max, using: &rng),
                timestamp: .random(in: 0...UInt32.max, using: &rng), ssrc: .random(in: 0...UInt32.max, using: &rng),
                marker: Bool.random(using: &rng),
                csrcs: (0..<Int.random(in: 0...15, using: &rng)).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) },
                payload: randomBytes(Int.random(in: 0...1200, using: &rng), using: &rng))
            let twoByte = Bool.random(using: &rng)
            var ids = Set<UInt8>()
            var elements: [RTPHeaderExtension] = []
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                let id = twoByte ? UInt8.random(in: 1...255, using: &rng) : UInt8.random(in: 1...14, using: &rng)
                guard ids.insert(id).inserted else { continue }
                let length = twoByte ? Int.random(in: 0...40, using: &rng) : Int.random(in: 1...16, using: &rng)
                elements.append(RTPHeaderExtension(id: id, value: randomBytes(length, using: &rng)))
            }
            try p.setExtensions(elements, form: twoByte ? .twoByte(appBits: 0) : .oneByte)
            if Bool.random(using: &rng) { p.setPadding(count: UInt8.random(in: 1...255, using: &rng)) }
            let bytes = p.serialized()
            let back = try RTPPacket(parsing: bytes)
            #expect(back == p)
            #expect(back.extensions == elements)
            #expect(back.serialized() == bytes)
        }
    }
}
