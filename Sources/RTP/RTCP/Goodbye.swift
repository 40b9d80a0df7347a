/// Goodbye (RFC 3550 6.6, PT 203).
public struct Goodbye: Sendable, Equatable {
    public var sources: [UInt32]
    public var reason: [UInt8]?

    public init(sources: [UInt32], reason: String? = nil) {
        self.sources = sources
        self.reason = reason.map { Array($0.utf8.prefix(255)) }
    }

    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        var sources: [UInt32] = []
        for _ in 0..<header.count { sources.append(try r.u32()) }
        self.sources = sources
        if r.remaining > 0 {
            let length = Int(try r.u8())
            reason = try r.bytes(length)
        } else {
            reason = nil
        }
    }

    public var reasonText: String? { reason.map { String(decoding: $0, as: UTF8.self) } }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: UInt8(min(sources.count, 31)), type: RTCPPacketType.goodbye) { out in
            for source in sources.prefix(31) { out.append32(source) }
            if let reason {
                out.append(UInt8(reason.count))
                out.append(contentsOf: reason)
                out.padTo4()
            }
        }
    }
}
