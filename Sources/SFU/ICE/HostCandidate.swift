/// A host candidate we put in SDP answers: one per worker port (and the announced address).
package struct HostCandidate: Sendable, Equatable {
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

    /// The `a=candidate` priority of the `index`th host candidate (2,130,706,431 for the first).
    static func priority(index: Int) -> UInt32 {
        (hostTypePreference << 24) + ((firstLocalPreference - UInt32(min(index, 65_535))) << 8) + (256 - component)
    }
}
