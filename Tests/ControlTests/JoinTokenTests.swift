import Foundation
import Testing
@testable import Control

@Suite("Join tokens (JWT HS256) and API keys")
struct JoinTokenTests {
    let signer = JoinTokenSigner(secret: "secret-1")
    let claims = JoinClaims(room: "rm_a", sub: "dr-1", name: "Dr", role: .doctor, perms: [.publish, .subscribe, .record], exp: 2_000, iat: 1_000)

    @Test func signsAndVerifies() throws {
        let token = signer.sign(claims)
        #expect(token.split(separator: ".").count == 3)
        #expect(try signer.verify(token, nowSeconds: 1_500, room: "rm_a") == claims)
    }

    @Test func rejectsExpiredForgedOtherRoomAndAlgNone() throws {
        let token = signer.sign(claims)
        #expect(throws: JoinTokenSigner.VerificationError.expired) { try signer.verify(token, nowSeconds: 2_000) }
        #expect(throws: JoinTokenSigner.VerificationError.wrongRoom) { try signer.verify(token, nowSeconds: 1_500, room: "rm_b") }
        #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try JoinTokenSigner(secret: "other").verify(token, nowSeconds: 1_500)
        }
        // Claims changed after signing (role raised to doctor for a patient token).
        var patient = claims
        patient.role = .patient
        patient.perms = [.publish, .subscribe]
        let parts = signer.sign(patient).split(separator: ".")
        let forgedPayload = JoinTokenSigner.base64url(Array(try JSONEncoder().encode(claims)))
        #expect(throws: JoinTokenSigner.VerificationError.badSignature) {
            try signer.verify("\(parts[0]).\(forgedPayload).\(parts[2])", nowSeconds: 1_500)
        }
        let none = JoinTokenSigner.base64url(Array(#"{"alg":"none","typ":"JWT"}"#.utf8))
        #expect(throws: JoinTokenSigner.VerificationError.badAlgorithm) { try signer.verify("\(none).\(parts[1]).", nowSeconds: 1_500) }
        for junk in ["", "a.b", "a.b.c.d", "!!!.???.***", String(repeating: "x", count: 9000)] {
            #expect(throws: JoinTokenSigner.VerificationError.self) { try signer.verify(junk, nowSeconds: 1_500) }
        }
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
