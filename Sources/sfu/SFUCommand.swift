import ArgumentParser
import Control
import Foundation
import Logging

@main
struct SFUCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sfu",
        abstract: "A selective forwarding unit for WebRTC consultations.",
        subcommands: [Serve.self, Inspect.self],
        defaultSubcommand: nil
    )
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the server (HTTP control API, signaling, media workers).",
        discussion: "Every option can also be set through its SFU_* environment variable; flags win."
    )

    @Option(help: "HTTP listen address (SFU_HTTP_HOST).") var httpHost: String?
    @Option(help: "HTTP port, 0 for any free port (SFU_HTTP_PORT).") var httpPort: Int?
    @Option(help: "Media UDP listen address (SFU_MEDIA_HOST).") var mediaHost: String?
    @Option(help: "First media UDP port (SFU_MEDIA_PORT).") var mediaPort: Int?
    @Option(help: "First media ICE-TCP port; default: the UDP port numbers; 0 = no ICE-TCP (SFU_MEDIA_TCP_PORT).") var mediaTcpPort: Int?
    @Option(help: "Media workers, 0 = one per core (SFU_WORKERS).") var workers: Int?
    @Option(help: "Address advertised in ICE candidates (SFU_ANNOUNCED_IP).") var announcedIP: String?
    @Option(help: "Data directory (SFU_DATA_DIR).") var dataDir: String?
    @Option(help: "Recordings directory (SFU_RECORDINGS_DIR).") var recordingsDir: String?
    @Option(help: "Metadata store URL; postgres:// selects PostgreSQL (SFU_DATABASE_URL).") var databaseURL: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error (SFU_LOG_LEVEL).") var logLevel: String?
    @Option(help: "API key(s), comma separated; none = development mode with a random key (SFU_API_KEY). Visible in ps: prefer the variable.")
    var apiKey: String?
    @Option(help: "STUN/TURN URLs handed to clients, comma separated (SFU_ICE_SERVERS).") var iceServers: String?
    @Option(help: "Webhook URLs, comma separated (SFU_WEBHOOK_URLS).") var webhookURLs: String?
    @Option(help: "SRTP profiles in preference order: aead_aes_128_gcm, aes128_cm_sha1_80 (SFU_SRTP_PROFILES).") var srtpProfiles: String?
    @Option(help: "Seconds between quality samples written to the store (SFU_QUALITY_SAMPLE_S).") var qualitySampleSeconds: Int?

    func run() async throws {
        var config = ServerConfig()
        do {
            try config.apply(environment: ProcessInfo.processInfo.environment)
            // Flags win over the environment; they go through the same parsing and checks.
            var flags: [String: String] = [:]
            flags["SFU_HTTP_HOST"] = httpHost
            flags["SFU_HTTP_PORT"] = httpPort.map(String.init)
            flags["SFU_MEDIA_HOST"] = mediaHost
            flags["SFU_MEDIA_PORT"] = mediaPort.map(String.init)
            flags["SFU_MEDIA_TCP_PORT"] = mediaTcpPort.map(String.init)
            flags["SFU_WORKERS"] = workers.map(String.init)
            flags["SFU_ANNOUNCED_IP"] = announcedIP
            flags["SFU_DATA_DIR"] = dataDir
            flags["SFU_RECORDINGS_DIR"] = recordingsDir
            flags["SFU_DATABASE_URL"] = databaseURL
            flags["SFU_LOG_LEVEL"] = logLevel
            flags["SFU_API_KEY"] = apiKey
            flags["SFU_ICE_SERVERS"] = iceServers
            flags["SFU_WEBHOOK_URLS"] = webhookURLs
            flags["SFU_SRTP_PROFILES"] = srtpProfiles
            flags["SFU_QUALITY_SAMPLE_S"] = qualitySampleSeconds.map(String.init)
            try config.apply(environment: flags)
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
        guard let level = Logger.Level(rawValue: config.logLevel) else {
            throw ValidationError("invalid log level '\(config.logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sfu")
        try await SFUServer(config: config, logger: logger).run()
    }
}
