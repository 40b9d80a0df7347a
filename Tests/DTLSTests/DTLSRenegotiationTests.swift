import COpenSSL
import CSFUShim
import Foundation
import Testing
@testable import DTLS

/// A peer-initiated DTLS renegotiation is refused (issue 19: `SSL_OP_NO_RENEGOTIATION`): WebRTC never
/// renegotiates, and answering one would make the server redo handshake work on the media loop.
@Suite("DTLS renegotiation", .serialized)
struct DTLSRenegotiationTests {
    /// A raw OpenSSL DTLS client (memory BIOs) that is allowed to renegotiate, against our server endpoint.
    final class RawClient {
        let ssl: OpaquePointer
        let rbio: OpaquePointer
        let wbio: OpaquePointer
        let context: DTLSContext

        init(certificate: DTLSCertificate) throws {
            context = try DTLSContext(certificate: certificate)
            ssl = try #require(SSL_new(context.ctx))
            rbio = try #require(BIO_new(BIO_s_mem()))
            wbio = try #require(BIO_new(BIO_s_mem()))
            _ = sfu_BIO_set_mem_eof_return(rbio, -1)
            SSL_set_bio(ssl, rbio, wbio)
            _ = sfu_DTLS_set_link_mtu(ssl, 1200)
            _ = SSL_clear_options(ssl, sfu_SSL_OP_NO_RENEGOTIATION())
            SSL_set_connect_state(ssl)
        }

        deinit { SSL_free(ssl) }

        func output() -> [UInt8] {
            let pending = BIO_ctrl_pending(wbio)
            guard pending > 0 else { return [] }
            var bytes = [UInt8](repeating: 0, count: pending)
            let n = bytes.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress, Int32($0.count)) }
            return Array(bytes.prefix(max(0, Int(n))))
        }

        func input(_ datagram: [UInt8]) {
            _ = datagram.withUnsafeBytes { BIO_write(rbio, $0.baseAddress, Int32($0.count)) }
        }

        /// Runs the handshake (or a renegotiation) one step; 1 when it is complete.
        func step() -> Int32 { SSL_do_handshake(ssl) }

        /// Reads whatever arrived (alerts, the server's records) and returns SSL_get_error's verdict.
        func read() -> Int32 {
            var buffer = [UInt8](repeating: 0, count: 2048)
            let n = buffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            return n > 0 ? 0 : SSL_get_error(ssl, n)
        }
    }

    /// The content types of the DTLS records in `datagram` (13-byte headers, length at 11).
    static func recordTypes(_ datagram: [UInt8]) -> [UInt8] {
        var types: [UInt8] = []
        var o = 0
        while o + 13 <= datagram.count {
            types.append(datagram[o])
            o += 13 + Int(datagram[o + 11]) << 8 + Int(datagram[o + 12])
        }
        return types
    }

    /// Handshakes, then has the client start a renegotiation; returns the record types the server
    /// sent back to the renegotiating ClientHello and the server's events.
    ///
    /// OpenSSL 3 refuses client-initiated renegotiation by default unless
    /// `SSL_OP_ALLOW_CLIENT_RENEGOTIATION` is set; `allowClientRenegotiation` sets it on the server, so
    /// the refusal shown is ours (`SSL_OP_NO_RENEGOTIATION` in DTLSContext), not that default.
    static func renegotiate(serverAllowsIt: Bool, allowClientRenegotiation: Bool = true) throws -> (types: [UInt8], serverEvents: [DTLSEndpoint.Event], clientEvents: Int) {
        let clientCert = try DTLSCertificate(commonName: "client")
        let serverCert = try DTLSCertificate(commonName: "server")
        let server = try DTLSEndpoint(role: .server, context: DTLSContext(certificate: serverCert),
                                      expectedRemoteFingerprint: CertificateFingerprint(sdpValue: "sha-256 " + clientCert.sha256Fingerprint))
        if allowClientRenegotiation { _ = SSL_set_options(server.ssl, sfu_SSL_OP_ALLOW_CLIENT_RENEGOTIATION()) }
        if serverAllowsIt { _ = SSL_clear_options(server.ssl, sfu_SSL_OP_NO_RENEGOTIATION()) }
        let client = try RawClient(certificate: clientCert)
        var events: [DTLSEndpoint.Event] = []
        let now: Int64 = 1_000_000_000
        // The handshake, in memory.
        var done = false
        for _ in 0..<20 where !done {
            done = client.step() == 1
            let out = client.output()
            if !out.isEmpty { out.withUnsafeBytes { server.handleDatagram($0, nowNanos: now) } }
            while let d = server.pollDatagram() { client.input(d) }
            while let e = server.pollEvent() { events.append(e) }
        }
        #expect(done, "the handshake did not complete")
        guard case .connected = events.first else {
            Issue.record("server not connected: \(events)")
            return ([], events, 0)
        }
        // The client asks for a new handshake.
        #expect(SSL_renegotiate(client.ssl) == 1)
        _ = client.step()
        let hello = client.output()
        #expect(recordTypes(hello).contains(22), "no renegotiating ClientHello: \(recordTypes(hello))")
        hello.withUnsafeBytes { server.handleDatagram($0, nowNanos: now) }
        var types: [UInt8] = []
        while let d = server.pollDatagram() {
            types += recordTypes(d)
            client.input(d)
        }
        _ = client.read()
        while let e = server.pollEvent() { events.append(e) }
        return (types, Array(events.dropFirst()), 0)
    }

    @Test(arguments: [true, false])
    func theServerAnswersARenegotiationWithAnAlertNotAHandshake(allowClientRenegotiation: Bool) throws {
        let (types, events, _) = try Self.renegotiate(serverAllowsIt: false, allowClientRenegotiation: allowClientRenegotiation)
        // A no_renegotiation warning alert (type 21), no ServerHello flight (type 22), still connected.
        #expect(types == [21], "records sent back: \(types)")
        #expect(events.isEmpty, "server events after the attempt: \(events)")
    }

    @Test func withoutTheOptionTheServerWouldRenegotiate() throws {
        // The control: the same exchange against a server that allows it gets a handshake flight.
        let (types, _, _) = try Self.renegotiate(serverAllowsIt: true)
        #expect(types.contains(22), "records sent back: \(types)")
    }
}
