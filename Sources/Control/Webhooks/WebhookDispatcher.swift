import AsyncHTTPClient
import DTLS
import Foundation
import Logging
import NIOCore
import RTP
import SFU

/// Delivers webhook events (room_started, room_finished, participant_joined, participant_left,
/// recording_started, recording_finished) to the configured URLs: JSON body
/// `{"id", "event", "created_at", "data"}`, signed with HMAC-SHA256 of the API secret in
/// `X-SFU-Signature: sha256=<hex>`, retried with exponential backoff on a network error or a
/// non-2xx answer. Enqueueing never waits for delivery: a bounded queue, drained by one task per
/// URL, so a slow or dead receiver never blocks the caller (or media). Requests go out through
/// async-http-client's shared client (connection pooling, redirects followed, as URLSession did).
package actor WebhookDispatcher {
    package struct Configuration: Sendable {
        package var urls: [URL]
        package var secret: String
        package var maxAttempts = 6
        package var initialBackoffSeconds = 0.5
        package var maxQueued = 1000
        package var timeoutSeconds = 5.0
        package init(urls: [URL], secret: String) {
            self.urls = urls
            self.secret = secret
        }
    }

    struct Delivery: Sendable {
        var url: URL
        var body: Data
        var signature: String
        var event: String
        var id: String
    }

    package let configuration: Configuration
    let logger: Logger
    private var queues: [URL: [Delivery]] = [:]
    private var running: Set<URL> = []
    package private(set) var delivered = 0
    package private(set) var failed = 0
    package private(set) var dropped = 0

    /// What is read of a receiver's answer.
    static let maxResponseBytes = 64 * 1024

    package init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Queues `event` for every URL and returns at once.
    package func send(_ webhook: WebhookEvent) {
        guard !configuration.urls.isEmpty else { return }
        let id = ResourceID.webhook.make()
        let event = webhook.name
        guard let body = try? webhook.body(id: id, createdAtMillis: MetadataStore.nowMillis) else {
            logger.error("webhook body is not JSON", metadata: ["event": "\(event)"])
            return
        }
        let mac = HMAC(digest: .sha256, key: Array(configuration.secret.utf8))?.authenticate([UInt8](body)) ?? []
        let signature = "sha256=" + hexString(mac)
        for url in configuration.urls {
            var queue = queues[url, default: []]
            if queue.count >= configuration.maxQueued {
                queue.removeFirst()
                dropped += 1
                logger.warning("webhook queue full; oldest event dropped", metadata: ["url": "\(url)"])
            }
            queue.append(Delivery(url: url, body: body, signature: signature, event: event, id: id))
            queues[url] = queue
            if !running.contains(url) {
                running.insert(url)
                Task { await self.drain(url) }
            }
        }
    }

    private func next(_ url: URL) -> Delivery? {
        guard var queue = queues[url], !queue.isEmpty else {
            running.remove(url)
            return nil
        }
        let d = queue.removeFirst()
        queues[url] = queue
        return d
    }

    private func drain(_ url: URL) async {
        while let delivery = next(url) {
            let ok = await deliver(delivery)
            if ok { delivered += 1 } else { failed += 1 }
        }
    }

    /// Pending deliveries (all URLs).
    package var pending: Int { queues.values.reduce(0) { $0 + $1.count } }

    private func deliver(_ d: Delivery) async -> Bool {
        var delay = configuration.initialBackoffSeconds
        for attempt in 1...configuration.maxAttempts {
            var request = HTTPClientRequest(url: d.url.absoluteString)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "X-SFU-Signature", value: d.signature)
            request.headers.add(name: "X-SFU-Event", value: d.event)
            request.headers.add(name: "X-SFU-Delivery", value: d.id)
            request.body = .bytes(ByteBuffer(bytes: d.body))
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(configuration.timeoutSeconds * 1000)))
                // The receiver's answer is not used; read (a bounded part of) it so the connection can be reused.
                _ = try? await response.body.collect(upTo: Self.maxResponseBytes)
                let status = Int(response.status.code)
                if (200..<300).contains(status) { return true }
                logger.warning("webhook answered \(status)", metadata: ["url": "\(d.url)", "event": "\(d.event)", "attempt": "\(attempt)"])
            } catch {
                logger.warning("webhook delivery failed", metadata: ["url": "\(d.url)", "event": "\(d.event)", "attempt": "\(attempt)", "error": "\(error)"])
            }
            if attempt < configuration.maxAttempts {
                try? await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 30)
            }
        }
        logger.error("webhook given up", metadata: ["url": "\(d.url)", "event": "\(d.event)", "id": "\(d.id)"])
        return false
    }
}
