import DTLS
import Foundation
import RTP

/// What a participant may do in a room.
public enum Permission: String, Sendable, CaseIterable, Codable {
    case publish, subscribe, record
}

/// Roles with their default permissions (PROTOCOL.md): doctors publish, subscribe and may start or
/// stop recordings; patients publish and subscribe; observers only subscribe.
public enum Role: String, Sendable, CaseIterable, Codable {
    case doctor, patient, observer

    public var defaultPermissions: [Permission] {
        switch self {
        case .doctor: [.publish, .subscribe, .record]
        case .patient: [.publish, .subscribe]
        case .observer: [.subscribe]
        }
    }
}

/// The claims of a join token (PROTOCOL.md): `room`, `sub` (user id), `name`, `role`, `perms`, `exp`
/// (seconds since the epoch), plus `iat`.
public struct JoinClaims: Sendable, Equatable, Codable {
    public var room: String
    public var sub: String
    public var name: String
    public var role: Role
    public var perms: [Permission]
    public var exp: Int64
    public var iat: Int64

    public init(room: String, sub: String, name: String, role: Role, perms: [Permission], exp: Int64, iat: Int64) {
        self.room = room
        self.sub = sub
        self.name = name
        self.role = role
        self.perms = perms
        self.exp = exp
        self.iat = iat
    }
}

/// Join tokens as JWTs (RFC 7519/7518). The server signs with HMAC-SHA256 (HS256) and its token
/// secret, which an app backend may share to mint tokens itself; a backend that keeps its own key
/// pair signs ES256 (ECDSA P-256) tokens verified with the configured public key
/// (`SFU_JWT_PUBLIC_KEY`). No other algorithm is accepted (never `none`), and ES256 only with a key.
public struct JoinTokenSigner: Sendable {
    private let secret: [UInt8]
    private let publicKey: ECDSAPublicKey?

    public init(secret: String, publicKey: ECDSAPublicKey? = nil) {
        self.secret = Array(secret.utf8)
        self.publicKey = publicKey
    }

    public enum VerificationError: Error, Equatable, CustomStringConvertible {
        case malformed, badAlgorithm, badSignature, expired, badClaims, wrongRoom
        public var description: String {
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

    static let header = base64url(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))

    public func sign(_ claims: JoinClaims) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let payload = Self.base64url(Array((try? encoder.encode(claims)) ?? Data()))
        let input = Self.header + "." + payload
        return input + "." + Self.base64url(mac(Array(input.utf8)))
    }

    /// Verifies signature and expiry (and the room, when given).
    public func verify(_ token: String, nowSeconds: Int64, room: String? = nil) throws(VerificationError) -> JoinClaims {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, token.utf8.count <= 8192 else { throw .malformed }
        guard let headerBytes = Self.unbase64url(parts[0]),
              case .object(let header)? = try? JSONDecoder().decode(JSONValue.self, from: Data(headerBytes)) else { throw .malformed }
        guard let signature = Self.unbase64url(parts[2]) else { throw .malformed }
        let signed = Array("\(parts[0]).\(parts[1])".utf8)
        switch header["alg"]?.string {
        case "HS256":
            let expected = mac(signed)
            // Fails closed: an HMAC that could not be computed (empty) matches nothing, not an empty signature.
            guard expected.count == 32, expected.count == signature.count, zip(expected, signature).reduce(UInt8(0), { $0 | ($1.0 ^ $1.1) }) == 0 else {
                throw .badSignature
            }
        case "ES256":
            guard let publicKey else { throw .badAlgorithm }
            guard publicKey.verifyES256(message: signed, signature: signature) else { throw .badSignature }
        default:
            throw .badAlgorithm
        }
        guard let payload = Self.unbase64url(parts[1]), let claims = try? JSONDecoder().decode(JoinClaims.self, from: Data(payload)) else {
            throw .badClaims
        }
        guard claims.exp > nowSeconds else { throw .expired }
        if let room, claims.room != room { throw .wrongRoom }
        return claims
    }

    private func mac(_ data: [UInt8]) -> [UInt8] {
        HMAC(digest: .sha256, key: secret)?.authenticate(data) ?? []
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

/// Bearer API keys, compared in constant time.
public struct APIKeys: Sendable {
    public let keys: [[UInt8]]

    public init(_ keys: [String]) { self.keys = keys.map { Array($0.utf8) } }

    /// The secret join tokens are signed with: the first key.
    public var signingSecret: String { String(decoding: keys.first ?? [], as: UTF8.self) }

    public func accepts(authorization: String?) -> Bool {
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
    public static func generateDevelopmentKey() -> String {
        "dev_" + hexString(secureRandomBytes(24))
    }
}
