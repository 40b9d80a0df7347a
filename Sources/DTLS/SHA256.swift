import COpenSSL

/// SHA-256 over OpenSSL's EVP digest, incremental (a file hashed in parts without loading it whole).
/// Not thread-safe: one instance per owner.
package final class SHA256Hasher {
    private let ctx: OpaquePointer

    /// - Returns: nil if OpenSSL cannot provide SHA-256 (it always can on a working install).
    package init?() {
        guard let ctx = EVP_MD_CTX_new() else { return nil }
        guard EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1 else {
            EVP_MD_CTX_free(ctx)
            return nil
        }
        self.ctx = ctx
    }

    deinit { EVP_MD_CTX_free(ctx) }

    package func update(_ data: UnsafeRawBufferPointer) {
        guard data.count > 0 else { return }
        EVP_DigestUpdate(ctx, data.baseAddress, data.count)
    }

    package func update(_ data: [UInt8]) { data.withUnsafeBytes { update($0) } }

    /// The digest (32 bytes); the hasher is done after this.
    package func finish() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var size: UInt32 = 0
        guard out.withUnsafeMutableBufferPointer({ EVP_DigestFinal_ex(ctx, $0.baseAddress, &size) }) == 1, size == 32 else { return [] }
        return out
    }

    /// The SHA-256 of `data`.
    package static func hash(_ data: [UInt8]) -> [UInt8] {
        guard let h = SHA256Hasher() else { return [] }
        h.update(data)
        return h.finish()
    }

    package static func hash(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        guard let h = SHA256Hasher() else { return [] }
        h.update(data)
        return h.finish()
    }
}
