/// Generic NACK (RFC 4585 6.2.1, RTPFB FMT 1): lost packets as (PID, BLP) pairs.
public struct GenericNACK: Sendable, Equatable {
    public struct Pair: Sendable, Equatable {
        /// The first lost packet.
        public var packetID: UInt16
        /// Bitmask of the 16 following packets: bit i set = packetID + i + 1 lost too.
        public var lostBitmask: UInt16

        public init(packetID: UInt16, lostBitmask: UInt16) {
            self.packetID = packetID
            self.lostBitmask = lostBitmask
        }

        /// The sequence numbers this pair names, in order.
        public var sequenceNumbers: [UInt16] {
            var out = [packetID]
            for i in 0..<16 where lostBitmask & (1 << i) != 0 { out.append(packetID &+ UInt16(i + 1)) }
            return out
        }
    }

    public static let fmt: UInt8 = 1

    public var senderSSRC: UInt32
    public var mediaSSRC: UInt32
    public var pairs: [Pair]

    public init(senderSSRC: UInt32, mediaSSRC: UInt32, pairs: [Pair]) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
        self.pairs = pairs
    }

    /// Packs sequence numbers (in the order they are to be requested) into pairs.
    public init(senderSSRC: UInt32, mediaSSRC: UInt32, lost: [UInt16]) {
        var pairs: [Pair] = []
        for seq in lost {
            if var last = pairs.last {
                let diff = seq &- last.packetID
                if diff >= 1 && diff <= 16 {
                    last.lostBitmask |= 1 << (diff - 1)
                    pairs[pairs.count - 1] = last
                    continue
                }
                if diff == 0 { continue }
            }
            pairs.append(Pair(packetID: seq, lostBitmask: 0))
        }
        self.init(senderSSRC: senderSSRC, mediaSSRC: mediaSSRC, pairs: pairs)
    }

    public var sequenceNumbers: [UInt16] { pairs.flatMap(\.sequenceNumbers) }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        mediaSSRC = try r.u32()
        var pairs: [Pair] = []
        while r.remaining >= 4 { pairs.append(Pair(packetID: try r.u16(), lostBitmask: try r.u16())) }
        self.pairs = pairs
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: Self.fmt, type: RTCPPacketType.transportFeedback) { out in
            out.append32(senderSSRC)
            out.append32(mediaSSRC)
            for pair in pairs {
                out.append16(pair.packetID)
                out.append16(pair.lostBitmask)
            }
        }
    }
}

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
