import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import Control

/// The control API in process (HummingbirdTesting, a SQLite store, no media): authentication on
/// every route, and the contract's error shape and statuses for bad requests. The E2E suite keeps
/// the cases that need real peers.
@Suite("Control API in process: auth on every route, errors in the contract's shape")
struct ControlAuthAndErrorTests {
    static let key = "auth-test-key-0123456789-abcdefghijklmnop"

    func withAPI(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await InProcessAPI.with(key: Self.key, body)
    }

    static func errorCode(_ response: TestResponse) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any],
              let error = object["error"] as? [String: Any], error["message"] is String else { return nil }
        return error["code"] as? String
    }

    /// Every route but the health check, the demo page's join and signed links needs the key: none, a wrong one
    /// or another scheme is 401 `unauthorized` with `WWW-Authenticate: Bearer`.
    @Test func everyAPIRouteRefusesAMissingOrWrongKey() async throws {
        try await withAPI { client in
            for route in ControlAPI.routes {
                let template = "/" + route.segments.joined(separator: "/")
                // (A signed link's credential is its signature: without one it is 403, RecordingDeletionTests.)
                guard template != "/healthz", template != "/demo/join", !template.hasPrefix("/v1/links/") else { continue }
                let path = template.replacingOccurrences(of: ":id", with: "rm_aaaaaaaaaaaaaa").replacingOccurrences(of: ":user", with: "u1")
                    .replacingOccurrences(of: ":file", with: "file_aaaaaaaaaaaaaa")
                for method in route.methods {
                    for auth in [nil, "Bearer wrong-key-0123456789-0123456789", "Basic \(Self.key)", "Bearer"] as [String?] {
                        var headers: HTTPFields = [:]
                        if let auth { headers[.authorization] = auth }
                        try await client.execute(uri: path, method: method, headers: headers) { response in
                            #expect(response.status == .unauthorized, "\(method) \(path) \(auth ?? "none")")
                            #expect(response.headers[.wwwAuthenticate] == "Bearer", "\(method) \(path)")
                            #expect(Self.errorCode(response) == "unauthorized", "\(method) \(path)")
                        }
                    }
                }
            }
        }
    }

    /// Bad bodies: 400 `bad_request` naming what is wrong, over 64 KiB 413 `body_too_large`; an
    /// unknown room 404 `not_found`; a good request still works beside them.
    @Test func badRequestsGetTheContractsErrors() async throws {
        try await withAPI { client in
            let auth: HTTPFields = [.authorization: "Bearer \(Self.key)", .contentType: "application/json"]
            let bad: [(String, String)] = [
                ("not json", "body must be a JSON object"), ("[1, 2]", "body must be a JSON object"),
                (#"{"max_participants": "6"}"#, "max_participants must be an integer"),
                (#"{"max_participants": 101}"#, "max_participants must be in 1...100"),
                (#"{"max_participants": 2.5}"#, "max_participants must be an integer"),
                (#"{"auto_record": "yes"}"#, "auto_record must be true or false"),
            ]
            for (body, message) in bad {
                try await client.execute(uri: "/v1/rooms", method: .post, headers: auth, body: ByteBuffer(string: body)) { response in
                    #expect(response.status == .badRequest, "\(body)")
                    #expect(Self.errorCode(response) == "bad_request", "\(body)")
                    #expect(String(buffer: response.body).contains(message), "\(body): \(String(buffer: response.body))")
                }
            }
            let huge = "{\"name\": \"\(String(repeating: "a", count: 70_000))\"}"
            try await client.execute(uri: "/v1/rooms", method: .post, headers: auth, body: ByteBuffer(string: huge)) { response in
                #expect(response.status == .contentTooLarge)
                #expect(Self.errorCode(response) == "body_too_large")
            }
            try await client.execute(uri: "/v1/rooms/rm_aaaaaaaaaaaaaa", method: .get, headers: auth) { response in
                #expect(response.status == .notFound && Self.errorCode(response) == "not_found")
            }
            // Unknown fields are ignored; null is a field left out.
            let created = try await client.execute(uri: "/v1/rooms", method: .post, headers: auth,
                                                   body: ByteBuffer(string: #"{"name": "consult", "max_participants": null, "future_field": {"x": 1}}"#)) { response in
                #expect(response.status == .created)
                let object = try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
                #expect(object["max_participants"] as? Int == 6)
                return try #require(object["id"] as? String)
            }
            try await client.execute(uri: "/v1/rooms/\(created)", method: .get, headers: auth) { response in
                #expect(response.status == .ok)
            }
        }
    }
}
