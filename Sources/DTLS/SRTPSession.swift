import CSRTP

/// The DTLS-SRTP protection profiles we negotiate (RFC 5764, RFC 7714).
public enum SRTPProfile: UInt16, Sendable, CaseIterable {
    case aes128CmHmacSha1_80 = 0x0001
    case aeadAes128Gcm = 0x0007

    /// The name OpenSSL's `use_srtp` list uses.
    public var openSSLName: String {
        switch self {
        case .aes128CmHmacSha1_80: "SRTP_AES128_CM_SHA1_80"
        case .aeadAes128Gcm: "SRTP_AEAD_AES_128_GCM"
        }
    }

    public var keyLength: Int { 16 }
    public var saltLength: Int {
        switch self {
        case .aes128CmHmacSha1_80: 14
        case .aeadAes128Gcm: 12
        }
    }

    /// Most bytes protect adds (authentication tag, plus 4 for the SRTCP index).
    public static let maxOverhead = 16 + 4 + 4

    /// Parses a configuration name: the OpenSSL name or a short form (`aes128_cm_sha1_80`, `aead_aes_128_gcm`).
    public init?(name: String) {
        switch name.lowercased() {
        case "srtp_aes128_cm_sha1_80", "aes128_cm_sha1_80", "aes_cm_128_hmac_sha1_80": self = .aes128CmHmacSha1_80
        case "srtp_aead_aes_128_gcm", "aead_aes_128_gcm", "aes_128_gcm": self = .aeadAes128Gcm
        default: return nil
        }
    }
}

/// The master keys of one direction.
public struct SRTPKeys: Sendable, Equatable {
    public var profile: SRTPProfile
    public var key: [UInt8]
    public var salt: [UInt8]
    public init(profile: SRTPProfile, key: [UInt8], salt: [UInt8]) {
        self.profile = profile
        self.key = key
        self.salt = salt
    }
}

/// Why an incoming packet was dropped.
public enum SRTPDropReason: Error, Sendable, Equatable {
    case replay
    case authentication
    case malformed
}

/// One libsrtp2 session for one direction of a transport: `inbound` unprotects (any SSRC, streams
/// added as they appear, replay protection on), `outbound` protects (any SSRC; repeated sequence
/// numbers allowed, since NACK retransmissions resend the same packet).
/// Protect and unprotect work in place on the caller's buffer. Not thread-safe: owned by one transport.
public final class SRTPSession {
    public enum Direction: Sendable { case inbound, outbound }
    public enum Error: Swift.Error, Equatable {
        case badKey
        case libsrtp(Int)
    }

    private var session: srtp_t?
    public let direction: Direction
    public let profile: SRTPProfile

    public init(keys: SRTPKeys, direction: Direction, replayWindow: UInt = 1024) throws(Error) {
        try? CryptoLibraries.initialize()
        guard keys.key.count == keys.profile.keyLength, keys.salt.count == keys.profile.saltLength else { throw .badKey }
        self.direction = direction
        self.profile = keys.profile
        var policy = srtp_policy_t()
        switch keys.profile {
        case .aes128CmHmacSha1_80:
            srtp_crypto_policy_set_rtp_default(&policy.rtp)
            srtp_crypto_policy_set_rtcp_default(&policy.rtcp)
        case .aeadAes128Gcm:
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp)
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp)
        }
        policy.ssrc.type = direction == .inbound ? ssrc_any_inbound : ssrc_any_outbound
        policy.window_size = replayWindow
        policy.allow_repeat_tx = direction == .outbound ? 1 : 0
        var material = keys.key + keys.salt
        var created: srtp_t?
        let status = material.withUnsafeMutableBufferPointer { m -> srtp_err_status_t in
            policy.key = m.baseAddress
            policy.next = nil
            return srtp_create(&created, &policy)
        }
        guard status == srtp_err_status_ok, let created else { throw .libsrtp(Int(status.rawValue)) }
        session = created
    }

    deinit {
        if let session { srtp_dealloc(session) }
    }

    /// libsrtp's in-place transforms: srtp_protect, srtp_unprotect and their RTCP twins.
    typealias Transform = (srtp_t?, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?) -> srtp_err_status_t

    /// Protects the RTP packet of `length` bytes at `buffer` in place; `capacity` must leave room
    /// for ``SRTPProfile/maxOverhead`` more bytes. Returns the protected length.
    public func protectRTP(_ buffer: UnsafeMutableRawPointer, length: Int, capacity: Int) throws(Error) -> Int {
        try protect(buffer, length: length, capacity: capacity, with: srtp_protect)
    }

    public func protectRTCP(_ buffer: UnsafeMutableRawPointer, length: Int, capacity: Int) throws(Error) -> Int {
        try protect(buffer, length: length, capacity: capacity, with: srtp_protect_rtcp)
    }

    /// Unprotects in place. Returns the plain length, or why the packet must be dropped.
    public func unprotectRTP(_ buffer: UnsafeMutableRawPointer, length: Int) -> Result<Int, SRTPDropReason> {
        unprotect(buffer, length: length, with: srtp_unprotect)
    }

    public func unprotectRTCP(_ buffer: UnsafeMutableRawPointer, length: Int) -> Result<Int, SRTPDropReason> {
        unprotect(buffer, length: length, with: srtp_unprotect_rtcp)
    }

    private func protect(_ buffer: UnsafeMutableRawPointer, length: Int, capacity: Int, with transform: Transform) throws(Error) -> Int {
        guard capacity >= length + SRTPProfile.maxOverhead else { throw .libsrtp(Int(srtp_err_status_bad_param.rawValue)) }
        var len = Int32(length)
        let status = transform(session, buffer, &len)
        guard status == srtp_err_status_ok else { throw .libsrtp(Int(status.rawValue)) }
        return Int(len)
    }

    private func unprotect(_ buffer: UnsafeMutableRawPointer, length: Int, with transform: Transform) -> Result<Int, SRTPDropReason> {
        var len = Int32(length)
        let status = transform(session, buffer, &len)
        return Self.result(status, Int(len))
    }

    static func result(_ status: srtp_err_status_t, _ length: Int) -> Result<Int, SRTPDropReason> {
        switch status {
        case srtp_err_status_ok: .success(length)
        case srtp_err_status_replay_fail, srtp_err_status_replay_old: .failure(.replay)
        case srtp_err_status_auth_fail, srtp_err_status_cipher_fail: .failure(.authentication)
        default: .failure(.malformed)
        }
    }

    // Array conveniences (tests, tools; the forwarding path uses the pointer forms).

    public func protectRTP(_ packet: [UInt8]) throws(Error) -> [UInt8] { try protect(packet, with: srtp_protect) }
    public func protectRTCP(_ packet: [UInt8]) throws(Error) -> [UInt8] { try protect(packet, with: srtp_protect_rtcp) }
    public func unprotectRTP(_ packet: [UInt8]) -> Result<[UInt8], SRTPDropReason> { unprotect(packet, with: srtp_unprotect) }
    public func unprotectRTCP(_ packet: [UInt8]) -> Result<[UInt8], SRTPDropReason> { unprotect(packet, with: srtp_unprotect_rtcp) }

    private func protect(_ packet: [UInt8], with transform: Transform) throws(Error) -> [UInt8] {
        var buf = packet + [UInt8](repeating: 0, count: SRTPProfile.maxOverhead)
        let result: Result<Int, Error> = buf.withUnsafeMutableBytes { raw in
            Result { () throws(Error) -> Int in try protect(raw.baseAddress!, length: packet.count, capacity: raw.count, with: transform) }
        }
        return Array(buf.prefix(try result.get()))
    }

    private func unprotect(_ packet: [UInt8], with transform: Transform) -> Result<[UInt8], SRTPDropReason> {
        guard !packet.isEmpty else { return .failure(.malformed) }
        var buf = packet
        let r = buf.withUnsafeMutableBytes { unprotect($0.baseAddress!, length: packet.count, with: transform) }
        return r.map { Array(buf.prefix($0)) }
    }
}
