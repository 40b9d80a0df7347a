/// One RFC 8285 header extension element.
public struct RTPHeaderExtension: Sendable, Equatable {
    public var id: UInt8
    public var value: [UInt8]

    public init(id: UInt8, value: [UInt8]) {
        self.id = id
        self.value = value
    }
}

/// An RTP packet that owns its bytes: for building packets, tests, tools and anything off the hot
/// path. The forwarding path works on ``RTPHeader`` and the datagram's own buffer instead.
///
/// The extension block is kept as raw bytes so that parsing and serializing give back the same
/// bytes; ``extensions`` decodes it and ``setExtensions(_:form:)`` encodes it.
public struct RTPPacket: Sendable, Equatable {
    public var marker: Bool
    public var payloadType: UInt8
    public var sequenceNumber: UInt16
    public var timestamp: UInt32
    public var ssrc: UInt32
    public var csrcs: [UInt32]
    /// nil when the packet has no extension block.
    public var extensionProfile: UInt16?
    /// The extension block's data (a multiple of 4 bytes), without the 4-byte block header.
    public var extensionData: [UInt8]
    public var payload: [UInt8]
    /// The padding bytes, the last of which is their count; empty for no padding.
    public var padding: [UInt8]

    public init(
        payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32,
        marker: Bool = false, csrcs: [UInt32] = [], payload: [UInt8] = []
    ) {
        self.marker = marker
        self.payloadType = payloadType & 0x7f
        self.sequenceNumber = sequenceNumber
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrcs = Array(csrcs.prefix(15))
        self.extensionProfile = nil
        self.extensionData = []
        self.payload = payload
        self.padding = []
    }

    /// Parses a whole RTP packet, copying its parts.
    public init(parsing bytes: [UInt8]) throws(RTPParseError) {
        let header = try RTPHeader(parsing: bytes)
        marker = header.marker
        payloadType = header.payloadType
        sequenceNumber = header.sequenceNumber
        timestamp = header.timestamp
        ssrc = header.ssrc
        var csrcs: [UInt32] = []
        bytes.withUnsafeBytes { raw in
            for i in 0..<Int(header.csrcCount) { csrcs.append(header.csrc(i, in: raw)) }
        }
        self.csrcs = csrcs
        extensionProfile = header.hasExtension ? header.extensionProfile : nil
        extensionData = Array(bytes[header.extensionRange])
        payload = Array(bytes[header.payloadRange])
        padding = Array(bytes[(header.payloadOffset + header.payloadLength)...])
    }

    public var headerLength: Int { 12 + 4 * csrcs.count + (extensionProfile == nil ? 0 : 4 + extensionData.count) }
    public var serializedSize: Int { headerLength + payload.count + padding.count }

    /// Appends the packet's bytes to `out`.
    public func serialize(into out: inout [UInt8]) {
        out.reserveCapacity(out.count + serializedSize)
        var b0: UInt8 = 0x80 | UInt8(csrcs.count & 0x0f)
        if !padding.isEmpty { b0 |= 0x20 }
        if extensionProfile != nil { b0 |= 0x10 }
        out.append(b0)
        out.append((marker ? 0x80 : 0) | (payloadType & 0x7f))
        out.append16(sequenceNumber)
        out.append32(timestamp)
        out.append32(ssrc)
        for csrc in csrcs { out.append32(csrc) }
        if let extensionProfile {
            out.append16(extensionProfile)
            out.append16(UInt16(truncatingIfNeeded: extensionData.count / 4))
            out.append(contentsOf: extensionData)
        }
        out.append(contentsOf: payload)
        out.append(contentsOf: padding)
    }

    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        serialize(into: &out)
        return out
    }

    /// Sets `count` bytes of padding (zeros then the count byte); 0 removes it.
    public mutating func setPadding(count: UInt8) {
        padding = count == 0 ? [] : [UInt8](repeating: 0, count: Int(count) - 1) + [count]
    }

    // MARK: extensions

    /// The decoded extension elements (empty for no block or a profile that is neither form of RFC 8285).
    public var extensions: [RTPHeaderExtension] {
        guard let extensionProfile else { return [] }
        let header = RTPHeader(extensionBlockProfile: extensionProfile, length: extensionData.count)
        return extensionData.withUnsafeBytes { raw in
            header.extensions(in: raw).map { RTPHeaderExtension(id: $0.id, value: Array(raw[$0.range])) }
        }
    }

    public func extensionValue(id: UInt8) -> [UInt8]? {
        extensions.first { $0.id == id }?.value
    }

    /// Replaces the extension block with `elements` in the given form (an empty list removes it).
    /// - Throws: ``RTPParseError/invalidField(_:)`` when an element does not fit the form
    ///   (one-byte: id 1-14, 1-16 bytes; two-byte: id 1-255, 0-255 bytes).
    public mutating func setExtensions(_ elements: [RTPHeaderExtension], form: RTPExtensionForm = .oneByte) throws(RTPParseError) {
        guard !elements.isEmpty else {
            extensionProfile = nil
            extensionData = []
            return
        }
        var data: [UInt8] = []
        switch form {
        case .oneByte:
            for e in elements {
                guard (1...14).contains(e.id), (1...16).contains(e.value.count) else {
                    throw .invalidField("one-byte extension id \(e.id) with \(e.value.count) bytes")
                }
                data.append(e.id << 4 | UInt8(e.value.count - 1))
                data.append(contentsOf: e.value)
            }
        case .twoByte:
            for e in elements {
                guard e.id >= 1, e.value.count <= 255 else {
                    throw .invalidField("two-byte extension id \(e.id) with \(e.value.count) bytes")
                }
                data.append(e.id)
                data.append(UInt8(e.value.count))
                data.append(contentsOf: e.value)
            }
        case .other:
            throw .invalidField("extension elements need the one-byte or two-byte form")
        }
        data.padTo4()
        extensionProfile = form.profile
        extensionData = data
    }

    /// Sets (or replaces) one element, keeping the others; picks the two-byte form if any element needs it.
    public mutating func setExtension(id: UInt8, value: [UInt8]) throws(RTPParseError) {
        var elements = extensions.filter { $0.id != id }
        elements.append(RTPHeaderExtension(id: id, value: value))
        let needsTwoByte = elements.contains { $0.id > 14 || $0.value.isEmpty || $0.value.count > 16 }
        let current = extensionProfile.map(RTPExtensionForm.init(profile:))
        if case .twoByte = current {
            try setExtensions(elements, form: current ?? .oneByte)
        } else {
            try setExtensions(elements, form: needsTwoByte ? .twoByte(appBits: 0) : .oneByte)
        }
    }
}
