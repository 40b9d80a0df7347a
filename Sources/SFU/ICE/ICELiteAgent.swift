import DTLS

/// The server side of ICE-lite (RFC 8445 section 2.5 and 7.3): we answer the peer's binding
/// requests when their USERNAME and MESSAGE-INTEGRITY check out, take the pair the peer nominates
/// (USE-CANDIDATE) as the selected one, and consider the transport dead when no valid request came
/// for `consentTimeout` (RFC 7675 consent freshness). When a peer already connected nominates a new
/// address (it changed networks), we follow only after that address answered a check of our own
/// (RFC 7675's consent check): the request's source address can be forged, and following it
/// unverified would aim the media at whoever the sender chose. Sans-IO: every call takes `now`.
package final class ICELiteAgent {
    package struct Credentials: Sendable, Equatable {
        package var ufrag: String
        package var password: String
        package init(ufrag: String, password: String) {
            self.ufrag = ufrag
            self.password = password
        }

        /// Random credentials: 8 characters of ufrag (RFC 8839 asks >= 4) and 24 of password (>= 22).
        package static func random() -> Credentials {
            Credentials(ufrag: randomICEString(8), password: randomICEString(24))
        }
    }

    /// What handling one STUN datagram produced.
    package struct Outcome {
        /// The response to send back to the sender (success or error), if any.
        package var response: [UInt8]?
        /// True when the request was authenticated (the sender is our peer).
        package var authenticated = false
        /// Set when this request changed the selected address.
        package var newSelectedAddress: TransportAddress?
        /// A binding request of ours to send, to verify an address the peer nominated.
        package var check: (bytes: [UInt8], to: TransportAddress)?
    }

    package private(set) var local: Credentials
    package var remote: Credentials?
    package let consentTimeoutNanos: Int64
    private var integrityKey: HMAC
    /// The address the peer nominated (or, before any nomination, the last one that passed a check).
    package private(set) var selectedAddress: TransportAddress?
    package private(set) var nominated = false
    package private(set) var lastValidRequestNanos: Int64?
    /// Requests rejected (bad integrity, unknown user, malformed), for metrics.
    package private(set) var rejected = 0
    /// A nominated address being verified: our check's transaction id and when it was sent.
    package private(set) var pending: (address: TransportAddress, transactionID: [UInt8], sentNanos: Int64)?
    /// A check not answered within this is sent again at the peer's next nomination from there.
    static let recheckIntervalNanos: Int64 = 500_000_000
    private var remoteKey: (password: String, key: HMAC)?

    package init?(local: Credentials, remote: Credentials? = nil, consentTimeoutNanos: Int64 = 30_000_000_000) {
        guard let key = HMAC(digest: .sha1, key: Array(local.password.utf8)) else { return nil }
        self.local = local
        self.remote = remote
        self.consentTimeoutNanos = consentTimeoutNanos
        integrityKey = key
    }

    /// ICE restart (RFC 8445 section 9): new credentials on our side and, once the peer's answer or
    /// offer says so, on its side (`remote` nil: any peer ufrag until then). Checks with the old
    /// credentials are refused from now on. The selected address stays (media keeps flowing there
    /// until the peer nominates with the new credentials; a new address is verified first, as
    /// always), and so does consent: the restart does not extend a dead peer's life.
    /// - Returns: false (nothing changed) when no HMAC key can be made.
    package func restart(local: Credentials, remote: Credentials?) -> Bool {
        guard let key = HMAC(digest: .sha1, key: Array(local.password.utf8)) else { return false }
        self.local = local
        self.remote = remote
        integrityKey = key
        remoteKey = nil
        pending = nil
        return true
    }

    /// Whether consent expired: no authenticated request for `consentTimeout` since the first one
    /// (or since `startNanos` when none ever came).
    package func consentExpired(nowNanos: Int64, startNanos: Int64) -> Bool {
        nowNanos - (lastValidRequestNanos ?? startNanos) > consentTimeoutNanos
    }

    /// When consent expires if nothing more arrives.
    package func consentDeadline(startNanos: Int64) -> Int64 {
        (lastValidRequestNanos ?? startNanos) + consentTimeoutNanos
    }

    /// Handles a STUN datagram from `source`.
    package func handle(_ raw: UnsafeRawBufferPointer, from source: TransportAddress, nowNanos: Int64) -> Outcome {
        var outcome = Outcome()
        let message: STUNMessage
        do {
            message = try STUNMessage(parsing: raw)
        } catch {
            rejected += 1
            return outcome
        }
        // ICE speaks only Binding. Anything else is dropped unanswered: answering arbitrary methods
        // from unauthenticated senders would only widen what the server reflects.
        guard message.method == STUNMessage.bindingMethod else {
            rejected += 1
            return outcome
        }
        if message.messageClass == .successResponse {
            verify(response: message, raw: raw, from: source, outcome: &outcome)
            return outcome
        }
        // Indications (keepalives) and error responses need no answer.
        guard message.messageClass == .request else { return outcome }

        // RFC 5389 10.1.2: no USERNAME or MESSAGE-INTEGRITY -> 400; unknown user or bad MAC -> 401.
        guard let username = message.username, message.integrityOffset != nil else {
            rejected += 1
            outcome.response = errorResponse(to: message, code: 400, reason: "Bad Request")
            return outcome
        }
        let parts = username.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == local.ufrag, remote.map({ parts[1] == $0.ufrag }) ?? true,
              message.checkIntegrity(raw, key: integrityKey)
        else {
            rejected += 1
            outcome.response = errorResponse(to: message, code: 401, reason: "Unauthorized")
            return outcome
        }
        // Comprehension-required attributes we do not know: 420 (RFC 5389 7.3.1).
        let known: Set<UInt16> = [STUNAttributeType.username, STUNAttributeType.priority, STUNAttributeType.useCandidate,
                                  STUNAttributeType.iceControlling, STUNAttributeType.iceControlled]
        let unknown = message.attributes.map(\.type).filter { $0 < 0x8000 && !known.contains($0) }
        if !unknown.isEmpty {
            var m = STUNMessage(messageClass: .errorResponse, transactionID: message.transactionID,
                                attributes: [STUNMessage.errorCodeAttribute(420, reason: "Unknown Attribute")])
            m.attributes.append(STUNMessage.Attribute(type: STUNAttributeType.unknownAttributes,
                                                      value: unknown.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }))
            outcome.response = m.serialized(integrity: integrityKey)
            return outcome
        }
        // A lite agent is always controlled: a peer that also claims to be controlled must switch.
        if message.iceControlled != nil {
            outcome.response = STUNMessage(messageClass: .errorResponse, transactionID: message.transactionID,
                                           attributes: [STUNMessage.errorCodeAttribute(487, reason: "Role Conflict")])
                .serialized(integrity: integrityKey)
            return outcome
        }

        outcome.authenticated = true
        lastValidRequestNanos = nowNanos
        if message.useCandidate {
            if nominated, let selected = selectedAddress, selected != source {
                // Connected elsewhere: the new address must answer our check first.
                if pending?.address != source || pending.map({ nowNanos - $0.sentNanos >= Self.recheckIntervalNanos }) == true {
                    outcome.check = makeCheck(to: source, nowNanos: nowNanos)
                }
            } else {
                if selectedAddress != source || !nominated { outcome.newSelectedAddress = source }
                selectedAddress = source
                nominated = true
                pending = nil
            }
        } else if !nominated, selectedAddress != source {
            selectedAddress = source
            outcome.newSelectedAddress = source
        }
        let response = STUNMessage(messageClass: .successResponse, transactionID: message.transactionID,
                                   attributes: [STUNMessage.xorMappedAddressAttribute(source, transactionID: message.transactionID)])
        outcome.response = response.serialized(integrity: integrityKey)
        return outcome
    }

    /// A binding request to `address` with the peer's credentials (USERNAME remote:local,
    /// MESSAGE-INTEGRITY with the peer's password), or nil when we do not know the peer's password.
    /// The PRIORITY of our own checks (RFC 8445 7.1.1: what a peer-reflexive candidate of ours would
    /// have): type preference 110, local preference 1 (our one address), component 1.
    static let consentCheckPriority: UInt32 = (110 << 24) + (1 << 8) + (256 - 1)

    private func makeCheck(to address: TransportAddress, nowNanos: Int64) -> (bytes: [UInt8], to: TransportAddress)? {
        guard let remote, let key = remoteIntegrityKey(remote) else { return nil }
        let tid = secureRandomBytes(12)
        pending = (address, tid, nowNanos)
        let request = STUNMessage(messageClass: .request, transactionID: tid, attributes: [
            STUNMessage.usernameAttribute("\(remote.ufrag):\(local.ufrag)"),
            STUNMessage.u32Attribute(STUNAttributeType.priority, Self.consentCheckPriority),
            STUNMessage.u64Attribute(STUNAttributeType.iceControlled, 0),
        ])
        return (request.serialized(integrity: key), address)
    }

    private func remoteIntegrityKey(_ remote: Credentials) -> HMAC? {
        if let k = remoteKey, k.password == remote.password { return k.key }
        guard let key = HMAC(digest: .sha1, key: Array(remote.password.utf8)) else { return nil }
        remoteKey = (remote.password, key)
        return key
    }

    /// The answer to our check: from the address checked, our transaction, signed with the peer's
    /// password. Then the selected address moves there.
    private func verify(response: STUNMessage, raw: UnsafeRawBufferPointer, from source: TransportAddress, outcome: inout Outcome) {
        guard let p = pending, p.address == source, p.transactionID == response.transactionID,
              let remote, let key = remoteIntegrityKey(remote), response.checkIntegrity(raw, key: key) else {
            rejected += 1
            return
        }
        pending = nil
        selectedAddress = source
        outcome.newSelectedAddress = source
        outcome.authenticated = true
    }

    private func errorResponse(to request: STUNMessage, code: Int, reason: String) -> [UInt8] {
        // No MESSAGE-INTEGRITY on 400/401: the requester could not be authenticated (RFC 5389 10.1.2).
        STUNMessage(messageClass: .errorResponse, method: request.method, transactionID: request.transactionID,
                    attributes: [STUNMessage.errorCodeAttribute(code, reason: reason)])
            .serialized(integrity: nil)
    }
}

/// ICE characters (RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/").
func randomICEString(_ length: Int) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    return String(secureRandomBytes(length).map { alphabet[Int($0) & 63] })
}
