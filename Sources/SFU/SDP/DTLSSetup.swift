import DTLS

/// The `a=setup` attribute (RFC 4145 4, RFC 5763 5): which side starts the DTLS handshake.
package enum DTLSSetup: String, Sendable {
    case active, passive, actpass, holdconn

    /// Reads the attribute's value; anything else (or none) is `actpass`, what an offer must say.
    package init(sdpValue: String?) {
        self = sdpValue.flatMap(DTLSSetup.init(rawValue:)) ?? .actpass
    }

    /// What we answer to a peer's setup: we take the passive side (the DTLS server, waiting for its
    /// ClientHello) unless the peer insists on being passive itself.
    package var answer: DTLSSetup { self == .passive ? .active : .passive }

    /// The DTLS role of the side whose (answered) setup this is.
    package var role: DTLSEndpoint.Role { self == .active ? .client : .server }
}
