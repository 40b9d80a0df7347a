import Testing
@testable import RTP

func vp8(_ bytes: [UInt8]) throws(RTPParseError) -> VP8Descriptor {
    try bytes.withParsedBytes { raw throws(RTPParseError) in try VP8Descriptor(parsing: raw) }
}

@Suite("Payload helpers: VP8, Opus, H264")
struct PayloadTests {
    /// X, I (15-bit picture id 0x1234), L (TL0PICIDX 5), T (TID 1, Y) and K (KEYIDX 3); then a VP8
    /// keyframe header for 640x480.
    static let vp8Keyframe: [UInt8] = [0x90, 0xF0, 0x92, 0x34, 0x05, 0x63,
                                       0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0xAA]

    @Test func vp8FullDescriptor() throws {
        let d = try vp8(Self.vp8Keyframe)
        #expect(d.startOfPartition && d.partitionIndex == 0 && !d.nonReference)
        #expect(d.pictureID == 0x1234 && d.pictureIDIs15Bit)
        #expect(d.tl0PicIdx == 5)
        #expect(d.temporalLayer == 1 && d.layerSync)
        #expect(d.keyIndex == 3)
        #expect(d.length == 6)
        Self.vp8Keyframe.withUnsafeBytes { raw in
            #expect(d.isKeyframeStart(payload: raw))
            let size = d.keyframeSize(payload: raw)
            #expect(size?.width == 640 && size?.height == 480)
        }
    }

    @Test func vp8MinimalAnd7BitDescriptors() throws {
        // No extension: 1 byte; a delta frame (P bit 1).
        let minimal: [UInt8] = [0x10, 0x01, 0x02]
        let d = try vp8(minimal)
        #expect(d.length == 1 && d.pictureID == nil && d.tl0PicIdx == nil && d.temporalLayer == nil)
        minimal.withUnsafeBytes { raw in
            #expect(!d.isKeyframeStart(payload: raw))
            #expect(d.keyframeSize(payload: raw) == nil)
        }
        // 7-bit picture id 0x55, non-reference, partition 2, continuation (S=0).
        let seven: [UInt8] = [0xA2, 0x80, 0x55, 0x00]
        let s = try vp8(seven)
        #expect(s.nonReference && !s.startOfPartition && s.partitionIndex == 2)
        #expect(s.pictureID == 0x55 && !s.pictureIDIs15Bit && s.length == 3)
        seven.withUnsafeBytes { raw in #expect(!s.isKeyframeStart(payload: raw)) }
    }

    @Test func vp8TruncatedDescriptorsThrow() {
        for cut in 0..<6 {
            let bytes = Array(Self.vp8Keyframe.prefix(cut))
            #expect(throws: RTPParseError.self) {
                _ = try vp8(bytes)
            }
        }
    }

    @Test func vp8InPlaceRewriteKeepsLayout() throws {
        var bytes = Self.vp8Keyframe
        let d = try vp8(bytes)
        bytes.withUnsafeMutableBytes { raw in d.rewrite(pictureID: 0x7FFF, tl0PicIdx: 200, in: raw) }
        let r = try vp8(bytes)
        #expect(r.pictureID == 0x7FFF && r.pictureIDIs15Bit && r.tl0PicIdx == 200)
        #expect(r.temporalLayer == 1 && r.keyIndex == 3)
        #expect(Array(bytes[6...]) == Array(Self.vp8Keyframe[6...]))
        // A 7-bit id stays 7-bit.
        var seven: [UInt8] = [0x90, 0x80, 0x05, 0x01]
        let s = try vp8(seven)
        seven.withUnsafeMutableBytes { raw in s.rewrite(pictureID: 300, tl0PicIdx: 9, in: raw) }
        #expect(seven == [0x90, 0x80, UInt8(300 % 128), 0x01])
    }

    @Test func opusTOC() throws {
        let hybrid = try OpusTOC(parsing: [0x78, 0x00])  // config 15: hybrid FB 20 ms, mono, one frame
        #expect(hybrid.mode == .hybrid && !hybrid.stereo && hybrid.frameCount == 1)
        #expect(hybrid.frameDurationMicros == 20_000 && hybrid.samplesAt48kHz == 960)
        let celt = try OpusTOC(parsing: [0xFD])  // config 31 CELT 20 ms, stereo, code 1 (two frames)
        #expect(celt.mode == .celt && celt.stereo && celt.frameCount == 2 && celt.samplesAt48kHz == 1920)
        let silk = try OpusTOC(parsing: [0x0B, 0x03])  // config 1 SILK 20 ms, code 3 with 3 frames
        #expect(silk.mode == .silk && silk.frameCount == 3 && silk.samplesAt48kHz == 2880)
        #expect(throws: RTPParseError.truncated(needed: 1, available: 0)) { try OpusTOC(parsing: [UInt8]()) }
        #expect(throws: RTPParseError.truncated(needed: 2, available: 1)) { try OpusTOC(parsing: [0x03]) }
        #expect(throws: RTPParseError.self) { try OpusTOC(parsing: [0x03, 0x00]) }
    }

    @Test func h264Keyframes() {
        func key(_ b: [UInt8]) -> Bool { b.withUnsafeBytes { H264.isKeyframe(payload: $0) } }
        #expect(key([0x65, 0x88]))  // IDR slice
        #expect(key([0x67, 0x42]))  // SPS
        #expect(!key([0x41, 0x9a]))  // non-IDR slice
        #expect(!key([0x68, 0xce]))  // PPS alone
        #expect(key([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]))  // STAP-A: SPS + PPS
        #expect(!key([0x78, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x41, 0x9a]))  // STAP-A: PPS + non-IDR
        #expect(!key([0x78, 0x00, 0x09, 0x67]))  // STAP-A with a size past the end
        #expect(key([0x7c, 0x85, 0x88]))  // FU-A start of an IDR
        #expect(!key([0x7c, 0x05, 0x88]))  // FU-A continuation
        #expect(!key([0x7c]))
        #expect(!key([]))
    }
}
