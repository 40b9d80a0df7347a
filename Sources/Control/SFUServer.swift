import DTLS
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import ServiceLifecycle

/// The whole server: media workers (UDP), the HTTP API and WebSocket signaling. `run()` returns
/// after a graceful shutdown (SIGINT/SIGTERM).
package struct SFUServer: Sendable {
    package typealias Context = SFURequestContext
    package let config: ServerConfig
    package let logger: Logger

    package init(config: ServerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    /// The HTTP and WebSocket routes. Separate from `run()` so tests can drive them through
    /// HummingbirdTesting as well as through the real socket. Without `echo` (no media runtime),
    /// `/v1/echo` answers 503.
    package func buildRouter(echo: EchoService? = nil, api: ControlAPI? = nil, rooms: RoomServices? = nil) -> Router<Context> {
        let router = Router(context: Context.self)
        api?.register(on: router)
        // Every upgrade is accepted: a refused token gets an `error` event and a close code the client
        // can read (browsers never see the HTTP status of a failed WebSocket handshake).
        router.webSocket("/v1/signal") { _, _ in
            rooms == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let rooms else { return }
            try await RoomSignaling.handle(inbound: inbound, outbound: outbound, request: context.request, services: rooms)
        }
        // The demo page, its client module and other files of Public/.
        router.get("/") { _, _ -> Response in try Self.publicResponse("index.html") }
        router.get("/:file") { _, context -> Response in try Self.publicResponse(context.parameters.require("file")) }
        router.get("/healthz") { _, _ -> HealthResponse in
            HealthResponse(status: "ok")
        }
        // The dashboard (docs/API.md, "Dashboard"): a page over the control API; the key is entered in
        // it, except in development mode, where the page is handed this run's generated key.
        let dashboardPage = Self.publicFile("dashboard.html")
        router.get("/dashboard") { _, _ -> Response in
            guard let dashboardPage else { return Response(status: .notFound) }
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(bytes: dashboardPage)))
        }
        let developmentKey = api.flatMap { $0.demoEnabled ? $0.keys.signingSecret : nil }
        router.get("/dashboard/config") { _, _ -> Response in
            let body = developmentKey.map { #"{"development":true,"api_key":"\#($0)"}"# } ?? #"{"development":false}"#
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let echoPage = Self.publicFile("echo.html")
        router.get("/echo") { _, _ -> Response in
            guard let echoPage else { return Response(status: .notFound) }
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(bytes: echoPage)))
        }
        let logger = self.logger
        // Outside development mode the echo endpoint takes a valid join token: it makes a DTLS
        // session on a media worker per connection, which nobody unauthenticated may ask for.
        let echoSigner = api.flatMap { $0.demoEnabled ? nil : $0.signer }
        router.webSocket("/v1/echo") { _, _ in
            echo == nil ? .dontUpgrade : .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            guard let echo else { return }
            if let echoSigner {
                let token = context.request.uri.queryParameters.get("token") ?? ""
                do {
                    _ = try await echoSigner.verify(token, nowSeconds: Int64(Date().timeIntervalSince1970))
                } catch {
                    try? await EchoSignaling.send(outbound, error: "invalid_token", "the echo endpoint needs a valid join token: /v1/echo?token=<join token>")
                    try? await outbound.close(.unknown(4401), reason: "invalid_token")
                    return
                }
            }
            try await EchoSignaling.handle(inbound: inbound, outbound: outbound, echo: echo, logger: logger)
        }
        return router
    }

    /// A file of Sources/Control/Public as a response (404 for anything else).
    static func publicResponse(_ name: String) throws -> Response {
        let types = ["html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
                     "svg": "image/svg+xml", "ico": "image/x-icon"]
        let allowed = name.utf8.allSatisfy { $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || (48...57).contains($0) || (97...122).contains($0) }
        guard allowed, !name.hasPrefix("."), let ext = name.split(separator: ".").last, let type = types[String(ext)],
              let bytes = publicFile(name) else { throw APIError.notFound("file") }
        return Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A file shipped in Sources/Control/Public.
    static func publicFile(_ name: String) -> [UInt8]? {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Public"),
              let data = try? Data(contentsOf: url) else { return nil }
        return [UInt8](data)
    }

    package func buildApplication(echo: EchoService?, api: ControlAPI?, rooms: RoomServices?) -> some ApplicationProtocol {
        let logger = self.logger
        // One router answers both plain HTTP and the WebSocket upgrade requests.
        let router = buildRouter(echo: echo, api: api, rooms: rooms)
        let webSocketResponder = router.buildResponder()
        return Application(
            router: router,
            server: HTTPServerBuilder { responder in
                // Idle connections: the first request head within the idle time, then
                // Hummingbird's idle timeout between requests, and for a WebSocket a ping every
                // half of it (an unanswered ping closes the socket).
                let idle = Int64(config.httpIdleTimeoutSeconds)
                let upgrade = HTTP1WebSocketUpgradeChannel(responder: responder, webSocketResponder: webSocketResponder, configuration: .init(
                    http1: .init(idleTimeout: .seconds(idle)),
                    ws: .init(maxFrameSize: RoomSignaling.maxMessageSize, autoPing: .enabled(timePeriod: .milliseconds(idle * 500)))))
                let plain = RequestHeadDeadlineChannel(base: upgrade, deadline: .seconds(idle))
                // SFU_TLS_CERT/KEY: TLS first, then the same HTTP, WebSocket and deadline handling.
                guard let tls = try config.tlsConfiguration() else { return plain }
                return try TLSChannel(plain, tlsConfiguration: tls)
            },
            configuration: .init(address: .hostname(config.httpHost, port: config.httpPort), serverName: "sfu"),
            onServerRunning: { channel in
                logger.notice("HTTP listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: logger
        )
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    package func run() async throws {
        // The metadata store first: a bad SFU_DATABASE_URL stops the server before it listens.
        let store = try await MetadataStore.open(databaseURL: config.databaseURL, dataDir: config.dataDir, logger: logger)
        logger.notice("metadata store open", metadata: ["backend": "\(store.backend)"])
        try CryptoLibraries.initialize()
        if CryptoLibraries.srtpCryptoInstallFailure != 0 {
            logger.warning("OpenSSL crypto for libsrtp2 failed its known-answer tests; libsrtp2's own is used", metadata: [
                "code": "\(CryptoLibraries.srtpCryptoInstallFailure)"])
        }
        logger.notice("SRTP", metadata: ["libsrtp": "\(CryptoLibraries.srtpVersion)", "crypto": "\(CryptoLibraries.srtpCryptoBackend.rawValue)",
                                          "openssl": "\(CryptoLibraries.openSSLVersion)"])

        let media: MediaRuntime
        do {
            media = try await MediaRuntime.start(config: config, logger: logger)
        } catch {
            await store.close()
            throw error
        }
        var keys = config.apiKeys
        if keys.isEmpty {
            // Development mode: a random key for this run, printed so the operator can use it.
            let key = APIKeys.generateDevelopmentKey()
            keys = [key]
            logger.notice("no SFU_API_KEY configured: development API key for this run", metadata: ["api_key": "\(key)"])
        }
        // Three secrets for three purposes: the API key authenticates the backend, the JWT secret
        // signs join tokens (the API key by default, so backends minting their own keep working),
        // the webhook secret signs deliveries (never the API key: receivers would learn it).
        var webhookSecret = config.webhookSecret
        if webhookSecret == nil, !config.webhookURLs.isEmpty {
            let secret = APIKeys.generateDevelopmentKey()
            webhookSecret = secret
            logger.notice("no SFU_WEBHOOK_SECRET configured: development webhook secret for this run", metadata: ["webhook_secret": "\(secret)"])
        }
        let webhooks = config.webhookURLs.isEmpty ? nil : WebhookDispatcher(
            configuration: .init(urls: config.webhookURLs.compactMap(URL.init(string:)), secret: webhookSecret ?? ""), store: store, logger: logger)
        // What the outbox holds from before a restart goes out now.
        await webhooks?.start()
        // S3 storage: uploads a restart interrupted go on.
        let storage = config.storage.map { S3Client(configuration: $0) }
        let uploader = storage.map { RecordingUploader(client: $0, store: store, webhooks: webhooks, logger: logger) }
        await uploader?.start()
        // Recordings a crash interrupted are finalized from their files before anything new starts.
        do {
            try await RecordingReconciler(store: store, directory: config.effectiveRecordingsDir, webhooks: webhooks, logger: logger,
                                          uploader: uploader).reconcile()
        } catch {
            logger.warning("could not reconcile interrupted recordings", metadata: ["error": "\(error)"])
        }
        let live = LiveRooms(media: media, logger: logger)
        let recordings = RecordingService(store: store, live: live, directory: config.effectiveRecordingsDir, webhooks: webhooks, logger: logger,
                                          uploader: uploader)
        let api = ControlAPI(store: store, keys: APIKeys(keys), iceServers: config.iceServerDirectory, logger: logger, webhooks: webhooks, media: media,
                             live: live, demoEnabled: config.isDevelopment, recordings: recordings, tokenSecret: config.jwtSecret,
                             tokenPublicKey: try config.jwtPublicKey(), publicURL: config.publicURL.flatMap(PublicURL.init),
                             servesTLS: config.tlsCertificatePath != nil, linkSecret: try await store.serverSecret(name: "file_links"),
                             storage: storage)
        let rooms = RoomServices(store: store, live: live, signer: api.signer, iceServers: config.iceServerDirectory, webhooks: webhooks, logger: logger,
                                 recordings: recordings, resumption: SessionResumption(windowSeconds: config.resumeWindowSeconds))
        let app = buildApplication(echo: EchoService(media: media, logger: logger), api: api, rooms: rooms)
        let janitor = Task { await RoomJanitor(store: store, webhooks: webhooks, logger: logger, live: live, recordings: recordings).run() }
        let sampleInterval = Duration.seconds(config.qualitySampleSeconds)
        let sampler = Task { await QualitySampler(store: store, live: live, logger: logger).run(interval: sampleInterval) }
        let retentionDays = config.recordingRetentionDays
        let retention = Task {
            guard let retentionDays else { return }
            await RecordingDeletion(store: store, webhooks: webhooks, logger: logger, storage: storage).run(days: retentionDays)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            janitor.cancel()
            sampler.cancel()
            retention.cancel()
            await recordings.stopEverything(reason: "server shutting down")
            await live.closeAll(message: "the server is shutting down")
            await media.stop()
            await uploader?.stop()
            await webhooks?.stop()
            await store.close()
            throw error
        }
        janitor.cancel()
        sampler.cancel()
        retention.cancel()
        await recordings.stopEverything(reason: "server shutting down")
        await live.closeAll(message: "the server is shutting down")
        await media.stop()
        // What was not delivered or uploaded yet stays in the store for the next start.
        await uploader?.stop()
        await webhooks?.stop()
        await store.close()
        logger.notice("stopped")
    }
}

package struct HealthResponse: ResponseCodable, Equatable {
    package var status: String

    package init(status: String) { self.status = status }
}
