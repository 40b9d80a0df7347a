/// A media section's direction attribute (RFC 8866 6.7; sendrecv when absent).
package enum MediaDirection: String, Sendable, CaseIterable {
    case sendrecv, sendonly, recvonly, inactive

    /// The side that wrote it sends media on the section.
    package var sends: Bool { self == .sendrecv || self == .sendonly }
    /// The side that wrote it receives media on the section.
    package var receives: Bool { self == .sendrecv || self == .recvonly }

    /// An answer that does what it is offered (RFC 3264 6.1): what the offerer sends, the answerer
    /// receives, and the other way round.
    package var answered: MediaDirection {
        switch self {
        case .sendonly: .recvonly
        case .recvonly: .sendonly
        case .sendrecv, .inactive: self
        }
    }

    /// The SDP attribute (`a=sendonly`...).
    package var attribute: SessionDescription.Attribute { .init(rawValue) }
}
