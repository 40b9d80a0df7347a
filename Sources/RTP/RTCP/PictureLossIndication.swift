/// Picture loss indication (RFC 4585 6.3.1, PSFB FMT 1).
public struct PictureLossIndication: Sendable, Equatable {
    public static let fmt: UInt8 = 1
    public var senderSSRC: UInt32
    public var mediaSSRC: UInt32

    public init(senderSSRC: UInt32, mediaSSRC: UInt32) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        mediaSSRC = try r.u32()
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: Self.fmt, type: RTCPPacketType.payloadFeedback) { out in
            out.append32(senderSSRC)
            out.append32(mediaSSRC)
        }
    }
}
