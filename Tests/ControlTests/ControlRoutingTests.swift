import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import Control

/// The control API's router in process (HummingbirdTesting), on a SQLite store and no media: what
/// docs/openapi.yaml says about requests no route takes, byte ranges and string lengths.
@Suite("Control API routing: unrouted requests, ranges, lengths")
struct ControlRoutingTests {
    static let key = "routing-test-key-0123456789-abcdefghijkl"

    func withAPI(_ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        try await InProcessAPI.with(key: Self.key, body)
    }

    static func error(_ buffer: ByteBuffer) throws -> (code: String, message: String) {
        let object = try #require(JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any])
        let error = try #require(object["error"] as? [String: String])
        return (try #require(error["code"]), try #require(error["message"]))
    }

    /// The router's own 404 had an empty body: now the contract's shape, like every other error.
    @Test func anUnknownPathIsANotFoundInTheErrorShape() async throws {
        try await withAPI { client in
            for path in ["/v1/nothing/here", "/v1/rooms/rm_a/unknown", "/v1/recordings/rec_a/files"] {
                try await client.execute(uri: path, method: .get, headers: [.authorization: "Bearer \(Self.key)"]) { response in
                    #expect(response.status == .notFound, "\(path)")
                    #expect(response.headers[.contentType]?.hasPrefix("application/json") == true, "\(path)")
                    #expect((try? Self.error(response.body))?.code == "not_found", "\(path)")
                }
            }
        }
    }

    /// A path the API serves, asked with a method it does not serve: 405 with `Allow` (was 404, empty).
    @Test func aServedPathWithAnotherMethodIs405WithAllow() async throws {
        try await withAPI { client in
            let cases: [(HTTPRequest.Method, String, String)] = [
                (.put, "/v1/rooms", "GET, POST"), (.patch, "/v1/rooms/rm_a", "GET, DELETE"), (.get, "/v1/rooms/rm_a/tokens", "POST"),
                (.delete, "/v1/recordings/rec_a/stop", "POST"), (.post, "/v1/snapshots/snap_a/file", "GET"), (.delete, "/healthz", "GET"),
                (.get, "/demo/join", "POST"),
            ]
            for (method, path, allow) in cases {
                try await client.execute(uri: path, method: method) { response in
                    #expect(response.status == .methodNotAllowed, "\(method) \(path)")
                    #expect(response.headers[.allow] == allow, "\(method) \(path)")
                    #expect((try? Self.error(response.body))?.code == "method_not_allowed", "\(method) \(path)")
                }
            }
        }
    }

    /// The other direction: every (path, method) the server's router serves, but its static pages
    /// and the WebSocket endpoints (signaling, docs/SIGNALING.md, not the control API), is in
    /// `ControlAPI.routes`, so a route added to `register` without the table fails here.
    @Test func everyServedRouteIsListed() async throws {
        let logger = Logger(label: "routing")
        let store = try await MetadataStore.open(databaseURL: nil, dataDir: NSTemporaryDirectory() + "sfu-routes-\(UUID().uuidString)", logger: logger)
        let api = ControlAPI(store: store, keys: APIKeys([Self.key]), iceServers: [], logger: logger)
        let router = SFUServer(config: ServerConfig(), logger: logger).buildRouter(echo: nil, api: api, rooms: nil)
        let pages: Set<String> = ["/", "/{file}", "/echo", "/dashboard", "/dashboard/config", "/v1/signal", "/v1/echo"]
        let served = router.routes.filter { !pages.contains($0.path.description) }
        #expect(served.count >= ControlAPI.routes.reduce(0) { $0 + $1.methods.count })
        for route in served {
            // `{id}` in the router's notation is `:id` in the table's.
            let segments = route.path.description.split(separator: "/").map { $0.hasPrefix("{") ? "x" : $0 }
            let listed = ControlAPI.routes.first { $0.matches(segments) }
            #expect(listed?.methods.contains(route.method) == true, "\(route.method) \(route.path) is served but not in ControlAPI.routes")
        }
        await store.close()
    }

    /// Every (path, method) of `ControlAPI.routes` reaches a handler: the table the 405s come from
    /// does not list what the router does not serve.
    @Test func everyListedRouteIsServed() async throws {
        try await withAPI { client in
            for route in ControlAPI.routes {
                let path = "/" + route.segments.map { $0.hasPrefix(":") ? "x" : String($0) }.joined(separator: "/")
                for method in route.methods {
                    try await client.execute(uri: path, method: method, headers: [.authorization: "Bearer \(Self.key)"],
                                             body: ByteBuffer(string: method == .post ? "{}" : "")) { response in
                        #expect(response.status != .methodNotAllowed, "\(method) \(path)")
                        if response.status == .notFound {
                            #expect((try? Self.error(response.body))?.message != "no route for this path", "\(method) \(path)")
                        }
                    }
                }
            }
        }
    }

    /// RFC 9110 14.2: a range of a unit the server does not know must be ignored, several ranges may
    /// be: both the whole file (was 416). A `bytes` range outside the file or malformed stays 416.
    @Test func rangesTheServerDoesNotServeGetTheWholeFile() {
        #expect(ControlAPI.byteRange(nil, size: 1000) == .whole)
        #expect(ControlAPI.byteRange("items=0-5", size: 1000) == .whole)
        #expect(ControlAPI.byteRange("bytes=0-1,5-6", size: 1000) == .whole)
        #expect(ControlAPI.byteRange("bytes=0-99", size: 1000) == .part(0...99))
        #expect(ControlAPI.byteRange("Bytes=990-", size: 1000) == .part(990...999))
        #expect(ControlAPI.byteRange("bytes=-10", size: 1000) == .part(990...999))
        #expect(ControlAPI.byteRange("bytes=900-5000", size: 1000) == .part(900...999))
        #expect(ControlAPI.byteRange("bytes=1000-", size: 1000) == .unsatisfiable)
        #expect(ControlAPI.byteRange("bytes=5-3", size: 1000) == .unsatisfiable)
        #expect(ControlAPI.byteRange("bytes=abc", size: 1000) == .unsatisfiable)
        #expect(ControlAPI.byteRange("bytes=0-5", size: 0) == .unsatisfiable)
    }

    /// `maxLength` in docs/openapi.yaml is JSON Schema's: Unicode scalars, not Swift Characters. A
    /// name of 200 "é" written as e + U+0301 is 400 scalars: refused (it was taken as 200 characters).
    @Test func maxLengthCountsWhatJSONSchemaCounts() async throws {
        try await withAPI { client in
            let decomposed = String(repeating: "e\u{301}", count: 200)
            let precomposed = String(repeating: "\u{e9}", count: 200)
            for (name, status) in [(decomposed, HTTPResponse.Status.badRequest), (precomposed, .created)] {
                let body = try JSONSerialization.data(withJSONObject: ["name": name])
                try await client.execute(uri: "/v1/rooms", method: .post, headers: [.authorization: "Bearer \(Self.key)"],
                                         body: ByteBuffer(bytes: body)) { response in
                    #expect(response.status == status, "\(name.unicodeScalars.count) scalars")
                }
            }
        }
    }
}
