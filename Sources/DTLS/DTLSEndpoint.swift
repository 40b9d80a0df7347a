import COpenSSL
import CSFUShim

/// The OpenSSL context shared by every DTLS endpoint that uses one certificate and profile list.
public final class DTLSContext: @unchecked Sendable {
    // The SSL_CTX is configured once in init and only used to create SSL objects afterwards,
    // which OpenSSL allows from any thread.
    let ctx: OpaquePointer
    public let certificate: DTLSCertificate
    public let profiles: [SRTPProfile]

    /// - Parameter profiles: SRTP profiles offered/accepted, in order of preference.
    public init(certificate: DTLSCertificate, profiles: [SRTPProfile] = [.aeadAes128Gcm, .aes128CmHmacSha1_80]) throws(DTLSCertificate.Error) {
        guard !profiles.isEmpty else { throw .openSSL("no SRTP profile configured") }
        guard let ctx = SSL_CTX_new(DTLS_method()) else { throw .openSSL("SSL_CTX_new: \(lastOpenSSLError())") }
        var ok = SSL_CTX_use_certificate(ctx, certificate.x509) == 1
        ok = ok && SSL_CTX_use_PrivateKey(ctx, certificate.key) == 1
        ok = ok && SSL_CTX_check_private_key(ctx) == 1
        ok = ok && sfu_SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) == 1
        // OpenSSL 3.0 has no DTLS 1.3; peers that offer it fall back to 1.2.
        ok = ok && sfu_SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION) == 1
        // 0 means success for this one.
        ok = ok && SSL_CTX_set_tlsext_use_srtp(ctx, profiles.map(\.openSSLName).joined(separator: ":")) == 0
        guard ok else {
            SSL_CTX_free(ctx)
            throw .openSSL("DTLS context: \(lastOpenSSLError())")
        }
        // No renegotiation: WebRTC never renegotiates DTLS, and a peer-initiated one is only a
        // way to make us do handshake work again on the media loop.
        _ = SSL_CTX_set_options(ctx, sfu_SSL_OP_NO_QUERY_MTU() | sfu_SSL_OP_NO_RENEGOTIATION())
        // Ask for the peer's certificate and accept any (self-signed, as WebRTC's are): the peer is
        // authenticated by comparing its fingerprint with the SDP's after the handshake.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT) { _, _ in 1 }
        self.ctx = ctx
        self.certificate = certificate
        self.profiles = profiles
    }

    deinit { SSL_CTX_free(ctx) }
}

/// A DTLS 1.2 endpoint over memory BIOs, as a sans-IO state machine: datagrams in, datagrams and
/// events out, and a timer the caller runs (``nextTimeoutNanos`` / ``handleTimeout(nowNanos:)``).
///
/// The server role answers a peer that offered `a=setup:actpass` (we answer `passive`); the client
/// role starts the handshake (for server-side connections such as the load generator).
/// When the handshake completes, the peer certificate's fingerprint is compared with the one from
/// the SDP; on a mismatch the endpoint fails and exports no keys.
///
/// Retransmission: OpenSSL keeps the DTLS retransmission timer itself and measures it on the wall
/// clock. We install a timer callback (initial ``Configuration/initialRetransmitMillis``, doubling up
/// to ``Configuration/maxRetransmitMillis``) and report OpenSSL's deadline as ``nextTimeoutNanos``
/// relative to the caller's `now`. With a fake clock, the caller must also let that much real time
/// pass before ``handleTimeout(nowNanos:)`` makes OpenSSL retransmit.
public final class DTLSEndpoint {
    public enum Role: Sendable { case server, client }

    public struct Configuration: Sendable {
        public var mtu = 1200
        public var initialRetransmitMillis: UInt32 = 400
        public var maxRetransmitMillis: UInt32 = 4000
        public init() {}
    }

    public enum State: Equatable, Sendable {
        case idle, handshaking, connected, failed(String), closed
    }

    public enum Event: Equatable, Sendable {
        /// Handshake done and the peer's fingerprint checked: SRTP keys for each direction.
        case connected(local: SRTPKeys, remote: SRTPKeys)
        case failed(String)
        /// The peer closed the association (close_notify).
        case closed
    }

    public let role: Role
    public let configuration: Configuration
    public private(set) var state: State = .idle
    /// The fingerprint the peer's certificate must have (from its SDP). nil accepts any: only for tests of the handshake itself.
    public var expectedRemoteFingerprint: CertificateFingerprint?
    public private(set) var selectedProfile: SRTPProfile?
    public private(set) var nextTimeoutNanos: Int64?

    private let context: DTLSContext
    let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    private let timerSettings: UnsafeMutablePointer<UInt32>
    private var outgoing: [[UInt8]] = []
    private var events: [Event] = []
    private var readBuffer = [UInt8](repeating: 0, count: 2048)

    public init(role: Role, context: DTLSContext, expectedRemoteFingerprint: CertificateFingerprint?, configuration: Configuration = Configuration()) throws(DTLSCertificate.Error) {
        guard let ssl = SSL_new(context.ctx) else { throw .openSSL("SSL_new: \(lastOpenSSLError())") }
        guard let rbio = BIO_new(BIO_s_mem()), let wbio = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw .openSSL("BIO_new")
        }
        _ = sfu_BIO_set_mem_eof_return(rbio, -1)
        _ = sfu_BIO_set_mem_eof_return(wbio, -1)
        SSL_set_bio(ssl, rbio, wbio)  // the SSL owns both BIOs from here on
        _ = sfu_DTLS_set_link_mtu(ssl, configuration.mtu)
        timerSettings = .allocate(capacity: 2)
        timerSettings[0] = configuration.initialRetransmitMillis * 1000
        timerSettings[1] = configuration.maxRetransmitMillis * 1000
        _ = SSL_set_ex_data(ssl, 0, timerSettings)
        DTLS_set_timer_cb(ssl) { ssl, previous in
            guard let settings = SSL_get_ex_data(ssl, 0)?.assumingMemoryBound(to: UInt32.self) else { return 1_000_000 }
            return previous == 0 ? settings[0] : min(previous &* 2, settings[1])
        }
        switch role {
        case .server: SSL_set_accept_state(ssl)
        case .client: SSL_set_connect_state(ssl)
        }
        self.role = role
        self.context = context
        self.configuration = configuration
        self.expectedRemoteFingerprint = expectedRemoteFingerprint
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
    }

    deinit {
        SSL_free(ssl)
        timerSettings.deallocate()
    }

    /// Starts the handshake. The client sends its ClientHello; the server waits for it.
    public func start(nowNanos: Int64) {
        guard state == .idle else { return }
        state = .handshaking
        if role == .client { driveHandshake(nowNanos: nowNanos) }
    }

    /// Feeds one DTLS datagram (RFC 7983: first byte 20-63).
    public func handleDatagram(_ datagram: UnsafeRawBufferPointer, nowNanos: Int64) {
        guard !datagram.isEmpty, datagram.count <= 65_536 else { return }
        switch state {
        case .idle:
            guard role == .server else { return }
            state = .handshaking
        case .failed, .closed:
            return
        default:
            break
        }
        _ = BIO_write(rbio, datagram.baseAddress, Int32(datagram.count))
        if state == .handshaking {
            driveHandshake(nowNanos: nowNanos)
        } else {
            readApplicationData()
            drainOutput()
            updateTimer(nowNanos: nowNanos)
        }
    }

    /// Runs OpenSSL's retransmission timer.
    public func handleTimeout(nowNanos: Int64) {
        guard state == .handshaking || state == .connected else {
            nextTimeoutNanos = nil
            return
        }
        let r = sfu_DTLSv1_handle_timeout(ssl)
        if r < 0 {
            fail("DTLS handshake timed out: \(lastOpenSSLError())")
            return
        }
        drainOutput()
        updateTimer(nowNanos: nowNanos)
    }

    /// The next datagram to send, if any.
    public func pollDatagram() -> [UInt8]? {
        outgoing.isEmpty ? nil : outgoing.removeFirst()
    }

    public func pollEvent() -> Event? {
        events.isEmpty ? nil : events.removeFirst()
    }

    /// Sends close_notify.
    public func close() {
        guard state == .connected || state == .handshaking else { return }
        _ = SSL_shutdown(ssl)
        drainOutput()
        state = .closed
        nextTimeoutNanos = nil
    }

    // MARK: internals

    private func driveHandshake(nowNanos: Int64) {
        let r = SSL_do_handshake(ssl)
        drainOutput()
        if r == 1 {
            finishHandshake()
            readApplicationData()
            drainOutput()
        } else {
            let error = SSL_get_error(ssl, r)
            if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                fail("DTLS handshake failed: \(lastOpenSSLError())")
                return
            }
        }
        updateTimer(nowNanos: nowNanos)
    }

    private func finishHandshake() {
        guard let peer = SSL_get1_peer_certificate(ssl) else {
            fail("peer sent no certificate")
            return
        }
        defer { X509_free(peer) }
        if let expected = expectedRemoteFingerprint {
            guard let actual = DTLSCertificate.fingerprint(of: peer, algorithm: expected.algorithm), actual == expected.digest else {
                fail("peer certificate does not match the SDP fingerprint")
                return
            }
        }
        guard let srtp = SSL_get_selected_srtp_profile(ssl), let profile = SRTPProfile(rawValue: UInt16(truncatingIfNeeded: srtp.pointee.id)) else {
            fail("no SRTP profile negotiated")
            return
        }
        let keyLength = profile.keyLength
        let saltLength = profile.saltLength
        var material = [UInt8](repeating: 0, count: 2 * (keyLength + saltLength))
        let label = "EXTRACTOR-dtls_srtp"
        let ok = material.withUnsafeMutableBufferPointer { m in
            SSL_export_keying_material(ssl, m.baseAddress, m.count, label, label.utf8.count, nil, 0, 0)
        }
        guard ok == 1 else {
            fail("keying material export failed: \(lastOpenSSLError())")
            return
        }
        // RFC 5764 4.2: client key, server key, client salt, server salt.
        let clientKey = SRTPKeys(profile: profile, key: Array(material[0..<keyLength]),
                                 salt: Array(material[(2 * keyLength)..<(2 * keyLength + saltLength)]))
        let serverKey = SRTPKeys(profile: profile, key: Array(material[keyLength..<(2 * keyLength)]),
                                 salt: Array(material[(2 * keyLength + saltLength)...]))
        selectedProfile = profile
        state = .connected
        events.append(role == .client ? .connected(local: clientKey, remote: serverKey) : .connected(local: serverKey, remote: clientKey))
    }

    /// After the handshake: processes alerts and retransmitted handshake records (OpenSSL answers a
    /// repeated Finished by resending its last flight). Application data is not used by WebRTC media and is discarded.
    private func readApplicationData() {
        while true {
            let n = readBuffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if n > 0 { continue }
            let error = SSL_get_error(ssl, n)
            if error == SSL_ERROR_ZERO_RETURN {
                state = .closed
                nextTimeoutNanos = nil
                events.append(.closed)
            } else if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE {
                fail("DTLS error: \(lastOpenSSLError())")
            }
            return
        }
    }

    private func fail(_ reason: String) {
        guard state != .closed else { return }
        if case .failed = state { return }
        state = .failed(reason)
        nextTimeoutNanos = nil
        events.append(.failed(reason))
        // Discard whatever OpenSSL queued (a fatal alert is fine to lose; the peer times out).
        drainOutput()
    }

    private func updateTimer(nowNanos: Int64) {
        var seconds = 0
        var micros = 0
        if sfu_DTLSv1_get_timeout(ssl, &seconds, &micros) == 1 {
            nextTimeoutNanos = nowNanos + Int64(seconds) * 1_000_000_000 + Int64(micros) * 1000
        } else {
            nextTimeoutNanos = nil
        }
    }

    /// Moves what OpenSSL wrote into datagrams of at most `mtu` bytes, cut at record boundaries.
    private func drainOutput() {
        let pending = BIO_ctrl_pending(wbio)
        guard pending > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: pending)
        let n = bytes.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress, Int32($0.count)) }
        guard n > 0 else { return }
        bytes.removeLast(bytes.count - Int(n))
        outgoing.append(contentsOf: Self.packRecords(bytes, mtu: configuration.mtu))
    }

    /// Splits a run of DTLS records (13-byte headers, length at offset 11) into datagrams.
    static func packRecords(_ bytes: [UInt8], mtu: Int) -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        var current: [UInt8] = []
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 13 else {
                current.append(contentsOf: bytes[offset...])
                break
            }
            let length = Int(bytes[offset + 11]) << 8 | Int(bytes[offset + 12])
            let end = min(bytes.count, offset + 13 + length)
            if !current.isEmpty && current.count + (end - offset) > mtu {
                datagrams.append(current)
                current = []
            }
            current.append(contentsOf: bytes[offset..<end])
            offset = end
        }
        if !current.isEmpty { datagrams.append(current) }
        return datagrams
    }
}
