import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import Control

/// The control API's router in process (HummingbirdTesting) on a fresh SQLite store and no media.
enum InProcessAPI {
    static func with(key: String, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let logger = Logger(label: "in-process-api")
        let store = try await MetadataStore.open(databaseURL: nil, dataDir: NSTemporaryDirectory() + "sfu-api-\(UUID().uuidString)", logger: logger)
        defer { Task { await store.close() } }
        let api = ControlAPI(store: store, keys: APIKeys([key]), iceServers: [], logger: logger)
        let server = SFUServer(config: ServerConfig(), logger: logger)
        try await Application(router: server.buildRouter(api: api)).test(.router, body)
    }
}
