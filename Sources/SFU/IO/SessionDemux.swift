/// Which session a datagram belongs to: STUN requests by the local ufrag in USERNAME, everything
/// else by the remote address, learned from authenticated checks (the address a transport selected).
/// Sans-IO; the media worker and in-memory tests share it.
package struct SessionDemux {
    private(set) var byUfrag: [String: WorkerSession] = [:]
    private var byAddress: [TransportAddress: WorkerSession] = [:]
    /// Addresses a session is verifying (``ICELiteAgent/pending``): the answer to our check carries
    /// no USERNAME, so it is routed by where it comes from. One per session.
    private var byPendingCheck: [TransportAddress: WorkerSession] = [:]

    package init() {}

    package var sessions: Dictionary<String, WorkerSession>.Values { byUfrag.values }
    package var count: Int { byUfrag.count }

    package mutating func add(_ session: WorkerSession) {
        byUfrag[session.transport.ice.local.ufrag] = session
    }

    /// Forgets a session and its addresses. Returns the addresses it had, or nil if it was not there.
    @discardableResult
    package mutating func remove(_ session: WorkerSession) -> [TransportAddress]? {
        let ufrag = session.transport.ice.local.ufrag
        guard byUfrag[ufrag] === session else { return nil }
        byUfrag[ufrag] = nil
        var addresses: [TransportAddress] = []
        for (address, s) in byAddress where s === session {
            byAddress[address] = nil
            addresses.append(address)
        }
        for (address, s) in byPendingCheck where s === session { byPendingCheck[address] = nil }
        return addresses
    }

    package func session(ufrag: String) -> WorkerSession? { byUfrag[ufrag] }

    /// After an ICE restart: `session` is found by its new local ufrag, no longer by `oldUfrag`,
    /// and the check it was verifying is forgotten (the agent dropped it).
    package mutating func rekey(_ session: WorkerSession, from oldUfrag: String) {
        guard byUfrag[oldUfrag] === session else { return }
        byUfrag[oldUfrag] = nil
        byUfrag[session.transport.ice.local.ufrag] = session
        for (address, s) in byPendingCheck where s === session { byPendingCheck[address] = nil }
    }

    /// Whether `session` is registered (and not replaced by another with its ufrag).
    package func contains(_ session: WorkerSession) -> Bool { byUfrag[session.transport.ice.local.ufrag] === session }

    /// The session for a datagram from `source`, or nil.
    package func route(_ raw: UnsafeRawBufferPointer, from source: TransportAddress) -> WorkerSession? {
        if STUNMessage.isSTUN(raw) {
            if let ufrag = Self.username(raw) { return byUfrag[ufrag] }
            return byPendingCheck[source] ?? byAddress[source]
        }
        return byAddress[source]
    }

    /// After `session` handled a datagram from `source`: remember the address it selected (and
    /// forget the one it left: a stale entry would hand it whatever comes from there later), and
    /// the address it is verifying.
    /// - Returns: true when the address is new for the session.
    @discardableResult
    package mutating func learn(_ session: WorkerSession, from source: TransportAddress) -> Bool {
        if let pending = session.transport.ice.pending?.address, byPendingCheck[pending] !== session {
            for (address, s) in byPendingCheck where s === session { byPendingCheck[address] = nil }
            byPendingCheck[pending] = session
        }
        guard let selected = session.transport.remoteAddress, selected == source, byAddress[source] !== session else { return false }
        for (address, s) in byAddress where s === session { byAddress[address] = nil }
        if byPendingCheck[source] === session { byPendingCheck[source] = nil }
        byAddress[source] = session
        return true
    }

    /// The local ufrag from a STUN request's USERNAME ("local:remote"), read without a full parse.
    static func username(_ raw: UnsafeRawBufferPointer) -> String? {
        var offset = STUNMessage.headerSize
        while offset + 4 <= raw.count {
            let type = raw.u16(offset)
            let length = Int(raw.u16(offset + 2))
            let start = offset + 4
            guard start + length <= raw.count else { return nil }
            if type == STUNAttributeType.username {
                let value = raw[start..<(start + length)]
                let local = value.prefix { $0 != UInt8(ascii: ":") }
                return String(decoding: local, as: UTF8.self)
            }
            offset = start + (length + 3) & ~3
        }
        return nil
    }
}
