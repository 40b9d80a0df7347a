/// Writes outbound RTP packets into a send buffer: the SFU's own header (fixed header, and the
/// transport-wide sequence number as a one-byte-header extension when negotiated), an RTX packet's
/// original sequence number, the payload with its VP8 descriptor rewritten, and padding-only
/// probe packets. Pure: no state, the caller keeps its sequence numbers.
package enum RTPWriter {
    /// The fixed RTP header (RFC 3550 5.1), no CSRCs.
    package static let fixedHeaderSize = 12
    /// The extension block we write: 4 bytes of block header (0xBEDE, length 1 word) and one
    /// element (1 byte id/length, 2 bytes transport-wide sequence, 1 byte padding).
    package static let transportCCExtensionSize = 8
    /// An RTX payload's first two bytes: the original sequence number (RFC 4588 4).
    package static let rtxOriginalSequenceSize = 2
    /// The most padding one packet carries: its last byte counts the padding, itself included.
    package static let maxPaddingSize = 255

    /// The transport-wide sequence number's extension: its negotiated id and the value.
    package struct TransportCC: Sendable, Equatable {
        package var id: UInt8
        package var sequence: UInt16
        package init(id: UInt8, sequence: UInt16) {
            self.id = id
            self.sequence = sequence
        }
    }

    /// A VP8 payload descriptor and the picture id and TL0PICIDX the copy being sent takes.
    package typealias VP8Rewrite = (descriptor: VP8Descriptor, pictureID: UInt16?, tl0PicIdx: UInt8?)

    /// The header's size with or without the transport-cc extension.
    package static func headerSize(transportCC: Bool) -> Int {
        fixedHeaderSize + (transportCC ? transportCCExtensionSize : 0)
    }

    /// Writes the header, the RTX original sequence number when given, and the payload with its
    /// VP8 descriptor rewritten.
    /// - Returns: the packet's length, 0 when it does not fit.
    package static func writePacket(_ buffer: UnsafeMutableRawBufferPointer, marker: Bool, payloadType: UInt8, sequenceNumber: UInt16,
                                   timestamp: UInt32, ssrc: UInt32, transportCC: TransportCC?, originalSequence: UInt16?,
                                   payload: UnsafeRawBufferPointer, vp8: VP8Rewrite?) -> Int {
        let headerSize = headerSize(transportCC: transportCC != nil)
        let start = headerSize + (originalSequence == nil ? 0 : rtxOriginalSequenceSize)
        let length = start + payload.count
        guard length <= buffer.count, let base = buffer.baseAddress else { return 0 }
        writeHeader(buffer, marker: marker, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp,
                    ssrc: ssrc, transportCC: transportCC)
        if let original = originalSequence {
            buffer[headerSize] = UInt8(original >> 8)
            buffer[headerSize + 1] = UInt8(truncatingIfNeeded: original)
        }
        if let source = payload.baseAddress { (base + start).copyMemory(from: source, byteCount: payload.count) }
        if let vp8 {
            vp8.descriptor.rewrite(pictureID: vp8.pictureID, tl0PicIdx: vp8.tl0PicIdx, in: UnsafeMutableRawBufferPointer(rebasing: buffer[start..<length]))
        }
        return length
    }

    /// Writes the fixed header and, with `transportCC`, the one-byte-header extension block
    /// (RFC 8285) carrying it. The buffer must hold ``headerSize(transportCC:)`` bytes.
    package static func writeHeader(_ b: UnsafeMutableRawBufferPointer, marker: Bool, payloadType: UInt8, sequenceNumber: UInt16,
                                   timestamp: UInt32, ssrc: UInt32, transportCC: TransportCC?) {
        b[0] = transportCC == nil ? 0x80 : 0x90
        b[1] = (marker ? 0x80 : 0) | (payloadType & 0x7F)
        b[2] = UInt8(sequenceNumber >> 8)
        b[3] = UInt8(truncatingIfNeeded: sequenceNumber)
        b.storeBytes(of: timestamp.bigEndian, toByteOffset: 4, as: UInt32.self)
        b.storeBytes(of: ssrc.bigEndian, toByteOffset: 8, as: UInt32.self)
        if let t = transportCC {
            b[12] = 0xBE; b[13] = 0xDE; b[14] = 0; b[15] = 1
            b[16] = t.id << 4 | 1
            b[17] = UInt8(t.sequence >> 8)
            b[18] = UInt8(truncatingIfNeeded: t.sequence)
            b[19] = 0
        }
    }

    /// The size of a padding-only probe packet with the transport-cc extension and the most padding.
    package static let paddingPacketSize = fixedHeaderSize + transportCCExtensionSize + maxPaddingSize

    /// A padding-only packet (P bit, no payload) with the transport-cc extension: what probes are
    /// made of. - Returns: its length, 0 when it does not fit.
    package static func writePadding(_ buffer: UnsafeMutableRawBufferPointer, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32,
                                    ssrc: UInt32, transportCC: TransportCC) -> Int {
        let size = paddingPacketSize
        guard size <= buffer.count else { return 0 }
        writeHeader(buffer, marker: false, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp, ssrc: ssrc,
                    transportCC: transportCC)
        buffer[0] |= 0x20
        let header = headerSize(transportCC: true)
        for i in header..<(size - 1) { buffer[i] = 0 }
        buffer[size - 1] = UInt8(size - header)
        return size
    }
}
