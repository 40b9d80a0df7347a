import Foundation
import Testing
import TestSupport
@testable import DTLS

/// Two DTLS endpoints wired together in memory, with seeded datagram loss.
struct DTLSPair {
    let client: DTLSEndpoint
    let server: DTLSEndpoint
    var clientEvents: [DTLSEndpoint.Event] = []
    var serverEvents: [DTLSEndpoint.Event] = []
    var delivered = 0
    var dropped = 0

    static func make(clientProfiles: [SRTPProfile] = [.aeadAes128Gcm, .aes128CmHmacSha1_80],
                     serverProfiles: [SRTPProfile] = [.aeadAes128Gcm, .aes128CmHmacSha1_80],
                     serverExpects: CertificateFingerprint? = nil, clientExpects: CertificateFingerprint? = nil,
                     clientCertificate: DTLSCertificate? = nil) throws -> DTLSPair {
        let clientCert = try clientCertificate ?? DTLSCertificate(commonName: "client")
        let serverCert = try DTLSCertificate(commonName: "server")
        var config = DTLSEndpoint.Configuration()
        config.initialRetransmitMillis = 20
        config.maxRetransmitMillis = 160
        let client = try DTLSEndpoint(role: .client, context: DTLSContext(certificate: clientCert, profiles: clientProfiles),
                                      expectedRemoteFingerprint: clientExpects ?? CertificateFingerprint(sdpValue: "sha-256 " + serverCert.sha256Fingerprint),
                                      configuration: config)
        let server = try DTLSEndpoint(role: .server, context: DTLSContext(certificate: serverCert, profiles: serverProfiles),
                                      expectedRemoteFingerprint: serverExpects ?? CertificateFingerprint(sdpValue: "sha-256 " + clientCert.sha256Fingerprint),
                                      configuration: config)
        return DTLSPair(client: client, server: server)
    }

    /// Runs until both sides report an event (or `realTimeout` seconds of wall time pass: OpenSSL's
    /// retransmission timer runs on the wall clock). `now` is the fake clock, advanced 10 ms per step.
    mutating func run(lossPercent: Int, seed: UInt64, realTimeout: Double = 20) {
        var rng = SeededGenerator(seed: seed)
        var now: Int64 = 1_000_000_000
        client.start(nowNanos: now)
        let deadline = Date().addingTimeInterval(realTimeout)
        while (clientEvents.isEmpty || serverEvents.isEmpty) && Date() < deadline {
            var moved = false
            while let d = client.pollDatagram() {
                moved = true
                if Int(rng.next() % 100) < lossPercent { dropped += 1; continue }
                delivered += 1
                d.withUnsafeBytes { server.handleDatagram($0, nowNanos: now) }
            }
            while let d = server.pollDatagram() {
                moved = true
                if Int(rng.next() % 100) < lossPercent { dropped += 1; continue }
                delivered += 1
                d.withUnsafeBytes { client.handleDatagram($0, nowNanos: now) }
            }
            while let e = client.pollEvent() { clientEvents.append(e) }
            while let e = server.pollEvent() { serverEvents.append(e) }
            if !moved {
                now += 10_000_000
                if let t = client.nextTimeoutNanos, t <= now { client.handleTimeout(nowNanos: now) }
                if let t = server.nextTimeoutNanos, t <= now { server.handleTimeout(nowNanos: now) }
                usleep(2_000)
            }
        }
    }
}

@Suite("DTLS handshake and SRTP", .serialized)
struct DTLSHandshakeTests {
    @Test func certificateHasASHA256Fingerprint() throws {
        let cert = try DTLSCertificate()
        let parts = cert.sha256Fingerprint.split(separator: ":")
        #expect(parts.count == 32 && parts.allSatisfy { $0.count == 2 })
        #expect(try DTLSCertificate().sha256Fingerprint != cert.sha256Fingerprint)
        let parsed = try #require(CertificateFingerprint(sdpValue: "sha-256 " + cert.sha256Fingerprint))
        #expect(parsed.digest.count == 32 && parsed.sdpValue == "sha-256 " + cert.sha256Fingerprint)
        #expect(CertificateFingerprint(sdpValue: "md5 AA:BB") == nil)
        #expect(CertificateFingerprint(sdpValue: "sha-256 AA:B") == nil)
    }

    @Test(arguments: [0, 20])
    func handshakeCompletesAndKeysMatch(lossPercent: Int) throws {
        var pair = try DTLSPair.make()
        pair.run(lossPercent: lossPercent, seed: 0xD715)  // at 20%: drops the ClientHello and two later datagrams
        guard case .connected(let cLocal, let cRemote) = pair.clientEvents.first,
              case .connected(let sLocal, let sRemote) = pair.serverEvents.first else {
            Issue.record("not connected: client \(pair.clientEvents), server \(pair.serverEvents)")
            return
        }
        #expect(cLocal == sRemote && cRemote == sLocal)
        #expect(cLocal.profile == .aeadAes128Gcm)
        #expect(cLocal.key != cRemote.key)
        if lossPercent > 0 { #expect(pair.dropped > 0) }
    }

    @Test func fingerprintMismatchFailsTheHandshake() throws {
        let stranger = try DTLSCertificate(commonName: "stranger")
        // The server expects the stranger's fingerprint, the client presents its own certificate.
        var pair = try DTLSPair.make(serverExpects: CertificateFingerprint(sdpValue: "sha-256 " + stranger.sha256Fingerprint))
        pair.run(lossPercent: 0, seed: 1, realTimeout: 5)
        guard case .failed(let reason) = pair.serverEvents.first else {
            Issue.record("server did not fail: \(pair.serverEvents)")
            return
        }
        #expect(reason.contains("fingerprint"))
        #expect(pair.server.selectedProfile == nil)
    }

    @Test(arguments: SRTPProfile.allCases)
    func srtpOverNegotiatedKeys(profile: SRTPProfile) throws {
        var pair = try DTLSPair.make(clientProfiles: [profile])
        pair.run(lossPercent: 0, seed: 2)
        guard case .connected(let cLocal, let cRemote) = pair.clientEvents.first,
              case .connected(let sLocal, let sRemote) = pair.serverEvents.first else {
            Issue.record("not connected")
            return
        }
        #expect(cLocal.profile == profile)
        let clientOut = try SRTPSession(keys: cLocal, direction: .outbound)
        let serverIn = try SRTPSession(keys: sRemote, direction: .inbound)
        let serverOut = try SRTPSession(keys: sLocal, direction: .outbound)
        let clientIn = try SRTPSession(keys: cRemote, direction: .inbound)

        var rtp: [UInt8] = [0x80, 96, 0x00, 0x01, 0, 0, 0x10, 0, 0xDE, 0xAD, 0xBE, 0xEF]
        rtp += [UInt8](repeating: 0x42, count: 1188)
        let protected = try clientOut.protectRTP(rtp)
        #expect(protected.count == rtp.count + (profile == .aeadAes128Gcm ? 16 : 10))
        #expect(Array(protected[12...40]) != Array(rtp[12...40]))
        #expect(try serverIn.unprotectRTP(protected).get() == rtp)
        // Replay of the same packet: dropped.
        #expect(serverIn.unprotectRTP(protected) == .failure(.replay))
        // Tampered payload of a new packet: dropped.
        rtp[3] = 2
        var tampered = try clientOut.protectRTP(rtp)
        tampered[100] ^= 0x01
        #expect(serverIn.unprotectRTP(tampered) == .failure(.authentication))
        // Retransmitting the same sequence number is allowed on the sending side.
        _ = try clientOut.protectRTP(rtp)
        // RTCP both ways.
        let rtcp: [UInt8] = [0x81, 0xC9, 0x00, 0x07, 0, 0, 0, 1, 0xDE, 0xAD, 0xBE, 0xEF] + [UInt8](repeating: 0, count: 20)
        let srtcp = try serverOut.protectRTCP(rtcp)
        #expect(try clientIn.unprotectRTCP(srtcp).get() == rtcp)
        #expect(clientIn.unprotectRTCP(srtcp) == .failure(.replay))
        #expect(clientIn.unprotectRTCP([0x81, 0xC9, 0, 1]) != .success([0x81, 0xC9, 0, 1]))
    }

    @Test func packsRecordsIntoDatagramsAtRecordBoundaries() {
        func record(_ n: Int) -> [UInt8] { [22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(n >> 8), UInt8(n & 0xff)] + [UInt8](repeating: 7, count: n) }
        let run = record(500) + record(600) + record(100) + record(1100)
        let datagrams = DTLSEndpoint.packRecords(run, mtu: 1200)
        #expect(datagrams.map(\.count) == [513 + 613, 113, 1113])
        #expect(datagrams.flatMap { $0 } == run)
    }
}
