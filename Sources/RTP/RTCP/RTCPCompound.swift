/// Compound RTCP packets (RFC 3550 6.1): one datagram, several packets back to back.
public enum RTCPCompound {
    /// Every packet of the compound packet in `bytes`.
    /// - Throws: ``RTPParseError`` when any packet's header or body is malformed; no partial
    ///   result, since a compound packet is validated as a whole (RFC 3550 A.2).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(RTPParseError) -> [RTCPPacket] {
        var packets: [RTCPPacket] = []
        var offset = 0
        guard !bytes.isEmpty else { throw .truncated(needed: 4, available: 0) }
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            let header = try RTCPHeader(parsing: rest)
            var length = header.packetLength
            if header.padding {
                let pad = Int(rest[header.packetLength - 1])
                guard pad > 0, pad <= header.packetLength - RTCPHeader.size else { throw .badPadding }
                length -= pad
            }
            packets.append(try RTCPPacket(parsing: UnsafeRawBufferPointer(rebasing: rest[0..<length]), header: header))
            offset += header.packetLength
        }
        return packets
    }

    public static func parse(_ bytes: [UInt8]) throws(RTPParseError) -> [RTCPPacket] {
        try bytes.withParsedBytes { raw throws(RTPParseError) in try parse(raw) }
    }

    public static func serialize(_ packets: [RTCPPacket]) -> [UInt8] {
        var out: [UInt8] = []
        for packet in packets { packet.serialize(into: &out) }
        return out
    }
}
