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
    @Option(help: "Media workers, 0 = one per core (SFU_WORKERS).") var workers: Int?
    @Option(help: "Address advertised in ICE candidates (SFU_ANNOUNCED_IP).") var announcedIP: String?
    @Option(help: "Data directory (SFU_DATA_DIR).") var dataDir: String?
    @Option(help: "Recordings directory (SFU_RECORDINGS_DIR).") var recordingsDir: String?
    @Option(help: "Metadata store URL; postgres:// selects PostgreSQL (SFU_DATABASE_URL).") var databaseURL: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error (SFU_LOG_LEVEL).") var logLevel: String?

    func run() async throws {
        var config = ServerConfig()
        do {
            try config.apply(environment: ProcessInfo.processInfo.environment)
            if let httpHost { config.httpHost = httpHost }
            if let httpPort { config.httpPort = httpPort }
            if let mediaHost { config.mediaHost = mediaHost }
            if let mediaPort { config.mediaPortBase = mediaPort }
            if let workers { config.workers = workers }
            if let announcedIP { config.announcedIP = announcedIP }
            if let dataDir { config.dataDir = dataDir }
            if let recordingsDir { config.recordingsDir = recordingsDir }
            if let databaseURL { config.databaseURL = databaseURL }
            if let logLevel { config.logLevel = logLevel }
            try config.validate()
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
