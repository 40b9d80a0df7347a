/// A parsed RTP fixed header (RFC 3550 section 5.1) with the offsets of its CSRC list, header
/// extension block, payload and padding inside the datagram it was parsed from.
///
/// Parsing copies nothing and allocates nothing: the header is a small value; CSRCs, extension
/// elements and the payload are read from the original bytes through the offsets.
public struct RTPHeader: Sendable, Equatable {
    public var padding: Bool
    public var hasExtension: Bool
    public var marker: Bool
    public var payloadType: UInt8
    public var sequenceNumber: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    public var csrcCount: UInt8
    /// The "defined by profile" field of the extension block: 0xBEDE for one-byte elements,
    /// 0x100X for two-byte elements; 0 when there is no extension block.
    public var extensionProfile: UInt16
    /// Offset of the first extension byte (after the 4-byte extension header).
    public var extensionOffset: Int
    /// Length in bytes of the extension data (a multiple of 4).
    public var extensionLength: Int
    /// Offset of the payload (= the header's length).
    public var payloadOffset: Int
    public var payloadLength: Int
    /// Number of padding bytes at the end, including the count byte; 0 without padding.
    public var paddingLength: Int

    public var version: UInt8 { 2 }
    public var headerLength: Int { payloadOffset }
    public var packetLength: Int { payloadOffset + payloadLength + paddingLength }
    public var payloadRange: Range<Int> { payloadOffset..<(payloadOffset + payloadLength) }
    public var extensionRange: Range<Int> { extensionOffset..<(extensionOffset + extensionLength) }

    /// Parses the header of the RTP packet in `bytes` (the whole datagram).
    /// - Throws: ``RTPParseError`` when the packet is shorter than its header says, its version is
    ///   not 2 or its padding count does not fit.
    @inlinable
    public init(parsing bytes: UnsafeRawBufferPointer) throws(RTPParseError) {
        let count = bytes.count
        guard count >= 12 else { throw .truncated(needed: 12, available: count) }
        let b0 = bytes[0]
        guard b0 >> 6 == 2 else { throw .badVersion(b0 >> 6) }
        let b1 = bytes[1]
        padding = b0 & 0x20 != 0
        hasExtension = b0 & 0x10 != 0
        csrcCount = b0 & 0x0f
        marker = b1 & 0x80 != 0
        payloadType = b1 & 0x7f
        sequenceNumber = bytes.u16(2)
        timestamp = bytes.u32(4)
        ssrc = bytes.u32(8)
        var offset = 12 + 4 * Int(csrcCount)
        guard count >= offset else { throw .truncated(needed: offset, available: count) }
        if hasExtension {
            guard count >= offset + 4 else { throw .truncated(needed: offset + 4, available: count) }
            extensionProfile = bytes.u16(offset)
            extensionLength = 4 * Int(bytes.u16(offset + 2))
            extensionOffset = offset + 4
            offset = extensionOffset + extensionLength
            guard count >= offset else { throw .truncated(needed: offset, available: count) }
        } else {
            extensionProfile = 0
            extensionOffset = offset
            extensionLength = 0
        }
        payloadOffset = offset
        if padding {
            let pad = Int(bytes[count - 1])
            guard pad > 0, offset + pad <= count else { throw .badPadding }
            paddingLength = pad
        } else {
            paddingLength = 0
        }
        payloadLength = count - offset - paddingLength
    }

    /// Parses the header of the RTP packet in `bytes`.
    @inlinable
    public init(parsing bytes: [UInt8]) throws(RTPParseError) {
        self = try bytes.withParsedBytes { raw throws(RTPParseError) in try RTPHeader(parsing: raw) }
    }

    /// A header describing only an extension block of `length` bytes held at offset 0 of its own
    /// buffer (used to decode a block stored apart from its packet).
    init(extensionBlockProfile profile: UInt16, length: Int) {
        padding = false
        hasExtension = true
        marker = false
        payloadType = 0
        sequenceNumber = 0
        timestamp = 0
        ssrc = 0
        csrcCount = 0
        extensionProfile = profile
        extensionOffset = 0
        extensionLength = length
        payloadOffset = length
        payloadLength = 0
        paddingLength = 0
    }

    /// The CSRC at `index` (< `csrcCount`), read from the packet bytes the header was parsed from.
    @inlinable
    public func csrc(_ index: Int, in bytes: UnsafeRawBufferPointer) -> UInt32 {
        precondition(index < Int(csrcCount))
        return bytes.u32(12 + 4 * index)
    }

    /// The header extension elements of the packet (RFC 8285), without allocating.
    @inlinable
    public func extensions(in bytes: UnsafeRawBufferPointer) -> RTPHeaderExtensionElements {
        RTPHeaderExtensionElements(bytes: bytes, header: self)
    }

    /// The value of the extension element with `id`, or nil when the packet has none.
    @inlinable
    public func extensionValue(id: UInt8, in bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard hasExtension, id != 0 else { return nil }
        for element in RTPHeaderExtensionElements(bytes: bytes, header: self) where element.id == id {
            return UnsafeRawBufferPointer(rebasing: bytes[element.range])
        }
        return nil
    }
}

/// The form of an RTP header extension block (RFC 8285 section 4).
public enum RTPExtensionForm: Sendable, Equatable {
    /// Profile 0xBEDE: ids 1-14, values 1-16 bytes.
    case oneByte
    /// Profile 0x100X: ids 1-255, values 0-255 bytes; X is the 4 "appbits".
    case twoByte(appBits: UInt8)
    /// Any other profile: the block is opaque.
    case other(profile: UInt16)

    public init(profile: UInt16) {
        if profile == 0xBEDE {
            self = .oneByte
        } else if profile & 0xFFF0 == 0x1000 {
            self = .twoByte(appBits: UInt8(profile & 0x0F))
        } else {
            self = .other(profile: profile)
        }
    }

    public var profile: UInt16 {
        switch self {
        case .oneByte: 0xBEDE
        case .twoByte(let appBits): 0x1000 | UInt16(appBits & 0x0F)
        case .other(let profile): profile
        }
    }
}

/// A lazily decoded sequence of RFC 8285 extension elements: `(id, range of the value in the packet)`.
/// Padding bytes are skipped; a one-byte element with id 15 ends the block (RFC 8285 4.2); an
/// element whose length runs past the block ends it too (the rest is ignored, not trusted).
public struct RTPHeaderExtensionElements: Sequence, IteratorProtocol {
    public struct Element: Equatable, Sendable {
        public var id: UInt8
        public var range: Range<Int>

        @inlinable
        public init(id: UInt8, range: Range<Int>) {
            self.id = id
            self.range = range
        }
    }

    @usableFromInline let bytes: UnsafeRawBufferPointer
    @usableFromInline var offset: Int
    @usableFromInline let end: Int
    @usableFromInline let form: RTPExtensionForm

    @inlinable
    init(bytes: UnsafeRawBufferPointer, header: RTPHeader) {
        self.bytes = bytes
        self.offset = header.extensionOffset
        self.end = header.hasExtension ? header.extensionOffset + header.extensionLength : header.extensionOffset
        self.form = RTPExtensionForm(profile: header.extensionProfile)
    }

    @inlinable
    public mutating func next() -> Element? {
        switch form {
        case .oneByte:
            while offset < end {
                let b = bytes[offset]
                if b == 0 { offset += 1; continue }
                let id = b >> 4
                let length = Int(b & 0x0F) + 1
                if id == 15 { offset = end; return nil }
                let start = offset + 1
                guard start + length <= end else { offset = end; return nil }
                offset = start + length
                return Element(id: id, range: start..<(start + length))
            }
            return nil
        case .twoByte:
            while offset < end {
                let id = bytes[offset]
                if id == 0 { offset += 1; continue }
                guard offset + 1 < end else { offset = end; return nil }
                let length = Int(bytes[offset + 1])
                let start = offset + 2
                guard start + length <= end else { offset = end; return nil }
                offset = start + length
                return Element(id: id, range: start..<(start + length))
            }
            return nil
        case .other:
            return nil
        }
    }
}
