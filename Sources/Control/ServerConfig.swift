import DTLS
import Foundation
import HummingbirdTLS
import SFU

/// Everything `sfu serve` can be told, with the embedded defaults of PROTOCOL.md ("Processes and defaults").
///
/// Values come from, in increasing priority: the defaults below, `SFU_*` environment variables, command-line flags.
package struct ServerConfig: Sendable, Equatable {
    /// Address the HTTP control API and signaling listen on.
    package var httpHost: String = "127.0.0.1"
    package var httpPort: Int = 8080
    /// Address the media workers bind their UDP ports on.
    package var mediaHost: String = "127.0.0.1"
    /// First UDP port; worker `i` uses `mediaPortBase + i`.
    package var mediaPortBase: Int = 40000
    /// `SFU_MEDIA_TCP_PORT`: the first ICE-TCP port (passive, RFC 6544); worker `i` listens on
    /// it + `i`. nil (the default): each worker's UDP port number, on TCP; 0: no ICE-TCP.
    package var mediaTCPPortBase: Int?
    /// ICE-TCP connection limits per worker: `SFU_ICE_TCP_MAX_PER_IP` (64) connections from one IP
    /// address, `SFU_ICE_TCP_MAX_PENDING_PER_IP` (8) of them not yet authenticated by an ICE check,
    /// `SFU_ICE_TCP_MAX_PENDING` (256) unauthenticated in all (docs/DEPLOY.md, "ICE-TCP").
    package var iceTCPLimits = TCPAdmission.Limits()
    /// Number of media workers (event loops); 0 means one per core.
    package var workers: Int = 0
    /// Address put in ICE candidates instead of `mediaHost` (for NAT / public deployments).
    package var announcedIP: String?
    package var dataDir: String = "./data"
    /// How worker `index` listens for ICE-TCP.
    package func tcpListen(worker index: Int) -> MediaWorker.TCPListen {
        switch mediaTCPPortBase {
        case nil: mediaPortBase == 0 ? .port(0) : .sameAsUDP  // (port 0: tests, any free port)
        case 0?: .off
        case let base?: .port(base + index)
        }
    }

    /// Defaults to `<dataDir>/recordings`.
    package var recordingsDir: String?
    /// `nil` = SQLite under `dataDir`; a `postgres://` URL selects PostgreSQL.
    package var databaseURL: String?
    /// API keys accepted on the control API. Empty = development mode (a random key is made at
    /// start), allowed only on a loopback HTTP address unless ``development`` is set.
    package var apiKeys: [String] = []
    /// `SFU_DEV=1`: development mode (no API key, `/demo/join`) even on a non-loopback address.
    package var development = false
    /// The HS256 join-token secret (`SFU_JWT_SECRET`); default: the first API key, so a backend that
    /// mints tokens with its API key keeps working.
    package var jwtSecret: String?
    /// The PEM public key ES256 join tokens are verified with (`SFU_JWT_PUBLIC_KEY`: the PEM text,
    /// or the path of a PEM file), for a backend that signs with its own P-256 key pair.
    package var jwtPublicKeyPEM: String?
    /// The secret webhooks are signed with (`SFU_WEBHOOK_SECRET`). Required with webhook URLs and
    /// an API key: signing with the API key would hand every receiver the key to the control API.
    package var webhookSecret: String?
    /// API keys and secrets are at least this long (bytes).
    package static let minimumSecretBytes = 32
    /// STUN/TURN URLs handed to clients.
    package var iceServers: [String] = []
    /// TURN URLs (`turn:`/`turns:`) handed out with per-user credentials (`SFU_TURN_URLS`), made
    /// with `SFU_TURN_SECRET` (coturn's `static-auth-secret`), valid `SFU_TURN_TTL_S` seconds.
    package var turnURLs: [String] = []
    package var turnSecret: String?
    package var turnTTLSeconds = 86_400
    /// `SFU_RESUME_WINDOW_S`: how long a joined participant whose signaling socket dropped is kept
    /// (media flowing, nobody told) for the same token to come back with `join_room {resume: true}`;
    /// 0 removes it at once, as before resumption existed.
    package var resumeWindowSeconds = 30
    /// The base URL clients reach the server at (`SFU_PUBLIC_URL`), for the `signaling_url` handed out.
    package var publicURL: String?
    /// `SFU_TLS_CERT` and `SFU_TLS_KEY`: PEM files (the certificate chain, the private key). With
    /// both, the HTTP port serves HTTPS and WSS only (a browser on another host gets a secure
    /// context without a proxy) and the `signaling_url` handed out is `wss://`.
    package var tlsCertificatePath: String?
    package var tlsKeyPath: String?
    package var logLevel: String = "info"
    /// Where webhook events are POSTed (SFU_WEBHOOK_URLS, comma list).
    package var webhookURLs: [String] = []
    /// DTLS-SRTP profiles accepted, in order of preference.
    package var srtpProfiles: [SRTPProfile] = [.aeadAes128Gcm, .aes128CmHmacSha1_80]
    /// How often live participants' quality figures are written to the store (SFU_QUALITY_SAMPLE_S).
    package var qualitySampleSeconds: Int = 10
    /// `SFU_HTTP_IDLE_TIMEOUT_S`: an HTTP connection with no request for this long is closed (a
    /// client that connects and sends nothing holds no descriptor for ever); a WebSocket is pinged
    /// every half of it and closed when a ping goes unanswered (a dead or never-reading peer).
    package var httpIdleTimeoutSeconds: Int = 60
    /// `SFU_RECORDING_RETENTION_DAYS`: finished recordings older than this are deleted (files gone,
    /// metadata kept, audited), checked at start and every hour; nil (the default): kept for ever.
    package var recordingRetentionDays: Int?
    /// `SFU_STORAGE_URL=s3://bucket/prefix` with `SFU_S3_ENDPOINT`, `SFU_S3_REGION`, `SFU_S3_ACCESS_KEY`,
    /// `SFU_S3_SECRET_KEY` (and `SFU_S3_PART_SIZE_MB`, `SFU_S3_UPLOAD_ATTEMPTS`): finished recordings
    /// go to S3-compatible storage (docs/RECORDING.md "S3 storage"); nil: they stay on local disk.
    package var storage: S3Configuration?

    package init() {}

    package var effectiveRecordingsDir: String { recordingsDir ?? (dataDir as NSString).appendingPathComponent("recordings") }

    /// Overlays `SFU_*` variables from `environment` on `self`.
    /// - Throws: ``ConfigError`` when a variable holds a value of the wrong form.
    package mutating func apply(environment: [String: String]) throws {
        func int(_ name: String) throws -> Int? {
            guard let raw = environment[name] else { return nil }
            guard let value = Int(raw) else { throw ConfigError(variable: name, value: raw, expected: "an integer") }
            return value
        }
        func list(_ name: String) -> [String]? {
            environment[name].map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        }
        if let v = environment["SFU_HTTP_HOST"] { httpHost = v }
        if let v = try int("SFU_HTTP_PORT") { httpPort = v }
        if let v = environment["SFU_MEDIA_HOST"] { mediaHost = v }
        if let v = try int("SFU_MEDIA_PORT") { mediaPortBase = v }
        if let v = try int("SFU_MEDIA_TCP_PORT") { mediaTCPPortBase = v }
        if let v = try int("SFU_ICE_TCP_MAX_PER_IP") { iceTCPLimits.perAddress = v }
        if let v = try int("SFU_ICE_TCP_MAX_PENDING_PER_IP") { iceTCPLimits.unauthenticatedPerAddress = v }
        if let v = try int("SFU_ICE_TCP_MAX_PENDING") { iceTCPLimits.unauthenticated = v }
        if let v = try int("SFU_WORKERS") { workers = v }
        if let v = environment["SFU_ANNOUNCED_IP"], !v.isEmpty { announcedIP = v }
        if let v = environment["SFU_DATA_DIR"] { dataDir = v }
        if let v = environment["SFU_RECORDINGS_DIR"], !v.isEmpty { recordingsDir = v }
        if let v = environment["SFU_DATABASE_URL"], !v.isEmpty { databaseURL = v }
        if let v = list("SFU_API_KEY") { apiKeys = v }
        if let v = environment["SFU_DEV"] {
            guard let flag = ["1": true, "true": true, "0": false, "false": false, "": false][v.lowercased()] else {
                throw ConfigError(variable: "SFU_DEV", value: v, expected: "1 or 0")
            }
            development = flag
        }
        if let v = environment["SFU_JWT_SECRET"], !v.isEmpty { jwtSecret = v }
        if let v = environment["SFU_JWT_PUBLIC_KEY"], !v.isEmpty {
            if v.hasPrefix("-----BEGIN") {
                jwtPublicKeyPEM = v
            } else {
                guard let text = try? String(contentsOfFile: v, encoding: .utf8) else {
                    throw ConfigError(variable: "SFU_JWT_PUBLIC_KEY", value: v, expected: "a PEM public key or the path of a readable PEM file")
                }
                jwtPublicKeyPEM = text
            }
        }
        if let v = environment["SFU_WEBHOOK_SECRET"], !v.isEmpty { webhookSecret = v }
        if let v = list("SFU_ICE_SERVERS") { iceServers = v }
        if let v = list("SFU_TURN_URLS") { turnURLs = v }
        if let v = environment["SFU_TURN_SECRET"], !v.isEmpty { turnSecret = v }
        if let v = try int("SFU_TURN_TTL_S") { turnTTLSeconds = v }
        if let v = try int("SFU_RESUME_WINDOW_S") { resumeWindowSeconds = v }
        if let v = environment["SFU_PUBLIC_URL"], !v.isEmpty { publicURL = v }
        if let v = environment["SFU_TLS_CERT"], !v.isEmpty { tlsCertificatePath = v }
        if let v = environment["SFU_TLS_KEY"], !v.isEmpty { tlsKeyPath = v }
        if let v = environment["SFU_LOG_LEVEL"] { logLevel = v }
        if let v = try int("SFU_QUALITY_SAMPLE_S") { qualitySampleSeconds = v }
        if let v = try int("SFU_HTTP_IDLE_TIMEOUT_S") { httpIdleTimeoutSeconds = v }
        if let v = try int("SFU_RECORDING_RETENTION_DAYS") { recordingRetentionDays = v }
        if let v = environment["SFU_STORAGE_URL"], !v.isEmpty {
            guard let (bucket, prefix) = S3Configuration.parse(storageURL: v) else {
                throw ConfigError(variable: "SFU_STORAGE_URL", value: v, expected: "s3://bucket/prefix (a bucket name of letters, digits, '-' and '.')")
            }
            var endpoint: URL?
            if let e = environment["SFU_S3_ENDPOINT"], !e.isEmpty {
                guard let url = URL(string: e), ["http", "https"].contains(url.scheme ?? ""), url.host != nil, url.path.isEmpty || url.path == "/" else {
                    throw ConfigError(variable: "SFU_S3_ENDPOINT", value: e, expected: "http(s)://host[:port] of an S3-compatible server")
                }
                endpoint = url
            }
            guard let access = environment["SFU_S3_ACCESS_KEY"], !access.isEmpty else {
                throw ConfigError(variable: "SFU_S3_ACCESS_KEY", value: "", expected: "the access key id for SFU_STORAGE_URL")
            }
            guard let secret = environment["SFU_S3_SECRET_KEY"], !secret.isEmpty else {
                throw ConfigError(variable: "SFU_S3_SECRET_KEY", value: "", expected: "the secret access key for SFU_STORAGE_URL")
            }
            var s3 = S3Configuration(bucket: bucket, prefix: prefix, endpoint: endpoint, region: environment["SFU_S3_REGION"].flatMap { $0.isEmpty ? nil : $0 } ?? "us-east-1",
                                     accessKey: access, secretKey: secret)
            if let mb = try int("SFU_S3_PART_SIZE_MB") {
                // A part is read into memory and sent in one request: kept to what an uplink carries in minutes.
                guard (5...128).contains(mb) else { throw ConfigError(variable: "SFU_S3_PART_SIZE_MB", value: String(mb), expected: "5...128 MiB") }
                s3.partSize = mb * 1024 * 1024
            }
            if let n = try int("SFU_S3_UPLOAD_ATTEMPTS") {
                guard (1...100).contains(n) else { throw ConfigError(variable: "SFU_S3_UPLOAD_ATTEMPTS", value: String(n), expected: "1...100") }
                s3.uploadAttempts = n
            }
            storage = s3
        }
        if let v = list("SFU_WEBHOOK_URLS") {
            for u in v where !(u.hasPrefix("http://") || u.hasPrefix("https://")) || URL(string: u) == nil {
                throw ConfigError(variable: "SFU_WEBHOOK_URLS", value: u, expected: "http:// or https:// URLs")
            }
            webhookURLs = v
        }
        if let v = list("SFU_SRTP_PROFILES") {
            var profiles: [SRTPProfile] = []
            for name in v {
                guard let p = SRTPProfile(name: name) else {
                    throw ConfigError(variable: "SFU_SRTP_PROFILES", value: name, expected: "aes128_cm_sha1_80 or aead_aes_128_gcm")
                }
                profiles.append(p)
            }
            guard !profiles.isEmpty else { throw ConfigError(variable: "SFU_SRTP_PROFILES", value: "", expected: "at least one profile") }
            srtpProfiles = profiles
        }
        try validate()
    }

    /// Checks ranges that would otherwise fail later with a less clear error.
    package func validate() throws {
        guard (0...65535).contains(httpPort) else { throw ConfigError(variable: "http port", value: String(httpPort), expected: "0...65535") }
        guard (1...65535).contains(mediaPortBase) else { throw ConfigError(variable: "media port", value: String(mediaPortBase), expected: "1...65535") }
        if let tcp = mediaTCPPortBase, !(0...65535).contains(tcp) {
            throw ConfigError(variable: "SFU_MEDIA_TCP_PORT", value: String(tcp), expected: "1...65535, or 0 for no ICE-TCP")
        }
        for (name, value) in [("SFU_ICE_TCP_MAX_PER_IP", iceTCPLimits.perAddress), ("SFU_ICE_TCP_MAX_PENDING_PER_IP", iceTCPLimits.unauthenticatedPerAddress),
                              ("SFU_ICE_TCP_MAX_PENDING", iceTCPLimits.unauthenticated)] where !(1...100_000).contains(value) {
            throw ConfigError(variable: name, value: String(value), expected: "1...100000 connections")
        }
        guard workers >= 0 && workers <= 256 else { throw ConfigError(variable: "workers", value: String(workers), expected: "0...256") }
        guard (2...3600).contains(httpIdleTimeoutSeconds) else {
            throw ConfigError(variable: "SFU_HTTP_IDLE_TIMEOUT_S", value: String(httpIdleTimeoutSeconds), expected: "2...3600 seconds")
        }
        if let days = recordingRetentionDays, !(1...36_500).contains(days) {
            throw ConfigError(variable: "SFU_RECORDING_RETENTION_DAYS", value: String(days), expected: "1...36500 days")
        }
        guard (1...3600).contains(qualitySampleSeconds) else {
            throw ConfigError(variable: "SFU_QUALITY_SAMPLE_S", value: String(qualitySampleSeconds), expected: "1...3600 seconds")
        }
        // Secrets are never echoed in errors: only their length.
        let short = Self.minimumSecretBytes
        for key in apiKeys where key.utf8.count < short {
            throw ConfigError(variable: "SFU_API_KEY", value: "<\(key.utf8.count) bytes>", expected: "keys of at least \(short) bytes")
        }
        for url in turnURLs where !(url.hasPrefix("turn:") || url.hasPrefix("turns:")) {
            throw ConfigError(variable: "SFU_TURN_URLS", value: url, expected: "turn: or turns: URLs (STUN servers go in SFU_ICE_SERVERS)")
        }
        if !turnURLs.isEmpty && turnSecret == nil {
            throw ConfigError(variable: "SFU_TURN_SECRET", value: "", expected: "the TURN server's shared secret (coturn static-auth-secret) when SFU_TURN_URLS is set")
        }
        if turnURLs.isEmpty && turnSecret != nil {
            throw ConfigError(variable: "SFU_TURN_URLS", value: "", expected: "the TURN URLs the credentials are for, when SFU_TURN_SECRET is set")
        }
        if let publicURL, PublicURL(publicURL) == nil {
            throw ConfigError(variable: "SFU_PUBLIC_URL", value: publicURL, expected: "an http(s):// or ws(s):// URL with a host, e.g. https://sfu.example.org (no query)")
        }
        guard (0...600).contains(resumeWindowSeconds) else {
            throw ConfigError(variable: "SFU_RESUME_WINDOW_S", value: String(resumeWindowSeconds), expected: "0...600 seconds")
        }
        guard (60...604_800).contains(turnTTLSeconds) else {
            throw ConfigError(variable: "SFU_TURN_TTL_S", value: String(turnTTLSeconds), expected: "60...604800 seconds")
        }
        for (name, secret) in [("SFU_JWT_SECRET", jwtSecret), ("SFU_WEBHOOK_SECRET", webhookSecret), ("SFU_TURN_SECRET", turnSecret)] {
            if let secret, secret.utf8.count < short {
                throw ConfigError(variable: name, value: "<\(secret.utf8.count) bytes>", expected: "a secret of at least \(short) bytes")
            }
        }
        _ = try jwtPublicKey()
        _ = try tlsConfiguration()
        if apiKeys.isEmpty && !development && !Self.isLoopback(httpHost) {
            throw ConfigError(variable: "SFU_API_KEY", value: "",
                              expected: "an API key when the HTTP server listens on \(httpHost), not a loopback address (development mode there only with SFU_DEV=1)")
        }
        if !apiKeys.isEmpty && !webhookURLs.isEmpty && webhookSecret == nil {
            throw ConfigError(variable: "SFU_WEBHOOK_SECRET", value: "",
                              expected: "a secret to sign webhooks with when SFU_WEBHOOK_URLS is set (the API key is not used: every receiver would learn it)")
        }
    }

    /// The ES256 verification key, if one is configured.
    /// The HTTPS configuration from `SFU_TLS_CERT`/`SFU_TLS_KEY`, nil without them.
    /// - Throws: ``ConfigError`` when only one is set or a file does not read as PEM.
    package func tlsConfiguration() throws -> TLSConfiguration? {
        switch (tlsCertificatePath, tlsKeyPath) {
        case (nil, nil): return nil
        case (nil, _): throw ConfigError(variable: "SFU_TLS_CERT", value: "", expected: "the certificate chain (PEM file) for SFU_TLS_KEY")
        case (_, nil): throw ConfigError(variable: "SFU_TLS_KEY", value: "", expected: "the private key (PEM file) for SFU_TLS_CERT")
        case (let cert?, let key?):
            let chain: [NIOSSLCertificate]
            do {
                chain = try NIOSSLCertificate.fromPEMFile(cert)
            } catch {
                throw ConfigError(variable: "SFU_TLS_CERT", value: cert, expected: "a readable PEM file with the certificate chain")
            }
            guard !chain.isEmpty else {
                throw ConfigError(variable: "SFU_TLS_CERT", value: cert, expected: "a readable PEM file with the certificate chain")
            }
            let privateKey: NIOSSLPrivateKey
            do {
                privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            } catch {
                throw ConfigError(variable: "SFU_TLS_KEY", value: key, expected: "a readable PEM file with the private key")
            }
            return TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        }
    }

    package func jwtPublicKey() throws -> ES256VerificationKey? {
        guard let pem = jwtPublicKeyPEM else { return nil }
        do {
            return try ES256VerificationKey(pem: pem)
        } catch {
            throw ConfigError(variable: "SFU_JWT_PUBLIC_KEY", value: "<\(pem.utf8.count) bytes>", expected: "\(error)")
        }
    }

    /// What clients are told to use for ICE (`ice_servers`).
    package var iceServerDirectory: ICEServerDirectory {
        ICEServerDirectory(urls: iceServers, turn: turnSecret.map { ICEServerDirectory.TURN(urls: turnURLs, secret: $0, ttlSeconds: turnTTLSeconds) })
    }

    /// Development mode: no API key configured (a random one per run, `/demo/join` served).
    package var isDevelopment: Bool { apiKeys.isEmpty }

    /// Whether `host` is a loopback address or name (only this machine can reach it).
    package static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if h == "localhost" || h == "::1" || h == "0:0:0:0:0:0:0:1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

package struct ConfigError: Error, CustomStringConvertible, Equatable {
    package var variable: String
    package var value: String
    package var expected: String

    package init(variable: String, value: String, expected: String) {
        self.variable = variable
        self.value = value
        self.expected = expected
    }

    package var description: String { "invalid \(variable) '\(value)': expected \(expected)" }
}
