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
