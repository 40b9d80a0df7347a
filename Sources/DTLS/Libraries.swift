import COpenSSL
import CSRTP

/// One-time initialization and version reporting for the C libraries this module wraps.
public enum CryptoLibraries {
    /// `srtp_init()` must run once per process before any session is made; a global `let` is
    /// initialized exactly once, thread-safely.
    private static let srtpInitStatus: srtp_err_status_t = srtp_init()

    /// Initializes libsrtp2 (idempotent).
    /// - Throws: ``CryptoLibraryError/srtpInit(_:)`` if libsrtp2 refuses to start.
    public static func initialize() throws {
        let status = srtpInitStatus
        guard status == srtp_err_status_ok else { throw CryptoLibraryError.srtpInit(Int(status.rawValue)) }
    }

    /// e.g. "libsrtp2 2.5.0".
    public static var srtpVersion: String { String(cString: srtp_get_version_string()) }
    /// e.g. "OpenSSL 3.0.19 ...".
    public static var openSSLVersion: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }
}

public enum CryptoLibraryError: Error, Equatable {
    case srtpInit(Int)
}
