/// Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
/// section 3.1, RTPFB FMT 15): the arrival time of every transport-wide sequence number in a range.
public struct TransportLayerCC: Sendable, Equatable {
    public static let fmt: UInt8 = 15

    /// A packet status symbol.
    public enum Status: UInt8, Sendable {
        case notReceived = 0
        /// Received; delta in 0...255 (x 250 us), one byte.
        case smallDelta = 1
        /// Received; delta negative or larger, two bytes signed.
        case largeDelta = 2
        case reserved = 3
    }

    public enum Chunk: Sendable, Equatable {
        /// `length` (13 bits) packets with the same status.
        case runLength(status: UInt8, length: UInt16)
        /// 14 one-bit (`twoBit == false`) or 7 two-bit statuses.
        case statusVector(twoBit: Bool, statuses: [UInt8])

        /// Number of statuses the chunk carries.
        public var capacity: Int {
            switch self {
            case .runLength(_, let length): Int(length)
            case .statusVector(let twoBit, _): twoBit ? 7 : 14
            }
        }

        var encoded: UInt16 {
            switch self {
            case .runLength(let status, let length):
                return UInt16(status & 0x3) << 13 | (length & 0x1FFF)
            case .statusVector(let twoBit, let statuses):
                var v: UInt16 = twoBit ? 0xC000 : 0x8000
                let width = twoBit ? 2 : 1
                let slots = twoBit ? 7 : 14
                for i in 0..<slots {
                    let s = i < statuses.count ? UInt16(statuses[i]) & (twoBit ? 0x3 : 0x1) : 0
                    v |= s << UInt16(width * (slots - 1 - i))
                }
                return v
            }
        }

        init(decoding v: UInt16) {
            if v & 0x8000 == 0 {
                self = .runLength(status: UInt8(v >> 13 & 0x3), length: v & 0x1FFF)
            } else if v & 0x4000 == 0 {
                self = .statusVector(twoBit: false, statuses: (0..<14).map { UInt8(v >> UInt16(13 - $0) & 0x1) })
            } else {
                self = .statusVector(twoBit: true, statuses: (0..<7).map { UInt8(v >> UInt16(12 - 2 * $0) & 0x3) })
            }
        }
    }

    /// The most packets one feedback may cover. libwebrtc's feedback covers what arrived since the
    /// last one (50-250 ms: hundreds of packets); our send history keeps 4,096.
    public static let maxPacketStatusCount = 8192

    public var senderSSRC: UInt32
    public var mediaSSRC: UInt32
    public var baseSequenceNumber: UInt16
    public var packetStatusCount: UInt16
    /// Signed 24-bit reference time in multiples of 64 ms.
    public var referenceTime: Int32
    public var feedbackPacketCount: UInt8
    public var chunks: [Chunk]
    /// Receive deltas in 250 us units, one per received packet, in order.
    public var recvDeltas: [Int16]

    public init(senderSSRC: UInt32, mediaSSRC: UInt32, baseSequenceNumber: UInt16, packetStatusCount: UInt16, referenceTime: Int32, feedbackPacketCount: UInt8, chunks: [Chunk], recvDeltas: [Int16]) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
        self.baseSequenceNumber = baseSequenceNumber
        self.packetStatusCount = packetStatusCount
        self.referenceTime = referenceTime
        self.feedbackPacketCount = feedbackPacketCount
        self.chunks = chunks
        self.recvDeltas = recvDeltas
    }

    /// The first `packetStatusCount` statuses the chunks carry.
    public var statuses: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(packetStatusCount))
        for chunk in chunks {
            switch chunk {
            case .runLength(let status, let length):
                out.append(contentsOf: repeatElement(status, count: Int(length)))
            case .statusVector(_, let statuses):
                out.append(contentsOf: statuses)
            }
            if out.count >= Int(packetStatusCount) { break }
        }
        return Array(out.prefix(Int(packetStatusCount)))
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        mediaSSRC = try r.u32()
        baseSequenceNumber = try r.u16()
        packetStatusCount = try r.u16()
        let ref = try r.u24()
        referenceTime = ref & 0x80_0000 != 0 ? Int32(bitPattern: ref | 0xFF00_0000) : Int32(ref)
        feedbackPacketCount = try r.u8()
        // A run-length chunk of "not received" covers 8,191 packets in two bytes: without a bound a
        // 40-byte packet makes the sender walk 65,535 statuses.
        guard Int(packetStatusCount) <= Self.maxPacketStatusCount else { throw .invalidField("packet status count beyond \(Self.maxPacketStatusCount)") }
        var chunks: [Chunk] = []
        var statuses: [UInt8] = []
        let total = Int(packetStatusCount)
        while statuses.count < total {
            let chunk = Chunk(decoding: try r.u16())
            chunks.append(chunk)
            switch chunk {
            case .runLength(let status, let length):
                guard length > 0 else { throw .invalidField("empty run-length chunk") }
                statuses.append(contentsOf: repeatElement(status, count: min(Int(length), total - statuses.count)))
            case .statusVector(_, let s):
                statuses.append(contentsOf: s.prefix(total - statuses.count))
            }
        }
        var deltas: [Int16] = []
        for status in statuses {
            switch status {
            case Status.smallDelta.rawValue: deltas.append(Int16(try r.u8()))
            case Status.largeDelta.rawValue: deltas.append(Int16(bitPattern: try r.u16()))
            case Status.reserved.rawValue: throw .invalidField("reserved packet status")
            default: break
            }
        }
        // What remains is padding to a 32-bit boundary.
        guard r.remaining < 4 || bytes[r.offset...].allSatisfy({ $0 == 0 }) else { throw .badLength }
        self.chunks = chunks
        self.recvDeltas = deltas
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: Self.fmt, type: RTCPPacketType.transportFeedback) { out in
            out.append32(senderSSRC)
            out.append32(mediaSSRC)
            out.append16(baseSequenceNumber)
            out.append16(packetStatusCount)
            out.append24(UInt32(bitPattern: referenceTime) & 0xFF_FFFF)
            out.append(feedbackPacketCount)
            for chunk in chunks { out.append16(chunk.encoded) }
            var deltaIndex = 0
            for status in statuses where status == Status.smallDelta.rawValue || status == Status.largeDelta.rawValue {
                let delta = deltaIndex < recvDeltas.count ? recvDeltas[deltaIndex] : 0
                deltaIndex += 1
                if status == Status.smallDelta.rawValue {
                    out.append(UInt8(truncatingIfNeeded: delta))
                } else {
                    out.append16(UInt16(bitPattern: delta))
                }
            }
        }
    }

    /// Per packet of the range: its transport-wide sequence number and, if received, its arrival
    /// time in microseconds in the sender's time base (reference time + accumulated deltas).
    public var packetResults: [(sequenceNumber: UInt16, arrivalMicros: Int64?)] {
        var out: [(UInt16, Int64?)] = []
        var time = Int64(referenceTime) * 64_000
        var deltaIndex = 0
        for (i, status) in statuses.enumerated() {
            let seq = baseSequenceNumber &+ UInt16(truncatingIfNeeded: i)
            if (status == Status.smallDelta.rawValue || status == Status.largeDelta.rawValue), deltaIndex < recvDeltas.count {
                time += Int64(recvDeltas[deltaIndex]) * 250
                deltaIndex += 1
                out.append((seq, time))
            } else {
                out.append((seq, nil))
            }
        }
        return out
    }
}
