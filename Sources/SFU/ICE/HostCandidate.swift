/// A host candidate we put in SDP: one per worker port (and the announced address), on UDP and,
/// with ICE-TCP, a passive TCP one beside it (RFC 6544) for clients that cannot send UDP.
package struct HostCandidate: Sendable, Equatable {
    /// The worker's address; `isTCP` for the passive TCP candidate.
    package var address: TransportAddress
    package var announcedHost: String?
    package init(address: TransportAddress, announcedHost: String? = nil) {
        self.address = address
        self.announcedHost = announcedHost
    }

    /// RFC 8445 5.1.2.1: type preference 126 (host), local preference 65535 for the first
    /// candidate and one less for each next one, component 1 (RTP; rtcp-mux).
    static let hostTypePreference: UInt32 = 126
    static let firstLocalPreference: UInt32 = 65_535
    static let component: UInt32 = 1
    /// RFC 6544 4.2: a TCP candidate's local preference is 2^13 x direction-pref + other-pref;
    /// passive is direction-pref 4 for a host candidate. So every TCP candidate ranks below every
    /// UDP one (local preference 40,959 at most against 65,535): a client that can use UDP does.
    static let passiveDirectionPreference: UInt32 = 4

    /// The `a=candidate` priority of the `index`th UDP host candidate (2,130,706,431 for the first).
    static func priority(index: Int) -> UInt32 {
        (hostTypePreference << 24) + ((firstLocalPreference - UInt32(min(index, 65_535))) << 8) + (256 - component)
    }

    /// The `a=candidate` priority of the `index`th passive TCP host candidate (2,124,414,975 for the first).
    static func tcpPriority(index: Int) -> UInt32 {
        let local = (passiveDirectionPreference << 13) + (8_191 - UInt32(min(index, 8_191)))
        return (hostTypePreference << 24) + (local << 8) + (256 - component)
    }

    /// The `a=candidate` values for `candidates`, in order: foundations from 1, each protocol's
    /// priorities counted on their own (the first TCP candidate ranks below the last UDP one).
    static func attributeValues(_ candidates: [HostCandidate]) -> [String] {
        var udp = 0, tcp = 0
        return candidates.enumerated().map { i, c in
            let host = c.announcedHost ?? c.address.host
            if c.address.isTCP {
                defer { tcp += 1 }
                return "\(i + 1) 1 tcp \(tcpPriority(index: tcp)) \(host) \(c.address.port) typ host tcptype passive"
            }
            defer { udp += 1 }
            return "\(i + 1) 1 udp \(priority(index: udp)) \(host) \(c.address.port) typ host"
        }
    }
}
