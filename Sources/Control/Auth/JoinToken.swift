import DTLS
import Foundation
import JWTKit
import RTP

/// What a participant may do in a room.
package enum Permission: String, Sendable, CaseIterable, Codable {
    case publish, subscribe, record
}

/// Roles with their default permissions (PROTOCOL.md): doctors publish, subscribe and may start or
/// stop recordings; patients publish and subscribe; observers only subscribe.
package enum Role: String, Sendable, CaseIterable, Codable {
    case doctor, patient, observer

    package var defaultPermissions: [Permission] {
        switch self {
        case .doctor: [.publish, .subscribe, .record]
        case .patient: [.publish, .subscribe]
        case .observer: [.subscribe]
        }
    }
}

/// The claims of a join token (PROTOCOL.md): `room`, `sub` (user id), `name`, `role`, `perms`, `exp`
/// (seconds since the epoch), plus `iat`.
package struct JoinClaims: Sendable, Equatable, Codable {
    package var room: String
    package var sub: String
    package var name: String
    package var role: Role
    package var perms: [Permission]
    package var exp: Int64
    package var iat: Int64

    package init(room: String, sub: String, name: String, role: Role, perms: [Permission], exp: Int64, iat: Int64) {
        self.room = room
        self.sub = sub
        self.name = name
        self.role = role
        self.perms = perms
        self.exp = exp
        self.iat = iat
    }
}

/// Join tokens as JWTs (RFC 7519/7518), signed and verified by vapor/jwt-kit. The server signs with
/// HMAC-SHA256 (HS256) and its token secret, which an app backend may share to mint tokens itself; a
/// backend that keeps its own key pair signs ES256 (ECDSA P-256) tokens verified with the configured
/// public key (`SFU_JWT_PUBLIC_KEY`). No other algorithm is accepted (never `none`), and ES256 only
/// with a key.
///
/// Each algorithm has a key collection of its own, chosen by the token header's `alg` before any
/// verification: jwt-kit picks a key by `kid` (our tokens carry none) and does not compare the
/// header's `alg` with the key's, so one collection holding both keys would let an HS256 header be
/// checked against the ES256 key and the other way round.
package struct JoinTokenSigner: Sendable {
    private let hs256: JWTKeyCollection
    private let es256: JWTKeyCollection?
    /// Whether HS256 is on: a secret at least ``minimumSecretBytes`` long (ServerConfig refuses a
    /// shorter one at start; here a shorter one signs nothing and every HS256 token is refused).
    private let hasSecret: Bool
    /// As long as the hash (RFC 7518 section 3.2); jwt-kit asserts it too.
    package static let minimumSecretBytes = 32
    /// Longer tokens are refused before any parsing (ours are ~300 bytes).
    static let maxTokenBytes = 8192

    package init(secret: String, publicKey: ES256VerificationKey? = nil) {
        let hs256 = JWTKeyCollection()
        let es256 = publicKey.map { _ in JWTKeyCollection() }
        let key = HMACKey(from: Array(secret.utf8))
        self.hs256 = hs256
        self.es256 = es256
        let hasSecret = secret.utf8.count >= Self.minimumSecretBytes
        self.hasSecret = hasSecret
        // The collections are actors, so adding their keys is asynchronous; sign and verify wait for it.
        ready = Task {
            if hasSecret { await hs256.add(hmac: key, digestAlgorithm: .sha256) }
            if let es256, let publicKey { await es256.add(ecdsa: publicKey.key) }
        }
    }

    /// Adds the keys (see init).
    private let ready: Task<Void, Never>

    package enum VerificationError: Error, Equatable, CustomStringConvertible {
        case malformed, badAlgorithm, badSignature, expired, badClaims, wrongRoom
        package var description: String {
            switch self {
            case .malformed: "token is not a JWT"
            case .badAlgorithm: "token is not HS256 (or ES256 with a configured public key)"
            case .badSignature: "token signature does not verify"
            case .expired: "token expired"
            case .badClaims: "token claims are missing or of the wrong type"
            case .wrongRoom: "token is for another room"
            }
        }
    }

    package enum SigningError: Error, Equatable {
        /// The secret is shorter than ``JoinTokenSigner/minimumSecretBytes``.
        case secretTooShort
    }

    /// An HS256 token for `claims`.
    package func sign(_ claims: JoinClaims) async throws -> String {
        guard hasSecret else { throw SigningError.secretTooShort }
        await ready.value
        return try await hs256.sign(claims)
    }

    /// Verifies signature and expiry (and the room, when given). Expiry is checked against
    /// `nowSeconds`, not by jwt-kit's clock, so that tests choose the time.
    package func verify(_ token: String, nowSeconds: Int64, room: String? = nil) async throws(VerificationError) -> JoinClaims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= Self.maxTokenBytes else { throw .malformed }
        guard let headerBytes = Self.unbase64url(parts[0]),
              case .object(let header)? = try? JSONDecoder().decode(JSONValue.self, from: Data(headerBytes)) else { throw .malformed }
        guard Self.unbase64url(parts[2]) != nil else { throw .malformed }
        let keys: JWTKeyCollection
        switch header["alg"]?.string {
        case "HS256":
            guard hasSecret else { throw .badSignature }
            keys = hs256
        case "ES256":
            guard let es256 else { throw .badAlgorithm }
            keys = es256
        default:
            throw .badAlgorithm
        }
        await ready.value
        let claims: JoinClaims
        do {
            claims = try await keys.verify(token, as: JoinClaims.self)
        } catch let error as JWTError where error.errorType == .malformedToken {
            // The structure and header were checked above: what jwt-kit cannot read here is the payload.
            throw .badClaims
        } catch {
            throw .badSignature
        }
        guard claims.exp > nowSeconds else { throw .expired }
        if let room, claims.room != room { throw .wrongRoom }
        return claims
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func unbase64url(_ text: Substring) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { [UInt8]($0) }
    }
}

extension JoinClaims: JWTPayload {
    /// Nothing to check inside jwt-kit: expiry and room are checked by ``JoinTokenSigner/verify``
    /// against the time it is given.
    package func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The public key ES256 join tokens are verified with: a PEM `PUBLIC KEY` on the P-256 curve.
package struct ES256VerificationKey: Sendable {
    let key: ES256PublicKey

    package enum KeyError: Error, Equatable, CustomStringConvertible {
        case unreadable, notP256
        package var description: String {
            switch self {
            case .unreadable: "not a PEM EC public key"
            case .notP256: "the key is not on the P-256 curve (ES256)"
            }
        }
    }

    package init(pem: String) throws(KeyError) {
        guard pem.utf8.count <= 65536 else { throw .unreadable }
        if let key = try? ES256PublicKey(pem: pem) {
            self.key = key
            return
        }
        // Readable on another curve: say so rather than "unreadable".
        if (try? ES384PublicKey(pem: pem)) != nil || (try? ES512PublicKey(pem: pem)) != nil { throw .notP256 }
        throw .unreadable
    }
}

/// Bearer API keys, compared in constant time.
package struct APIKeys: Sendable {
    package let keys: [[UInt8]]

    package init(_ keys: [String]) { self.keys = keys.map { Array($0.utf8) } }

    /// The secret join tokens are signed with: the first key.
    package var signingSecret: String { String(decoding: keys.first ?? [], as: UTF8.self) }

    package func accepts(authorization: String?) -> Bool {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return false }
        let presented = Array(authorization.dropFirst("Bearer ".count).utf8)
        var ok = false
        for key in keys {
            // Compare every byte of the longer input, whatever matches (no early exit).
            var diff = UInt8(key.count == presented.count ? 0 : 1)
            for i in 0..<max(key.count, presented.count) {
                diff |= (i < key.count ? key[i] : 0) ^ (i < presented.count ? presented[i] : 0)
            }
            ok = ok || diff == 0
        }
        return ok
    }

    /// A random development key (printed at start when none is configured).
    package static func generateDevelopmentKey() -> String {
        "dev_" + hexString(secureRandomBytes(24))
    }
}
