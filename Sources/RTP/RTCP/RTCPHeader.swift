/// The common header of every RTCP packet (RFC 3550 6.4.1): V=2, padding, a 5-bit count or
/// feedback message type (FMT), the packet type and the length in 32-bit words minus one.
public struct RTCPHeader: Sendable, Equatable {
    public var padding: Bool
    /// Reception report count, source count, subtype or FMT, depending on the packet type.
    public var count: UInt8
    public var packetType: UInt8
    /// Length of the whole packet in bytes, header included (4 * (length field + 1)).
    public var packetLength: Int

    public static let size = 4

    public init(padding: Bool = false, count: UInt8, packetType: UInt8, packetLength: Int) {
        self.padding = padding
        self.count = count & 0x1f
        self.packetType = packetType
        self.packetLength = packetLength
    }

    /// Parses the header at the start of `bytes` and checks that the packet fits.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        guard bytes.count >= 4 else { throw .truncated(needed: 4, available: bytes.count) }
        guard bytes[0] >> 6 == 2 else { throw .badVersion(bytes[0] >> 6) }
        padding = bytes[0] & 0x20 != 0
        count = bytes[0] & 0x1f
        packetType = bytes[1]
        packetLength = 4 * (Int(bytes.u16(2)) + 1)
        guard packetLength <= bytes.count else { throw .truncated(needed: packetLength, available: bytes.count) }
    }
}

public enum RTCPPacketType {
    public static let senderReport: UInt8 = 200
    public static let receiverReport: UInt8 = 201
    public static let sourceDescription: UInt8 = 202
    public static let goodbye: UInt8 = 203
    public static let applicationDefined: UInt8 = 204
    public static let transportFeedback: UInt8 = 205
    public static let payloadFeedback: UInt8 = 206
    public static let extendedReport: UInt8 = 207
}

/// Writes RTCP packets: the header, a body, the length field and any padding to a 32-bit boundary.
enum RTCPWriter {
    static func write(_ out: inout [UInt8], count: UInt8, type: UInt8, body: (inout [UInt8]) -> Void) {
        let start = out.count
        out.append(0x80 | (count & 0x1f))
        out.append(type)
        out.append16(0)
        body(&out)
        let unpadded = out.count - start
        if unpadded % 4 != 0 {
            let pad = 4 - unpadded % 4
            out.append(contentsOf: repeatElement(0, count: pad - 1))
            out.append(UInt8(pad))
            out[start] |= 0x20
        }
        let words = (out.count - start) / 4 - 1
        out[start + 2] = UInt8(truncatingIfNeeded: words >> 8)
        out[start + 3] = UInt8(truncatingIfNeeded: words)
    }
}

/// A bounds-checked reader over one RTCP packet's bytes.
struct RTCPReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    var remaining: Int { bytes.count - offset }

    func need(_ n: Int) throws(RTPParseError) {
        guard n >= 0, remaining >= n else { throw .truncated(needed: offset + max(n, 0), available: bytes.count) }
    }

    mutating func u8() throws(RTPParseError) -> UInt8 {
        try need(1); defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws(RTPParseError) -> UInt16 {
        try need(2); defer { offset += 2 }
        return bytes.u16(offset)
    }

    mutating func u24() throws(RTPParseError) -> UInt32 {
        try need(3); defer { offset += 3 }
        return bytes.u24(offset)
    }

    mutating func u32() throws(RTPParseError) -> UInt32 {
        try need(4); defer { offset += 4 }
        return bytes.u32(offset)
    }

    mutating func u64() throws(RTPParseError) -> UInt64 {
        try need(8); defer { offset += 8 }
        return bytes.u64(offset)
    }

    mutating func bytes(_ n: Int) throws(RTPParseError) -> [UInt8] {
        try need(n); defer { offset += n }
        return Array(bytes[offset..<(offset + n)])
    }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }

    mutating func skip(_ n: Int) throws(RTPParseError) {
        try need(n)
        offset += n
    }
}
