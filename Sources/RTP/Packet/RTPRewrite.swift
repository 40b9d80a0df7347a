/// In-place edits of an RTP packet's fixed header, for the forwarding path: a consumer rewrites
/// the fields of the datagram it is about to protect and send, without copying the payload.
/// Callers pass a buffer that holds a parsed, valid RTP header (at least 12 bytes).
package enum RTPRewrite {
    @inlinable @inline(__always)
    package static func setSequenceNumber(_ value: UInt16, in bytes: UnsafeMutableRawBufferPointer) {
        bytes.put16(value, at: 2)
    }

    @inlinable @inline(__always)
    package static func setTimestamp(_ value: UInt32, in bytes: UnsafeMutableRawBufferPointer) {
        bytes.put32(value, at: 4)
    }

    @inlinable @inline(__always)
    package static func setSSRC(_ value: UInt32, in bytes: UnsafeMutableRawBufferPointer) {
        bytes.put32(value, at: 8)
    }

    @inlinable @inline(__always)
    package static func setPayloadType(_ value: UInt8, in bytes: UnsafeMutableRawBufferPointer) {
        bytes[1] = (bytes[1] & 0x80) | (value & 0x7f)
    }

    @inlinable @inline(__always)
    package static func setMarker(_ value: Bool, in bytes: UnsafeMutableRawBufferPointer) {
        bytes[1] = value ? bytes[1] | 0x80 : bytes[1] & 0x7f
    }

    /// Overwrites the value of an existing extension element of the same length (e.g. to stamp a
    /// transport-wide sequence number into a slot the packet already has).
    /// - Returns: false when the packet has no element with `id` or its length differs.
    @inlinable
    @discardableResult
    package static func setExtensionValue(id: UInt8, to value: UnsafeRawBufferPointer, header: RTPHeader, in bytes: UnsafeMutableRawBufferPointer) -> Bool {
        for element in header.extensions(in: UnsafeRawBufferPointer(bytes)) where element.id == id {
            guard element.range.count == value.count else { return false }
            for i in 0..<value.count { bytes[element.range.lowerBound + i] = value[i] }
            return true
        }
        return false
    }
}
