import COpenSSL

/// An ECDSA P-256 public key (from PEM) that verifies ES256 signatures (RFC 7518 3.4: the JWS
/// signature is R || S, 32 bytes each, not DER). Used for join tokens an app backend signs with
/// its own private key: the server holds only the public half.
///
/// Sendable: the EVP_PKEY is never modified after `init`, and OpenSSL allows concurrent read-only
/// use of a key; each verification has its own digest context.
public final class ECDSAPublicKey: @unchecked Sendable {
    public enum KeyError: Error, Equatable, CustomStringConvertible {
        case unreadable, notP256
        public var description: String {
            switch self {
            case .unreadable: "not a PEM public key (-----BEGIN PUBLIC KEY-----)"
            case .notP256: "not an EC key on P-256 (prime256v1), as ES256 requires"
            }
        }
    }

    private let key: OpaquePointer

    public init(pem: String) throws(KeyError) {
        let bytes = Array(pem.utf8)
        guard !bytes.isEmpty, bytes.count <= 64 * 1024 else { throw .unreadable }
        let parsed: OpaquePointer? = bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        ERR_clear_error()
        guard let parsed else { throw .unreadable }
        var name = [CChar](repeating: 0, count: 64)
        var length = 0
        guard EVP_PKEY_get_base_id(parsed) == EVP_PKEY_EC,
              EVP_PKEY_get_group_name(parsed, &name, name.count, &length) == 1,
              String(decoding: name.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self) == "prime256v1" else {
            EVP_PKEY_free(parsed)
            throw .notP256
        }
        key = parsed
    }

    deinit { EVP_PKEY_free(key) }

    /// Whether `signature` (R || S, 64 bytes) is this key's ES256 signature of `message`.
    /// Anything malformed, or an OpenSSL failure, is false.
    public func verifyES256(message: [UInt8], signature: [UInt8]) -> Bool {
        guard signature.count == 64 else { return false }
        let der = Self.derSignature(r: signature[0..<32], s: signature[32..<64])
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer {
            EVP_MD_CTX_free(ctx)
            ERR_clear_error()
        }
        guard EVP_DigestVerifyInit(ctx, nil, EVP_sha256(), nil, key) == 1 else { return false }
        let result = der.withUnsafeBufferPointer { d in
            message.withUnsafeBufferPointer { m in EVP_DigestVerify(ctx, d.baseAddress, d.count, m.baseAddress, m.count) }
        }
        return result == 1
    }

    /// ECDSA-Sig-Value (RFC 3279): SEQUENCE { INTEGER r, INTEGER s }, each a positive minimal integer.
    static func derSignature(r: ArraySlice<UInt8>, s: ArraySlice<UInt8>) -> [UInt8] {
        func integer(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
            var v = Array(bytes.drop { $0 == 0 })
            if v.isEmpty { v = [0] }
            if v[0] & 0x80 != 0 { v.insert(0, at: 0) }
            return [0x02, UInt8(v.count)] + v
        }
        let body = integer(r) + integer(s)
        return [0x30, UInt8(body.count)] + body
    }
}
