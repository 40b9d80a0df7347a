import Foundation
import DTLS
import Testing
@testable import Control

@Suite("Join tokens (JWT HS256 and ES256 through jwt-kit) and API keys")
struct JoinTokenTests {
    let signer = JoinTokenSigner(secret: "secret-1-0123456789abcdef0123456789")
    let claims = JoinClaims(room: "rm_a", sub: "dr-1", name: "Dr", role: .doctor, perms: [.publish, .subscribe, .record], exp: 2_000, iat: 1_000)

    @Test func signsAndVerifies() async throws {
        let token = try await signer.sign(claims)
        #expect(token.split(separator: ".").count == 3)
        #expect(try await signer.verify(token, nowSeconds: 1_500, room: "rm_a") == claims)
    }

    @Test func rejectsExpiredForgedOtherRoomAndAlgNone() async throws {
        let token = try await signer.sign(claims)
        await #expect(throws: JoinTokenSigner.VerificationError.expired) { try await signer.verify(token, nowSeconds: 2_000) }
        await #expect(throws: JoinTokenSigner.VerificationError.wrongRoom) { try await signer.verify(token, nowSeconds: 1_500, room: "rm_b") }
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try await JoinTokenSigner(secret: "other-0123456789abcdef0123456789ab").verify(token, nowSeconds: 1_500)
        }
        // Claims changed after signing (role raised to doctor for a patient token).
        var patient = claims
        patient.role = .patient
        patient.perms = [.publish, .subscribe]
        let parts = try await signer.sign(patient).split(separator: ".")
        let forgedPayload = JoinTokenSigner.base64url(Array(try JSONEncoder().encode(claims)))
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try await signer.verify("\(parts[0]).\(forgedPayload).\(parts[2])", nowSeconds: 1_500)
        }
        let none = JoinTokenSigner.base64url(Array(#"{"alg":"none","typ":"JWT"}"#.utf8))
        await #expect(throws: JoinTokenSigner.VerificationError.badAlgorithm) { try await signer.verify("\(none).\(parts[1]).", nowSeconds: 1_500) }
        for junk in ["", "a.b", "a.b.c.d", "!!!.???.***", String(repeating: "x", count: 9000)] {
            await #expect(throws: JoinTokenSigner.VerificationError.self) { try await signer.verify(junk, nowSeconds: 1_500) }
        }
    }

    /// A P-256 key pair made with Python's `cryptography` once; the token below was signed with its
    /// private half (ES256, exp 2100-01-01) and is checked here against the public half only.
    static let es256PublicKey = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENtER4J2pf2x8w1KDCDkTH/cVHF2o
        gCO+2uvj1MBogib2czwD8mnovrMMiF0uAltG2bUxmGfe8HHGNIoX8bXfBQ==
        -----END PUBLIC KEY-----
        """
    static let es256Token = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb29tIjoicm1fYSIsInN1YiI6InUxIiwibmFtZSI6IlUiLCJyb2xlIjoicGF0aWVudCIsInBlcm1zIjpbInB1Ymxpc2giLCJzdWJzY3JpYmUiXSwiZXhwIjo0MTAyNDQ0ODAwLCJpYXQiOjE3MDAwMDAwMDB9.YoERi5jwwl491yK3bLRReUMx9BhN3kxulBGNDwuY7op_GsbQeyI5DwEhFm-0HyeCLMU1EwavY64HWpV7l8Ac6Q"
    static let otherP256 = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKBKQdXkspKQx+kdwYYXxzdsVOWp
        TT7BGleRYAHZBo0C/yCWBkSUlunAkWEM1qGl8gw4HKybJdUXx0KILJZy9A==
        -----END PUBLIC KEY-----
        """
    static let p384 = """
        -----BEGIN PUBLIC KEY-----
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE8qOlBDxbZtwBsNZt9pu2B+bDsOigrfVa
        7u76DwX8n2ekd0tzF5n5WYQWwE06d7PoZSKpZc21NrmY0e5VU3ULRDYMZilpRTlM
        nqPjJh57FG0e1GLoSI1PnexCjvlAJh+k
        -----END PUBLIC KEY-----
        """

    @Test func es256TokensVerifyWithTheConfiguredPublicKeyOnly() async throws {
        let key = try ES256VerificationKey(pem: Self.es256PublicKey)
        let withKey = JoinTokenSigner(secret: "secret-1-0123456789abcdef0123456789", publicKey: key)
        let claims = try await withKey.verify(Self.es256Token, nowSeconds: 1_800_000_000, room: "rm_a")
        #expect(claims.sub == "u1" && claims.role == .patient && claims.perms == [.publish, .subscribe])
        // HS256 tokens of the same server still verify.
        #expect(try await withKey.verify(try await withKey.sign(self.claims), nowSeconds: 1_500) == self.claims)
        // Without a configured key ES256 is refused; with another key it does not verify.
        await #expect(throws: JoinTokenSigner.VerificationError.badAlgorithm) { try await signer.verify(Self.es256Token, nowSeconds: 1_800_000_000) }
        let other = JoinTokenSigner(secret: "secret-1-0123456789abcdef0123456789", publicKey: try ES256VerificationKey(pem: Self.otherP256))
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) { try await other.verify(Self.es256Token, nowSeconds: 1_800_000_000) }
        // Any bit of the signature or the claims changed, or the signature cut: refused.
        let parts = Self.es256Token.split(separator: ".").map(String.init)
        var signature = try #require(JoinTokenSigner.unbase64url(Substring(parts[2])))
        for i in [0, 31, 32, 63] {
            var flipped = signature
            flipped[i] ^= 0x01
            await #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
                try await withKey.verify("\(parts[0]).\(parts[1]).\(JoinTokenSigner.base64url(flipped))", nowSeconds: 1_800_000_000)
            }
        }
        signature.removeLast()
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try await withKey.verify("\(parts[0]).\(parts[1]).\(JoinTokenSigner.base64url(signature))", nowSeconds: 1_800_000_000)
        }
        let raised = JoinTokenSigner.base64url(Array(#"{"room":"rm_a","sub":"u1","name":"U","role":"doctor","perms":["publish","subscribe","record"],"exp":4102444800,"iat":1700000000}"#.utf8))
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) { try await withKey.verify("\(parts[0]).\(raised).\(parts[2])", nowSeconds: 1_800_000_000) }
        // An HS256 header on the ES256 token (algorithm confusion): the HMAC does not match.
        let hs = JoinTokenSigner.base64url(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) { try await withKey.verify("\(hs).\(parts[1]).\(parts[2])", nowSeconds: 1_800_000_000) }
        await #expect(throws: JoinTokenSigner.VerificationError.expired) { try await withKey.verify(Self.es256Token, nowSeconds: 4_102_444_800) }
    }

    @Test func onlyP256PublicKeysAreAccepted() {
        #expect(throws: ES256VerificationKey.KeyError.notP256) { try ES256VerificationKey(pem: Self.p384) }
        for junk in ["", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", String(repeating: "x", count: 70_000)] {
            #expect(throws: ES256VerificationKey.KeyError.unreadable) { try ES256VerificationKey(pem: junk) }
        }
    }

    @Test func aShortSecretSignsNothingAndVerifiesNothing() async throws {
        let short = JoinTokenSigner(secret: String(repeating: "k", count: JoinTokenSigner.minimumSecretBytes - 1))
        await #expect(throws: JoinTokenSigner.SigningError.secretTooShort) { try await short.sign(claims) }
        // A token made with that same short secret by someone else is refused too.
        let header = JoinTokenSigner.base64url(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = JoinTokenSigner.base64url(Array(try JSONEncoder().encode(claims)))
        let mac = HMAC(digest: .sha256, key: Array(String(repeating: "k", count: JoinTokenSigner.minimumSecretBytes - 1).utf8))?
            .authenticate(Array("\(header).\(payload)".utf8)) ?? []
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try await short.verify("\(header).\(payload).\(JoinTokenSigner.base64url(mac))", nowSeconds: 1_500)
        }
        // At the minimum length it works.
        let enough = JoinTokenSigner(secret: String(repeating: "k", count: JoinTokenSigner.minimumSecretBytes))
        #expect(try await enough.verify(try await enough.sign(claims), nowSeconds: 1_500) == claims)
    }

    @Test func anEmptySignatureNeverVerifies() async throws {
        let parts = try await signer.sign(claims).split(separator: ".")
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) { try await signer.verify("\(parts[0]).\(parts[1]).", nowSeconds: 1_500) }
        await #expect(throws: JoinTokenSigner.VerificationError.badSignature) { try await JoinTokenSigner(secret: "").verify("\(parts[0]).\(parts[1]).", nowSeconds: 1_500) }
    }

    @Test func apiKeysCompareWholeKeys() {
        let keys = APIKeys(["k1-secret", "k2-secret"])
        #expect(keys.accepts(authorization: "Bearer k1-secret") && keys.accepts(authorization: "Bearer k2-secret"))
        for bad in [nil, "", "Bearer", "Bearer ", "k1-secret", "Basic k1-secret", "Bearer k1-secre", "Bearer k1-secretX", "bearer k1-secret"] {
            #expect(!keys.accepts(authorization: bad))
        }
        #expect(!APIKeys([]).accepts(authorization: "Bearer "))
        #expect(APIKeys.generateDevelopmentKey() != APIKeys.generateDevelopmentKey())
    }

    @Test func rolesHaveTheirDefaultPermissions() {
        #expect(Role.doctor.defaultPermissions == [.publish, .subscribe, .record])
        #expect(Role.patient.defaultPermissions == [.publish, .subscribe])
        #expect(Role.observer.defaultPermissions == [.subscribe])
    }
}

@Suite("API formatting")
struct APIFormattingTests {
    @Test func iso8601MatchesFoundation() {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for millis: Int64 in [0, 1, 999, 1_000, 1_795_000_123_456, 951_782_400_000, 4_102_444_799_999, -1, -1_500] {
            #expect(ControlAPI.iso8601(millis) == f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000)), "\(millis)")
        }
    }
}
