/// Extended report (RFC 3611, PT 207) with the blocks WebRTC uses for receiver-side RTT:
/// receiver reference time (RRTR, BT 4) and DLRR (BT 5); other blocks are kept raw.
public struct ExtendedReport: Sendable, Equatable {
    public struct DLRRItem: Sendable, Equatable {
        public var ssrc: UInt32
        public var lastRR: UInt32
        public var delaySinceLastRR: UInt32

        public init(ssrc: UInt32, lastRR: UInt32, delaySinceLastRR: UInt32) {
            self.ssrc = ssrc
            self.lastRR = lastRR
            self.delaySinceLastRR = delaySinceLastRR
        }
    }

    public enum Block: Sendable, Equatable {
        case receiverReferenceTime(ntpTime: UInt64)
        case dlrr([DLRRItem])
        case other(blockType: UInt8, typeSpecific: UInt8, data: [UInt8])

        public var blockType: UInt8 {
            switch self {
            case .receiverReferenceTime: 4
            case .dlrr: 5
            case .other(let t, _, _): t
            }
        }
    }

    public var senderSSRC: UInt32
    public var blocks: [Block]

    public init(senderSSRC: UInt32, blocks: [Block]) {
        self.senderSSRC = senderSSRC
        self.blocks = blocks
    }

    init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        senderSSRC = try r.u32()
        var blocks: [Block] = []
        while r.remaining >= 4 {
            let type = try r.u8()
            let specific = try r.u8()
            let length = 4 * Int(try r.u16())
            try r.need(length)
            var body = RTCPReader(UnsafeRawBufferPointer(rebasing: bytes[r.offset..<(r.offset + length)]))
            r.offset += length
            switch type {
            case 4 where length == 8:
                blocks.append(.receiverReferenceTime(ntpTime: try body.u64()))
            case 5 where length % 12 == 0:
                var items: [DLRRItem] = []
                while body.remaining >= 12 {
                    items.append(DLRRItem(ssrc: try body.u32(), lastRR: try body.u32(), delaySinceLastRR: try body.u32()))
                }
                blocks.append(.dlrr(items))
            default:
                blocks.append(.other(blockType: type, typeSpecific: specific, data: body.rest()))
            }
        }
        guard r.remaining == 0 else { throw .badLength }
        self.blocks = blocks
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: 0, type: RTCPPacketType.extendedReport) { out in
            out.append32(senderSSRC)
            for block in blocks {
                switch block {
                case .receiverReferenceTime(let ntp):
                    out.append(4); out.append(0); out.append16(2)
                    out.append64(ntp)
                case .dlrr(let items):
                    out.append(5); out.append(0); out.append16(UInt16(truncatingIfNeeded: items.count * 3))
                    for item in items {
                        out.append32(item.ssrc)
                        out.append32(item.lastRR)
                        out.append32(item.delaySinceLastRR)
                    }
                case .other(let type, let specific, let data):
                    out.append(type); out.append(specific)
                    let padded = (data.count + 3) / 4 * 4
                    out.append16(UInt16(truncatingIfNeeded: padded / 4))
                    out.append(contentsOf: data)
                    out.append(contentsOf: repeatElement(0, count: padded - data.count))
                }
            }
        }
    }
}
