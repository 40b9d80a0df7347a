import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// The whole server: HTTP control API and signaling now; media workers, store and recorder join as
/// their issues land. `run()` returns after a graceful shutdown (SIGINT/SIGTERM).
public struct SFUServer: Sendable {
    public let config: ServerConfig
    public let logger: Logger

    public init(config: ServerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    /// The HTTP routes. Separate from `run()` so tests can drive them through HummingbirdTesting as
    /// well as through the real socket.
    public func buildRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/healthz") { _, _ -> HealthResponse in
            HealthResponse(status: "ok")
        }
        return router
    }

    public func buildApplication() -> some ApplicationProtocol {
        let logger = self.logger
        return Application(
            router: buildRouter(),
            configuration: .init(address: .hostname(config.httpHost, port: config.httpPort), serverName: "sfu"),
            onServerRunning: { channel in
                logger.notice("HTTP listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger
        )
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    public func run() async throws {
        let app = buildApplication()
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
        logger.notice("stopped")
    }
}

public struct HealthResponse: ResponseCodable, Equatable {
    public var status: String

    public init(status: String) { self.status = status }
}
