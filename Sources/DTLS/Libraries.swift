import COpenSSL
import CSFUShim
import CSRTP

#if canImport(Glibc)
import Glibc
#endif

/// Where libsrtp2's AES and HMAC-SHA1 come from.
public enum SRTPCryptoBackend: String, Sendable {
    /// Our OpenSSL EVP types installed into libsrtp2's crypto kernel (Sources/CSFUShim/srtp_openssl.c):
    /// keyed once per session, no allocation per packet. The default.
    case openSSL = "openssl"
    /// libsrtp2's own (Debian builds it on NSS: PK11 contexts and five mallocs per packet).
    case libsrtp = "libsrtp"
}

/// One-time initialization and version reporting for the C libraries this module wraps.
public enum CryptoLibraries {
    private struct State: Sendable {
        var status: srtp_err_status_t
        var backend: SRTPCryptoBackend
        /// Non-zero when the OpenSSL types were asked for and one failed its known-answer tests.
        var installFailure: Int32
    }

    /// `srtp_init()` must run once per process before any session is made; a global `let` is
    /// initialized exactly once, thread-safely. `SFU_SRTP_CRYPTO=libsrtp` in the environment keeps
    /// libsrtp2's own crypto (for comparisons); anything else installs the OpenSSL types.
    private static let state: State = {
        let status = srtp_init()
        guard status == srtp_err_status_ok else { return State(status: status, backend: .libsrtp, installFailure: 0) }
        if let raw = getenv("SFU_SRTP_CRYPTO"), String(cString: raw) == SRTPCryptoBackend.libsrtp.rawValue {
            return State(status: status, backend: .libsrtp, installFailure: 0)
        }
        let result = sfu_srtp_install_openssl_crypto()
        // A type that fails its tests is not installed, and neither are the ones after it: with
        // a partial install, say so rather than claim either backend.
        return State(status: status, backend: result == 0 ? .openSSL : .libsrtp, installFailure: result)
    }()

    /// Initializes libsrtp2 (idempotent).
    /// - Throws: ``CryptoLibraryError/srtpInit(_:)`` if libsrtp2 refuses to start.
    public static func initialize() throws {
        let status = state.status
        guard status == srtp_err_status_ok else { throw CryptoLibraryError.srtpInit(Int(status.rawValue)) }
    }

    /// The crypto libsrtp2 runs on in this process (after ``initialize()``).
    public static var srtpCryptoBackend: SRTPCryptoBackend { state.backend }

    /// 0, or which OpenSSL type failed its known-answer tests (100 GCM, 200 ICM, 300 HMAC, plus the
    /// libsrtp2 status); the process then runs on libsrtp2's own crypto.
    public static var srtpCryptoInstallFailure: Int { Int(state.installFailure) }

    /// e.g. "libsrtp2 2.5.0".
    public static var srtpVersion: String { String(cString: srtp_get_version_string()) }
    /// e.g. "OpenSSL 3.0.19 ...".
    public static var openSSLVersion: String { String(cString: OpenSSL_version(OPENSSL_VERSION)) }
}

public enum CryptoLibraryError: Error, Equatable {
    case srtpInit(Int)
}
