/// The Opus TOC byte (RFC 6716 section 3.1) and the frame layout it implies.
public struct OpusTOC: Sendable, Equatable {
    public enum Mode: String, Sendable { case silk, hybrid, celt }

    public var config: UInt8
    public var stereo: Bool
    /// Frame count code c: 0 one frame, 1 two equal, 2 two different, 3 arbitrary (count in byte 1).
    public var frameCountCode: UInt8
    public var frameCount: Int

    public init(parsing packet: UnsafeRawBufferPointer) throws(RTPParseError) {
        guard let toc = packet.first else { throw .truncated(needed: 1, available: 0) }
        config = toc >> 3
        stereo = toc & 0x04 != 0
        frameCountCode = toc & 0x03
        switch frameCountCode {
        case 0: frameCount = 1
        case 1, 2: frameCount = 2
        default:
            guard packet.count >= 2 else { throw .truncated(needed: 2, available: packet.count) }
            frameCount = Int(packet[1] & 0x3f)
            guard frameCount > 0 else { throw .invalidField("opus code 3 packet with 0 frames") }
        }
    }

    public init(parsing packet: [UInt8]) throws(RTPParseError) {
        self = try packet.withParsedBytes { raw throws(RTPParseError) in try OpusTOC(parsing: raw) }
    }

    public var mode: Mode {
        switch config {
        case 0...11: .silk
        case 12...15: .hybrid
        default: .celt
        }
    }

    /// Duration of one frame in microseconds.
    public var frameDurationMicros: Int {
        switch config {
        case 0...11: [10_000, 20_000, 40_000, 60_000][Int(config % 4)]
        case 12...15: [10_000, 20_000][Int(config % 2)]
        default: [2_500, 5_000, 10_000, 20_000][Int(config % 4)]
        }
    }

    /// Duration of the packet in 48 kHz samples (the RTP clock of Opus).
    public var samplesAt48kHz: Int { frameCount * frameDurationMicros * 48 / 1000 }
}
