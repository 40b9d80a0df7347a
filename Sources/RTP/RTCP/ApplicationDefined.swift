/// Application-defined (RFC 3550 6.7, PT 204).
public struct ApplicationDefined: Sendable, Equatable {
    public var subtype: UInt8
    public var ssrc: UInt32
    /// Four ASCII characters.
    public var name: UInt32
    public var data: [UInt8]

    public init(subtype: UInt8, ssrc: UInt32, name: UInt32, data: [UInt8]) {
        self.subtype = subtype & 0x1f
        self.ssrc = ssrc
        self.name = name
        self.data = data
    }

    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        subtype = header.count
        ssrc = try r.u32()
        name = try r.u32()
        data = r.rest()
    }

    public var nameText: String {
        String(decoding: [UInt8(name >> 24), UInt8(name >> 16 & 0xff), UInt8(name >> 8 & 0xff), UInt8(name & 0xff)], as: UTF8.self)
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: subtype, type: RTCPPacketType.applicationDefined) { out in
            out.append32(ssrc)
            out.append32(name)
            out.append(contentsOf: data)
        }
    }
}
