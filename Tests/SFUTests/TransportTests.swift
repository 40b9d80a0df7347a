import DTLS
import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU

/// Collects what a server-side transport does.
final class RecordingDelegate: WebRTCTransportDelegate {
    var sent: [([UInt8], TransportAddress)] = []
    var connected = false
    var rtp: [[UInt8]] = []
    var rtcp: [[RTCPPacket]] = []
    var closedReason: String?

    func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        sent.append((Array(datagram), address))
    }
    func transportDidConnect(_ transport: WebRTCTransport) { connected = true }
    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        rtp.append(Array(packet))
    }
    func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) { rtcp.append(packets) }
    func transportDidClose(_ transport: WebRTCTransport, reason: String) { closedReason = reason }
}

/// The client side of the test: a controlling ICE agent reduced to what a browser does against a
/// lite server (send checks, nominate), and our DTLS client role.
struct TestClient {
    let address: TransportAddress
    let ice: ICELiteAgent.Credentials
    let serverICE: ICELiteAgent.Credentials
    let dtls: DTLSEndpoint
    var iceDone = false
    var keys: (local: SRTPKeys, remote: SRTPKeys)?

    func check(useCandidate: Bool) -> [UInt8] {
        bindingRequest(username: "\(serverICE.ufrag):\(ice.ufrag)", password: serverICE.password, useCandidate: useCandidate)
    }
}

@Suite("WebRTC transport: ICE-lite + DTLS-SRTP, in memory", .serialized)
struct TransportTests {
    static func setup(loss: Int) throws -> (WebRTCTransport, RecordingDelegate, TestClient) {
        let serverCert = try DTLSCertificate(commonName: "server")
        let clientCert = try DTLSCertificate(commonName: "client")
        let serverICE = ICELiteAgent.Credentials.random()
        let clientICE = ICELiteAgent.Credentials.random()
        let transport = try WebRTCTransport(
            id: "t", iceCredentials: serverICE, remoteICE: clientICE, dtlsContext: DTLSContext(certificate: serverCert),
            dtlsRole: .server, remoteFingerprint: try #require(CertificateFingerprint(sdpValue: "sha-256 " + clientCert.sha256Fingerprint)),
            nowNanos: 0)
        let delegate = RecordingDelegate()
        transport.delegate = delegate
        var config = DTLSEndpoint.Configuration()
        config.initialRetransmitMillis = 20
        config.maxRetransmitMillis = 160
        let clientDTLS = try DTLSEndpoint(role: .client, context: DTLSContext(certificate: clientCert),
                                          expectedRemoteFingerprint: CertificateFingerprint(sdpValue: "sha-256 " + serverCert.sha256Fingerprint),
                                          configuration: config)
        let client = TestClient(address: TransportAddress(ipv4: 10, 1, 2, 3, port: 5555), ice: clientICE, serverICE: serverICE, dtls: clientDTLS)
        return (transport, delegate, client)
    }

    /// Runs the exchange on a fake clock (10 ms steps) with seeded loss in both directions until
    /// both sides are connected. OpenSSL's DTLS timer runs on the wall clock, so real milliseconds pass too.
    static func connect(_ transport: WebRTCTransport, _ delegate: RecordingDelegate, _ client: inout TestClient, loss: Int, seed: UInt64) -> Int {
        var rng = SeededGenerator(seed: seed)
        var now: Int64 = 0
        var dropped = 0
        let deadline = Date().addingTimeInterval(20)
        var lastCheck: Int64 = -1_000_000_000
        while (!delegate.connected || client.keys == nil) && Date() < deadline {
            // Browser-like checks every 50 ms until the ICE response arrives, then one nomination.
            if !client.iceDone, now - lastCheck >= 50_000_000 {
                lastCheck = now
                var request = client.check(useCandidate: true)
                if Int(rng.next() % 100) < loss { dropped += 1 } else {
                    request.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: now) }
                }
            }
            // Server -> client.
            for (datagram, to) in delegate.sent {
                #expect(to == client.address)
                if Int(rng.next() % 100) < loss { dropped += 1; continue }
                datagram.withUnsafeBytes { raw in
                    if STUNMessage.isSTUN(raw) {
                        if let m = try? STUNMessage(parsing: raw), m.messageClass == .successResponse, !client.iceDone {
                            client.iceDone = true
                            client.dtls.start(nowNanos: now)
                        }
                    } else {
                        client.dtls.handleDatagram(raw, nowNanos: now)
                    }
                }
            }
            delegate.sent.removeAll()
            // Client -> server (DTLS).
            while var d = client.dtls.pollDatagram() {
                if Int(rng.next() % 100) < loss { dropped += 1; continue }
                d.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: now) }
            }
            while let e = client.dtls.pollEvent() {
                if case .connected(let l, let r) = e { client.keys = (l, r) }
            }
            now += 10_000_000
            if let t = client.dtls.nextTimeoutNanos, t <= now { client.dtls.handleTimeout(nowNanos: now) }
            if let t = transport.nextTimeoutNanos, t <= now { transport.handleTimeout(nowNanos: now) }
            usleep(1_000)
        }
        return dropped
    }

    @Test(arguments: [0, 20])
    func handshakeThenSRTPBothWays(loss: Int) throws {
        var (transport, delegate, client) = try Self.setup(loss: loss)
        let dropped = Self.connect(transport, delegate, &client, loss: loss, seed: 0x1CE)
        try #require(delegate.connected && client.keys != nil, "not connected: \(transport.state)")
        if loss > 0 { #expect(dropped > 0) }
        #expect(transport.state == .connected)
        #expect(transport.remoteAddress == client.address)
        let keys = try #require(client.keys)

        // Client -> server RTP, decrypted for the delegate.
        let clientOut = try SRTPSession(keys: keys.local, direction: .outbound)
        let rtp = RTPPacket(payloadType: 96, sequenceNumber: 1, timestamp: 1000, ssrc: 0xABCD, payload: [1, 2, 3, 4]).serialized()
        var protected = try clientOut.protectRTP(rtp)
        let replay = protected
        protected.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        #expect(delegate.rtp == [rtp])
        // Replayed and tampered packets are dropped and counted.
        var again = replay
        again.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        var tampered = try clientOut.protectRTP(RTPPacket(payloadType: 96, sequenceNumber: 2, timestamp: 1000, ssrc: 0xABCD, payload: [9, 9]).serialized())
        tampered[tampered.count - 1] ^= 0x80
        tampered.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        #expect(delegate.rtp.count == 1)
        #expect(transport.statistics.replayed == 1 && transport.statistics.authenticationFailures == 1)
        // RTP from an address that did not pass ICE is ignored.
        var stray = try clientOut.protectRTP(RTPPacket(payloadType: 96, sequenceNumber: 3, timestamp: 1000, ssrc: 0xABCD, payload: [7]).serialized())
        stray.withUnsafeMutableBytes { transport.handleDatagram($0, from: TransportAddress(ipv4: 6, 6, 6, 6, port: 6), nowNanos: 0) }
        #expect(delegate.rtp.count == 1)

        // Server -> client RTP and RTCP.
        delegate.sent.removeAll()
        rtp.withUnsafeBytes { #expect(transport.sendRTP($0)) }
        #expect(transport.sendRTCP([.pli(PictureLossIndication(senderSSRC: 1, mediaSSRC: 0xABCD))]))
        let clientIn = try SRTPSession(keys: keys.remote, direction: .inbound)
        #expect(delegate.sent.count == 2)
        #expect(try clientIn.unprotectRTP(delegate.sent[0].0).get() == rtp)
        let rtcp = try clientIn.unprotectRTCP(delegate.sent[1].0).get()
        #expect(try RTCPCompound.parse(rtcp) == [.pli(PictureLossIndication(senderSSRC: 1, mediaSSRC: 0xABCD))])
    }

    @Test func wrongPasswordNeverConnects() throws {
        let (transport, delegate, client) = try Self.setup(loss: 0)
        var request = bindingRequest(username: "\(client.serverICE.ufrag):\(client.ice.ufrag)", password: "definitely-not-the-password", useCandidate: true)
        request.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        let response = try STUNMessage(parsing: try #require(delegate.sent.first?.0))
        #expect(response.errorCode?.code == 401)
        #expect(transport.remoteAddress == nil && transport.state == .new)
        // DTLS from that address is not accepted either.
        var hello: [UInt8] = [22, 0xFE, 0xFF] + [UInt8](repeating: 0, count: 40)
        hello.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        #expect(transport.dtls.state == .idle)
        #expect(transport.statistics.stunRejected == 1)
    }

    @Test func consentLossClosesTheTransport() throws {
        var (transport, delegate, client) = try Self.setup(loss: 0)
        _ = Self.connect(transport, delegate, &client, loss: 0, seed: 3)
        try #require(delegate.connected)
        let last = try #require(transport.ice.lastValidRequestNanos)
        transport.handleTimeout(nowNanos: last + 29_000_000_000)
        #expect(delegate.closedReason == nil)
        transport.handleTimeout(nowNanos: last + 31_000_000_000)
        #expect(delegate.closedReason == "ICE consent expired")
        #expect(transport.nextTimeoutNanos == nil)
    }

    @Test func malformedDatagramsAreCountedAndHarmless() throws {
        var (transport, delegate, client) = try Self.setup(loss: 0)
        _ = Self.connect(transport, delegate, &client, loss: 0, seed: 4)
        try #require(delegate.connected)
        var rng = SeededGenerator(seed: 77)
        for i in 0..<5000 {
            let first: UInt8 = [UInt8(rng.next() % 4), UInt8(20 + rng.next() % 44), UInt8(128 + rng.next() % 64), UInt8(rng.next() % 256)][i % 4]
            var junk = [first] + (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let from = i % 2 == 0 ? client.address : TransportAddress(ipv4: 127, UInt8(rng.next() % 256), 1, 1, port: UInt16(truncatingIfNeeded: rng.next()))
            junk.withUnsafeMutableBytes { transport.handleDatagram($0, from: from, nowNanos: 0) }
        }
        #expect(transport.state == .connected)
        #expect(delegate.rtp.isEmpty)
        let s = transport.statistics
        #expect(s.malformed + s.authenticationFailures + s.replayed + s.stunRejected > 1000)
        // Still works afterwards.
        let keys = try #require(client.keys)
        let rtp = RTPPacket(payloadType: 96, sequenceNumber: 10, timestamp: 1, ssrc: 5, payload: [1]).serialized()
        var protected = try SRTPSession(keys: keys.local, direction: .outbound).protectRTP(rtp)
        protected.withUnsafeMutableBytes { transport.handleDatagram($0, from: client.address, nowNanos: 0) }
        #expect(delegate.rtp == [rtp])
    }
}
