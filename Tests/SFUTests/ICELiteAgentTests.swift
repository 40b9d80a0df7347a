import DTLS
import Testing
import TestSupport
@testable import SFU

/// What a full ICE agent (the browser, controlling) sends to us.
func bindingRequest(username: String, password: String, useCandidate: Bool = false, controlled: Bool = false,
                    tid: [UInt8] = secureRandomBytes(12)) -> [UInt8] {
    var attributes = [STUNMessage.usernameAttribute(username), STUNMessage.u32Attribute(STUNAttributeType.priority, 0x6e00_01ff)]
    attributes.append(controlled ? STUNMessage.u64Attribute(STUNAttributeType.iceControlled, 42)
                                 : STUNMessage.u64Attribute(STUNAttributeType.iceControlling, 42))
    if useCandidate { attributes.append(STUNMessage.Attribute(type: STUNAttributeType.useCandidate, value: [])) }
    let key = HMAC(digest: .sha1, key: Array(password.utf8))!
    return STUNMessage(messageClass: .request, transactionID: tid, attributes: attributes).serialized(integrity: key)
}

/// What a full ICE agent answers to our check.
func checkResponse(to request: STUNMessage, password: String) -> [UInt8] {
    let key = HMAC(digest: .sha1, key: Array(password.utf8))!
    return STUNMessage(messageClass: .successResponse, transactionID: request.transactionID,
                       attributes: [STUNMessage.xorMappedAddressAttribute(TransportAddress(ipv4: 1, 2, 3, 4, port: 5), transactionID: request.transactionID)])
        .serialized(integrity: key)
}

@Suite("ICE-lite agent")
struct ICELiteAgentTests {
    let local = ICELiteAgent.Credentials(ufrag: "srvU", password: "server-password-0123456789")
    let remote = ICELiteAgent.Credentials(ufrag: "cliU", password: "client-password-0123456789")
    let a = TransportAddress(ipv4: 10, 0, 0, 1, port: 50000)
    let b = TransportAddress(ipv4: 192, 168, 1, 7, port: 60000)

    func handle(_ agent: ICELiteAgent, _ bytes: [UInt8], from: TransportAddress, now: Int64 = 0) -> ICELiteAgent.Outcome {
        bytes.withUnsafeBytes { agent.handle($0, from: from, nowNanos: now) }
    }

    @Test func answersAValidCheckWithItsMappedAddress() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let tid = secureRandomBytes(12)
        let out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, tid: tid), from: a)
        #expect(out.authenticated)
        let response = try STUNMessage(parsing: try #require(out.response))
        #expect(response.messageClass == .successResponse && response.transactionID == tid)
        #expect(response.xorMappedAddress == a)
        // The response is keyed with our password, as the browser checks it.
        let key = try #require(HMAC(digest: .sha1, key: Array(local.password.utf8)))
        try #require(out.response).withUnsafeBytes { #expect(response.checkIntegrity($0, key: key)) }
        #expect(response.hadFingerprint)
        // Before nomination, the last checked address is where we answer.
        #expect(agent.selectedAddress == a && !agent.nominated)
    }

    @Test func wrongPasswordGets401AndNoBinding() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let out = handle(agent, bindingRequest(username: "srvU:cliU", password: "not-the-password-at-all!!", useCandidate: true), from: a)
        #expect(!out.authenticated)
        let response = try STUNMessage(parsing: try #require(out.response))
        #expect(response.messageClass == .errorResponse && response.errorCode?.code == 401)
        #expect(response.integrityOffset == nil)
        #expect(agent.selectedAddress == nil && agent.lastValidRequestNanos == nil && agent.rejected == 1)
        // Wrong ufrag (another transport's or a stale session's) too.
        let other = handle(agent, bindingRequest(username: "xxxx:cliU", password: local.password), from: a)
        #expect(try STUNMessage(parsing: try #require(other.response)).errorCode?.code == 401)
        let staleRemote = handle(agent, bindingRequest(username: "srvU:old1", password: local.password), from: a)
        #expect(try STUNMessage(parsing: try #require(staleRemote.response)).errorCode?.code == 401)
        #expect(agent.selectedAddress == nil)
    }

    @Test func missingIntegrityGets400() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let plain = STUNMessage(messageClass: .request, transactionID: secureRandomBytes(12),
                                attributes: [STUNMessage.usernameAttribute("srvU:cliU")]).serialized()
        let out = handle(agent, plain, from: a)
        #expect(try STUNMessage(parsing: try #require(out.response)).errorCode?.code == 400)
        #expect(agent.selectedAddress == nil)
    }

    @Test func otherMethodsAreDroppedUnanswered() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let key = try #require(HMAC(digest: .sha1, key: Array(local.password.utf8)))
        // A well-formed, authenticated request of method 0x003 (TURN Allocate).
        let allocate = STUNMessage(messageClass: .request, method: 0x003, transactionID: secureRandomBytes(12),
                                   attributes: [STUNMessage.usernameAttribute("srvU:cliU")]).serialized(integrity: key)
        let out = handle(agent, allocate, from: a)
        #expect(out.response == nil && !out.authenticated)
        #expect(agent.rejected == 1 && agent.selectedAddress == nil)
    }

    @Test func controlledPeerGetsRoleConflict() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, controlled: true), from: a)
        #expect(try STUNMessage(parsing: try #require(out.response)).errorCode?.code == 487)
        #expect(agent.selectedAddress == nil)
    }

    @Test func followsNominationToANewAddress() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        var out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: a, now: 1)
        #expect(out.newSelectedAddress == a && agent.nominated)
        // A plain check from elsewhere does not move a nominated pair...
        out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password), from: b, now: 2)
        #expect(out.authenticated && out.newSelectedAddress == nil && agent.selectedAddress == a)
        // ...a nomination there does (the client changed networks), once that address answered our
        // own check: signed with the client's password, our transaction.
        out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: b, now: 3)
        #expect(out.newSelectedAddress == nil && agent.selectedAddress == a)
        let check = try #require(out.check)
        #expect(check.to == b)
        let request = try STUNMessage(parsing: check.bytes)
        #expect(request.messageClass == .request && request.username == "cliU:srvU")
        out = handle(agent, checkResponse(to: request, password: remote.password), from: b, now: 4)
        #expect(out.newSelectedAddress == b && agent.selectedAddress == b && agent.pending == nil)
        // Re-nominating the same address is not a change.
        out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: b, now: 5)
        #expect(out.newSelectedAddress == nil && out.check == nil)
    }

    /// A nomination whose source address is forged: the check goes to that address, which does not
    /// answer (or answers without the client's password, or from elsewhere): media stays put.
    @Test func aNominationFromAnUnverifiedAddressDoesNotMoveMedia() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        _ = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: a, now: 1)
        let victim = TransportAddress(ipv4: 203, 0, 113, 9, port: 443)
        var out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: victim, now: 2)
        let request = try STUNMessage(parsing: try #require(out.check).bytes)
        // A response with a wrong password, one from another address, one to another transaction.
        out = handle(agent, checkResponse(to: request, password: "not-the-client-password-000"), from: victim, now: 3)
        #expect(out.newSelectedAddress == nil)
        out = handle(agent, checkResponse(to: request, password: remote.password), from: b, now: 3)
        #expect(out.newSelectedAddress == nil)
        var other = request
        other.transactionID = secureRandomBytes(12)
        out = handle(agent, checkResponse(to: other, password: remote.password), from: victim, now: 3)
        #expect(out.newSelectedAddress == nil && agent.selectedAddress == a)
        // Repeated nominations from there re-send the check at most every 500 ms.
        out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: victim, now: 100_000_000)
        #expect(out.check == nil)
        out = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: victim, now: 600_000_000)
        #expect(out.check != nil)
        #expect(agent.selectedAddress == a)
    }

    @Test func consentExpiresAfterThirtySecondsWithoutValidRequests() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        let s: Int64 = 1_000_000_000
        #expect(!agent.consentExpired(nowNanos: 29 * s, startNanos: 0))
        #expect(agent.consentExpired(nowNanos: 31 * s, startNanos: 0))
        _ = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: a, now: 20 * s)
        #expect(!agent.consentExpired(nowNanos: 49 * s, startNanos: 0))
        // Invalid requests do not refresh consent.
        _ = handle(agent, bindingRequest(username: "srvU:cliU", password: "wrong-password-xxxxxxxxxx"), from: a, now: 45 * s)
        #expect(agent.consentExpired(nowNanos: 51 * s, startNanos: 0))
        #expect(agent.consentDeadline(startNanos: 0) == 50 * s)
    }

    @Test func garbageNeverTrapsAndIsCounted() throws {
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        var rng = SeededGenerator(seed: 5)
        let valid = bindingRequest(username: "srvU:cliU", password: local.password)
        for _ in 0..<5000 {
            var b = valid
            // Anywhere up to the end of MESSAGE-INTEGRITY (what follows it, FINGERPRINT, may be
            // altered into an ignored attribute without touching authenticity: RFC 5389 15.4).
            b[Int(rng.next() % UInt64(b.count - 8))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            let out = handle(agent, b, from: a)
            // A changed byte either breaks the message or fails authentication; it never authenticates.
            #expect(!out.authenticated)
        }
        #expect(agent.selectedAddress == nil && agent.rejected == 5000)
    }

    @Test func randomCredentialsUseICECharacters() {
        let c = ICELiteAgent.Credentials.random()
        #expect(c.ufrag.count == 8 && c.password.count == 24)
        #expect((c.ufrag + c.password).allSatisfy { $0.isLetter || $0.isNumber || $0 == "+" || $0 == "/" })
        #expect(ICELiteAgent.Credentials.random() != c)
    }
}

/// ICE restart (RFC 8445 section 9), with the suite's credentials and addresses.
extension ICELiteAgentTests {
    @Test func restartTakesNewCredentialsRefusesTheOldAndKeepsTheAddress() throws {
        let renewedLocal = ICELiteAgent.Credentials(ufrag: "srv2", password: "server-password-renewed-012")
        let renewedRemote = ICELiteAgent.Credentials(ufrag: "cli2", password: "client-password-renewed-012")
        let agent = try #require(ICELiteAgent(local: local, remote: remote))
        #expect(handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: a, now: 1).authenticated)
        #expect(agent.selectedAddress == a && agent.nominated)

        #expect(agent.restart(local: renewedLocal, remote: nil))
        #expect(agent.local == renewedLocal && agent.remote == nil)
        // Media keeps its address until the peer nominates with the new credentials.
        #expect(agent.selectedAddress == a && agent.lastValidRequestNanos == 1)
        // The old credentials are refused (401), both the old ufrag and the old password.
        let stale = handle(agent, bindingRequest(username: "srvU:cliU", password: local.password, useCandidate: true), from: a, now: 2)
        #expect(!stale.authenticated)
        #expect(try STUNMessage(parsing: try #require(stale.response)).errorCode?.code == 401)
        let oldPassword = handle(agent, bindingRequest(username: "srv2:cli2", password: local.password, useCandidate: true), from: a, now: 2)
        #expect(!oldPassword.authenticated)
        #expect(agent.lastValidRequestNanos == 1)

        // Before the peer's answer is known any of its ufrags is taken; then only its own.
        #expect(handle(agent, bindingRequest(username: "srv2:cli2", password: renewedLocal.password, useCandidate: true), from: a, now: 3).authenticated)
        agent.remote = renewedRemote
        #expect(!handle(agent, bindingRequest(username: "srv2:cliU", password: renewedLocal.password), from: a, now: 4).authenticated)

        // From a new network: verified with a check signed with the peer's new password, then followed.
        let moved = handle(agent, bindingRequest(username: "srv2:cli2", password: renewedLocal.password, useCandidate: true), from: b, now: 5)
        #expect(moved.authenticated && moved.newSelectedAddress == nil)
        let check = try #require(moved.check)
        #expect(check.to == b)
        let request = try STUNMessage(parsing: check.bytes)
        #expect(request.username == "cli2:srv2")
        let answered = handle(agent, checkResponse(to: request, password: renewedRemote.password), from: b, now: 6)
        #expect(answered.newSelectedAddress == b && agent.selectedAddress == b)
    }
}
