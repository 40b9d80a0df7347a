/// An RTCP packet of a type or format this library does not decode, kept whole.
public struct RawRTCPPacket: Sendable, Equatable {
    public var header: RTCPHeader
    /// The whole packet, header included, without padding.
    public var bytes: [UInt8]

    public init(header: RTCPHeader, bytes: [UInt8]) {
        self.header = header
        self.bytes = bytes
    }

    public func serialize(into out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: bytes)
        out.padTo4()
        if out.count - start != bytes.count {
            out[out.count - 1] = UInt8(out.count - start - bytes.count)
            out[start] |= 0x20
        }
        let words = (out.count - start) / 4 - 1
        if out.count - start >= 4 {
            out[start + 2] = UInt8(truncatingIfNeeded: words >> 8)
            out[start + 3] = UInt8(truncatingIfNeeded: words)
        }
    }
}
