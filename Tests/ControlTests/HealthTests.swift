import Control
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import SFU
import Testing

@Suite("HTTP: health and config")
struct HealthTests {
    @Test func healthzAnswersOKAsJSON() async throws {
        let server = SFUServer(config: ServerConfig(), logger: Logger(label: "test"))
        let app = Application(router: server.buildRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
                let body = try JSONDecoder().decode(HealthResponse.self, from: Data(buffer: response.body))
                #expect(body == HealthResponse(status: "ok"))
            }
        }
    }

    @Test func environmentOverridesDefaults() throws {
        var config = ServerConfig()
        #expect(config.httpPort == 8080 && config.httpHost == "127.0.0.1" && config.mediaPortBase == 40000)
        #expect(config.effectiveRecordingsDir == "./data/recordings")
        try config.apply(environment: [
            "SFU_HTTP_PORT": "9090", "SFU_API_KEY": "key-a-0123456789-0123456789-abcdef, key-b-0123456789-0123456789-abcdef", "SFU_DATABASE_URL": "postgres://x@localhost/db",
            "SFU_ICE_SERVERS": "stun:stun.example:3478", "SFU_RECORDINGS_DIR": "/rec",
        ])
        #expect(config.httpPort == 9090)
        #expect(config.apiKeys == ["key-a-0123456789-0123456789-abcdef", "key-b-0123456789-0123456789-abcdef"])
        #expect(config.databaseURL == "postgres://x@localhost/db")
        #expect(config.iceServers == ["stun:stun.example:3478"])
        #expect(config.effectiveRecordingsDir == "/rec")
    }

    @Test func developmentModeStaysOnLoopbackAndSecretsAreLong() throws {
        var config = ServerConfig()
        #expect(throws: ConfigError.self) { try config.apply(environment: ["SFU_HTTP_HOST": "0.0.0.0"]) }
        config = ServerConfig()
        try config.apply(environment: ["SFU_HTTP_HOST": "0.0.0.0", "SFU_DEV": "1"])
        #expect(config.isDevelopment)
        config = ServerConfig()
        #expect(throws: ConfigError.self) { try config.apply(environment: ["SFU_API_KEY": "short"]) }
        config = ServerConfig()
        #expect(throws: ConfigError.self) {
            try config.apply(environment: ["SFU_API_KEY": String(repeating: "k", count: 32), "SFU_WEBHOOK_URLS": "http://127.0.0.1:9/h"])
        }
        #expect(ServerConfig.isLoopback("127.0.0.1") && ServerConfig.isLoopback("::1") && ServerConfig.isLoopback("localhost"))
        #expect(!ServerConfig.isLoopback("0.0.0.0") && !ServerConfig.isLoopback("10.0.0.1") && !ServerConfig.isLoopback("127.0.0"))
    }

    /// `SFU_STORAGE_URL` and its companions: each missing or malformed one is named.
    @Test func s3StorageConfiguration() throws {
        let ok = ["SFU_STORAGE_URL": "s3://rec/clinic", "SFU_S3_ACCESS_KEY": "AK", "SFU_S3_SECRET_KEY": "SK"]
        var config = ServerConfig()
        try config.apply(environment: ok.merging(["SFU_S3_ENDPOINT": "http://127.0.0.1:9000", "SFU_S3_PART_SIZE_MB": "16",
                                                  "SFU_S3_UPLOAD_ATTEMPTS": "4"]) { $1 })
        let s3 = try #require(config.storage)
        #expect(s3.bucket == "rec" && s3.prefix == "clinic" && s3.region == "us-east-1" && s3.endpoint?.port == 9000)
        #expect(s3.partSize == 16 << 20 && s3.uploadAttempts == 4)
        #expect(ServerConfig().storage == nil)
        for (change, variable) in [(["SFU_STORAGE_URL": "gs://rec"], "SFU_STORAGE_URL"), (["SFU_S3_ACCESS_KEY": ""], "SFU_S3_ACCESS_KEY"),
                                   (["SFU_S3_SECRET_KEY": ""], "SFU_S3_SECRET_KEY"), (["SFU_S3_ENDPOINT": "ftp://x"], "SFU_S3_ENDPOINT"),
                                   (["SFU_S3_PART_SIZE_MB": "4"], "SFU_S3_PART_SIZE_MB"), (["SFU_S3_UPLOAD_ATTEMPTS": "0"], "SFU_S3_UPLOAD_ATTEMPTS")] {
            var c = ServerConfig()
            do {
                try c.apply(environment: ok.merging(change) { $1 })
                Issue.record("\(change) was accepted")
            } catch let e as ConfigError {
                #expect(e.variable == variable, "\(change): \(e)")
            }
        }
    }

    @Test func badEnvironmentValuesAreRejectedWithTheVariableName() {
        var config = ServerConfig()
        #expect(throws: ConfigError(variable: "SFU_HTTP_PORT", value: "eighty", expected: "an integer")) {
            try config.apply(environment: ["SFU_HTTP_PORT": "eighty"])
        }
        #expect(throws: ConfigError.self) { try config.apply(environment: ["SFU_HTTP_PORT": "70000"]) }
    }

    /// `SFU_MEDIA_TCP_PORT`: by default each worker's UDP port number on TCP (any free port when
    /// the UDP one is), 0 turns ICE-TCP off, a base gives worker i base + i.
    @Test func iceTCPPortsFollowTheUDPPortsUnlessSet() throws {
        var config = ServerConfig()
        #expect(config.tcpListen(worker: 0) == .sameAsUDP && config.tcpListen(worker: 3) == .sameAsUDP)
        config.mediaPortBase = 0
        #expect(config.tcpListen(worker: 1) == .port(0))
        config.mediaPortBase = 40000
        try config.apply(environment: ["SFU_MEDIA_TCP_PORT": "0"])
        #expect(config.tcpListen(worker: 0) == .off)
        try config.apply(environment: ["SFU_MEDIA_PORT": "40000", "SFU_MEDIA_TCP_PORT": "443"])
        #expect(config.tcpListen(worker: 0) == .port(443) && config.tcpListen(worker: 2) == .port(445))
        #expect(throws: ConfigError.self) { try config.apply(environment: ["SFU_MEDIA_TCP_PORT": "70000"]) }
        // Connection limits (a failed apply leaves the config half-changed: a fresh one).
        config = ServerConfig()
        #expect(config.iceTCPLimits == TCPAdmission.Limits())
        try config.apply(environment: ["SFU_ICE_TCP_MAX_PER_IP": "500", "SFU_ICE_TCP_MAX_PENDING_PER_IP": "300", "SFU_ICE_TCP_MAX_PENDING": "400"])
        #expect(config.iceTCPLimits.perAddress == 500 && config.iceTCPLimits.unauthenticatedPerAddress == 300 && config.iceTCPLimits.unauthenticated == 400)
        #expect(throws: ConfigError.self) { try config.apply(environment: ["SFU_ICE_TCP_MAX_PER_IP": "0"]) }
        #expect(throws: ConfigError(variable: "SFU_MEDIA_TCP_PORT", value: "tcp", expected: "an integer")) {
            try config.apply(environment: ["SFU_MEDIA_TCP_PORT": "tcp"])
        }
    }
}
