/// A host candidate we put in SDP answers: one per worker port (and the announced address).
public struct HostCandidate: Sendable, Equatable {
    public var address: TransportAddress
    public var announcedHost: String?
    public init(address: TransportAddress, announcedHost: String? = nil) {
        self.address = address
        self.announcedHost = announcedHost
    }
}
