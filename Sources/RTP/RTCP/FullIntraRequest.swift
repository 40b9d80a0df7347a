/// Full intra request (RFC 5104 4.3.1, PSFB FMT 4).
public struct FullIntraRequest: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var ssrc: UInt32
        public var sequenceNumber: UInt8

        public init(ssrc: UInt32, sequenceNumber: UInt8) {
            self.ssrc = ssrc
            self.sequenceNumber = sequenceNumber
        }
    }

    public static let fmt: UInt8 = 4
    public var senderSSRC: UInt32
    /// Always 0 on the wire for FIR (RFC 5104); kept for round trips.
    public var mediaSSRC: UInt32
    public var entries: [Entry]

    public init(senderSSRC: UInt32, mediaSSRC: UInt32 = 0, entries: [Entry]) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
        self.entries = entries
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        mediaSSRC = try r.u32()
        var entries: [Entry] = []
        while r.remaining >= 8 {
            let ssrc = try r.u32()
            let seq = try r.u8()
            try r.skip(3)
            entries.append(Entry(ssrc: ssrc, sequenceNumber: seq))
        }
        self.entries = entries
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: Self.fmt, type: RTCPPacketType.payloadFeedback) { out in
            out.append32(senderSSRC)
            out.append32(mediaSSRC)
            for entry in entries {
                out.append32(entry.ssrc)
                out.append(entry.sequenceNumber)
                out.append(contentsOf: [0, 0, 0])
            }
        }
    }
}
