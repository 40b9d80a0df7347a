import COpenSSL
import CSFUShim

/// A self-signed ECDSA P-256 certificate for DTLS, made at start (WebRTC peers authenticate each
/// other by the certificate fingerprint in the SDP, not by a CA).
public final class DTLSCertificate: @unchecked Sendable {
    // Immutable after init; OpenSSL objects are reference counted and only read from here on.
    let key: OpaquePointer
    let x509: OpaquePointer
    /// SHA-256 fingerprint, uppercase hex pairs joined by colons, as `a=fingerprint:sha-256 ...` wants.
    public let sha256Fingerprint: String

    public enum Error: Swift.Error, Equatable {
        case openSSL(String)
    }

    /// Generates a key pair and a certificate valid from yesterday for `validDays`.
    public init(commonName: String = "sfu", validDays: Int = 30) throws(Error) {
        guard let key = sfu_EC_P256_keygen() else { throw .openSSL("EC P-256 key generation: \(lastOpenSSLError())") }
        guard let x = X509_new() else {
            EVP_PKEY_free(key)
            throw .openSSL("X509_new")
        }
        var ok = X509_set_version(x, 2) == 1
        let serial = secureRandomBytes(8).reduce(0) { $0 << 8 | Int($1) } & 0x3FFF_FFFF_FFFF_FFFF
        ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1
        ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -86_400) != nil
        ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), validDays * 86_400) != nil
        ok = ok && X509_set_pubkey(x, key) == 1
        let name = X509_get_subject_name(x)
        ok = ok && X509_NAME_add_entry_by_txt(name, "CN", 0x1001 /* MBSTRING_ASC */, commonName, -1, -1, 0) == 1
        ok = ok && X509_set_issuer_name(x, name) == 1
        ok = ok && X509_sign(x, key, EVP_sha256()) > 0
        guard ok, let fp = Self.fingerprint(of: x, algorithm: .sha256) else {
            X509_free(x)
            EVP_PKEY_free(key)
            throw .openSSL("self-signed certificate: \(lastOpenSSLError())")
        }
        self.key = key
        self.x509 = x
        self.sha256Fingerprint = Self.format(fp)
    }

    deinit {
        X509_free(x509)
        EVP_PKEY_free(key)
    }

    /// The digest of a certificate with the named hash.
    static func fingerprint(of x509: OpaquePointer, algorithm: FingerprintAlgorithm) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 64)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBufferPointer { X509_digest(x509, algorithm.evp, $0.baseAddress, &length) }
        return ok == 1 ? Array(out.prefix(Int(length))) : nil
    }

    static func format(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789ABCDEF")
        return bytes.map { String([digits[Int($0 >> 4)], digits[Int($0 & 0xf)]]) }.joined(separator: ":")
    }
}

/// The hash of an SDP `a=fingerprint` line (RFC 8122).
public enum FingerprintAlgorithm: String, Sendable, CaseIterable {
    case sha1 = "sha-1", sha224 = "sha-224", sha256 = "sha-256", sha384 = "sha-384", sha512 = "sha-512"

    var evp: OpaquePointer? {
        switch self {
        case .sha1: EVP_sha1()
        case .sha224: EVP_sha224()
        case .sha256: EVP_sha256()
        case .sha384: EVP_sha384()
        case .sha512: EVP_sha512()
        }
    }
}

/// A fingerprint from an SDP: algorithm and digest bytes.
public struct CertificateFingerprint: Sendable, Equatable {
    public var algorithm: FingerprintAlgorithm
    public var digest: [UInt8]

    public init(algorithm: FingerprintAlgorithm, digest: [UInt8]) {
        self.algorithm = algorithm
        self.digest = digest
    }

    /// Parses the value of an `a=fingerprint:` attribute, e.g. `sha-256 AB:CD:...`.
    public init?(sdpValue: String) {
        let parts = sdpValue.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, let algorithm = FingerprintAlgorithm(rawValue: parts[0].lowercased()) else { return nil }
        var digest: [UInt8] = []
        for pair in parts[1].split(separator: ":", omittingEmptySubsequences: false) {
            guard pair.count == 2, let b = UInt8(pair, radix: 16) else { return nil }
            digest.append(b)
        }
        guard !digest.isEmpty else { return nil }
        self.init(algorithm: algorithm, digest: digest)
    }

    public var sdpValue: String { "\(algorithm.rawValue) \(DTLSCertificate.format(digest))" }
}

func lastOpenSSLError() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    let code = sfu_ERR_last_error_string(&buf, buf.count)
    if code == 0 { return "no OpenSSL error" }
    let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
