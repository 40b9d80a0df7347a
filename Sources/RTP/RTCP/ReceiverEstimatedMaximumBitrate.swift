/// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03, PSFB FMT 15 "REMB").
public struct ReceiverEstimatedMaximumBitrate: Sendable, Equatable {
    public static let fmt: UInt8 = 15
    static let identifier: UInt32 = 0x5245_4D42  // "REMB"

    public var senderSSRC: UInt32
    /// 6-bit exponent and 18-bit mantissa as sent: bitrate = mantissa << exponent.
    public var exponent: UInt8
    public var mantissa: UInt32
    public var ssrcs: [UInt32]

    /// Bits per second (saturating: a mantissa shifted past 64 bits reads as UInt64.max, not as
    /// the bits that are left).
    public var bitrate: UInt64 {
        let e = UInt64(min(exponent, 63))
        guard e == 0 || UInt64(mantissa) >> (64 - e) == 0 else { return .max }
        return UInt64(mantissa) << e
    }

    public init(senderSSRC: UInt32, bitrate: UInt64, ssrcs: [UInt32]) {
        self.senderSSRC = senderSSRC
        var exp: UInt8 = 0
        var m = bitrate
        while m > 0x3FFFF && exp < 63 {
            m >>= 1
            exp += 1
        }
        exponent = exp
        mantissa = UInt32(min(m, 0x3FFFF))
        self.ssrcs = Array(ssrcs.prefix(255))
    }

    /// Whether a PSFB FMT 15 packet body carries the "REMB" identifier (other AFB messages exist).
    static func isREMB(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 16 && bytes.u32(12) == identifier
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        guard try r.u32() == 0 else { throw .invalidField("REMB media source must be 0") }
        guard try r.u32() == Self.identifier else { throw .invalidField("not REMB") }
        let count = Int(try r.u8())
        let packed = try r.u24()
        exponent = UInt8(packed >> 18)
        mantissa = packed & 0x3FFFF
        var ssrcs: [UInt32] = []
        for _ in 0..<count { ssrcs.append(try r.u32()) }
        self.ssrcs = ssrcs
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: Self.fmt, type: RTCPPacketType.payloadFeedback) { out in
            out.append32(senderSSRC)
            out.append32(0)
            out.append32(Self.identifier)
            out.append(UInt8(ssrcs.count))
            out.append24(UInt32(exponent & 0x3F) << 18 | (mantissa & 0x3FFFF))
            for ssrc in ssrcs { out.append32(ssrc) }
        }
    }
}
