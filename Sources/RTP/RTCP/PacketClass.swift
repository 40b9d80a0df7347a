/// RFC 7983 / RFC 5761 demultiplexing of a datagram on a shared port.
package enum PacketClass: Sendable, Equatable {
    case stun, dtls, rtp, rtcp, other

    /// Classifies by the first byte (RFC 7983) and, for RTP/RTCP, the payload type (RFC 5761:
    /// 64-95 with the marker bit masked out is RTCP).
    @inlinable
    package init(classifying bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first else { self = .other; return }
        switch first {
        case 0...3: self = .stun
        case 20...63: self = .dtls
        case 128...191:
            guard bytes.count >= 2 else { self = .other; return }
            let pt = bytes[1] & 0x7f
            self = (64...95).contains(pt) ? .rtcp : .rtp
        default: self = .other
        }
    }
}
