import COpenSSL

/// HMAC with a fixed key over OpenSSL's EVP_MAC: SHA-1 for STUN MESSAGE-INTEGRITY (RFC 5389
/// 15.4), SHA-256 for join tokens (JWT HS256) and webhook signatures. The key is set once; each
/// ``authenticate(_:into:)`` reuses the keyed context, so a MAC costs one HMAC and no algorithm
/// lookup. Not thread-safe: one instance per owner.
package final class HMAC {
    package enum Digest: String, Sendable {
        case sha1 = "SHA1", sha256 = "SHA256"
        package var size: Int { self == .sha1 ? 20 : 32 }
    }

    package static let sha1Size = 20
    package let digest: Digest
    package var size: Int { digest.size }
    private let ctx: OpaquePointer

    /// - Returns: nil if OpenSSL cannot provide the MAC (it always can on a working install).
    package init?(digest: Digest, key: [UInt8]) {
        self.digest = digest
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else { return nil }
        defer { EVP_MAC_free(mac) }
        guard let ctx = EVP_MAC_CTX_new(mac) else { return nil }
        let ok: Int32 = "digest".withCString { name in
            digest.rawValue.withCString { digest in
                var params = [
                    OSSL_PARAM_construct_utf8_string(name, UnsafeMutablePointer(mutating: digest), 0),
                    OSSL_PARAM_construct_end(),
                ]
                return key.withUnsafeBufferPointer { k in EVP_MAC_init(ctx, k.baseAddress, k.count, &params) }
            }
        }
        guard ok == 1 else {
            EVP_MAC_CTX_free(ctx)
            return nil
        }
        self.ctx = ctx
    }

    deinit { EVP_MAC_CTX_free(ctx) }

    /// The MAC of `data` (``size`` bytes), written to `out`.
    /// - Returns: false on an OpenSSL failure.
    @discardableResult
    package func authenticate(_ data: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Bool {
        precondition(out.count >= size)
        guard EVP_MAC_init(ctx, nil, 0, nil) == 1 else { return false }
        guard EVP_MAC_update(ctx, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count) == 1 else { return false }
        var written = 0
        return EVP_MAC_final(ctx, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &written, out.count) == 1 && written == size
    }

    package func authenticate(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        let ok = data.withUnsafeBytes { d in out.withUnsafeMutableBytes { o in authenticate(d, into: o) } }
        return ok ? out : []
    }
}

/// Cryptographically secure random bytes (OpenSSL RAND_bytes).
package func secureRandomBytes(_ count: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    let ok = out.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32($0.count)) }
    if ok != 1 {
        // RAND_bytes only fails without an entropy source; fall back to the system generator.
        var g = SystemRandomNumberGenerator()
        for i in out.indices { out[i] = UInt8.random(in: 0...255, using: &g) }
    }
    return out
}
