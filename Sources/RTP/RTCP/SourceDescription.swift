/// Source description (RFC 3550 6.5, PT 202): chunks of items (CNAME, NAME, ...) per source.
public struct SourceDescription: Sendable, Equatable {
    public struct Item: Sendable, Equatable {
        /// 1 CNAME, 2 NAME, 3 EMAIL, 4 PHONE, 5 LOC, 6 TOOL, 7 NOTE, 8 PRIV.
        public var type: UInt8
        public var value: [UInt8]

        public init(type: UInt8, value: [UInt8]) {
            self.type = type
            self.value = Array(value.prefix(255))
        }

        public init(type: UInt8, text: String) { self.init(type: type, value: Array(text.utf8)) }

        public var text: String { String(decoding: value, as: UTF8.self) }

        public static let cname: UInt8 = 1
    }

    public struct Chunk: Sendable, Equatable {
        public var ssrc: UInt32
        public var items: [Item]

        public init(ssrc: UInt32, items: [Item]) {
            self.ssrc = ssrc
            self.items = items
        }
    }

    public var chunks: [Chunk]

    public init(chunks: [Chunk]) { self.chunks = chunks }

    /// An SDES with one CNAME, the usual content of every compound packet.
    public init(ssrc: UInt32, cname: String) {
        chunks = [Chunk(ssrc: ssrc, items: [Item(type: Item.cname, text: cname)])]
    }

    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        var chunks: [Chunk] = []
        for _ in 0..<header.count {
            let chunkStart = r.offset
            let ssrc = try r.u32()
            var items: [Item] = []
            while true {
                let type = try r.u8()
                if type == 0 { break }
                let length = Int(try r.u8())
                items.append(Item(type: type, value: try r.bytes(length)))
            }
            // Null terminator then padding to the next 32-bit boundary of the chunk.
            let used = r.offset - chunkStart
            try r.skip((4 - used % 4) % 4)
            chunks.append(Chunk(ssrc: ssrc, items: items))
        }
        self.chunks = chunks
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: UInt8(min(chunks.count, 31)), type: RTCPPacketType.sourceDescription) { out in
            for chunk in chunks.prefix(31) {
                let start = out.count
                out.append32(chunk.ssrc)
                for item in chunk.items {
                    out.append(item.type)
                    out.append(UInt8(item.value.count))
                    out.append(contentsOf: item.value)
                }
                out.append(0)
                while (out.count - start) % 4 != 0 { out.append(0) }
            }
        }
    }
}
