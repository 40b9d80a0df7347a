/// RTP retransmission payload format (RFC 4588): the RTX packet carries the original sequence
/// number (OSN) in the first two bytes of its payload, on its own SSRC and payload type.
extension RTPPacket {
    /// The RTX packet that retransmits `self`.
    public func rtxWrapped(ssrc rtxSSRC: UInt32, payloadType rtxPayloadType: UInt8, sequenceNumber rtxSequenceNumber: UInt16) -> RTPPacket {
        var rtx = self
        rtx.ssrc = rtxSSRC
        rtx.payloadType = rtxPayloadType & 0x7f
        rtx.sequenceNumber = rtxSequenceNumber
        rtx.payload = [UInt8(sequenceNumber >> 8), UInt8(truncatingIfNeeded: sequenceNumber)] + payload
        return rtx
    }

    /// The original packet carried by this RTX packet.
    /// - Throws: ``RTPParseError/truncated(needed:available:)`` when the payload has no OSN.
    public func rtxUnwrapped(originalSSRC: UInt32, originalPayloadType: UInt8) throws(RTPParseError) -> RTPPacket {
        guard payload.count >= 2 else { throw .truncated(needed: 2, available: payload.count) }
        var original = self
        original.ssrc = originalSSRC
        original.payloadType = originalPayloadType & 0x7f
        original.sequenceNumber = UInt16(payload[0]) << 8 | UInt16(payload[1])
        original.payload = Array(payload[2...])
        return original
    }
}

extension RTPHeader {
    /// The original sequence number of an RTX packet whose header is `self`, read from its payload.
    @inlinable
    public func rtxOriginalSequenceNumber(in bytes: UnsafeRawBufferPointer) -> UInt16? {
        payloadLength >= 2 ? bytes.u16(payloadOffset) : nil
    }
}
